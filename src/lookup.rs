//! The lookup: one checked-in statement, `queries/agents_by_instance_id.sql`, per request.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::metrics::Statements;

/// The query's name in metrics: its file name in `queries/`.
pub const QUERY: &str = "agents_by_instance_id";

/// One agent that may authenticate as the instance, in query order (newest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub agent_id: Uuid,
    pub agent_name: String,
    pub auth_token: Uuid,
    pub agent_created_at: DateTime<Utc>,
    pub build_id: Uuid,
    pub workspace_id: Uuid,
}

/// Runs the single lookup statement on an already acquired connection. All candidate rules
/// live in the SQL, so whatever the number of candidates this is exactly one round trip.
pub async fn agents_by_instance_id(
    conn: &mut PgConnection,
    instance_id: &str,
    statements: &mut Statements<'_>,
) -> Result<Vec<Candidate>, sqlx::Error> {
    statements.ran(QUERY);
    sqlx::query_file_as!(Candidate, "queries/agents_by_instance_id.sql", instance_id)
        .fetch_all(conn)
        .await
}
