//! Everything `serve` builds an [`crate::http::Application`] from: each part's own settings,
//! gathered. The command line fills them from flags and environment; tests fill them directly.

use std::time::Duration;

use crate::auth::admission::AdmissionSettings;
use crate::auth::lookup::Lookup;
use crate::db::DatabaseSettings;
use crate::identity::IdentitySettings;

/// Everything [`crate::http::Application::build`] needs.
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
    /// How candidates are looked up: the single statement, or a legacy replay (feature
    /// `legacy`).
    pub lookup: Lookup,
}
