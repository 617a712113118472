-- explain_session: what `instauth explain` is connected to, checked before it runs anything else.
--
-- Used only by `instauth explain`, never on the request path.
-- Parameters: none.
-- Result: one row: read_only (boolean) whether this session's transactions are read-only (explain
-- refuses to go on otherwise); in_recovery (boolean) whether the server is a standby;
-- server_version (text) PostgreSQL's version string.
SELECT
    current_setting('transaction_read_only') = 'on' AS "read_only!",
    pg_is_in_recovery() AS "in_recovery!",
    current_setting('server_version') AS "server_version!"
