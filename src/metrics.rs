//! The Prometheus metrics served at `GET /metrics`: declared here, one registry per
//! application (so tests running several apps in one process never share counts).
//!
//! Labels are bounded sets: routes are the matched patterns (never raw paths), statuses are
//! HTTP codes, providers and outcomes are fixed lists, queries are file names, targets are
//! `primary` and `replica-<n>` (the n-th `--replica-url`, never its address). Nothing a client
//! sends, and no session token, ever becomes a label value.

use std::time::Duration;

use prometheus::{
    GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::db::{Database, PRIMARY, Pool};
use crate::identity::Provider;

/// Label of requests that matched no route, so unknown paths cannot grow the label set.
pub(crate) const UNMATCHED_ROUTE: &str = "unmatched";

/// The `target` of an authentication outcome decided before any lookup (bad input, a
/// refused identity, admission).
pub(crate) const NO_TARGET: &str = "none";

/// Why a lookup sent to a replica was asked of the primary again.
pub(crate) const FALLBACK_REASONS: [&str; 2] = ["miss", "error"];

/// Latency buckets (seconds) for HTTP requests and identity verification: 50 µs to 5 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// Pool acquire buckets (seconds): a free connection is handed out in microseconds, an exhausted
/// pool makes requests wait up to the acquire timeout (2 s by default), so both ends matter; the
/// upper range is denser so a p99 read from the buckets says how close waits came to the timeout.
const ACQUIRE_BUCKETS: [f64; 24] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5,
];

/// Batch size buckets (distinct instance ids per statement), up to the largest `--db-batch-max`.
const BATCH_BUCKETS: [f64; 11] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// The metric names, shared with `instauth loadtest`, which reads them back.
pub(crate) mod names {
    pub(crate) const HTTP_REQUESTS: &str = "instauth_http_requests_total";
    pub(crate) const HTTP_DURATION: &str = "instauth_http_request_duration_seconds";
    pub(crate) const AUTH_OUTCOMES: &str = "instauth_auth_outcomes_total";
    pub(crate) const VERIFY_DURATION: &str = "instauth_identity_verify_seconds";
    pub(crate) const SQL_STATEMENTS: &str = "instauth_sql_statements_total";
    pub(crate) const POOL_OPEN: &str = "instauth_db_pool_open_connections";
    pub(crate) const POOL_IDLE: &str = "instauth_db_pool_idle_connections";
    pub(crate) const POOL_IN_USE: &str = "instauth_db_pool_in_use_connections";
    pub(crate) const POOL_MAX: &str = "instauth_db_pool_max_connections";
    pub(crate) const POOL_ACQUIRE: &str = "instauth_db_pool_acquire_seconds";
    pub(crate) const POOL_ACQUIRE_TIMEOUTS: &str = "instauth_db_pool_acquire_timeouts_total";
    pub(crate) const BATCH_SIZE: &str = "instauth_db_batch_instance_ids";
    pub(crate) const LOOKUPS: &str = "instauth_db_lookups_total";
    pub(crate) const QUEUE_WAIT: &str = "instauth_db_queue_wait_seconds";
    pub(crate) const REPLICA_USABLE: &str = "instauth_db_replica_usable";
    pub(crate) const REPLICA_LAG: &str = "instauth_db_replica_lag_seconds";
    pub(crate) const REPLICA_FALLBACKS: &str = "instauth_db_replica_fallbacks_total";
    pub(crate) const BUFFERED_BODY_BYTES: &str = "instauth_http_buffered_body_bytes";
    pub(crate) const OPEN_CONNECTIONS: &str = "instauth_http_open_connections";
    pub(crate) const REMEMBERED_AWS_DOCUMENTS: &str = "instauth_identity_remembered_aws_documents";
}

/// Handles to every metric; cheap to clone (each handle is reference-counted).
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    auth_outcomes: IntCounterVec,
    verify_duration: HistogramVec,
    sql_statements: IntCounterVec,
    pool_open: IntGaugeVec,
    pool_idle: IntGaugeVec,
    pool_in_use: IntGaugeVec,
    pool_max: IntGaugeVec,
    pool_acquire: HistogramVec,
    pool_acquire_timeouts: IntCounterVec,
    batch_size: Histogram,
    lookups: IntCounter,
    queue_wait: Histogram,
    replica_usable: IntGaugeVec,
    replica_lag: GaugeVec,
    replica_fallbacks: IntCounterVec,
    buffered_body_bytes: IntGauge,
    open_connections: IntGauge,
    remembered_aws_documents: IntGauge,
}

