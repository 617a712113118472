-- legacy_workspace_by_id: replay of Coder's GetWorkspaceByID (docs/coder-contract.md §4.1, label W) on plain
-- `workspaces` (Coder reads workspaces_expanded). Built only with the `legacy` feature, for
-- benchmarks.
--
-- Parameter: $1 (uuid) workspace id.
-- Result: at most one row. Index: workspaces_pkey (id).
SELECT
    id,
    deleted
FROM workspaces
WHERE id = $1
LIMIT 1
