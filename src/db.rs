//! The connection pool, how statements are sent on it, and the schema migrations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::error::BoxDynError;
use sqlx::migrate::MigrateError;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{
    PgArguments, PgConnectOptions, PgPoolOptions, PgQueryResult, PgRow, PgStatement, PgTypeInfo,
};
use sqlx::{Describe, Either, Execute, Executor, PgConnection, PgPool, Postgres};

use crate::config::DatabaseSettings;
use crate::metrics::Metrics;

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Connection options with instauth's session settings applied.
///
/// Only startup parameters that PgBouncer (1.18, Debian 12) forwards are sent by default:
/// sqlx's `extra_float_digits` is dropped (instauth reads no floating-point values, and
/// PgBouncer refuses the connection over it), and `statement_timeout` travels in `options`
/// only when non-zero, because PgBouncer refuses `options` too.
pub fn connect_options(settings: &DatabaseSettings) -> PgConnectOptions {
    let connect = settings
        .connect
        .clone()
        .application_name("instauth")
        .extra_float_digits(None)
        .statement_cache_capacity(settings.statement_cache_capacity);
    if settings.statement_timeout.is_zero() {
        connect
    } else {
        let timeout_ms = settings.statement_timeout.as_millis().to_string();
        connect.options([("statement_timeout", timeout_ms.as_str())])
    }
}

/// A lazily connecting pool: the service starts (and `/healthz` answers) while the database is
/// down, and connections are opened on demand.
pub fn pool(settings: &DatabaseSettings) -> PgPool {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .min_connections(settings.min_connections)
        .acquire_timeout(settings.acquire_timeout)
        .test_before_acquire(settings.test_before_acquire)
        .connect_lazy_with(connect_options(settings))
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

/// How the request statement reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementMode {
    /// Prepared once per connection under a name and kept in sqlx's statement cache: each
    /// request is then one Bind/Execute round trip.
    Cached,
    /// Parsed as the unnamed statement on every request (Parse/Describe, then Bind/Execute:
    /// two round trips, still one statement). No named statement is ever left on a server
    /// connection, which is what PgBouncer before 1.21 needs in transaction pooling mode.
    Unnamed,
}

impl StatementMode {
    pub fn for_settings(settings: &DatabaseSettings) -> Self {
        if settings.statement_cache_capacity == 0 {
            Self::Unnamed
        } else {
            Self::Cached
        }
    }
}

/// Runs queries on a connection as the unnamed statement.
///
/// Needed because sqlx 0.8 marks every macro-built query persistent: with the statement cache
/// disabled it still prepares a *named* statement per execution and never closes it, so the
/// names pile up on the server and collide once PgBouncer hands a server connection to another
/// client. This executor clears that flag and otherwise delegates to the connection.
#[derive(Debug)]
pub struct Unnamed<'c>(pub &'c mut PgConnection);

impl<'p> Executor<'p> for Unnamed<'p> {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        self.0.fetch_many(NotPersistent(query))
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        self.0.fetch_optional(NotPersistent(query))
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.0.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.0.describe(sql)
    }
}

/// A query that asks to be sent as the unnamed statement.
struct NotPersistent<E>(E);

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for NotPersistent<E> {
    fn sql(&self) -> &'q str {
        self.0.sql()
    }

    fn statement(&self) -> Option<&PgStatement<'q>> {
        self.0.statement()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, BoxDynError> {
        self.0.take_arguments()
    }

    fn persistent(&self) -> bool {
        false
    }
}
