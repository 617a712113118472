-- sample_instance_id: an instance id that has at least one candidate agent, for
-- `instauth explain` run without --instance-id.
--
-- Used only by `instauth explain`, never on the request path.
-- Parameters: none.
-- Result: zero or one row: instance_id (varchar) the smallest instance id for which
-- agents_by_instance_id.sql returns a row (the same candidate rules, 1-8).
-- Plan: walks workspace_agents_auth_instance_id_deleted_idx in order and stops at the first
-- match, checking each agent through the same primary-key and unique indexes as the lookup.
SELECT wa.auth_instance_id AS "instance_id!"
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
    AND wb.build_number = (
        SELECT max(latest.build_number)
        FROM workspace_builds AS latest
        WHERE latest.workspace_id = wb.workspace_id
    )
ORDER BY wa.auth_instance_id
LIMIT 1
