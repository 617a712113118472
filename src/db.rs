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
pub fn is_retryable(err: &MigrateError) -> bool {
    match err {
        MigrateError::Execute(err) => match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::Protocol(_) => true,
            // Connection exceptions, cannot connect now (starting up or shutting down), too
            // many connections, a statement or lock timeout.
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                code.starts_with("08") || matches!(&*code, "57P03" | "53300" | "57014" | "55P03")
            }),
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
/// One log line per attempt. An error that retrying cannot fix is returned, and the caller
/// stops the service: a process that can never become ready should not look alive.
pub async fn keep_migrating(
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
