//! The lookup: one checked-in statement, `queries/agents_by_instance_id.sql`, per request.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::{StatementMode, Unnamed};

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

/// Runs the single lookup statement. All candidate rules live in the SQL, so whatever the
/// number of candidates this is exactly one statement on one pooled connection (one round trip
/// once cached; Parse, then Bind/Execute in [`StatementMode::Unnamed`]).
pub async fn agents_by_instance_id(
    pool: &PgPool,
    statements: StatementMode,
    instance_id: &str,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let query = sqlx::query_file_as!(Candidate, "queries/agents_by_instance_id.sql", instance_id);
    match statements {
        StatementMode::Cached => query.fetch_all(pool).await,
        StatementMode::Unnamed => query.fetch_all(Unnamed(pool)).await,
    }
}
