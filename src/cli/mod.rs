//! The command line: `serve`, `migrate`, `explain`, `demo`, `seed` and `loadtest`. Every
//! `serve` flag can also be set through an `INSTAUTH_*` environment variable; the database URL
//! also through `DATABASE_URL`. Each tool's flags live beside the tool, `serve`'s in [`serve`].

mod serve;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::db;
use crate::telemetry::{self, LogFormat};
use crate::tools::database::DatabaseArgs;
use crate::tools::delay_proxy::{self, DelayProxyArgs};
use crate::tools::demo::{self, DemoArgs};
use crate::tools::explain::{self, ExplainArgs};
use crate::tools::loadtest::{self, LoadtestArgs};
use crate::tools::seed::{self, SeedArgs};
pub use serve::{IdentityArgs, ServeArgs};

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
    /// throughput and the server's statement and pool figures; or, with --storm, a fleet
    /// reconnecting at once.
    Loadtest(LoadtestArgs),
    /// Forward TCP between two loopback addresses, holding every chunk for a delay in each
    /// direction: a database at a realistic distance, for benchmarks.
    DelayProxy(DelayProxyArgs),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Migrate(args) => {
            let database = args.open()?;
            let result = db::migrate(&database.settings).await;
            database.stop();
            result.context("applying migrations")?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Explain(args) => explain::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Seed(args) => seed::run(args).await,
        Command::Loadtest(args) => loadtest::run(args).await,
        Command::DelayProxy(args) => tokio::task::spawn_blocking(move || delay_proxy::run(&args))
            .await
            .context("the delay proxy stopped")?,
    }
}
