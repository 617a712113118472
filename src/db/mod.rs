//! PostgreSQL: the request path's pool and the one bounded exchange every request and probe
//! makes on it, how statements are sent, the schema migrations, and the one classifier of
//! database errors.
//!
//! Nothing here knows about HTTP or agents: callers hand an exchange their work and get back
//! its result, how long the pool wait and the database work took, and a [`Trouble`] for any
//! failure.

mod database;
mod exchange;
mod migrate;
mod pool;
mod replica;
mod statement_mode;
mod trouble;

use std::fmt;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

pub(crate) use database::Database;
pub(crate) use exchange::Failure;
pub(crate) use migrate::is_retryable;
pub(crate) use migrate::keep_migrating;
pub use migrate::migrate;
pub use pool::{Connection, Lease, Pool};
pub(crate) use replica::Replica;
pub(crate) use statement_mode::{StatementMode, Unnamed};
pub(crate) use trouble::{Class, Trouble};

/// Pool settings. The defaults are chosen for one round trip per request; README explains each.
#[derive(Clone)]
pub struct DatabaseSettings {
    pub connect: PgConnectOptions,
    pub max_connections: u32,
    pub min_connections: u32,
    /// Longest wait for a pooled connection before answering 503.
    pub acquire_timeout: Duration,
    /// Server-side bound on every statement (PostgreSQL `statement_timeout`), sent as a
    /// startup parameter; zero sends nothing (PgBouncer refuses the parameter, so behind it the
    /// timeout is set on the database role instead).
    pub statement_timeout: Duration,
    /// Prepared statements kept per connection (sqlx's statement cache); zero sends every
    /// statement as the unnamed statement, which PgBouncer before 1.21 requires in transaction
    /// pooling mode. See [`StatementMode`].
    pub statement_cache_capacity: usize,
    /// Ping each connection before handing it out: an extra round trip per request, so off by
    /// default; broken connections surface as a failed exchange and are replaced.
    pub test_before_acquire: bool,
    /// Most lookups one statement carries when lookups wait for a connection together (their
    /// instance ids each once); 1 sends every lookup alone.
    pub batch_max: usize,
    /// How long a connection may sit unused (beyond `min_connections`) before it is closed.
    pub idle_timeout: Duration,
    /// How long a connection is reused before it is replaced.
    pub max_lifetime: Duration,
    /// Hot standbys lookups go to first (`--replica-url`), each with a pool of these sizes
    /// and timeouts; a lookup they cannot answer is asked of the primary (`connect`).
    pub replicas: Vec<PgConnectOptions>,
    /// A replica whose replay is further behind than this is skipped until it catches up.
    pub replica_max_lag: Duration,
    /// How often each replica's state and lag are checked while it answers.
    pub replica_check_interval: Duration,
}

/// The `target` label of the primary's metrics.
pub(crate) const PRIMARY: &str = "primary";

/// Slack on top of the acquire and statement timeouts before an exchange stops waiting on the
/// database: room for the server-side timeout to fire first and report its own error.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

impl DatabaseSettings {
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
    /// sqlx's own default; instauth needs one entry per checked-in statement it runs.
    pub const DEFAULT_STATEMENT_CACHE_CAPACITY: usize = 100;
    pub const DEFAULT_BATCH_MAX: usize = 64;
    /// sqlx's default, kept: a quiet service gives its connections back to the server.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
    /// sqlx's default, kept: server-side session memory and a failover's stale routes do not
    /// live forever.
    pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
    pub const DEFAULT_REPLICA_MAX_LAG: Duration = Duration::from_secs(10);
    pub const DEFAULT_REPLICA_CHECK_INTERVAL: Duration = Duration::from_secs(1);

    /// Defaults for `connect`.
    pub fn new(connect: PgConnectOptions) -> Self {
        Self {
            connect,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            min_connections: 0,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
            statement_cache_capacity: Self::DEFAULT_STATEMENT_CACHE_CAPACITY,
            test_before_acquire: false,
            batch_max: Self::DEFAULT_BATCH_MAX,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_lifetime: Self::DEFAULT_MAX_LIFETIME,
            replicas: Vec::new(),
            replica_max_lag: Self::DEFAULT_REPLICA_MAX_LAG,
            replica_check_interval: Self::DEFAULT_REPLICA_CHECK_INTERVAL,
        }
    }

    /// Longest the work of one exchange may take once it has a connection: the statement
    /// timeout plus a margin. The server-side `statement_timeout` cannot fire when the database
    /// host stops answering altogether (a frozen VM, a partition); this bound does. With no
    /// `statement_timeout` sent (0: the role's applies), the work is bounded as if the default
    /// were in force.
    pub(crate) fn work_deadline(&self) -> Duration {
        let statement = if self.statement_timeout.is_zero() {
            Self::DEFAULT_STATEMENT_TIMEOUT
        } else {
            self.statement_timeout
        };
        statement + DEADLINE_MARGIN
    }

    /// Longest a request waits on the database in all: a connection, then the work.
    pub(crate) fn deadline(&self) -> Duration {
        self.acquire_timeout + self.work_deadline()
    }
}

/// Shows where the pool connects, never the password.
impl fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("target", &describe_target(&self.connect))
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("statement_cache_capacity", &self.statement_cache_capacity)
            .field("test_before_acquire", &self.test_before_acquire)
            .field("batch_max", &self.batch_max)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_lifetime", &self.max_lifetime)
            .field(
                "replicas",
                &self
                    .replicas
                    .iter()
                    .map(describe_target)
                    .collect::<Vec<_>>(),
            )
            .field("replica_max_lag", &self.replica_max_lag)
            .field("replica_check_interval", &self.replica_check_interval)
            .finish()
    }
}

/// `user@host:port/database`, safe to log.
pub(crate) fn describe_target(connect: &PgConnectOptions) -> String {
    format!(
        "{}@{}:{}/{}",
        connect.get_username(),
        connect.get_host(),
        connect.get_port(),
        connect.get_database().unwrap_or("(default)")
    )
}

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
