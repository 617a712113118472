-- legacy_latest_build_by_workspace_id: replay of Coder's GetLatestWorkspaceBuildByWorkspaceID
-- (docs/coder-contract.md §4.1, label L) on plain `workspace_builds`. Built only with the `legacy` feature,
-- for benchmarks.
--
-- Parameter: $1 (uuid) workspace id.
-- Result: at most one row, the id of the build with the highest number.
-- Index: workspace_builds_workspace_id_build_number_key, read backwards.
SELECT id
FROM workspace_builds
WHERE workspace_id = $1
ORDER BY build_number DESC
LIMIT 1
