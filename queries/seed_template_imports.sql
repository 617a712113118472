-- seed_template_imports: used only by `instauth seed` (load-test data), never on the request path.
--
-- Gives every workspace 1..$2 of seed run $1 a template-import twin, as Coder stores when a
-- template version is imported: a template_version_import job (no build row) with one resource
-- and agents 1..$3 carrying the same names and instance id, created a day earlier.
-- Parameters: $1 (text) run prefix; $2 (int) workspaces; $3 (int) agents; $4 (uuid) id used as
-- organization, initiator and file.
-- Result: none.
WITH shape AS (
    SELECT
        w,
        md5($1 || '/import-job/' || w)::uuid AS job_id,
        md5($1 || '/import-resource/' || w)::uuid AS resource_id
    FROM generate_series(1, $2::int) AS w
),

jobs AS (
    INSERT INTO provisioner_jobs (
        id, created_at, updated_at, started_at, completed_at, error, organization_id,
        initiator_id, provisioner, storage_method, type, input, file_id
    )
    SELECT
        job_id, now(), now(), now(), now(), '', $4, $4, 'terraform', 'file',
        'template_version_import', '{}'::jsonb, $4
    FROM shape
),

resources AS (
    INSERT INTO workspace_resources (id, created_at, job_id, transition, type, name)
    SELECT resource_id, now(), job_id, 'start', 'aws_instance', 'dev'
    FROM shape
)

INSERT INTO workspace_agents (
    id, created_at, updated_at, name, resource_id, auth_token, auth_instance_id,
    architecture, operating_system
)
SELECT
    md5($1 || '/import-agent/' || w || '/' || a)::uuid,
    now() - interval '1 day',
    now(),
    'agent-' || a,
    resource_id,
    gen_random_uuid(),
    $1 || '-' || w,
    'amd64',
    'linux'
FROM shape, generate_series(1, $3::int) AS a
