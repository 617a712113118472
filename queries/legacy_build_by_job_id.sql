-- legacy_build_by_job_id: replay of Coder's GetWorkspaceBuildByJobID (docs/coder-contract.md §4.1, label BJ)
-- on plain `workspace_builds` (Coder reads workspace_build_with_user). Built only with the
-- `legacy` feature, for benchmarks.
--
-- Parameter: $1 (uuid) job id.
-- Result: at most one row; none for template-import and dry-run jobs.
-- Index: workspace_builds_job_id_key (job_id).
SELECT
    id,
    workspace_id
FROM workspace_builds
WHERE job_id = $1
LIMIT 1
