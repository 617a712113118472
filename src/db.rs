//! The connection pool and the schema migrations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::migrate::MigrateError;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;

use crate::config::DatabaseSettings;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// A lazily connecting pool: the service starts (and `/healthz` answers) while the database is
/// down, and connections are opened on demand.
pub fn pool(settings: &DatabaseSettings) -> PgPool {
    let timeout_ms = settings.statement_timeout.as_millis().to_string();
    let connect = settings
        .connect
        .clone()
        .application_name("instauth")
        .options([("statement_timeout", timeout_ms.as_str())]);
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(settings.test_before_acquire)
        .connect_lazy_with(connect)
}

/// Applies pending migrations. Never run against a real Coder database: there the schema is
/// Coder's (`serve --no-migrate`).
pub async fn migrate(pool: &PgPool) -> Result<(), MigrateError> {
    MIGRATOR.run(pool).await
}

/// Whether a migration failed only because the database could not be reached (worth retrying),
/// rather than because of the migrations or the schema (a configuration error).
pub fn is_unreachable(err: &MigrateError) -> bool {
    match err {
        MigrateError::Execute(err) => match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::Protocol(_) => true,
            // 57P03 cannot_connect_now (starting up or shutting down), 53300 too many connections.
            sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("57P03" | "53300")),
            _ => false,
        },
        _ => false,
    }
}

/// First delay between migration attempts while the database is unreachable; doubles up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Keeps applying migrations with exponential backoff until they succeed, then sets `applied`.
/// One log line per attempt; gives up (and stays unready) on an error that retrying cannot fix.
pub async fn keep_migrating(pool: PgPool, applied: Arc<AtomicBool>) {
    let mut delay = FIRST_RETRY_DELAY;
    for attempt in 2_u32.. {
        tokio::time::sleep(delay).await;
        match migrate(&pool).await {
            Ok(()) => {
                applied.store(true, Ordering::Release);
                tracing::info!(attempt, "database reachable; migrations applied");
                return;
            }
            Err(err) if is_unreachable(&err) => {
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                tracing::warn!(attempt, error = %err, retry_in = ?delay, "database still unreachable; not ready");
            }
            Err(err) => {
                tracing::error!(attempt, error = %err, "migrations failed; not retrying");
                return;
            }
        }
    }
}
