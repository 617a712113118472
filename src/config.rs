//! Typed settings the application is built from. The CLI fills them from flags and
//! environment; tests fill them directly.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;

use crate::admission::AdmissionSettings;
use crate::identity::IdentitySettings;
use crate::strategy::Strategy;

/// Everything [`crate::startup::Application::build`] needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free port (tests).
    pub bind: String,
    pub database: DatabaseSettings,
    pub identity: IdentitySettings,
    pub admission: AdmissionSettings,
    /// Apply the embedded migrations before serving.
    pub migrate: bool,
    /// How long in-flight requests may take to finish after SIGINT/SIGTERM.
    pub shutdown_timeout: Duration,
    /// How agents are looked up: the single statement, or a legacy replay (feature `legacy`).
    pub lookup: Strategy,
}

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
    /// pooling mode. See [`crate::db::StatementMode`].
    pub statement_cache_capacity: usize,
    /// Ping each connection before handing it out: an extra round trip per request, so off by
    /// default; broken connections surface as a failed lookup and are replaced.
    pub test_before_acquire: bool,
}

impl DatabaseSettings {
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
    /// sqlx's own default; instauth needs one entry per checked-in statement it runs.
    pub const DEFAULT_STATEMENT_CACHE_CAPACITY: usize = 100;

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
        }
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
            .finish()
    }
}

/// A database URL as given by the operator. It may carry a password, so `Debug` shows none of it.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatabaseUrl(<redacted>)")
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        Ok(Self(url.to_owned()))
    }
}

/// `user@host:port/database`, safe to log.
pub fn describe_target(connect: &PgConnectOptions) -> String {
    format!(
        "{}@{}:{}/{}",
        connect.get_username(),
        connect.get_host(),
        connect.get_port(),
        connect.get_database().unwrap_or("(default)")
    )
}
