-- agents_by_instance_id: every agent that may authenticate as cloud instance $1.
--
-- The only statement instauth runs per authentication request, whatever the number of candidates.
-- Parameter: $1 (varchar) the instance id proven by the cloud identity (AWS instanceId, Azure
-- vmId, Google instance_id).
-- Result: one row per candidate agent, in no particular order. The service orders the few rows
-- newest first (created_at DESC, then id DESC) itself: a Sort node here would be set up and
-- torn down in every execution for one to five rows.
--
-- Candidate rules (docs in queries/README.md) and the index that serves each step:
--   1-3  wa  auth_instance_id = $1, not deleted, not a sub-agent
--            -> workspace_agents_auth_instance_id_deleted_idx (auth_instance_id, deleted)
--   4    wr  the agent's resource, for its job -> workspace_resources_pkey (id)
--   5    wb  the build that ran that job     -> workspace_builds_job_id_key (job_id);
--            template-import and dry-run jobs have no build row, so their agents drop out
--   6    pj  the job, of type workspace_build -> provisioner_jobs_pkey (id)
--   7    w   the workspace, not deleted      -> workspaces_pkey (id)
--   8    the build is the newest of its workspace: no build of the workspace has a higher
--        number -> workspace_builds_workspace_id_build_number_key (workspace_id, build_number),
--               index-only, one probe
--
-- Why only two tables are joined: every other step is a lookup by a unique key, written as a
-- scalar subquery, which the planner plans once on its own instead of searching join orders
-- over six relations. Behind PgBouncer (unnamed statements) the statement is planned on every
-- request, and the join search was most of that cost (queries/README.md, "Planning"). A
-- missing row gives NULL, which no rule accepts. OFFSET 0 keeps the latest-build check a
-- subplan too (without it PostgreSQL turns NOT EXISTS into an anti-join, back in the search).
SELECT
    wa.id AS agent_id,
    wa.name AS agent_name,
    wa.auth_token,
    wa.created_at AS agent_created_at,
    wb.id AS build_id,
    wb.workspace_id
FROM workspace_agents AS wa
INNER JOIN workspace_builds AS wb
    ON wb.job_id = (
        SELECT wr.job_id
        FROM workspace_resources AS wr
        WHERE wr.id = wa.resource_id
    )
WHERE
    wa.auth_instance_id = $1
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
