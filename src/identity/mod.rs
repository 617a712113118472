//! Turning posted cloud identity material into a proven instance id, or a reason it is not one.
//!
//! Each provider module parses its trust material once at startup and exposes a `verify` that
//! does no I/O and takes "now" as an argument (from [`clock::Clock`]), so handlers can call it
//! directly and tests can pin time. The only network access happens in background tasks:
//! Google's JWKS refresh ([`google::refresh`], only without `--google-jwks`) and fetching
//! missing Azure intermediates ([`azure::fetch`], unless `--azure-fetch-intermediates=false`).

pub mod aws;
pub mod azure;
pub mod clock;
pub mod google;

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// The cloud that vouched for an instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Aws,
    Azure,
    Google,
}

impl Provider {
    /// Every provider, so metrics can show each one at zero before its first request.
    pub const ALL: [Provider; 3] = [Provider::Aws, Provider::Azure, Provider::Google];

    /// Lower-case label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Azure => "azure",
            Provider::Google => "google",
        }
    }

    /// The word Coder puts in `Invalid … identity.`.
    pub fn message_name(self) -> &'static str {
        match self {
            Provider::Aws => "AWS",
            Provider::Azure => "Azure",
            Provider::Google => "GCP",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why identity material was rejected. The text becomes the 401's `detail`: short, and never
/// echoing key material or the posted bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

impl Rejected {
    pub fn new(detail: impl Into<String>) -> Self {
        Self(detail.into())
    }
}

/// At most the first `max` characters of untrusted text a rejection quotes, so a detail stays
/// short whatever was posted.
fn shorten(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Standard, padded base64 as metadata services and shells hand it over: wrapped lines are
/// fine (whitespace is dropped first). Text longer than `max_len` once compacted is refused as
/// `too_long` before any decoding.
fn decode_wrapped_base64(
    text: &str,
    max_len: usize,
    too_long: &'static str,
) -> Result<Vec<u8>, Rejected> {
    // Sized once (collecting from a filter would grow the buffer step by step), and one byte
    // past the limit is enough to know the text is too long.
    let limit = max_len.saturating_add(1);
    let mut compact = Vec::with_capacity(text.len().min(limit));
    compact.extend(
        text.bytes()
            .filter(|b| !b.is_ascii_whitespace())
            .take(limit),
    );
    if compact.len() > max_len {
        return Err(Rejected::new(too_long));
    }
    STANDARD
        .decode(&compact)
        .map_err(|err| Rejected::new(format!("decode signature: {err}")))
}

/// All verifiers and the clock they are asked with, built once at startup.
#[derive(Debug)]
pub(crate) struct Verifiers {
    pub aws: aws::AwsVerifier,
    pub azure: azure::AzureVerifier,
    pub google: google::GoogleVerifier,
    pub clock: clock::Clock,
}

/// Trust configuration for [`Verifiers::new`]. The default trusts the embedded AWS and Azure
/// material, has no Google keys (so it never reaches the network), applies no optional
/// hardening and reads the system clock.
#[derive(Debug, Clone, Default)]
pub struct IdentitySettings {
    /// Extra AWS certificates (PEM bundle), tried before the embedded region certificates.
    pub aws_certificates_pem: Option<Vec<u8>>,
    pub aws_policy: aws::AwsPolicy,
    pub azure: azure::AzureSettings,
    pub google: google::GoogleSettings,
    pub clock: clock::Clock,
}

impl Verifiers {
    pub(crate) fn new(settings: &IdentitySettings) -> anyhow::Result<Self> {
        let azure = azure::AzureVerifier::new(&settings.azure)?;
        azure::log_expiry(azure.trust(), settings.clock.now());
        let verifiers = Self {
            aws: aws::AwsVerifier::new(
                settings.aws_certificates_pem.as_deref(),
                &settings.aws_policy,
            )?,
            azure,
            google: google::GoogleVerifier::new(&settings.google)?,
            clock: settings.clock,
        };
        log_policy(settings);
        Ok(verifiers)
    }
}

/// One line per provider saying what is checked, so an operator sees the effective policy
/// (defaults included) once at start.
fn log_policy(settings: &IdentitySettings) {
    let aws = &settings.aws_policy;
    tracing::info!(
        provider = %Provider::Aws,
        allowed_accounts = if aws.allowed_accounts.is_empty() {
            "any".to_owned()
        } else {
            aws.allowed_accounts.join(",")
        },
        max_instance_age = aws
            .max_instance_age
            .map_or_else(|| "none".to_owned(), |age| humantime::format_duration(age).to_string()),
        extra_certificates = settings.aws_certificates_pem.is_some(),
        "identity policy"
    );
    let azure = &settings.azure;
    tracing::info!(
        provider = %Provider::Azure,
        roots = if azure.roots_pem.is_some() { "configured" } else { "embedded" },
        extra_intermediates = azure.intermediates_pem.is_some(),
        fetch_intermediates = ?azure.fetch_intermediates,
        expiry_skew = %humantime::format_duration(azure.expiry_skew),
        allow_missing_timestamp = azure.allow_missing_timestamp,
        "identity policy"
    );
    let google = &settings.google;
    tracing::info!(
        provider = %Provider::Google,
        keys = match &google.jwks {
            google::JwksSource::Disabled => "none",
            google::JwksSource::Document(_) => "file",
            google::JwksSource::Url(_) => "url",
        },
        audience = google.audience.as_deref().unwrap_or("any"),
        issuer = if google.allow_missing_issuer { "google or missing" } else { "google" },
        leeway = %humantime::format_duration(google.leeway),
        "identity policy"
    );
}
