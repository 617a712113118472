-- explain_agents_by_instance_ids: the plan and run-time figures of agents_by_instance_ids.sql
-- (the coalesced lookup) for the instance ids in $1, as `instauth explain` prints them.
--
-- Used only by `instauth explain`, never on the request path. ANALYZE executes the lookup (a
-- read-only SELECT) to report actual rows, timings and buffers.
-- Parameter: $1 (varchar[]) the instance ids of one batch.
-- Result: one row per line of the text plan (the column "QUERY PLAN").
-- The statement after EXPLAIN must stay byte-for-byte the body of agents_by_instance_ids.sql (a
-- test compares them); change both files together.
EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT)
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
