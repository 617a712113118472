//! `serve`'s flags, turned into the [`Settings`] the application is built from.

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::auth::admission::AdmissionSettings;
use crate::auth::lookup::Lookup;
use crate::config::Settings;
use crate::http::Application;
use crate::identity::IdentitySettings;
use crate::identity::aws::{AwsPolicy, check_account_id};
use crate::identity::azure::{AzureSettings, IntermediateFetch};
use crate::identity::google::refresh::GOOGLE_JWKS_URL;
use crate::identity::google::{GoogleSettings, JwksSource};
use crate::tools::database::{DatabaseArgs, positive_duration};

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
    /// Authentication requests per minute per source IP (burst of the same size); beyond it 429.
    /// Off unless set.
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
    let database = args.database.open()?;
    let settings = Settings {
        bind: args.bind,
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
    };
    let result = run_application(settings).await;
    database.stop();
    result
}

/// Builds, announces and runs the application until a shutdown signal.
async fn run_application(settings: Settings) -> anyhow::Result<()> {
    let bind = settings.bind.clone();
    let app = Application::build(settings).await?;
    tracing::info!(bind = %bind, port = app.port(), "listening");
    app.run_until_stopped().await?;
    tracing::info!("stopped");
    Ok(())
}
