//! The command line: `serve`, `migrate`, `explain`, `demo`, `seed` and `loadtest`. Every
//! `serve` flag can also be set through an `INSTAUTH_*` environment variable; the database URL
//! also through `DATABASE_URL`.

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use sqlx::postgres::PgConnectOptions;

use crate::admission::AdmissionSettings;
use crate::config::{DatabaseSettings, DatabaseUrl, Settings, describe_target};
use crate::embedded_pg::EmbeddedPostgres;
use crate::identity::IdentitySettings;
use crate::identity::aws::AwsPolicy;
use crate::identity::azure::AzureSettings;
use crate::identity::google::{GoogleSettings, JwksSource};
use crate::identity::google_refresh::GOOGLE_JWKS_URL;
use crate::loadtest::{self, LoadtestArgs};
use crate::seed::{self, SeedArgs};
use crate::startup::Application;
use crate::strategy::Strategy;
use crate::telemetry::{self, LogFormat};
use crate::{db, demo, explain};

#[derive(Debug, Parser)]
#[command(
    name = "instauth",
    version,
    about = "Coder-compatible cloud instance-identity authentication, one SQL statement per request"
)]
pub struct Cli {
    /// Log line format.
    #[arg(
        long,
        global = true,
        env = "INSTAUTH_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the three instance-identity endpoints (applies migrations unless --no-migrate).
    Serve(Box<ServeArgs>),
    /// Apply the schema migrations and exit.
    Migrate(DatabaseArgs),
    /// Print the plan (EXPLAIN ANALYZE, BUFFERS) of every request-path query for one instance
    /// id. Read-only (safe on a primary or a replica); connect it straight to PostgreSQL, not
    /// through PgBouncer.
    Explain(ExplainArgs),
    /// Start on the embedded database with demo data and a throwaway AWS key, and print curl
    /// commands that authenticate against it.
    Demo(DemoArgs),
    /// Fill a database with a load-test shape and write a test key, the serve flags that
    /// trust it, and a request corpus.
    Seed(SeedArgs),
    /// Drive a running instauth with a corpus for a bounded time and report latency,
    /// throughput and the server's statement and pool figures.
    Loadtest(LoadtestArgs),
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
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "INSTAUTH_BIND", default_value = "127.0.0.1:3000")]
    pub bind: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Do not apply migrations (required on a real Coder database, where the schema is Coder's).
    #[arg(long, env = "INSTAUTH_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Most authentication requests processed at once; beyond it requests get 503 at once.
    #[arg(long, env = "INSTAUTH_MAX_IN_FLIGHT", default_value_t = AdmissionSettings::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: NonZeroUsize,
    /// Authentication requests per minute per source IP (burst of the same size); beyond it 429.
    /// Off unless set.
    #[arg(long, env = "INSTAUTH_RATE_LIMIT_PER_MINUTE")]
    pub rate_limit_per_minute: Option<NonZeroU32>,
    /// Longest drain of in-flight requests on SIGINT/SIGTERM.
    #[arg(long, env = "INSTAUTH_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub shutdown_timeout: Duration,
    /// How agents are looked up. `single` is the product; the Coder replays exist only in
    /// builds with the `legacy` feature, for benchmarks.
    #[arg(long, env = "INSTAUTH_LOOKUP", value_enum, default_value_t = Strategy::Single)]
    pub lookup: Strategy,
}

/// What each cloud's material is checked against, and the optional hardening checks.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Identity verification")]
pub struct IdentityArgs {
    /// PEM bundle of extra AWS certificates, tried before the 14 embedded region certificates.
    #[arg(long, env = "INSTAUTH_AWS_CERTIFICATES")]
    pub aws_certificates: Option<PathBuf>,
    /// Accept AWS documents only from these accounts (document `accountId`), comma-separated.
    /// Default: any account.
    #[arg(
        long,
        env = "INSTAUTH_AWS_ALLOWED_ACCOUNTS",
        value_delimiter = ',',
        value_name = "ID,..."
    )]
    pub aws_allowed_accounts: Vec<String>,
    /// Reject AWS documents of instances launched longer ago than this (document
    /// `pendingTime`), e.g. 30d. Default: no limit.
    #[arg(long, env = "INSTAUTH_AWS_MAX_INSTANCE_AGE", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub aws_max_instance_age: Option<Duration>,
    /// PEM bundle of Azure root certificates, replacing the 3 embedded roots.
    #[arg(long, env = "INSTAUTH_AZURE_ROOTS", value_name = "FILE")]
    pub azure_roots: Option<PathBuf>,
    /// PEM bundle of Azure intermediate certificates, added to the 23 embedded ones (nothing is
    /// fetched online).
    #[arg(long, env = "INSTAUTH_AZURE_INTERMEDIATES", value_name = "FILE")]
    pub azure_intermediates: Option<PathBuf>,
    /// How long after its `timeStamp.expiresOn` Azure attested data is still accepted.
    #[arg(long, env = "INSTAUTH_AZURE_EXPIRY_SKEW", default_value = "5m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub azure_expiry_skew: Duration,
    /// Accept Azure attested data whose `timeStamp.expiresOn` is missing or unparsable (it is
    /// then not checked for expiry).
    #[arg(long, env = "INSTAUTH_AZURE_ALLOW_MISSING_TIMESTAMP")]
    pub azure_allow_missing_timestamp: bool,
    /// Google JWKS file: loaded once, never refreshed, nothing fetched. Without it, keys come
    /// from --google-jwks-url.
    #[arg(long, env = "INSTAUTH_GOOGLE_JWKS", value_name = "FILE")]
    pub google_jwks: Option<PathBuf>,
    /// Where Google's keys are fetched when no --google-jwks is given: at startup, then as the
    /// response's Cache-Control says (1h without), early on an unknown kid, at most once a
    /// minute; failed fetches keep the last keys for up to 24h.
    #[arg(long, env = "INSTAUTH_GOOGLE_JWKS_URL", default_value = GOOGLE_JWKS_URL, value_name = "URL")]
    pub google_jwks_url: String,
    /// Require this audience (`aud`) in Google tokens; the Coder agent asks for `coder`.
    /// Default: not checked.
    #[arg(long, env = "INSTAUTH_GOOGLE_AUDIENCE")]
    pub google_audience: Option<String>,
    /// Accept Google tokens without `iss` (Coder's test tokens have none); a present `iss` must
    /// still be Google's.
    #[arg(long, env = "INSTAUTH_GOOGLE_ALLOW_MISSING_ISSUER")]
    pub google_allow_missing_issuer: bool,
    /// How long after its `exp` a Google token is still accepted.
    #[arg(long, env = "INSTAUTH_GOOGLE_LEEWAY", default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub google_leeway: Duration,
}

