-- legacy_build_agents_by_instance_id: replay of Coder's GetWorkspaceBuildAgentsByInstanceID
-- (#25031, docs/coder-contract.md §4.1 label AB): the five-table join with candidate rules 1-7 of its §2 and no
-- latest-build rule. Built only with the `legacy` feature, for benchmarks.
--
-- Parameter: $1 (varchar) instance id.
-- Result: one row per candidate agent with its build and workspace, newest agent first.
SELECT
    wa.id AS agent_id,
    wa.name AS agent_name,
    wa.auth_token,
    wa.created_at AS agent_created_at,
    wb.id AS build_id,
    w.id AS workspace_id
FROM workspace_agents AS wa
INNER JOIN workspace_resources AS wr ON wr.id = wa.resource_id
INNER JOIN workspace_builds AS wb ON wb.job_id = wr.job_id
INNER JOIN provisioner_jobs AS pj ON pj.id = wb.job_id
INNER JOIN workspaces AS w ON w.id = wb.workspace_id
WHERE
    wa.auth_instance_id = $1
    AND wa.deleted = false
    AND wa.parent_id IS NULL
    AND pj.type = 'workspace_build'::provisioner_job_type
    AND w.deleted = false
ORDER BY wa.created_at DESC, wa.id DESC
