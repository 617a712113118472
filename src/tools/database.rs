//! Where a command's database is: a URL, or the embedded cluster started when none is given;
//! and the pool flags every database command shares.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use sqlx::postgres::PgConnectOptions;

use crate::db::{DatabaseSettings, describe_target};

use super::embedded_pg::EmbeddedPostgres;

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

/// Where the database is and how the pool uses it.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL. Without it (and without DATABASE_URL) a private cluster is started under
    /// --data-dir from the installed PostgreSQL binaries.
    #[arg(long, env = "INSTAUTH_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<DatabaseUrl>,
    /// Directory of the embedded cluster (used only without a database URL).
    #[arg(long, env = "INSTAUTH_DATA_DIR", default_value = ".instauth")]
    pub data_dir: PathBuf,
    /// Most pooled connections.
    #[arg(long, env = "INSTAUTH_DB_MAX_CONNECTIONS", default_value_t = DatabaseSettings::DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..))]
    pub db_max_connections: u32,
    /// Connections opened ahead of requests and topped up every 10 s (at most
    /// --db-max-connections).
    #[arg(long, env = "INSTAUTH_DB_MIN_CONNECTIONS", default_value_t = 0)]
    pub db_min_connections: u32,
    /// Longest wait for a pooled connection before answering 503 (e.g. 2s, 500ms).
    #[arg(long, env = "INSTAUTH_DB_ACQUIRE_TIMEOUT", default_value = "2s", value_parser = positive_duration)]
    pub db_acquire_timeout: Duration,
    /// PostgreSQL statement_timeout for every statement (e.g. 2s), sent as a startup parameter.
    /// 0 sends none: PgBouncer refuses the parameter, so behind it set the timeout on the role.
    #[arg(long, env = "INSTAUTH_DB_STATEMENT_TIMEOUT", default_value = "2s", value_parser = statement_timeout)]
    pub db_statement_timeout: Duration,
    /// Prepared statements cached per connection. 0 sends every statement unnamed, parsed on
    /// each request: required behind PgBouncer before 1.21 in transaction pooling mode.
    #[arg(long, env = "INSTAUTH_DB_STATEMENT_CACHE_CAPACITY", default_value_t = DatabaseSettings::DEFAULT_STATEMENT_CACHE_CAPACITY)]
    pub db_statement_cache_capacity: usize,
    /// Ping each connection before use (one more round trip per request).
    #[arg(long, env = "INSTAUTH_DB_TEST_BEFORE_ACQUIRE")]
    pub db_test_before_acquire: bool,
    /// Most lookups one statement carries when lookups wait for a connection together
    /// (coalescing; identical instance ids are looked up once); 1 sends every lookup alone.
    #[arg(long, env = "INSTAUTH_DB_BATCH_MAX", default_value_t = DatabaseSettings::DEFAULT_BATCH_MAX, value_parser = batch_max)]
    pub db_batch_max: usize,
}

/// A duration of at least one millisecond: zero would silently disable a timeout
/// (PostgreSQL's `statement_timeout = 0`) or the shutdown drain.
pub(crate) fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if duration < Duration::from_millis(1) {
        return Err("must be at least 1ms".to_owned());
    }
    Ok(duration)
}

/// A statement timeout: 0 exactly (send none; the role's setting applies, as PgBouncer needs),
/// or at least one millisecond. A sub-millisecond value would round to PostgreSQL's 0 and
/// switch the timeout off by accident.
fn statement_timeout(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|err| err.to_string())?;
    if duration != Duration::ZERO && duration < Duration::from_millis(1) {
        return Err("must be 0 (not sent) or at least 1ms".to_owned());
    }
    Ok(duration)
}

/// Most instance ids per statement: 1 (coalescing off) to 1024, so one statement's array and
/// its plan stay small.
fn batch_max(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err("must be a whole number from 1 to 1024".to_owned()),
    }
}

/// A database to talk to, and the embedded cluster behind it if one was started.
#[derive(Debug)]
pub(crate) struct OpenDatabase {
    pub settings: DatabaseSettings,
    pub embedded: Option<EmbeddedPostgres>,
}

impl DatabaseArgs {
    /// Resolves the URL (flag, INSTAUTH_DATABASE_URL, then DATABASE_URL) or starts the
    /// embedded cluster.
    pub(crate) fn open(&self) -> anyhow::Result<OpenDatabase> {
        let url = self.database_url.clone().or_else(|| {
            std::env::var("DATABASE_URL")
                .ok()
                .filter(|u| !u.is_empty())
                .map(DatabaseUrl)
        });
        let (connect, embedded) = match url {
            Some(url) => (
                PgConnectOptions::from_str(&url.0).context("parsing the database URL")?,
                None,
            ),
            None => {
                let cluster = EmbeddedPostgres::start(&self.data_dir, true)?;
                (cluster.connect_options(), Some(cluster))
            }
        };
        tracing::info!(target = %describe_target(&connect), embedded = embedded.is_some(), "database");
        let settings = DatabaseSettings {
            max_connections: self.db_max_connections,
            min_connections: self.db_min_connections,
            acquire_timeout: self.db_acquire_timeout,
            statement_timeout: self.db_statement_timeout,
            statement_cache_capacity: self.db_statement_cache_capacity,
            test_before_acquire: self.db_test_before_acquire,
            batch_max: self.db_batch_max,
            ..DatabaseSettings::new(connect)
        };
        Ok(OpenDatabase { settings, embedded })
    }
}

impl OpenDatabase {
    /// Stops the embedded cluster if one was started.
    pub(crate) fn stop(&self) {
        if let Some(cluster) = &self.embedded {
            cluster.stop();
        }
    }
}
