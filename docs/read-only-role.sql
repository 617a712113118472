-- instauth's role on a Coder database: it can read the five tables the lookup joins and
-- nothing else, and the server keeps its sessions read-only. Run as a superuser or as the
-- owner of the database and tables; pick your own role name and password, and put your
-- database's name in place of `coder`. docs/dba.md explains each line; the test suite runs
-- this file as it is (tests/api/read_only.rs).
CREATE ROLE instauth_reader LOGIN PASSWORD 'change-me';
GRANT CONNECT ON DATABASE coder TO instauth_reader;
GRANT USAGE ON SCHEMA public TO instauth_reader;
GRANT SELECT ON
    workspace_agents,
    workspace_resources,
    provisioner_jobs,
    workspace_builds,
    workspaces
TO instauth_reader;
-- instauth never writes; with this the server refuses any write in the role's sessions.
ALTER ROLE instauth_reader SET default_transaction_read_only = on;
-- Bounds every statement even when instauth sends no timeout itself, as behind PgBouncer
-- (`--db-statement-timeout 0`).
ALTER ROLE instauth_reader SET statement_timeout = '2s';
