//! The look-up step (`serve --lookup`): the product's one statement, coalesced with concurrent
//! lookups ([`crate::agents::Coalescer`]), or, with the `legacy` cargo feature, a replay of one
//! of Coder's historical statement sequences for side-by-side benchmarks. Every lookup returns
//! the same candidates; only the cost differs. Either way the round trips run on the database
//! runtime ([`crate::db::Database`]).

use std::sync::Arc;
use std::time::Duration;

use clap::builder::PossibleValue;

use crate::agents::{self, Candidate, Coalescer};
use crate::db::{Database, DatabaseSettings, Failure};
#[cfg(feature = "legacy")]
use crate::legacy;
use crate::metrics::Metrics;

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
            Self::Single => &[agents::QUERY, agents::BATCH_QUERY],
            #[cfg(feature = "legacy")]
            Self::Legacy(_) => legacy::QUERIES,
        }
    }
}

/// What the look-up step found, and what it cost.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) result: Result<Vec<Candidate>, Arc<Failure>>,
    /// Waiting for the database: the queue and a connection.
    pub(crate) waited: Duration,
    /// The statements' round trips.
    pub(crate) db: Duration,
    pub(crate) statements: u32,
    /// Lookups that shared the statement, this one included.
    pub(crate) shared: usize,
}

/// Runs the look-up step for every request.
#[derive(Debug)]
pub(crate) struct Finder {
    lookup: Lookup,
    coalescer: Coalescer,
    #[cfg_attr(
        not(feature = "legacy"),
        expect(dead_code, reason = "only the replays run their own exchanges")
    )]
    database: Database,
    #[cfg_attr(
        not(feature = "legacy"),
        expect(dead_code, reason = "only the replays count their own statements")
    )]
    metrics: Metrics,
}

impl Finder {
    pub(crate) fn new(
        lookup: Lookup,
        database: Database,
        metrics: Metrics,
        settings: &DatabaseSettings,
    ) -> Self {
        Self {
            lookup,
            coalescer: Coalescer::start(&database, metrics.clone(), settings),
            database,
            metrics,
        }
    }

    /// Whether the database's lookup queue is already longer than it can answer in time.
    pub(crate) fn queue_full(&self) -> bool {
        self.coalescer.queue_full()
    }

    /// The candidates for `instance_id`, newest first. Only a replay reads `agent_name`: Coder
    /// sent some of its statements after choosing the agent.
    #[cfg_attr(
        not(feature = "legacy"),
        expect(unused_variables, reason = "only the replays read the name")
    )]
    pub(crate) async fn candidates(&self, instance_id: &str, agent_name: Option<&str>) -> Found {
        match self.lookup {
            Lookup::Single => {
                let served = self.coalescer.candidates(instance_id).await;
                Found {
                    result: served.result,
                    waited: served.waited,
                    db: served.db,
                    statements: served.statements,
                    shared: served.shared,
                }
            }
            #[cfg(feature = "legacy")]
            Lookup::Legacy(version) => self.replay(version, instance_id, agent_name).await,
        }
    }

    /// One request's replay of `version`, as one exchange on the database runtime.
    #[cfg(feature = "legacy")]
    async fn replay(
        &self,
        version: legacy::Version,
        instance_id: &str,
        agent_name: Option<&str>,
    ) -> Found {
        use std::sync::atomic::{AtomicU32, Ordering};

        use crate::legacy::StatementCounter;

        let sent = Arc::new(AtomicU32::new(0));
        let (counted, metrics) = (Arc::clone(&sent), self.metrics.clone());
        let (instance_id, agent_name) = (instance_id.to_owned(), agent_name.map(str::to_owned));
        let mode = self.database.pool().statement_mode();
        let exchanged = self
            .database
            .exchange(Box::new(move |conn| {
                Box::pin(async move {
                    let mut statements = StatementCounter::new(&metrics);
                    let result = legacy::replay(
                        version,
                        conn,
                        mode,
                        &instance_id,
                        agent_name.as_deref(),
                        &mut statements,
                    )
                    .await;
                    counted.store(statements.count(), Ordering::Relaxed);
                    result
                })
            }))
            .await;
        self.metrics.observe_acquire(
            exchanged.acquire,
            exchanged
                .result
                .as_ref()
                .is_err_and(Failure::is_acquire_timeout),
        );
        Found {
            result: exchanged.result.map_err(Arc::new),
            waited: exchanged.acquire,
            db: exchanged.db,
            statements: sent.load(Ordering::Relaxed),
            shared: 1,
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
