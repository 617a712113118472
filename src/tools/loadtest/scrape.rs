//! Reading the server's `/metrics` (Prometheus text format) and turning two scrapes into the
//! per-run figures of the report.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::metrics::names;

/// One sample line: `name{label="value",…} number`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A parsed scrape. Comment lines and lines that do not parse are skipped: the report needs
/// only a few known series.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(parse_line)
            .collect();
        Self { samples }
    }

    /// Sum of every series of `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    /// Sums of `name` grouped by the value of `label`.
    fn sum_by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut sums = BTreeMap::new();
        for sample in self.samples.iter().filter(|s| s.name == name) {
            if let Some((_, value)) = sample.labels.iter().find(|(key, _)| key == label) {
                *sums.entry(value.clone()).or_insert(0.0) += sample.value;
            }
        }
        sums
    }

    /// The value of a gauge summed over its series (the pools of every target), if present.
    pub fn gauge(&self, name: &str) -> Option<f64> {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .reduce(|sum, value| sum + value)
    }

    /// Cumulative bucket counts of histogram `name` (summed over other labels), by bound.
    fn buckets(&self, name: &str) -> BTreeMap<Bound, f64> {
        let bucket = format!("{name}_bucket");
        let mut counts = BTreeMap::new();
        for (le, count) in self.sum_by(&bucket, "le") {
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                match le.parse::<f64>() {
                    Ok(bound) => bound,
                    Err(_) => continue,
                }
            };
            counts.insert(Bound(bound), count);
        }
        counts
    }
}

