-- agents_by_instance_ids: every agent that may authenticate as any of the cloud instances in
-- $1, for lookups coalesced into one statement.
--
-- Sent instead of agents_by_instance_id.sql when requests for two or more distinct instance ids
-- wait for a connection at the same time (`serve --db-batch-max`); the same candidate rules
-- and indexes, with one probe of the first index per instance id.
-- Parameter: $1 (varchar[]) the distinct instance ids of the batch (at most --db-batch-max).
-- Result: one row per candidate agent with the instance id it answers for, in no particular
-- order; the service hands each waiting request its own rows and orders them newest first.
--
-- Candidate rules (docs in queries/README.md) and the index that serves each step:
--   1-3  wa  auth_instance_id = ANY($1), not deleted, not a sub-agent
--            -> workspace_agents_auth_instance_id_deleted_idx (auth_instance_id, deleted)
--   4    wr  the agent's resource, for its job -> workspace_resources_pkey (id)
--   5    wb  the build that ran that job     -> workspace_builds_job_id_key (job_id)
--   6    pj  the job, of type workspace_build -> provisioner_jobs_pkey (id)
--   7    w   the workspace, not deleted      -> workspaces_pkey (id)
--   8    the build is the newest of its workspace (a subplan, one probe)
--            -> workspace_builds_workspace_id_build_number_key (workspace_id, build_number)
--
-- Few relations joined, the other steps scalar subqueries: see agents_by_instance_id.sql for
-- why. Unlike there, the resource is a LATERAL subquery fenced by OFFSET 0 rather than a
-- subquery in the join condition: its job id becomes a column the planner memoizes the build
-- lookup on, so each agent row reads its resource once and each job's build (with rules 6-8)
-- is read once. In the join condition, the resource was read once for each agent row's memo
-- key and again for each build probe: for 42 two-agent instances 126 resource probes instead
-- of 84, 930 buffers instead of 804, and a median 913 against 770 us of PostgreSQL CPU
-- (queries/README.md).
SELECT
    wa.auth_instance_id AS "instance_id!",
    wa.id AS agent_id,
    wa.name AS agent_name,
    wa.auth_token,
    wa.created_at AS agent_created_at,
    wb.id AS build_id,
    wb.workspace_id
FROM workspace_agents AS wa
CROSS JOIN LATERAL (
    SELECT wr.job_id
    FROM workspace_resources AS wr
    WHERE wr.id = wa.resource_id
    OFFSET 0
) AS resource
INNER JOIN workspace_builds AS wb ON wb.job_id = resource.job_id
WHERE
    wa.auth_instance_id = ANY($1::varchar[])
    AND wa.deleted = false
    AND wa.parent_id IS NULL
    AND (
        SELECT pj.type
        FROM provisioner_jobs AS pj
        WHERE pj.id = wb.job_id
    ) = 'workspace_build'::provisioner_job_type
    AND (
        SELECT w.deleted
        FROM workspaces AS w
        WHERE w.id = wb.workspace_id
    ) = false
    AND NOT EXISTS (
        SELECT 1
        FROM workspace_builds AS newer
        WHERE
            newer.workspace_id = wb.workspace_id
            AND newer.build_number > wb.build_number
        OFFSET 0
    )
