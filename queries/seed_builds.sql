-- seed_builds: used only by `instauth seed` (load-test data), never on the request path.
--
-- Gives every workspace 1..$2 of seed run $1 builds 1..$3 (the last is the latest; earlier
-- ones are history), each on its own workspace_build job with one resource.
-- Parameters: $1 (text) run prefix; $2 (int) workspaces; $3 (int) builds per workspace;
-- $4 (uuid) id used as organization, initiator, template version and file.
-- Result: none.
WITH shape AS (
    SELECT
        w,
        b,
        md5($1 || '/job/' || w || '/' || b)::uuid AS job_id,
        md5($1 || '/build/' || w || '/' || b)::uuid AS build_id
    FROM generate_series(1, $2::int) AS w, generate_series(1, $3::int) AS b
),

-- Data-modifying CTEs all run to completion whether or not they are read.
jobs AS (
    INSERT INTO provisioner_jobs (
        id, created_at, updated_at, started_at, completed_at, error, organization_id,
        initiator_id, provisioner, storage_method, type, input, file_id
    )
    SELECT
        job_id, now(), now(), now(), now(), '', $4, $4, 'terraform', 'file', 'workspace_build',
        jsonb_build_object('workspace_build_id', build_id), $4
    FROM shape
),

builds AS (
    INSERT INTO workspace_builds (
        id, created_at, updated_at, workspace_id, template_version_id, build_number,
        transition, initiator_id, job_id
    )
    SELECT
        build_id, now(), now(), md5($1 || '/workspace/' || w)::uuid, $4, b, 'start', $4, job_id
    FROM shape
)

INSERT INTO workspace_resources (id, created_at, job_id, transition, type, name)
SELECT md5($1 || '/resource/' || w || '/' || b)::uuid, now(), job_id, 'start', 'aws_instance', 'dev'
FROM shape
