-- seed_agents: used only by `instauth seed` (load-test data), never on the request path.
--
-- Puts agents 1..$4 (named agent-N) on the resource of every build 1..$3 of every workspace
-- 1..$2 of seed run $1, all carrying the workspace's instance id `$1-<workspace>`: the latest
-- build's agents are live candidates, earlier builds' agents are stale rows sharing the id
-- (never soft-deleted, as before Coder #25207). Newer builds get newer created_at. Tokens are
-- derived from the same names as the ids, so the corpus can name the token each request must
-- get (load-test data only: in a real database a token is random).
-- Parameters: $1 (text) run prefix; $2 (int) workspaces; $3 (int) builds; $4 (int) agents.
-- Result: none.
INSERT INTO workspace_agents (
    id, created_at, updated_at, name, resource_id, auth_token, auth_instance_id,
    architecture, operating_system
)
SELECT
    md5($1 || '/agent/' || w || '/' || b || '/' || a)::uuid,
    now() - make_interval(mins => $3::int - b, secs => $4::int - a),
    now(),
    'agent-' || a,
    md5($1 || '/resource/' || w || '/' || b)::uuid,
    md5($1 || '/token/' || w || '/' || b || '/' || a)::uuid,
    $1 || '-' || w,
    'amd64',
    'linux'
FROM generate_series(1, $2::int) AS w, generate_series(1, $3::int) AS b, generate_series(1, $4::int) AS a
