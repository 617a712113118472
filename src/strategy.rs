//! Which lookup answers requests (`serve --lookup`): the product's single statement, or, with
//! the `legacy` cargo feature, a replay of one of Coder's historical statement sequences for
//! side-by-side benchmarks. Every strategy gives the same answers; only the cost differs.

use clap::builder::PossibleValue;
use sqlx::PgConnection;

use crate::db::StatementMode;
use crate::error::ApiError;
#[cfg(feature = "legacy")]
use crate::legacy;
use crate::lookup::{self, Candidate};
use crate::metrics::Statements;
use crate::selection;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// One joined statement per request (`queries/agents_by_instance_id.sql`).
    #[default]
    Single,
    /// A replay of Coder's sequence (`src/legacy/`).
    #[cfg(feature = "legacy")]
    Legacy(legacy::Version),
}

/// What a lookup decided, and how many candidates it weighed (for the log).
#[derive(Debug)]
pub struct Found {
    pub chosen: Result<Candidate, ApiError>,
    pub candidates: usize,
}

impl Strategy {
    /// The `--lookup` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Single => "single",
            #[cfg(feature = "legacy")]
            Self::Legacy(version) => version.name(),
        }
    }

    /// Names of the statements this strategy may run, for metrics to show at zero.
    pub fn queries(self) -> &'static [&'static str] {
        match self {
            Self::Single => &[lookup::QUERY],
            #[cfg(feature = "legacy")]
            Self::Legacy(_) => legacy::QUERIES,
        }
    }

    /// Finds the agent for `instance_id` on `conn`. The outer error is a database failure;
    /// the inner result is the selection's answer (reference §1.5).
    pub async fn find(
        self,
        conn: &mut PgConnection,
        mode: StatementMode,
        instance_id: &str,
        agent_name: Option<&str>,
        statements: &mut Statements<'_>,
    ) -> Result<Found, sqlx::Error> {
        match self {
            Self::Single => {
                let candidates =
                    lookup::agents_by_instance_id(conn, mode, instance_id, statements).await?;
                Ok(Found {
                    chosen: selection::choose(instance_id, &candidates, agent_name).cloned(),
                    candidates: candidates.len(),
                })
            }
            #[cfg(feature = "legacy")]
            Self::Legacy(version) => {
                legacy::find(version, conn, mode, instance_id, agent_name, statements).await
            }
        }
    }
}

impl clap::ValueEnum for Strategy {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            Self::Single,
            #[cfg(feature = "legacy")]
            Self::Legacy(legacy::Version::Rc2),
            #[cfg(feature = "legacy")]
            Self::Legacy(legacy::Version::Rc3),
            #[cfg(feature = "legacy")]
            Self::Legacy(legacy::Version::Main),
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let value = PossibleValue::new(self.name());
        Some(match self {
            Self::Single => value.help("one joined statement per request (the product)"),
            #[cfg(feature = "legacy")]
            Self::Legacy(version) => value.help(version.help()),
        })
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
