//! `serve`'s flags, turned into the [`Settings`] the application is built from.

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::str::FromStr as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use sqlx::postgres::PgConnectOptions;

use crate::auth::admission::AdmissionSettings;
use crate::auth::lookup::Lookup;
use crate::client::TrustedProxies;
use crate::config::Settings;
use crate::db::{DatabaseSettings, describe_target};
use crate::http::Application;
use crate::identity::IdentitySettings;
use crate::identity::aws::{AwsPolicy, check_account_id};
use crate::identity::azure::{AzureSettings, IntermediateFetch};
use crate::identity::google::refresh::GOOGLE_JWKS_URL;
use crate::identity::google::{GoogleSettings, JwksSource};
use crate::tools::database::{DatabaseArgs, DatabaseUrl, OpenDatabase, positive_duration};

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "INSTAUTH_BIND", default_value = "127.0.0.1:3000")]
    pub bind: String,
    /// Serve /metrics on this address instead of --bind (where it then answers 404), so
    /// scrapes need not share the public port.
    #[arg(long, env = "INSTAUTH_METRICS_BIND", value_name = "ADDR")]
    pub metrics_bind: Option<String>,
    /// Proxies (CIDRs or addresses, comma-separated) whose X-Forwarded-For names the client:
    /// the rightmost hop outside these networks is the address logged and rate-limited.
    /// Default: none, the header is ignored and the connection's peer is the client. An empty
    /// or malformed entry stops the start.
    #[arg(
        long,
        env = "INSTAUTH_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR,..."
    )]
    pub trusted_proxies: Vec<String>,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub replicas: ReplicaArgs,
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Do not apply migrations (required on a real Coder database, where the schema is Coder's).
    #[arg(long, env = "INSTAUTH_NO_MIGRATE")]
    pub no_migrate: bool,
    /// Most authentication requests processed at once; beyond it requests get 503 at once.
    #[arg(long, env = "INSTAUTH_MAX_IN_FLIGHT", default_value_t = AdmissionSettings::DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: NonZeroUsize,
    /// Most request body bytes buffered across all authentication requests at once (a declared
    /// length is reserved before the body is read, a chunked body chunk by chunk); beyond it
    /// 503 at once. At least 65536 (one body of the largest accepted size).
    #[arg(long, env = "INSTAUTH_MAX_BUFFERED_BODY_BYTES", default_value_t = AdmissionSettings::DEFAULT_MAX_BUFFERED_BODY_BYTES, value_name = "BYTES")]
    pub max_buffered_body_bytes: NonZeroUsize,
    /// Most open HTTP connections, shared out over the worker threads (one per CPU, each
    /// taking an equal share, rounded down); beyond it new connections wait in the listen
    /// backlog until one closes.
    #[arg(long, env = "INSTAUTH_MAX_CONNECTIONS", default_value_t = AdmissionSettings::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: NonZeroUsize,
    /// Authentication requests per minute per client address (IPv4, or IPv6 /64; behind a
    /// proxy see --trusted-proxies), burst of the same size; beyond it 429. Off unless set.
    #[arg(long, env = "INSTAUTH_RATE_LIMIT_PER_MINUTE")]
    pub rate_limit_per_minute: Option<NonZeroU32>,
    /// Longest drain of in-flight requests on SIGINT/SIGTERM.
    #[arg(long, env = "INSTAUTH_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub shutdown_timeout: Duration,
    /// How agents are looked up. `single` is the product; the Coder replays exist only in
    /// builds with the `legacy` feature, for benchmarks.
    #[arg(long, env = "INSTAUTH_LOOKUP", value_enum, default_value_t = Lookup::Single)]
    pub lookup: Lookup,
}

