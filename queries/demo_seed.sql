-- demo_seed: used only by `instauth demo`, never on the request path.
--
-- Creates one workspace whose first (and latest) build ran a workspace_build job with one
-- resource, and one agent per name in $2 on that resource, all sharing instance id $1.
-- Parameters: $1 (varchar) instance id; $2 (text[]) agent names; $3 (uuid) id used as owner,
-- organization, template and initiator; $4 (varchar) workspace name.
-- Result: one row per agent created (its name).
WITH job AS (
    INSERT INTO provisioner_jobs (
        id, created_at, updated_at, started_at, completed_at, error, organization_id,
        initiator_id, provisioner, storage_method, type, input, file_id
    )
    VALUES (
        gen_random_uuid(), now(), now(), now(), now(), '', $3, $3, 'terraform', 'file',
        'workspace_build', '{}'::jsonb, gen_random_uuid()
    )
    RETURNING id
),

workspace AS (
    INSERT INTO workspaces (id, created_at, updated_at, owner_id, organization_id, template_id, name)
    VALUES (gen_random_uuid(), now(), now(), $3, $3, $3, $4)
    RETURNING id
),

-- Data-modifying CTEs all run to completion whether or not they are read.
build AS (
    INSERT INTO workspace_builds (
        id, created_at, updated_at, workspace_id, template_version_id, build_number,
        transition, initiator_id, job_id
    )
    SELECT gen_random_uuid(), now(), now(), workspace.id, $3, 1, 'start', $3, job.id
    FROM workspace, job
),

resource AS (
    INSERT INTO workspace_resources (id, created_at, job_id, transition, type, name)
    SELECT gen_random_uuid(), now(), job.id, 'start', 'aws_instance', 'dev'
    FROM job
    RETURNING id
)

INSERT INTO workspace_agents (
    id, created_at, updated_at, name, resource_id, auth_token, auth_instance_id,
    architecture, operating_system
)
SELECT
    gen_random_uuid(), now(), now(), agent.name, resource.id, gen_random_uuid(), $1,
    'amd64', 'linux'
FROM resource, unnest($2::text []) AS agent (name)
RETURNING name
