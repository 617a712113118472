-- legacy_build_by_id: replay of Coder's GetWorkspaceBuildByID (docs/coder-contract.md §4.1, label B) on plain
-- `workspace_builds`. Built only with the `legacy` feature, for benchmarks.
--
-- Parameter: $1 (uuid) build id.
-- Result: at most one row. Index: workspace_builds_pkey (id).
SELECT
    id,
    workspace_id
FROM workspace_builds
WHERE id = $1
LIMIT 1
