-- Scale data for instauth: Coder-shaped history over the five tables, built with set-based SQL.
--
-- Used by bench/pgbench/compare (the pgbench runs) and by the at-scale plan test
-- (tests/api/scale.rs), so plans and benchmark figures come from the same data.
--
-- Size: the custom setting instauth.seed_workspaces (workspaces 0 .. n-1), e.g.
--   PGOPTIONS='-c instauth.seed_workspaces=100000' psql -f bench/pgbench/seed.sql
-- Runs as a superuser against a database migrated by instauth (`instauth migrate`) and holding
-- no other data. Foreign-key triggers are skipped during the load (session_replication_role,
-- hence superuser): every reference is consistent by construction (the at-scale test checks
-- it), and the load takes about a third less time.
--
-- Ids are random UUIDs, as Coder's are, so index pages are as scattered as in production, and
-- rows are inserted in creation order, so a workspace's builds and agents of different days
-- sit on different heap pages, as they do in production.
-- Instance ids are Google-style decimal strings that pgbench can compute from i:
--   instance id of workspace i = (3000000000000000000 + (i * 2654435761) % 1000000000000)::text
--
-- Workspace i has builds 1 .. 2 + (i / 20) % 4: odd builds start, even builds stop, the last
-- build starts unless its class says otherwise. Every build has a workspace_build job (input
-- carries workspace_build_id) and one resource; agents exist only on start builds, and the
-- agents of earlier builds share the workspace's instance id (stale agents).
--
-- Class of workspace i is i % 20:
--   0-9   one agent `main`; stale agents soft-deleted (Coder after #25207)
--   10-11 one agent `main`; stale agents not soft-deleted (data from before #25207)
--   12-13 two agents `main` and `gpu` on the instance; stale agents soft-deleted
--   14    one agent `main` with a sub-agent `devcontainer` (parent_id set, same instance id)
--   15    one agent `main` plus a template-import twin: an import job's agent, same instance id
--   16    stopped: the last build is a stop build (no agents); stale agents not soft-deleted
--   17    deleted workspace: the last build is a delete build; agents soft-deleted when i / 20
--         is even, otherwise left as they were
--   18    token-authenticated: agents have no instance id
--   19    two agents, stale agents not soft-deleted
-- Candidates per instance id: 1 for classes 0-11, 14 and 15; 2 for 12, 13 and 19; none for
-- 16-18.
SET client_min_messages = warning;
SET session_replication_role = replica;

CREATE TEMP TABLE seed_workspace AS
SELECT
    i,
    i % 20 AS class,
    2 + (i / 20) % 4 AS builds,
    gen_random_uuid() AS id,
    md5('owner' || i % 5000)::uuid AS owner_id,
    md5('template' || i % 200)::uuid AS template_id,
    md5('version' || i % 200)::uuid AS template_version_id,
    CASE WHEN i % 20 <> 18
        THEN (3000000000000000000 + (i::bigint * 2654435761) % 1000000000000)::text
    END AS instance_id,
    timestamptz '2025-01-01 00:00:00+00' + i * interval '1 second' AS created_at
FROM generate_series(0, current_setting('instauth.seed_workspaces')::integer - 1) AS i;

CREATE TEMP TABLE seed_build AS
SELECT
    w.i,
    w.class,
    b.n AS build_number,
    b.n = w.builds AS latest,
    CASE
        WHEN b.n = w.builds AND w.class = 17 THEN 'delete'
        WHEN b.n = w.builds AND w.class = 16 THEN 'stop'
        WHEN b.n < w.builds AND b.n % 2 = 0 THEN 'stop'
        ELSE 'start'
    END::workspace_transition AS transition,
    w.id AS workspace_id,
    w.owner_id,
    w.template_version_id,
    w.instance_id,
    gen_random_uuid() AS build_id,
    gen_random_uuid() AS job_id,
    gen_random_uuid() AS resource_id,
    w.created_at + b.n * interval '1 day' AS created_at
FROM seed_workspace AS w
CROSS JOIN LATERAL generate_series(1, w.builds) AS b (n);

INSERT INTO workspaces (
    id, created_at, updated_at, owner_id, organization_id, template_id, deleted, name
)
SELECT
    id, created_at, created_at, owner_id, '00000000-0000-4000-8000-000000000001', template_id,
    class = 17, 'ws-' || i
FROM seed_workspace
ORDER BY created_at;

INSERT INTO provisioner_jobs (
    id, created_at, updated_at, started_at, completed_at, error, organization_id, initiator_id,
    provisioner, storage_method, type, input, file_id
)
SELECT
    job_id, created_at, created_at, created_at, created_at, '',
    '00000000-0000-4000-8000-000000000001', owner_id, 'terraform', 'file', 'workspace_build',
    jsonb_build_object('workspace_build_id', build_id), template_version_id
FROM seed_build
ORDER BY created_at;

INSERT INTO workspace_builds (
    id, created_at, updated_at, workspace_id, template_version_id, build_number, transition,
    initiator_id, job_id
)
SELECT
    build_id, created_at, created_at, workspace_id, template_version_id, build_number,
    transition, owner_id, job_id
FROM seed_build
ORDER BY created_at;

INSERT INTO workspace_resources (id, created_at, job_id, transition, type, name)
SELECT resource_id, created_at, job_id, transition, 'google_compute_instance', 'dev'
FROM seed_build
ORDER BY created_at;

-- Template-import twins (class 15): an import job (no build row) whose resource carries an
-- agent with the workspace's instance id, created before the workspace's first build.
CREATE TEMP TABLE seed_import AS
SELECT
    gen_random_uuid() AS job_id,
    gen_random_uuid() AS resource_id,
    owner_id,
    template_version_id,
    instance_id,
    created_at
FROM seed_workspace
WHERE class = 15;

INSERT INTO provisioner_jobs (
    id, created_at, updated_at, started_at, completed_at, error, organization_id, initiator_id,
    provisioner, storage_method, type, input, file_id
)
SELECT
    job_id, created_at, created_at, created_at, created_at, '',
    '00000000-0000-4000-8000-000000000001', owner_id, 'terraform', 'file',
    'template_version_import', jsonb_build_object('template_version_id', template_version_id),
    template_version_id
FROM seed_import;

INSERT INTO workspace_resources (id, created_at, job_id, transition, type, name)
SELECT resource_id, created_at, job_id, 'start', 'google_compute_instance', 'dev'
FROM seed_import;

-- Agents: `main` on every start build, `gpu` beside it in classes 12, 13 and 19.
CREATE TEMP TABLE seed_agent AS
SELECT
    gen_random_uuid() AS id,
    sb.created_at + agent.offset_ms * interval '1 millisecond' AS created_at,
    agent.name,
    sb.resource_id,
    sb.instance_id,
    sb.class,
    sb.latest,
    CASE
        WHEN sb.latest THEN sb.class = 17 AND (sb.i / 20) % 2 = 0
        ELSE sb.class NOT IN (10, 11, 16, 19) AND NOT (sb.class = 17 AND (sb.i / 20) % 2 = 1)
    END AS deleted
FROM seed_build AS sb
CROSS JOIN LATERAL (VALUES ('main', 0), ('gpu', 1)) AS agent (name, offset_ms)
WHERE sb.transition = 'start' AND (agent.name = 'main' OR sb.class IN (12, 13, 19));

INSERT INTO workspace_agents (
    id, created_at, updated_at, name, resource_id, auth_token, auth_instance_id, architecture,
    operating_system, deleted, parent_id
)
SELECT
    id, created_at, created_at AS updated_at, name, resource_id, gen_random_uuid(),
    instance_id, 'amd64', 'linux', deleted, NULL::uuid
FROM seed_agent
UNION ALL
SELECT
    gen_random_uuid(), created_at, created_at, 'main', resource_id, gen_random_uuid(),
    instance_id, 'amd64', 'linux', false, NULL
FROM seed_import
UNION ALL
-- Sub-agents (class 14): a devcontainer agent under the latest build's `main`.
SELECT
    gen_random_uuid(), created_at + interval '1 minute', created_at + interval '1 minute',
    'devcontainer', resource_id, gen_random_uuid(), instance_id, 'amd64', 'linux', false, id
FROM seed_agent
WHERE class = 14 AND latest AND name = 'main'
-- The whole union, in creation order.
ORDER BY created_at;

DROP TABLE seed_workspace, seed_build, seed_import, seed_agent;
RESET session_replication_role;

ANALYZE workspace_agents, workspace_resources, provisioner_jobs, workspace_builds, workspaces;