/// A bucket bound, ordered numerically (`f64` has no total order of its own).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bound(f64);

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let (series, value) = line.rsplit_once(' ')?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, Vec::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `a="x",b="y\"z"` → pairs, unescaping `\\`, `\"` and `\n`.
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, escaped)) => value.push(escaped),
                    None => return None,
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                other => value.push(other),
            }
        }
        let end = end?;
        labels.push((key.trim_start_matches(',').to_owned(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// What the server did over the run, from scrapes before and after (and the peak of the
/// in-use gauge sampled while it ran).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerDeltas {
    /// Instance-identity requests the server answered.
    pub auth_requests: f64,
    pub sql_statements: f64,
    pub sql_per_request: Option<f64>,
    /// Statements by query file name.
    pub sql_by_query: BTreeMap<String, f64>,
    pub pool_acquisitions: f64,
    pub pool_acquire_p99_ms: Option<f64>,
    pub pool_acquire_timeouts: f64,
    pub peak_in_use_connections: Option<f64>,
    pub pool_max_connections: Option<f64>,
}

impl ServerDeltas {
    pub fn between(before: &Scrape, after: &Scrape, peak_in_use: Option<f64>) -> Self {
        let auth_requests = after.sum(names::AUTH_OUTCOMES) - before.sum(names::AUTH_OUTCOMES);
        let sql_statements = after.sum(names::SQL_STATEMENTS) - before.sum(names::SQL_STATEMENTS);
        let before_by_query = before.sum_by(names::SQL_STATEMENTS, "query");
        let sql_by_query = after
            .sum_by(names::SQL_STATEMENTS, "query")
            .into_iter()
            .map(|(query, count)| {
                let delta = count - before_by_query.get(&query).copied().unwrap_or(0.0);
                (query, delta)
            })
            .filter(|(_, delta)| *delta > 0.0)
            .collect();
        let acquire_count = format!("{}_count", names::POOL_ACQUIRE);
        let before_buckets = before.buckets(names::POOL_ACQUIRE);
        let bucket_deltas: Vec<(f64, f64)> = after
            .buckets(names::POOL_ACQUIRE)
            .into_iter()
            .map(|(bound, count)| {
                let earlier = before_buckets.get(&bound).copied().unwrap_or(0.0);
                (bound.0, count - earlier)
            })
            .collect();
        Self {
            auth_requests,
            sql_statements,
            sql_per_request: (auth_requests > 0.0).then(|| sql_statements / auth_requests),
            sql_by_query,
            pool_acquisitions: after.sum(&acquire_count) - before.sum(&acquire_count),
            pool_acquire_p99_ms: quantile(&bucket_deltas, 0.99).map(|s| s * 1000.0),
            pool_acquire_timeouts: after.sum(names::POOL_ACQUIRE_TIMEOUTS)
                - before.sum(names::POOL_ACQUIRE_TIMEOUTS),
            peak_in_use_connections: peak_in_use,
            pool_max_connections: after.gauge(names::POOL_MAX),
        }
    }
}

/// The `q` quantile of a histogram given as (upper bound, cumulative count) pairs in bound
/// order, interpolating linearly inside the bucket as Prometheus' `histogram_quantile` does.
/// A quantile in the `+Inf` bucket is reported as the highest finite bound.
fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = 0.0;
    let mut below = 0.0;
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let fraction = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        lower = bound;
        below = count;
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# HELP x
instauth_auth_outcomes_total{outcome="ok",provider="aws",target="primary"} 10
instauth_sql_statements_total{query="agents_by_instance_id",target="primary"} 10
instauth_db_pool_acquire_seconds_bucket{target="primary",le="0.001"} 10
instauth_db_pool_acquire_seconds_bucket{target="primary",le="0.01"} 10
instauth_db_pool_acquire_seconds_bucket{target="primary",le="+Inf"} 10
instauth_db_pool_acquire_seconds_count{target="primary"} 10
instauth_db_pool_acquire_timeouts_total{target="primary"} 0
"#;

    const AFTER: &str = r#"instauth_auth_outcomes_total{outcome="ok",provider="aws",target="primary"} 60
instauth_auth_outcomes_total{outcome="ok",provider="aws",target="replica-0"} 50
instauth_auth_outcomes_total{outcome="not_found",provider="google",target="none"} 0
instauth_sql_statements_total{query="agents_by_instance_id",target="primary"} 60
instauth_sql_statements_total{query="agents_by_instance_id",target="replica-0"} 50
instauth_db_pool_acquire_seconds_bucket{target="primary",le="0.001"} 35
instauth_db_pool_acquire_seconds_bucket{target="primary",le="0.01"} 60
instauth_db_pool_acquire_seconds_bucket{target="primary",le="+Inf"} 60
instauth_db_pool_acquire_seconds_bucket{target="replica-0",le="0.001"} 25
instauth_db_pool_acquire_seconds_bucket{target="replica-0",le="0.01"} 50
instauth_db_pool_acquire_seconds_bucket{target="replica-0",le="+Inf"} 50
instauth_db_pool_acquire_seconds_count{target="primary"} 60
instauth_db_pool_acquire_seconds_count{target="replica-0"} 50
instauth_db_pool_acquire_timeouts_total{target="primary"} 2
instauth_db_pool_max_connections{target="primary"} 4
instauth_db_pool_max_connections{target="replica-0"} 4
"#;

    #[test]
    fn deltas_over_a_run() {
        let deltas =
            ServerDeltas::between(&Scrape::parse(BEFORE), &Scrape::parse(AFTER), Some(4.0));
        assert_eq!(deltas.auth_requests, 100.0);
        assert_eq!(deltas.sql_per_request, Some(1.0));
        assert_eq!(deltas.pool_acquisitions, 100.0);
        assert_eq!(deltas.pool_acquire_timeouts, 2.0);
        // Summed over the primary and its replica.
        assert_eq!(deltas.pool_max_connections, Some(8.0));
        // 50 waits under 1 ms and 50 between 1 and 10 ms: p99 is 98% into the second bucket.
        let p99 = deltas.pool_acquire_p99_ms.unwrap_or_default();
        assert!((p99 - 9.82).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn labels_with_escapes() {
        let scrape = Scrape::parse("m{a=\"x\\\"y\",b=\"z\"} 3\nbroken line\n");
        assert_eq!(scrape.sum_by("m", "a").get("x\"y"), Some(&3.0));
        assert_eq!(scrape.sum("m"), 3.0);
    }

    #[test]
    fn quantile_in_the_overflow_bucket_is_the_highest_bound() {
        assert_eq!(
            quantile(&[(1.0, 0.0), (f64::INFINITY, 5.0)], 0.5),
            Some(1.0)
        );
        assert_eq!(quantile(&[(1.0, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
    }
}