/// Hot standbys the lookups go to first (`docs/dba.md`, "Read replicas").
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Read replicas")]
pub struct ReplicaArgs {
    /// PostgreSQL URL of a hot standby of the database (repeatable; comma-separated in the
    /// environment). Lookups go to a usable replica first; one that finds no agent the request
    /// could mean is asked of the primary before any 404. Each replica has a pool like the
    /// primary's.
    #[arg(
        long = "replica-url",
        env = "INSTAUTH_REPLICA_URL",
        value_delimiter = ',',
        hide_env_values = true,
        value_name = "URL"
    )]
    pub replica_urls: Vec<DatabaseUrl>,
    /// A replica whose replay is further behind than this is skipped until it catches up (a
    /// replica that has replayed everything it received is not behind, however idle the
    /// primary).
    #[arg(long, env = "INSTAUTH_REPLICA_MAX_LAG", default_value = "10s", value_parser = positive_duration, value_name = "DURATION")]
    pub replica_max_lag: Duration,
    /// How often each replica's state and lag are checked while it answers (one that does not
    /// is checked again after 1 s, doubling up to 30 s).
    #[arg(long, env = "INSTAUTH_REPLICA_CHECK_INTERVAL", default_value = "1s", value_parser = positive_duration, value_name = "DURATION")]
    pub replica_check_interval: Duration,
}

impl ReplicaArgs {
    /// Adds the replicas to `database`; a URL that does not parse stops the start.
    fn apply(&self, database: &mut DatabaseSettings) -> anyhow::Result<()> {
        database.replicas = self
            .replica_urls
            .iter()
            .enumerate()
            .map(|(index, url)| {
                PgConnectOptions::from_str(url.0.trim())
                    .with_context(|| format!("parsing --replica-url number {}", index + 1))
            })
            .collect::<anyhow::Result<_>>()?;
        for (index, replica) in database.replicas.iter().enumerate() {
            tracing::info!(replica = %format!("replica-{index}"), target = %describe_target(replica), "replica");
        }
        database.replica_max_lag = self.replica_max_lag;
        database.replica_check_interval = self.replica_check_interval;
        Ok(())
    }
}

/// What each cloud's material is checked against, and the optional hardening checks.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Identity verification")]
pub struct IdentityArgs {
    /// PEM bundle of extra AWS certificates, tried before the 14 embedded region certificates.
    #[arg(long, env = "INSTAUTH_AWS_CERTIFICATES")]
    pub aws_certificates: Option<PathBuf>,
    /// Accept AWS documents only from these accounts (document `accountId`, 12 digits each),
    /// comma-separated. Default: any account. An empty or malformed value stops the start.
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
    /// PEM bundle of Azure intermediate certificates, added to the 23 embedded ones.
    #[arg(long, env = "INSTAUTH_AZURE_INTERMEDIATES", value_name = "FILE")]
    pub azure_intermediates: Option<PathBuf>,
    /// Fetch a signer's missing intermediate from its certificate's CA-issuers URL (Microsoft
    /// and DigiCert hosts only, public addresses, ports 80/443), in the background: the request
    /// that lacked it gets 401, the agent's retry succeeds. A fetched certificate must chain to
    /// the pinned roots. `false` for air-gapped sites (then ship rotated intermediates with
    /// --azure-intermediates).
    #[arg(
        long,
        env = "INSTAUTH_AZURE_FETCH_INTERMEDIATES",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        require_equals = true,
        value_name = "BOOL"
    )]
    pub azure_fetch_intermediates: bool,
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
    /// Require this audience (`aud`) in Google tokens; the Coder agent always asks for `coder`.
    /// `any` checks nothing, as Coder does: a token the VM minted for any other service is
    /// then accepted here too.
    #[arg(
        long,
        env = "INSTAUTH_GOOGLE_AUDIENCE",
        default_value = GoogleSettings::DEFAULT_AUDIENCE,
        value_name = "AUD|any"
    )]
    pub google_audience: String,
    /// Accept Google tokens without `iss` (Coder's test tokens have none); a present `iss` must
    /// still be Google's.
    #[arg(long, env = "INSTAUTH_GOOGLE_ALLOW_MISSING_ISSUER")]
    pub google_allow_missing_issuer: bool,
    /// How long after its `exp` a Google token is still accepted.
    #[arg(long, env = "INSTAUTH_GOOGLE_LEEWAY", default_value = "60s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub google_leeway: Duration,
}

