//! The product's lookup statements: `queries/agents_by_instance_id.sql` for one instance id,
//! and `queries/agents_by_instance_ids.sql` for the distinct instance ids of a coalesced batch.
//! Either way one statement, whatever the number of candidates: all candidate rules live in
//! the SQL.

use std::collections::HashMap;

use sqlx::PgConnection;

use crate::db::{StatementMode, Trouble, Unnamed};

use super::Candidate;

/// The single statement's name in metrics: its file name in `queries/`.
pub(crate) const QUERY: &str = "agents_by_instance_id";
/// The batch statement's name in metrics.
pub(crate) const BATCH_QUERY: &str = "agents_by_instance_ids";

/// Attempts at an unnamed statement before the error stands (see [`send`]).
const UNNAMED_ATTEMPTS: usize = 3;

/// Sends a `query_file_as!` query the way `mode` asks and fetches every row.
///
/// As the unnamed statement it is parsed again when the server lost it: sqlx sends Parse and
/// Bind/Execute in two Sync round trips, and PgBouncer in transaction pooling mode may hand the
/// second to another server connection. When that connection has never parsed the statement
/// (it was just opened), the server refuses the Bind with SQLSTATE 26000 before executing
/// anything, so parsing again cannot run the statement twice. Unnamed, instauth only ever
/// sends the batch statement (see [`Statement`]), so any other server connection of its
/// dedicated role holds that same statement, and a Bind it accepts executes the right SQL.
macro_rules! send {
    ($conn:expr, $mode:expr, $query:expr) => {{
        let conn: &mut PgConnection = $conn;
        match $mode {
            StatementMode::Cached => $query.fetch_all(conn).await,
            StatementMode::Unnamed => {
                let mut attempt = 1;
                loop {
                    match $query.fetch_all(Unnamed(&mut *conn)).await {
                        Err(err)
                            if attempt < UNNAMED_ATTEMPTS
                                && Trouble::is_missing_statement(&err) =>
                        {
                            tracing::debug!(
                                attempt,
                                "unnamed statement missing on the server connection; parsing again"
                            );
                            attempt += 1;
                        }
                        result => break result,
                    }
                }
            }
        }
    }};
}

/// Which statement a lookup of `ids` distinct instance ids sends: the single one for one id
/// on cached statements, the batch one otherwise. Unnamed statements are always the batch one,
/// so that one statement shape is ever parsed unnamed on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Statement {
    Single,
    Batch,
}

impl Statement {
    pub(crate) fn for_lookup(mode: StatementMode, ids: usize) -> Self {
        match mode {
            StatementMode::Cached if ids == 1 => Self::Single,
            _ => Self::Batch,
        }
    }

    /// The name in metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Single => QUERY,
            Self::Batch => BATCH_QUERY,
        }
    }
}

/// A candidate of a batch, with the instance id it answers for.
struct BatchRow {
    instance_id: String,
    agent_id: uuid::Uuid,
    agent_name: String,
    auth_token: uuid::Uuid,
    agent_created_at: chrono::DateTime<chrono::Utc>,
    build_id: uuid::Uuid,
    workspace_id: uuid::Uuid,
}

/// The candidates of each of `ids` (distinct), newest first, in `ids`' order, with one
/// statement ([`Statement::for_lookup`]).
pub(crate) async fn candidates_of(
    conn: &mut PgConnection,
    mode: StatementMode,
    ids: &[String],
) -> Result<Vec<Vec<Candidate>>, sqlx::Error> {
    let mut found: Vec<Vec<Candidate>> = vec![Vec::new(); ids.len()];
    match Statement::for_lookup(mode, ids.len()) {
        Statement::Single => {
            let id = ids.first().map(String::as_str).unwrap_or_default();
            found[0] = send!(
                conn,
                mode,
                sqlx::query_file_as!(Candidate, "queries/agents_by_instance_id.sql", id)
            )?;
        }
        Statement::Batch => {
            let rows = send!(
                conn,
                mode,
                sqlx::query_file_as!(BatchRow, "queries/agents_by_instance_ids.sql", ids)
            )?;
            let slots: HashMap<&str, usize> = ids
                .iter()
                .enumerate()
                .map(|(slot, id)| (id.as_str(), slot))
                .collect();
            for row in rows {
                // Rule 1 matched the row's id, so it is one of `ids`; a row that was not would
                // go to no one, never to another instance.
                if let Some(&slot) = slots.get(row.instance_id.as_str()) {
                    found[slot].push(Candidate {
                        agent_id: row.agent_id,
                        agent_name: row.agent_name,
                        auth_token: row.auth_token,
                        agent_created_at: row.agent_created_at,
                        build_id: row.build_id,
                        workspace_id: row.workspace_id,
                    });
                }
            }
        }
    }
    for candidates in &mut found {
        newest_first(candidates);
    }
    Ok(found)
}

/// The order the choice reads candidates in: `created_at DESC, id DESC` (the id only breaks
/// ties between agents created in the same microsecond; `Uuid` orders by its bytes, as
/// PostgreSQL orders `uuid`). The statements return rows unordered: sorting one to five rows
/// here is cheaper than a Sort node in every execution on the server.
fn newest_first(candidates: &mut [Candidate]) {
    candidates.sort_unstable_by(|a, b| {
        b.agent_created_at
            .cmp(&a.agent_created_at)
            .then_with(|| b.agent_id.cmp(&a.agent_id))
    });
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone as _, Utc};
    use uuid::Uuid;

    use super::*;

    fn candidate(id: u128, micros: i64) -> Candidate {
        Candidate {
            agent_id: Uuid::from_u128(id),
            agent_name: format!("agent-{id}"),
            auth_token: Uuid::nil(),
            agent_created_at: Utc.timestamp_micros(micros).single().expect("time"),
            build_id: Uuid::nil(),
            workspace_id: Uuid::nil(),
        }
    }

    #[test]
    fn candidates_are_ordered_newest_first_then_by_descending_id() {
        let mut candidates = vec![
            candidate(1, 10),
            candidate(5, 30),
            candidate(3, 20),
            candidate(2, 20),
            candidate(0xff << 120, 20),
        ];
        newest_first(&mut candidates);
        let order: Vec<u128> = candidates.iter().map(|c| c.agent_id.as_u128()).collect();
        assert_eq!(order, [5, 0xff << 120, 3, 2, 1]);
    }
}
