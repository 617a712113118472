-- legacy_resource_by_id: replay of Coder's GetWorkspaceResourceByID (docs/coder-contract.md §4.1, label R).
-- Built only with the `legacy` feature, for benchmarks.
--
-- Parameter: $1 (uuid) resource id.
-- Result: at most one row, the job id. Index: workspace_resources_pkey (id).
SELECT job_id
FROM workspace_resources
WHERE id = $1
