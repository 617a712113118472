//! The connection pool and the schema migrations.

use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres};

use crate::config::DatabaseSettings;
use crate::metrics::Metrics;

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

/// Takes a connection from the pool, timed on its own so the wait for a free connection is
/// measured apart from the work done on it (metrics and `Server-Timing` report both). The
/// wait is returned even when it failed.
pub async fn acquire(
    pool: &PgPool,
    metrics: &Metrics,
) -> (Result<PoolConnection<Postgres>, sqlx::Error>, Duration) {
    let started = Instant::now();
    let result = pool.acquire().await;
    let waited = started.elapsed();
    metrics.observe_acquire(waited, matches!(result, Err(sqlx::Error::PoolTimedOut)));
    (result, waited)
}

/// Applies pending migrations. Never run against a real Coder database: there the schema is
/// Coder's (`serve --no-migrate`).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