impl IdentityArgs {
    /// Reads the files named by the flags; their contents are parsed by the verifiers. An empty
    /// or malformed hardening value is an error, never "off".
    pub fn settings(&self) -> anyhow::Result<IdentitySettings> {
        let allowed_accounts: Vec<String> = self
            .aws_allowed_accounts
            .iter()
            .map(|id| id.trim().to_owned())
            .collect();
        for account in &allowed_accounts {
            check_account_id(account)?;
        }
        let audience = match self.google_audience.trim() {
            "" => anyhow::bail!("--google-audience is empty; use `any` to accept every audience"),
            "any" => None,
            audience => Some(audience.to_owned()),
        };
        let jwks = match &self.google_jwks {
            Some(path) => JwksSource::Document(read(path)?),
            None => JwksSource::Url(self.google_jwks_url.clone()),
        };
        Ok(IdentitySettings {
            aws_certificates_pem: self.aws_certificates.as_deref().map(read).transpose()?,
            aws_policy: AwsPolicy {
                allowed_accounts,
                max_instance_age: self.aws_max_instance_age,
            },
            azure: AzureSettings {
                roots_pem: self.azure_roots.as_deref().map(read).transpose()?,
                intermediates_pem: self.azure_intermediates.as_deref().map(read).transpose()?,
                expiry_skew: self.azure_expiry_skew,
                allow_missing_timestamp: self.azure_allow_missing_timestamp,
                fetch_intermediates: if self.azure_fetch_intermediates {
                    IntermediateFetch::Online
                } else {
                    IntermediateFetch::Off
                },
            },
            google: GoogleSettings {
                jwks,
                audience,
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

pub(super) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let identity = args.identity.settings()?;
    let trusted_proxies = TrustedProxies::parse(&args.trusted_proxies)?;
    let mut database = args.database.open()?;
    if let Err(err) = args.replicas.apply(&mut database.settings) {
        database.stop();
        return Err(err);
    }
    let settings = settings(args, identity, trusted_proxies, &database);
    let result = run_application(settings).await;
    database.stop();
    result
}

/// What the flags ask for, with the identity files read, the trusted proxies parsed and the
/// database opened.
fn settings(
    args: ServeArgs,
    identity: IdentitySettings,
    trusted_proxies: TrustedProxies,
    database: &OpenDatabase,
) -> Settings {
    Settings {
        bind: args.bind,
        metrics_bind: args.metrics_bind,
        trusted_proxies,
        database: database.settings.clone(),
        identity,
        admission: AdmissionSettings {
            max_in_flight: args.max_in_flight,
            rate_limit_per_minute: args.rate_limit_per_minute,
            max_buffered_body_bytes: args.max_buffered_body_bytes,
            max_connections: args.max_connections,
        },
        migrate: !args.no_migrate,
        shutdown_timeout: args.shutdown_timeout,
        lookup: args.lookup,
    }
}

/// Builds, announces and runs the application until a shutdown signal.
async fn run_application(settings: Settings) -> anyhow::Result<()> {
    let bind = settings.bind.clone();
    let app = Application::build(settings).await?;
    if let Some(metrics_port) = app.metrics_port() {
        tracing::info!(port = metrics_port, "serving /metrics apart");
    }
    tracing::info!(bind = %bind, port = app.port(), "listening");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use clap::{CommandFactory as _, Parser as _};

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::identity::clock::Clock;
    use crate::telemetry::LogFormat;

    /// Set in the child process that checks the environment twins.
    const CHILD: &str = "INSTAUTH_SERVE_FLAGS_TEST_CHILD";
    /// In the child: the directory holding the files the file flags name.
    const CHILD_DIR: &str = "INSTAUTH_SERVE_FLAGS_TEST_DIR";
    const FULL_NAME: &str = "cli::serve::tests::every_environment_variable_reaches_its_setting";

    #[cfg(feature = "legacy")]
    const LOOKUP: &str = "coder-rc3";
    #[cfg(not(feature = "legacy"))]
    const LOOKUP: &str = "single";

    /// Every flag `serve` takes (its own and the global --log-format), its environment twin,
    /// and a value other than its default; `None` for a switch that is only present.
    fn flags(dir: &Path) -> Vec<(&'static str, &'static str, Option<String>)> {
        let file = |name: &str| Some(dir.join(name).display().to_string());
        let value = |text: &str| Some(text.to_owned());
        vec![
            ("--bind", "INSTAUTH_BIND", value("127.0.0.9:4321")),
            (
                "--metrics-bind",
                "INSTAUTH_METRICS_BIND",
                value("127.0.0.9:9464"),
            ),
            (
                "--trusted-proxies",
                "INSTAUTH_TRUSTED_PROXIES",
                value("10.0.0.0/8,192.0.2.7"),
            ),
            (
                "--database-url",
                "INSTAUTH_DATABASE_URL",
                value("postgres://flags:secret@127.0.0.9:5499/flagsdb"),
            ),
            ("--data-dir", "INSTAUTH_DATA_DIR", file("data")),
            (
                "--db-max-connections",
                "INSTAUTH_DB_MAX_CONNECTIONS",
                value("7"),
            ),
            (
                "--db-min-connections",
                "INSTAUTH_DB_MIN_CONNECTIONS",
                value("3"),
            ),
            (
                "--db-acquire-timeout",
                "INSTAUTH_DB_ACQUIRE_TIMEOUT",
                value("750ms"),
            ),
            (
                "--db-statement-timeout",
                "INSTAUTH_DB_STATEMENT_TIMEOUT",
                value("1500ms"),
            ),
            (
                "--db-statement-cache-capacity",
                "INSTAUTH_DB_STATEMENT_CACHE_CAPACITY",
                value("17"),
            ),
            (
                "--db-test-before-acquire",
                "INSTAUTH_DB_TEST_BEFORE_ACQUIRE",
                None,
            ),
            ("--db-batch-max", "INSTAUTH_DB_BATCH_MAX", value("9")),
            (
                "--aws-certificates",
                "INSTAUTH_AWS_CERTIFICATES",
                file("aws.pem"),
            ),
            (
                "--aws-allowed-accounts",
                "INSTAUTH_AWS_ALLOWED_ACCOUNTS",
                value("111122223333,444455556666"),
            ),
            (
                "--aws-max-instance-age",
                "INSTAUTH_AWS_MAX_INSTANCE_AGE",
                value("30d"),
            ),
            ("--azure-roots", "INSTAUTH_AZURE_ROOTS", file("roots.pem")),
            (
                "--azure-intermediates",
                "INSTAUTH_AZURE_INTERMEDIATES",
                file("intermediates.pem"),
            ),
            (
                "--azure-fetch-intermediates",
                "INSTAUTH_AZURE_FETCH_INTERMEDIATES",
                value("false"),
            ),
            (
                "--azure-expiry-skew",
                "INSTAUTH_AZURE_EXPIRY_SKEW",
                value("7m"),
            ),
            (
                "--azure-allow-missing-timestamp",
                "INSTAUTH_AZURE_ALLOW_MISSING_TIMESTAMP",
                None,
            ),
            ("--google-jwks", "INSTAUTH_GOOGLE_JWKS", file("jwks.json")),
            (
                "--google-jwks-url",
                "INSTAUTH_GOOGLE_JWKS_URL",
                value("http://127.0.0.9:1/certs"),
            ),
            (
                "--google-audience",
                "INSTAUTH_GOOGLE_AUDIENCE",
                value("flags-audience"),
            ),
            (
                "--google-allow-missing-issuer",
                "INSTAUTH_GOOGLE_ALLOW_MISSING_ISSUER",
                None,
            ),
            ("--google-leeway", "INSTAUTH_GOOGLE_LEEWAY", value("90s")),
            ("--no-migrate", "INSTAUTH_NO_MIGRATE", None),
            ("--max-in-flight", "INSTAUTH_MAX_IN_FLIGHT", value("321")),
            (
                "--max-buffered-body-bytes",
                "INSTAUTH_MAX_BUFFERED_BODY_BYTES",
                value("131072"),
            ),
            ("--max-connections", "INSTAUTH_MAX_CONNECTIONS", value("99")),
            (
                "--rate-limit-per-minute",
                "INSTAUTH_RATE_LIMIT_PER_MINUTE",
                value("77"),
            ),
            (
                "--shutdown-timeout",
                "INSTAUTH_SHUTDOWN_TIMEOUT",
                value("3s"),
            ),
            ("--lookup", "INSTAUTH_LOOKUP", value(LOOKUP)),
            (
                "--replica-url",
                "INSTAUTH_REPLICA_URL",
                value("postgres://r:pw@127.0.0.9:5501/a,postgres://r:pw@127.0.0.9:5502/b"),
            ),
            ("--replica-max-lag", "INSTAUTH_REPLICA_MAX_LAG", value("3s")),
            (
                "--replica-check-interval",
                "INSTAUTH_REPLICA_CHECK_INTERVAL",
                value("250ms"),
            ),
            ("--log-format", "INSTAUTH_LOG_FORMAT", value("json")),
        ]
    }

    /// The files the file flags name, each with its own content.
    fn write_files(dir: &Path) {
        for name in ["aws.pem", "roots.pem", "intermediates.pem", "jwks.json"] {
            std::fs::write(dir.join(name), format!("contents of {name}")).expect("write");
        }
    }

    fn contents(name: &str) -> Option<Vec<u8>> {
        Some(format!("contents of {name}").into_bytes())
    }

    /// Asserts every field of the settings `cli` leads to: each the value [`flags`] gave,
    /// except the Google keys, which come from the URL when `from_file` is false. Fields are
    /// destructured without `..`, so a field added to the settings fails to compile here
    /// until it is checked.
    fn assert_every_setting(cli: Cli, dir: &Path, from_file: bool) {
        assert_eq!(cli.log_format, LogFormat::Json);
        let Command::Serve(args) = cli.command else {
            panic!("not serve: {:?}", cli.command)
        };
        assert_eq!(args.database.data_dir, dir.join("data"));
        let identity = args.identity.settings().expect("identity settings");
        let proxies = TrustedProxies::parse(&args.trusted_proxies).expect("trusted proxies");
        let mut database = args.database.open().expect("a database URL opens nothing");
        assert!(database.embedded.is_none());
        args.replicas
            .apply(&mut database.settings)
            .expect("replica URLs parse");
        let Settings {
            bind,
            metrics_bind,
            trusted_proxies,
            database,
            identity,
            admission,
            migrate,
            shutdown_timeout,
            lookup,
        } = settings(*args, identity, proxies, &database);
        assert_eq!(bind, "127.0.0.9:4321");
        assert_eq!(metrics_bind.as_deref(), Some("127.0.0.9:9464"));
        assert_eq!(
            trusted_proxies,
            TrustedProxies::parse(&["10.0.0.0/8".to_owned(), "192.0.2.7".to_owned()])
                .expect("parse")
        );
        assert_ne!(trusted_proxies, TrustedProxies::default());
        assert!(!migrate);
        assert_eq!(shutdown_timeout, Duration::from_secs(3));
        assert_eq!(
            lookup,
            <Lookup as clap::ValueEnum>::from_str(LOOKUP, false).expect("lookup")
        );
        #[cfg(feature = "legacy")]
        assert_ne!(lookup, Lookup::default());
        let AdmissionSettings {
            max_in_flight,
            rate_limit_per_minute,
            max_buffered_body_bytes,
            max_connections,
        } = admission;
        assert_eq!(max_buffered_body_bytes.get(), 131_072);
        assert_eq!(max_connections.get(), 99);
        assert_eq!(max_in_flight.get(), 321);
        assert_eq!(rate_limit_per_minute.map(NonZeroU32::get), Some(77));
        let DatabaseSettings {
            connect,
            max_connections,
            min_connections,
            acquire_timeout,
            statement_timeout,
            statement_cache_capacity,
            test_before_acquire,
            batch_max,
            idle_timeout,
            max_lifetime,
            replicas,
            replica_max_lag,
            replica_check_interval,
        } = database;
        let replica_ports: Vec<u16> = replicas.iter().map(|r| r.get_port()).collect();
        assert_eq!(replica_ports, [5501, 5502]);
        assert_eq!(replicas[1].get_database(), Some("b"));
        assert_eq!(replica_max_lag, Duration::from_secs(3));
        assert_eq!(replica_check_interval, Duration::from_millis(250));
        assert_eq!(connect.get_host(), "127.0.0.9");
        assert_eq!(connect.get_port(), 5499);
        assert_eq!(connect.get_username(), "flags");
        assert_eq!(connect.get_database(), Some("flagsdb"));
        assert_eq!(max_connections, 7);
        assert_eq!(min_connections, 3);
        assert_eq!(acquire_timeout, Duration::from_millis(750));
        assert_eq!(statement_timeout, Duration::from_millis(1500));
        assert_eq!(statement_cache_capacity, 17);
        assert!(test_before_acquire);
        assert_eq!(batch_max, 9);
        // No flag sets these; the defaults stand.
        assert_eq!(idle_timeout, DatabaseSettings::DEFAULT_IDLE_TIMEOUT);
        assert_eq!(max_lifetime, DatabaseSettings::DEFAULT_MAX_LIFETIME);
        let IdentitySettings {
            aws_certificates_pem,
            aws_policy,
            azure,
            google,
            clock,
        } = identity;
        assert_eq!(aws_certificates_pem, contents("aws.pem"));
        assert_eq!(
            aws_policy,
            AwsPolicy {
                allowed_accounts: vec!["111122223333".to_owned(), "444455556666".to_owned()],
                max_instance_age: Some(Duration::from_secs(30 * 86_400)),
            }
        );
        assert_eq!(
            azure,
            AzureSettings {
                roots_pem: contents("roots.pem"),
                intermediates_pem: contents("intermediates.pem"),
                expiry_skew: Duration::from_secs(7 * 60),
                allow_missing_timestamp: true,
                fetch_intermediates: IntermediateFetch::Off,
            }
        );
        assert_eq!(
            google,
            GoogleSettings {
                jwks: if from_file {
                    JwksSource::Document(contents("jwks.json").expect("contents"))
                } else {
                    JwksSource::Url("http://127.0.0.9:1/certs".to_owned())
                },
                audience: Some("flags-audience".to_owned()),
                allow_missing_issuer: true,
                leeway: Duration::from_secs(90),
            }
        );
        assert_eq!(clock, Clock::default(), "no flag sets the clock");
    }

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "instauth-serve-flags-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        write_files(&dir);
        dir
    }

    /// The table covers exactly the flags `serve` has, each with an `INSTAUTH_*` twin: a flag
    /// added without a row here fails this test.
    #[test]
    fn the_table_covers_every_serve_flag() {
        let mut command = Cli::command();
        command.build();
        let serve = command.find_subcommand("serve").expect("serve");
        let declared: BTreeSet<(String, String)> = serve
            .get_arguments()
            .filter(|arg| !matches!(arg.get_id().as_str(), "help" | "version"))
            .map(|arg| {
                let long = arg
                    .get_long()
                    .unwrap_or_else(|| panic!("{} has no --flag", arg.get_id()));
                let env = arg
                    .get_env()
                    .unwrap_or_else(|| panic!("--{long} has no environment variable"));
                (format!("--{long}"), env.to_string_lossy().into_owned())
            })
            .collect();
        let covered: BTreeSet<(String, String)> = flags(Path::new("/"))
            .into_iter()
            .map(|(flag, env, _)| (flag.to_owned(), env.to_owned()))
            .collect();
        assert_eq!(declared, covered);
        for (_, env) in &declared {
            assert!(env.starts_with("INSTAUTH_"), "{env}");
        }
    }

    /// Every flag set on the command line reaches its setting; then every flag but
    /// --google-jwks, so --google-jwks-url is the source.
    #[test]
    fn every_flag_reaches_its_setting() {
        let dir = scratch();
        for from_file in [true, false] {
            let mut argv = vec!["instauth".to_owned(), "serve".to_owned()];
            for (flag, _, value) in flags(&dir) {
                if flag == "--google-jwks" && !from_file {
                    continue;
                }
                match value {
                    Some(value) => argv.push(format!("{flag}={value}")),
                    None => argv.push(flag.to_owned()),
                }
            }
            let cli = Cli::try_parse_from(&argv).unwrap_or_else(|err| panic!("{argv:?}: {err}"));
            assert_every_setting(cli, &dir, from_file);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The same through the environment alone (`instauth serve`, no flags). Environment
    /// variables are process-wide, so this test checks them in a child process: the test
    /// binary runs only this test again, with the variables set.
    #[test]
    fn every_environment_variable_reaches_its_setting() {
        if let Ok(mode) = std::env::var(CHILD) {
            let dir = PathBuf::from(std::env::var(CHILD_DIR).expect("dir"));
            let cli = Cli::try_parse_from(["instauth", "serve"]).expect("parses");
            assert_every_setting(cli, &dir, mode == "file");
            return;
        }
        let dir = scratch();
        for mode in ["file", "url"] {
            let mut child = std::process::Command::new(std::env::current_exe().expect("exe"));
            child
                .args([FULL_NAME, "--exact", "--test-threads", "1"])
                .env(CHILD, mode)
                .env(CHILD_DIR, &dir)
                .env_remove("DATABASE_URL");
            for (flag, env, value) in flags(&dir) {
                if flag == "--google-jwks" && mode == "url" {
                    child.env_remove(env);
                    continue;
                }
                child.env(env, value.as_deref().unwrap_or("true"));
            }
            let output = child.output().expect("runs");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success() && stdout.contains("1 passed"),
                "{mode}: {}\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
