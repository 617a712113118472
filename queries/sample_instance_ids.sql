-- sample_instance_ids: up to $1 distinct instance ids that have at least one candidate agent:
-- the instance `instauth explain` explains without --instance-id, and its batches.
--
-- Used only by `instauth explain`, never on the request path.
-- Parameter: $1 (bigint) how many.
-- Result: up to $1 rows: instance_id (varchar), the smallest ids for which
-- agents_by_instance_id.sql returns a row (the same candidate rules, 1-8), in order.
-- Plan: walks workspace_agents_auth_instance_id_deleted_idx in order and stops after $1
-- distinct matches, checking each agent through the same primary-key and unique indexes as
-- the lookup.
SELECT DISTINCT wa.auth_instance_id AS "instance_id!"
FROM workspace_agents AS wa
INNER JOIN workspace_resources AS wr ON wr.id = wa.resource_id
INNER JOIN workspace_builds AS wb ON wb.job_id = wr.job_id
INNER JOIN provisioner_jobs AS pj ON pj.id = wb.job_id
INNER JOIN workspaces AS w ON w.id = wb.workspace_id
WHERE
    wa.auth_instance_id IS NOT NULL
    AND wa.deleted = false
    AND wa.parent_id IS NULL
    AND pj.type = 'workspace_build'::provisioner_job_type
    AND w.deleted = false
    AND NOT EXISTS (
        SELECT 1
        FROM workspace_builds AS newer
        WHERE
            newer.workspace_id = wb.workspace_id
            AND newer.build_number > wb.build_number
    )
ORDER BY 1
LIMIT $1
