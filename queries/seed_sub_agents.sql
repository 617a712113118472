-- seed_sub_agents: used only by `instauth seed` (load-test data), never on the request path.
--
-- Gives every live agent (agents 1..$4 of the latest build $3 of workspaces 1..$2 of seed run
-- $1) sub-agents 1..$5 (devcontainer children, named sub-<agent>-<n>) carrying the parent's
-- instance id, which never authenticate this way.
-- Parameters: $1 (text) run prefix; $2 (int) workspaces; $3 (int) latest build number;
-- $4 (int) agents; $5 (int) sub-agents per agent.
-- Result: none.
INSERT INTO workspace_agents (
    id, created_at, updated_at, name, resource_id, auth_token, auth_instance_id,
    architecture, operating_system, parent_id
)
SELECT
    md5($1 || '/sub-agent/' || w || '/' || a || '/' || s)::uuid,
    now(),
    now(),
    'sub-' || a || '-' || s,
    md5($1 || '/resource/' || w || '/' || $3::int)::uuid,
    gen_random_uuid(),
    $1 || '-' || w,
    'amd64',
    'linux',
    md5($1 || '/agent/' || w || '/' || $3::int || '/' || a)::uuid
FROM generate_series(1, $2::int) AS w, generate_series(1, $4::int) AS a, generate_series(1, $5::int) AS s
