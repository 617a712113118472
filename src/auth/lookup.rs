//! The look-up step (`serve --lookup`): the product's one statement, coalesced with concurrent
//! lookups ([`crate::agents::Coalescer`]), or, with the `legacy` cargo feature, a replay of one
//! of Coder's historical statement sequences for side-by-side benchmarks. Every lookup returns
//! the same candidates; only the cost differs. Either way the round trips run on the database
//! runtime ([`crate::db::Database`]).
//!
//! With read replicas (`--replica-url`), the product's lookup goes to a usable replica first
//! (in turn), each with its own coalescer. Only an answer holding a candidate the request
//! could mean is final: one without (the agent may have been created after the replica's last
//! replay) or a failure is asked of the primary again, so replication lag never turns an agent
//! away with a 404. The replicas' answers are otherwise as fresh as their replay (at most
//! `--replica-max-lag` behind). The replays always use the primary.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::builder::PossibleValue;

use crate::agents::{self, Candidate, Coalescer};
use crate::db::{Database, DatabaseSettings, Failure, PRIMARY, Replica};
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
    /// Whose candidates these are (or whose failure): `primary` or a replica's name.
    pub(crate) target: Arc<str>,
}

impl Found {
    fn served(served: agents::Served, target: &Arc<str>) -> Self {
        Self {
            result: served.result,
            waited: served.waited,
            db: served.db,
            statements: served.statements,
            shared: served.shared,
            target: Arc::clone(target),
        }
    }
}

/// A replica and the coalescer in front of its pool.
#[derive(Debug)]
struct ReplicaLookup {
    replica: Replica,
    coalescer: Coalescer,
}

/// Runs the look-up step for every request.
#[derive(Debug)]
pub(crate) struct Finder {
    lookup: Lookup,
    /// The primary's coalescer.
    coalescer: Coalescer,
    primary: Arc<str>,
    replicas: Vec<ReplicaLookup>,
    /// Which replica the next lookup tries first.
    next: AtomicUsize,
    #[cfg_attr(
        not(feature = "legacy"),
        expect(dead_code, reason = "only the replays run their own exchanges")
    )]
    database: Database,
    metrics: Metrics,
}

impl Finder {
    pub(crate) fn new(
        lookup: Lookup,
        database: Database,
        metrics: Metrics,
        settings: &DatabaseSettings,
    ) -> Self {
        let primary: Arc<str> = PRIMARY.into();
        let coalescer = Coalescer::start(
            &database,
            (Arc::clone(&primary), database.pool()),
            metrics.clone(),
            settings,
            (settings.acquire_timeout, settings.deadline()),
        );
        let replicas = database
            .replicas()
            .iter()
            .map(|replica| ReplicaLookup {
                replica: replica.clone(),
                // A replica that stops answering costs a lookup no more than the acquire
                // timeout before the primary is asked. The wait for one of its connections
                // ends a quarter earlier, so a full pool fails as a pool timeout (passing
                // trouble: only that lookup goes to the primary) and only a lookup that was
                // sent and got no answer meets the deadline (silence: the replica is skipped).
                coalescer: Coalescer::start(
                    &database,
                    (Arc::clone(replica.name()), replica.pool()),
                    metrics.clone(),
                    settings,
                    (settings.acquire_timeout * 3 / 4, settings.acquire_timeout),
                ),
            })
            .collect();
        Self {
            lookup,
            coalescer,
            primary,
            replicas,
            next: AtomicUsize::new(0),
            database,
            metrics,
        }
    }

    /// Whether the lookup queue a request would join first is already longer than its
    /// database can answer in time: every usable replica's, or the primary's without one.
    pub(crate) fn queue_full(&self) -> bool {
        let mut usable = self
            .replicas
            .iter()
            .filter(|replica| replica.replica.is_usable())
            .peekable();
        if usable.peek().is_none() {
            return self.coalescer.queue_full();
        }
        usable.all(|replica| replica.coalescer.queue_full())
    }

    /// The usable replica whose turn it is, if any.
    fn replica(&self) -> Option<&ReplicaLookup> {
        let count = self.replicas.len();
        if count == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..count)
            .map(|offset| &self.replicas[(start + offset) % count])
            .find(|replica| replica.replica.is_usable())
    }

    /// The product's lookup: a usable replica first, the primary for what it cannot answer.
    async fn single(&self, instance_id: &str, agent_name: Option<&str>) -> Found {
        let Some(replica) = self.replica() else {
            return Found::served(self.coalescer.candidates(instance_id).await, &self.primary);
        };
        let first = replica.coalescer.candidates(instance_id).await;
        let reason = match &first.result {
            Ok(candidates) if agents::finds_meant(candidates, agent_name) => {
                return Found::served(first, replica.replica.name());
            }
            Ok(_) => "miss",
            Err(failure) => {
                tracing::warn!(replica = %replica.replica.name(), instance_id, error = %failure, "replica lookup failed; asking the primary");
                replica.replica.report(failure);
                "error"
            }
        };
        self.metrics
            .replica_fallback(replica.replica.name(), reason);
        let second = self.coalescer.candidates(instance_id).await;
        Found {
            waited: first.waited + second.waited,
            db: first.db + second.db,
            statements: first.statements + second.statements,
            ..Found::served(second, &self.primary)
        }
    }

    /// The candidates for `instance_id`, newest first. `agent_name` says whether a replica's
    /// answer is final; a replay reads it too (Coder sent some of its statements after
    /// choosing the agent).
    pub(crate) async fn candidates(&self, instance_id: &str, agent_name: Option<&str>) -> Found {
        match self.lookup {
            Lookup::Single => self.single(instance_id, agent_name).await,
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
        use std::sync::atomic::AtomicU32;

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
            PRIMARY,
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
            target: Arc::clone(&self.primary),
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
