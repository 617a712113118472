//! The command line: `serve`, `migrate`, `demo`, `seed` and `loadtest`. Every `serve` flag can
//! also be set through an `INSTAUTH_*` environment variable; the database URL also through
//! `DATABASE_URL`.

use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use sqlx::postgres::PgConnectOptions;

use crate::config::{DatabaseSettings, Settings, describe_target};
use crate::embedded_pg::EmbeddedPostgres;
use crate::identity::IdentitySettings;
use crate::loadtest::{self, LoadtestArgs};
use crate::seed::{self, SeedArgs};
use crate::startup::Application;
use crate::strategy::Strategy;
use crate::telemetry::{self, LogFormat};
use crate::{db, demo};

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
    Serve(ServeArgs),
    /// Apply the schema migrations and exit.
    Migrate(DatabaseArgs),
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
    pub database_url: Option<String>,
    /// Directory of the embedded cluster (used only without a database URL).
    #[arg(long, env = "INSTAUTH_DATA_DIR", default_value = ".instauth")]
    pub data_dir: PathBuf,
    /// Most pooled connections.
    #[arg(long, env = "INSTAUTH_DB_MAX_CONNECTIONS", default_value_t = DatabaseSettings::DEFAULT_MAX_CONNECTIONS)]
    pub db_max_connections: u32,
    /// Connections kept open when idle.
    #[arg(long, env = "INSTAUTH_DB_MIN_CONNECTIONS", default_value_t = 0)]
    pub db_min_connections: u32,
    /// Longest wait for a pooled connection before answering 503 (e.g. 2s, 500ms).
    #[arg(long, env = "INSTAUTH_DB_ACQUIRE_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub db_acquire_timeout: Duration,
    /// PostgreSQL statement_timeout for every statement (e.g. 2s).
    #[arg(long, env = "INSTAUTH_DB_STATEMENT_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub db_statement_timeout: Duration,
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
    /// PEM bundle of extra AWS certificates, tried before the 14 embedded region certificates.
    #[arg(long, env = "INSTAUTH_AWS_CERTIFICATES")]
    pub aws_certificates: Option<PathBuf>,
    /// Do not apply migrations (required on a real Coder database, where the schema is Coder's).
    #[arg(long, env = "INSTAUTH_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Longest drain of in-flight requests on SIGINT/SIGTERM.
    #[arg(long, env = "INSTAUTH_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// How agents are looked up. `single` is the product; the Coder replays exist only in
    /// builds with the `legacy` feature, for benchmarks.
    #[arg(long, env = "INSTAUTH_LOOKUP", value_enum, default_value_t = Strategy::Single)]
    pub lookup: Strategy,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Address to listen on.
    #[arg(long, env = "INSTAUTH_BIND", default_value = "127.0.0.1:3000")]
    pub bind: String,
    #[command(flatten)]
    pub database: DatabaseArgs,
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
        let url = self
            .database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()));
        let (connect, embedded) = match url {
            Some(url) => (
                PgConnectOptions::from_str(&url).context("parsing the database URL")?,
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
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => {
            let database = args.open()?;
            let result = db::migrate(&db::pool(&database.settings)).await;
            database.stop();
            result.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Demo(args) => demo::run(args).await,
        Command::Seed(args) => seed::run(args).await,
        Command::Loadtest(args) => loadtest::run(args).await,
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let aws_certificates_pem = args
        .aws_certificates
        .as_ref()
        .map(|path| std::fs::read(path).with_context(|| format!("reading {}", path.display())))
        .transpose()?;
    let database = args.database.open()?;
    let settings = Settings {
        bind: args.bind,
        database: database.settings.clone(),
        identity: IdentitySettings {
            aws_certificates_pem,
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
