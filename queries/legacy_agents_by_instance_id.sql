-- legacy_agents_by_instance_id: replay of Coder's GetWorkspaceAgent(s)ByInstanceID (docs/coder-contract.md §4.1,
-- labels A1 and As). Built only with the `legacy` feature, for benchmarks; never on the product path.
--
-- Parameter: $1 (varchar) instance id.
-- Result: agents carrying the instance id that are neither deleted nor sub-agents, newest first
-- (id breaks ties as in agents_by_instance_id.sql, so every lookup answers alike).
-- Index: workspace_agents_auth_instance_id_deleted_idx (auth_instance_id, deleted).
SELECT
    id,
    name,
    auth_token,
    created_at,
    resource_id
FROM workspace_agents
WHERE auth_instance_id = $1 AND deleted = false AND parent_id IS NULL
ORDER BY created_at DESC, id DESC
