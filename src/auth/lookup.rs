//! The look-up step (`serve --lookup`): the product's one statement, or, with the `legacy`
//! cargo feature, a replay of one of Coder's historical statement sequences for side-by-side
//! benchmarks. Every lookup returns the same candidates; only the cost differs.

use clap::builder::PossibleValue;
use sqlx::PgConnection;

use crate::agents::{self, Candidate};
use crate::db::StatementMode;
#[cfg(feature = "legacy")]
use crate::legacy;
use crate::metrics::StatementCounter;

/// How candidates are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lookup {
    /// One joined statement per request (`queries/agents_by_instance_id.sql`).
    #[default]
    Single,
    /// A replay of Coder's sequence (`src/legacy/`).
    #[cfg(feature = "legacy")]
    Legacy(legacy::Version),
}

impl Lookup {
    /// The `--lookup` value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Single => "single",
            #[cfg(feature = "legacy")]
            Self::Legacy(version) => version.name(),
        }
    }

    /// Names of the statements this lookup may run, for metrics to show at zero.
    pub(crate) fn queries(self) -> &'static [&'static str] {
        match self {
            Self::Single => &[agents::QUERY],
            #[cfg(feature = "legacy")]
            Self::Legacy(_) => legacy::QUERIES,
        }
    }

    /// The candidates for `instance_id`, newest first, on `conn`. Only a replay reads
    /// `agent_name`: Coder sent some of its statements after choosing the agent.
    #[cfg_attr(
        not(feature = "legacy"),
        expect(unused_variables, reason = "only the replays read the name")
    )]
    pub(crate) async fn candidates(
        self,
        conn: &mut PgConnection,
        mode: StatementMode,
        instance_id: &str,
        agent_name: Option<&str>,
        statements: &mut StatementCounter<'_>,
    ) -> Result<Vec<Candidate>, sqlx::Error> {
        match self {
            Self::Single => {
                agents::agents_by_instance_id(conn, mode, instance_id, statements).await
            }
            #[cfg(feature = "legacy")]
            Self::Legacy(version) => {
                legacy::replay(version, conn, mode, instance_id, agent_name, statements).await
            }
        }
    }
}

impl clap::ValueEnum for Lookup {
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

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
