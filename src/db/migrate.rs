//! The schema migrations in `migrations/`, embedded in the binary, and their retry in the
//! background when the database is unreachable at start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::PgPoolOptions;

use super::DatabaseSettings;
use super::trouble::Trouble;

/// The migrations in `migrations/`, embedded in the binary.
static MIGRATOR: Migrator = sqlx::migrate!();

/// How long a migration waits for its connection at least. Migrating is a one-off at start,
/// where a slow connect is no reason to come up unready; the request path's acquire timeout
/// is tuned for answering agents quickly instead.
const MIGRATION_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Applies pending migrations over a connection of its own, without the request path's
/// `statement_timeout`: a migration, or the wait for another replica's migration lock, may
/// take longer than a lookup ever should. Never run against a real Coder database: there the
/// schema is Coder's (`serve --no-migrate`).
pub async fn migrate(settings: &DatabaseSettings) -> Result<(), MigrateError> {
    let connect = settings
        .connect
        .clone()
        .application_name("instauth-migrate");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(settings.acquire_timeout.max(MIGRATION_CONNECT_TIMEOUT))
        .connect_lazy_with(connect);
    let result = MIGRATOR.run(&pool).await;
    pool.close().await;
    result
}

/// Whether a migration failed only because the database was unreachable or busy (worth
/// retrying), rather than because of the migrations or the schema (a configuration error).
pub(crate) fn is_retryable(err: &MigrateError) -> bool {
    match err {
        MigrateError::Execute(err) => Trouble::of(err).is_retryable(),
        _ => false,
    }
}

/// First delay between migration attempts while the database is unreachable; doubles up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// Keeps applying migrations with exponential backoff until they succeed, then sets `applied`.
/// One log line per attempt. An error that retrying cannot fix is returned, and the caller
/// stops the service: a process that can never become ready should not look alive.
pub(crate) async fn keep_migrating(
    settings: DatabaseSettings,
    applied: Arc<AtomicBool>,
) -> Result<(), MigrateError> {
    let mut delay = FIRST_RETRY_DELAY;
    let mut attempt = 1_u32;
    loop {
        tokio::time::sleep(delay).await;
        attempt += 1;
        match migrate(&settings).await {
            Ok(()) => {
                applied.store(true, Ordering::Release);
                tracing::info!(attempt, "database reachable; migrations applied");
                return Ok(());
            }
            Err(err) if is_retryable(&err) => {
                delay = (delay * 2).min(MAX_RETRY_DELAY);
                tracing::warn!(attempt, error = %err, retry_in = ?delay, "database still unreachable; not ready");
            }
            Err(err) => {
                tracing::error!(attempt, error = %err, "migrations failed; stopping");
                return Err(err);
            }
        }
    }
}
