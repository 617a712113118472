//! Turning posted cloud identity material into a proven instance id, or a reason it is not one.
//!
//! Each provider module parses its trust material once at startup and exposes a `verify` that
//! does no I/O and takes "now" as an argument (from [`clock::Clock`]), so handlers can call it
//! directly and tests can pin time. The only network access is Google's JWKS refresh, in a
//! background task ([`google_refresh`]) and only without `--google-jwks`.

pub mod aws;
pub mod azure;
pub mod azure_trust;
pub mod clock;
pub mod google;
pub mod google_jwks;
pub mod google_refresh;

use std::fmt;

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

/// All verifiers and the clock they are asked with, built once at startup.
#[derive(Debug)]
pub struct Verifiers {
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
    pub fn new(settings: &IdentitySettings) -> anyhow::Result<Self> {
        let azure = azure::AzureVerifier::new(&settings.azure)?;
        azure_trust::log_expiry(azure.trust(), settings.clock.now());
        Ok(Self {
            aws: aws::AwsVerifier::new(
                settings.aws_certificates_pem.as_deref(),
                &settings.aws_policy,
            )?,
            azure,
            google: google::GoogleVerifier::new(&settings.google)?,
            clock: settings.clock,
        })
    }
}
