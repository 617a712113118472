-- seed_workspaces: used only by `instauth seed` (load-test data), never on the request path.
--
-- Creates workspaces 1..$2 of seed run $1, each with a deterministic id (md5 of the run and
-- number) so the later seed statements find them without reading anything back.
-- Parameters: $1 (text) run prefix; $2 (int) workspaces; $3 (uuid) id used as owner,
-- organization and template.
-- Result: none.
INSERT INTO workspaces (id, created_at, updated_at, owner_id, organization_id, template_id, name)
SELECT
    md5($1 || '/workspace/' || w)::uuid,
    now(),
    now(),
    $3,
    $3,
    $3,
    $1 || '-' || w
FROM generate_series(1, $2::int) AS w
