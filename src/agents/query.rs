//! The product's lookup: one checked-in statement, `queries/agents_by_instance_id.sql`, per
//! request, whatever the number of candidates.

use sqlx::PgConnection;

use crate::db::{StatementMode, Trouble, Unnamed};
use crate::metrics::StatementCounter;

use super::Candidate;

/// The query's name in metrics: its file name in `queries/`.
pub(crate) const QUERY: &str = "agents_by_instance_id";

/// Runs the single lookup statement on an already acquired connection. All candidate rules
/// live in the SQL, so whatever the number of candidates the server executes exactly one
/// statement (one round trip once cached; Parse, then Bind/Execute in
/// [`StatementMode::Unnamed`]).
pub(crate) async fn agents_by_instance_id(
    conn: &mut PgConnection,
    mode: StatementMode,
    instance_id: &str,
    statements: &mut StatementCounter<'_>,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let mut candidates = match mode {
        StatementMode::Cached => {
            statements.ran(QUERY);
            sqlx::query_file_as!(Candidate, "queries/agents_by_instance_id.sql", instance_id)
                .fetch_all(conn)
                .await?
        }
        StatementMode::Unnamed => unnamed(conn, instance_id, statements).await?,
    };
    newest_first(&mut candidates);
    Ok(candidates)
}

/// The order the selection reads candidates in: `created_at DESC, id DESC` (the id only breaks
/// ties between agents created in the same microsecond; `Uuid` orders by its bytes, as
/// PostgreSQL orders `uuid`). The statement returns rows unordered: sorting one to five rows
/// here is cheaper than a Sort node in every execution on the server.
fn newest_first(candidates: &mut [Candidate]) {
    candidates.sort_unstable_by(|a, b| {
        b.agent_created_at
            .cmp(&a.agent_created_at)
            .then_with(|| b.agent_id.cmp(&a.agent_id))
    });
}

/// Attempts at the unnamed statement before the error stands (see [`unnamed`]).
const UNNAMED_ATTEMPTS: usize = 3;

/// The lookup as the unnamed statement, parsed again when the server lost it.
///
/// sqlx sends Parse and Bind/Execute in two Sync round trips. PgBouncer in transaction pooling
/// mode may hand the second to another server connection; when that connection has never
/// parsed the statement (it was just opened), the server refuses the Bind with SQLSTATE 26000
/// before executing anything, so parsing again cannot run the statement twice. Any other
/// server connection of instauth's dedicated role holds this same statement, the only one
/// instauth runs there, so a Bind it accepts executes the right SQL.
async fn unnamed(
    conn: &mut PgConnection,
    instance_id: &str,
    statements: &mut StatementCounter<'_>,
) -> Result<Vec<Candidate>, sqlx::Error> {
    // Counted once: a Bind refused with 26000 never executed, so a re-parse is not another
    // statement.
    statements.ran(QUERY);
    let mut attempt = 1;
    loop {
        let result =
            sqlx::query_file_as!(Candidate, "queries/agents_by_instance_id.sql", instance_id)
                .fetch_all(Unnamed(&mut *conn))
                .await;
        match result {
            Err(err) if attempt < UNNAMED_ATTEMPTS && Trouble::is_missing_statement(&err) => {
                tracing::debug!(
                    attempt,
                    "unnamed statement missing on the server connection; parsing again"
                );
                attempt += 1;
            }
            result => return result,
        }
    }
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