impl Metrics {
    /// Declares and registers every metric. `queries` are the statement names, `outcomes`
    /// the authentication outcome labels and `replicas` the replica target names, to show at
    /// zero before they first happen.
    pub(crate) fn new(
        queries: &[&str],
        outcomes: &[&str],
        replicas: &[&str],
    ) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                names::HTTP_REQUESTS,
                "HTTP requests answered, by route and status.",
            ),
            &["route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                names::HTTP_DURATION,
                "Time from request to response, by route and status.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "status"],
        )?;
        let auth_outcomes = IntCounterVec::new(
            Opts::new(
                names::AUTH_OUTCOMES,
                "Instance-identity requests by provider, outcome, and the database target whose candidates decided it (`none`: decided before any lookup).",
            ),
            &["provider", "outcome", "target"],
        )?;
        let verify_duration = HistogramVec::new(
            HistogramOpts::new(
                names::VERIFY_DURATION,
                "Time spent verifying cloud identity material, by provider.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["provider"],
        )?;
        let sql_statements = IntCounterVec::new(
            Opts::new(
                names::SQL_STATEMENTS,
                "SQL statements sent to PostgreSQL, by query file name and target.",
            ),
            &["query", "target"],
        )?;
        let gauge = |name: &str, help: &str| IntGaugeVec::new(Opts::new(name, help), &["target"]);
        let pool_open = gauge(names::POOL_OPEN, "Open pooled connections, by target.")?;
        let pool_idle = gauge(names::POOL_IDLE, "Idle pooled connections, by target.")?;
        let pool_in_use = gauge(
            names::POOL_IN_USE,
            "Pooled connections handed out to requests, by target.",
        )?;
        let pool_max = gauge(
            names::POOL_MAX,
            "Most connections the pool opens, by target.",
        )?;
        let pool_acquire = HistogramVec::new(
            HistogramOpts::new(
                names::POOL_ACQUIRE,
                "Time waited for a pooled connection, including waits that timed out, by target.",
            )
            .buckets(ACQUIRE_BUCKETS.to_vec()),
            &["target"],
        )?;
        let pool_acquire_timeouts = IntCounterVec::new(
            Opts::new(
                names::POOL_ACQUIRE_TIMEOUTS,
                "Waits for a pooled connection that hit the acquire timeout, by target.",
            ),
            &["target"],
        )?;
        let replica_usable = gauge(
            names::REPLICA_USABLE,
            "1 while lookups may go to the replica (a readable standby within --replica-max-lag), else 0.",
        )?;
        let replica_lag = GaugeVec::new(
            Opts::new(
                names::REPLICA_LAG,
                "Replay lag the replica's last check measured (0: caught up); absent when unknown.",
            ),
            &["target"],
        )?;
        let replica_fallbacks = IntCounterVec::new(
            Opts::new(
                names::REPLICA_FALLBACKS,
                "Lookups a replica could not answer, asked of the primary again: `miss` (no usable candidate there), `error`.",
            ),
            &["target", "reason"],
        )?;
        let batch_size = Histogram::with_opts(
            HistogramOpts::new(
                names::BATCH_SIZE,
                "Distinct instance ids per lookup statement (1: the lookup went alone).",
            )
            .buckets(BATCH_BUCKETS.to_vec()),
        )?;
        let lookups = IntCounter::new(
            names::LOOKUPS,
            "Lookups answered by lookup statements; over the statements sent, lookups per statement.",
        )?;
        let queue_wait = Histogram::with_opts(
            HistogramOpts::new(
                names::QUEUE_WAIT,
                "Time from a lookup being queued to its statement being sent.",
            )
            .buckets(ACQUIRE_BUCKETS.to_vec()),
        )?;
        let buffered_body_bytes = IntGauge::new(
            names::BUFFERED_BODY_BYTES,
            "Authentication request body bytes reserved right now (at most --max-buffered-body-bytes).",
        )?;
        let open_connections = IntGauge::new(
            names::OPEN_CONNECTIONS,
            "Open HTTP connections (at most --max-connections; beyond it new ones wait unaccepted).",
        )?;
        let remembered_aws_documents = IntGauge::new(
            names::REMEMBERED_AWS_DOCUMENTS,
            "Verified AWS (document, signature) pairs remembered right now.",
        )?;
        registry.register(Box::new(remembered_aws_documents.clone()))?;
        registry.register(Box::new(buffered_body_bytes.clone()))?;
        registry.register(Box::new(open_connections.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(lookups.clone()))?;
        registry.register(Box::new(queue_wait.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(auth_outcomes.clone()))?;
        registry.register(Box::new(verify_duration.clone()))?;
        registry.register(Box::new(sql_statements.clone()))?;
        registry.register(Box::new(pool_open.clone()))?;
        registry.register(Box::new(pool_idle.clone()))?;
        registry.register(Box::new(pool_in_use.clone()))?;
        registry.register(Box::new(pool_max.clone()))?;
        registry.register(Box::new(pool_acquire.clone()))?;
        registry.register(Box::new(pool_acquire_timeouts.clone()))?;
        registry.register(Box::new(replica_usable.clone()))?;
        registry.register(Box::new(replica_lag.clone()))?;
        registry.register(Box::new(replica_fallbacks.clone()))?;
        let targets: Vec<&str> = std::iter::once(PRIMARY)
            .chain(replicas.iter().copied())
            .collect();
        // Show every provider's and target's series from the start, so dashboards and rate()
        // see zeros rather than missing series for a cloud that has not been used yet.
        for provider in Provider::ALL {
            verify_duration.with_label_values(&[provider.as_str()]);
            for outcome in outcomes {
                for target in std::iter::once(NO_TARGET).chain(targets.iter().copied()) {
                    auth_outcomes.with_label_values(&[provider.as_str(), outcome, target]);
                }
            }
        }
        for target in &targets {
            for query in queries {
                sql_statements.with_label_values(&[query, target]);
            }
            pool_acquire.with_label_values(&[target]);
            pool_acquire_timeouts.with_label_values(&[target]);
        }
        for replica in replicas {
            replica_usable.with_label_values(&[replica]);
            for reason in FALLBACK_REASONS {
                replica_fallbacks.with_label_values(&[replica, reason]);
            }
        }
        Ok(Self {
            registry,
            http_requests,
            http_duration,
            auth_outcomes,
            verify_duration,
            sql_statements,
            pool_open,
            pool_idle,
            pool_in_use,
            pool_max,
            pool_acquire,
            pool_acquire_timeouts,
            batch_size,
            lookups,
            queue_wait,
            replica_usable,
            replica_lag,
            replica_fallbacks,
            buffered_body_bytes,
            open_connections,
            remembered_aws_documents,
        })
    }

    /// One answered HTTP request; `route` is the matched pattern or [`UNMATCHED_ROUTE`],
    /// `status` the three-digit code.
    pub(crate) fn observe_http(&self, route: &str, status: &str, took: Duration) {
        let labels = [route, status];
        self.http_requests.with_label_values(&labels).inc();
        self.http_duration
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
    }

    /// How an instance-identity request ended; `outcome` is one of the labels given to
    /// [`Metrics::new`], `target` whose candidates decided it ([`NO_TARGET`] before a lookup).
    pub(crate) fn auth_outcome(&self, provider: Provider, outcome: &str, target: &str) {
        self.auth_outcomes
            .with_label_values(&[provider.as_str(), outcome, target])
            .inc();
    }

    pub(crate) fn observe_verify(&self, provider: Provider, took: Duration) {
        self.verify_duration
            .with_label_values(&[provider.as_str()])
            .observe(took.as_secs_f64());
    }

    /// One statement about to be sent to `target`; called where the statement runs.
    pub(crate) fn sql_statement(&self, target: &str, query: &str) {
        self.sql_statements
            .with_label_values(&[query, target])
            .inc();
    }

    /// One wait for a pooled connection of `target`, successful or not.
    pub(crate) fn observe_acquire(&self, target: &str, waited: Duration, timed_out: bool) {
        self.pool_acquire
            .with_label_values(&[target])
            .observe(waited.as_secs_f64());
        if timed_out {
            self.pool_acquire_timeouts
                .with_label_values(&[target])
                .inc();
        }
    }

    /// A lookup `target` (a replica) could not answer, asked of the primary for `reason`
    /// (one of [`FALLBACK_REASONS`]).
    pub(crate) fn replica_fallback(&self, target: &str, reason: &str) {
        self.replica_fallbacks
            .with_label_values(&[target, reason])
            .inc();
    }

    /// One lookup statement: `ids` distinct instance ids for `lookups` waiting requests.
    pub(crate) fn observe_batch(&self, ids: usize, lookups: usize) {
        self.batch_size.observe(ids as f64);
        self.lookups
            .inc_by(u64::try_from(lookups).unwrap_or(u64::MAX));
    }

    /// How long one lookup waited for its statement to be sent.
    pub(crate) fn observe_queue_wait(&self, waited: Duration) {
        self.queue_wait.observe(waited.as_secs_f64());
    }

    /// Reads every pool's current state and each replica's health into the gauges (done at
    /// scrape time, so the gauges are never staler than the scrape).
    pub(crate) fn refresh_database(&self, database: &Database) {
        self.refresh_pool(PRIMARY, database.pool());
        for replica in database.replicas() {
            let target = replica.name();
            self.refresh_pool(target, replica.pool());
            self.replica_usable
                .with_label_values(&[target])
                .set(i64::from(replica.is_usable()));
            match replica.lag() {
                Some(lag) => self
                    .replica_lag
                    .with_label_values(&[target])
                    .set(lag.as_secs_f64()),
                None => {
                    let _ = self.replica_lag.remove_label_values(&[target]);
                }
            }
        }
    }

    fn refresh_pool(&self, target: &str, pool: &Pool) {
        let status = pool.status();
        let open = i64::try_from(status.size).unwrap_or(i64::MAX);
        let idle = i64::try_from(status.available).unwrap_or(i64::MAX);
        let labels = [target];
        self.pool_open.with_label_values(&labels).set(open);
        self.pool_idle.with_label_values(&labels).set(idle);
        self.pool_in_use
            .with_label_values(&labels)
            .set(open.saturating_sub(idle).max(0));
        self.pool_max
            .with_label_values(&labels)
            .set(i64::try_from(status.max_size).unwrap_or(i64::MAX));
    }

    /// Reads the body bytes admission holds right now into their gauge (at scrape time).
    pub(crate) fn refresh_buffered_body_bytes(&self, bytes: usize) {
        self.buffered_body_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Reads how many AWS pairs are remembered into their gauge (at scrape time).
    pub(crate) fn refresh_remembered_aws_documents(&self, pairs: usize) {
        self.remembered_aws_documents
            .set(i64::try_from(pairs).unwrap_or(i64::MAX));
    }

    /// The gauge of open connections, which each connection raises while it is open.
    pub(crate) fn open_connections(&self) -> IntGauge {
        self.open_connections.clone()
    }

    /// The Prometheus text exposition of every metric.
    pub(crate) fn render(&self) -> Result<String, prometheus::Error> {
        TextEncoder::new().encode_to_string(&self.registry.gather())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_and_outcome_is_exposed_from_the_start() {
        let outcomes = ["ok", "not_found"];
        let metrics = Metrics::new(&["q"], &outcomes, &["replica-0"])
            .unwrap_or_else(|err| panic!("metrics: {err}"));
        let text = metrics.render().unwrap_or_default();
        for provider in Provider::ALL {
            for outcome in outcomes {
                for target in ["none", "primary", "replica-0"] {
                    let series = format!(
                        "{}{{outcome=\"{outcome}\",provider=\"{}\",target=\"{target}\"}} 0",
                        names::AUTH_OUTCOMES,
                        provider.as_str()
                    );
                    assert!(text.contains(&series), "missing {series}");
                }
            }
        }
        for target in ["primary", "replica-0"] {
            let series =
                format!("instauth_sql_statements_total{{query=\"q\",target=\"{target}\"}} 0");
            assert!(text.contains(&series), "missing {series}");
        }
        for reason in FALLBACK_REASONS {
            let series = format!(
                "instauth_db_replica_fallbacks_total{{reason=\"{reason}\",target=\"replica-0\"}} 0"
            );
            assert!(text.contains(&series), "missing {series}");
        }
    }
}