impl IdentityArgs {
    /// Reads the files named by the flags; their contents are parsed by the verifiers.
    pub fn settings(&self) -> anyhow::Result<IdentitySettings> {
        let jwks = match &self.google_jwks {
            Some(path) => JwksSource::Document(read(path)?),
            None => JwksSource::Url(self.google_jwks_url.clone()),
        };
        Ok(IdentitySettings {
            aws_certificates_pem: self.aws_certificates.as_deref().map(read).transpose()?,
            aws_policy: AwsPolicy {
                allowed_accounts: self
                    .aws_allowed_accounts
                    .iter()
                    .map(|id| id.trim().to_owned())
                    .filter(|id| !id.is_empty())
                    .collect(),
                max_instance_age: self.aws_max_instance_age,
            },
            azure: AzureSettings {
                roots_pem: self.azure_roots.as_deref().map(read).transpose()?,
                intermediates_pem: self.azure_intermediates.as_deref().map(read).transpose()?,
                expiry_skew: self.azure_expiry_skew,
                allow_missing_timestamp: self.azure_allow_missing_timestamp,
            },
            google: GoogleSettings {
                jwks,
                audience: self.google_audience.clone().filter(|aud| !aud.is_empty()),
                allow_missing_issuer: self.google_allow_missing_issuer,
                leeway: self.google_leeway,
            },
            ..IdentitySettings::default()
        })
    }
}

fn read(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Instance id to explain the lookup for; without it, the smallest one that has a
    /// candidate agent is picked.
    #[arg(long, env = "INSTAUTH_INSTANCE_ID")]
    pub instance_id: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Address to listen on.
    #[arg(long, env = "INSTAUTH_BIND", default_value = "127.0.0.1:3000")]
    pub bind: String,
    /// Directory of the demo's own embedded cluster. The demo never uses DATABASE_URL: it
    /// writes demo rows, which have no place in a real database.
    #[arg(long, env = "INSTAUTH_DATA_DIR", default_value = ".instauth")]
    pub data_dir: PathBuf,
}

/// A duration of at least one millisecond: zero would silently disable a timeout
/// (PostgreSQL's `statement_timeout = 0`) or the shutdown drain.
fn positive_duration(text: &str) -> Result<Duration, String> {
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

/// A database to talk to, and the embedded cluster behind it if one was started.
#[derive(Debug)]
pub struct Database {
    pub settings: DatabaseSettings,
    pub embedded: Option<EmbeddedPostgres>,
}

impl DatabaseArgs {
    /// Resolves the URL (flag, INSTAUTH_DATABASE_URL, then DATABASE_URL) or starts the
    /// embedded cluster.
    pub fn open(&self) -> anyhow::Result<Database> {
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
            ..DatabaseSettings::new(connect)
        };
        Ok(Database { settings, embedded })
    }
}

impl Database {
    /// Stops the embedded cluster if one was started.
    pub fn stop(&self) {
        if let Some(cluster) = &self.embedded {
            cluster.stop();
        }
    }
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(args) => serve(*args).await,
        Command::Migrate(args) => {
            let database = args.open()?;
            let result = db::migrate(&database.settings).await;
            database.stop();
            result.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Explain(args) => {
            let database = args.database.open()?;
            let result = explain::report(&database.settings, args.instance_id.as_deref()).await;
            database.stop();
            print!("{}", result?.render());
            Ok(())
        }
        Command::Demo(args) => demo::run(args).await,
        Command::Seed(args) => seed::run(args).await,
        Command::Loadtest(args) => loadtest::run(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let identity = args.identity.settings()?;
    let database = args.database.open()?;
    let settings = Settings {
        bind: args.bind,
        database: database.settings.clone(),
        identity,
        admission: AdmissionSettings {
            max_in_flight: args.max_in_flight,
            rate_limit_per_minute: args.rate_limit_per_minute,
        },
        migrate: !args.no_migrate,
        shutdown_timeout: args.shutdown_timeout,
        lookup: args.lookup,
    };
    let result = run_application(settings).await;
    database.stop();
    result
}

/// Builds, announces and runs the application until a shutdown signal.
pub async fn run_application(settings: Settings) -> anyhow::Result<()> {
    let bind = settings.bind.clone();
    let app = Application::build(settings).await?;
    tracing::info!(bind = %bind, port = app.port(), "listening");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
