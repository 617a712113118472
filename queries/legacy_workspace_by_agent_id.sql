-- legacy_workspace_by_agent_id: replay of Coder's GetWorkspaceByAgentID (docs/coder-contract.md §4.1, label WA)
-- on plain `workspaces` (Coder reads the wider workspaces_expanded view). Built only with the
-- `legacy` feature, for benchmarks.
--
-- Parameter: $1 (uuid) agent id.
-- Result: at most one row, the workspace whose build ran the job of the agent's resource;
-- none for agents of template-import and dry-run jobs.
SELECT
    id,
    deleted
FROM workspaces
WHERE id = (
    SELECT wb.workspace_id
    FROM workspace_builds AS wb
    WHERE wb.job_id = (
        SELECT wr.job_id
        FROM workspace_resources AS wr
        WHERE wr.id = (SELECT wa.resource_id FROM workspace_agents AS wa WHERE wa.id = $1)
    )
)
