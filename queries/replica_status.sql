-- replica_status: whether a `--replica-url` server can answer lookups: a hot standby whose
-- replay is caught up or behind by how much, and whose five lookup tables this role can read.
--
-- Run by the replica check in the background (every --replica-check-interval), on a
-- connection of its own, never on the request path; not counted as a request statement.
-- Parameters: none.
-- Result: one row: in_recovery (bool, false on a primary: refused), caught_up (bool: a WAL
-- receiver is running and every record it received has been replayed, so an idle primary is
-- not lag; a standby cut off from its primary has no receiver and is judged by replay_lag_ms,
-- however complete its replay of what it last received), replay_lag_ms
-- (bigint, NULL before any transaction has been replayed: milliseconds since the commit of
-- the last transaction replayed). A missing table or a denied permission fails the statement.
-- Plan: no table is scanned (the inner WHERE false); naming the tables checks they exist and
-- are readable, so the row is always there when the statement succeeds.
SELECT
    pg_is_in_recovery() AS "in_recovery!",
    EXISTS (SELECT FROM pg_stat_wal_receiver WHERE pid IS NOT NULL)
    AND pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() AS "caught_up!",
    (extract(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint AS replay_lag_ms
WHERE NOT EXISTS (
    SELECT
    FROM workspace_agents, workspace_resources, provisioner_jobs, workspace_builds, workspaces
    WHERE false
)
