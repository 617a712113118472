//! Everything `serve` builds an [`crate::http::Application`] from: each part's own settings,
//! gathered. The command line fills them from flags and environment; tests fill them directly.

use std::time::Duration;

use crate::auth::admission::AdmissionSettings;
use crate::auth::lookup::Lookup;
use crate::client::TrustedProxies;
use crate::db::DatabaseSettings;
use crate::identity::IdentitySettings;

/// Everything [`crate::http::Application::build`] needs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free port (tests).
    pub bind: String,
    /// A listener of its own for `/metrics` (then not served on `bind`); port 0 as for `bind`.
    pub metrics_bind: Option<String>,
    /// Peers whose `X-Forwarded-For` names the client; empty: the peer is the client.
    pub trusted_proxies: TrustedProxies,
    pub database: DatabaseSettings,
    pub identity: IdentitySettings,
    pub admission: AdmissionSettings,
    /// Apply the embedded migrations before serving.
    pub migrate: bool,
    /// How long in-flight requests may take to finish after SIGINT/SIGTERM.
    pub shutdown_timeout: Duration,
    /// How candidates are looked up: the single statement, or a legacy replay (feature
    /// `legacy`).
    pub lookup: Lookup,
}
