//! The final report: a table for people, JSON (`--json`) for machines.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use super::driver::{Results, Unexpected};
use super::scrape::ServerDeltas;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    /// `closed` (fixed concurrency) or `open` (fixed rate).
    pub mode: &'static str,
    pub concurrency: usize,
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub requests: u64,
    pub throughput_rps: f64,
    pub latency_ms: Latency,
    /// The same over the expected answers only (`None` when there was none): under overload,
    /// what a served request waited.
    pub latency_ok_ms: Option<Latency>,
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub unexpected: u64,
    /// 2xx answers with a session token other than the seeded one (counted in `unexpected`).
    pub wrong_tokens: u64,
    pub unexpected_samples: Vec<Unexpected>,
    /// `None` when `/metrics` could not be read.
    pub server: Option<ServerDeltas>,
}

/// Latency percentiles in milliseconds (from the scheduled start in open-loop runs).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Report {
    pub fn new(
        target: String,
        concurrency: usize,
        rate: Option<f64>,
        results: &Results,
        server: Option<ServerDeltas>,
    ) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        let latency = |h: &hdrhistogram::Histogram<u64>| Latency {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        };
        let seconds = results.elapsed.as_secs_f64();
        Self {
            target,
            mode: if rate.is_some() { "open" } else { "closed" },
            concurrency,
            rate,
            duration_s: seconds,
            requests: results.requests(),
            throughput_rps: if seconds > 0.0 {
                results.requests() as f64 / seconds
            } else {
                0.0
            },
            latency_ms: latency(&results.latency_micros),
            latency_ok_ms: (!results.expected_latency_micros.is_empty())
                .then(|| latency(&results.expected_latency_micros)),
            statuses: results.statuses.clone(),
            transport_errors: results.transport_errors,
            unexpected: results.unexpected,
            wrong_tokens: results.wrong_tokens,
            unexpected_samples: results.samples.clone(),
            server,
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write_table(&mut out);
        out
    }

    fn write_table(&self, out: &mut String) -> std::fmt::Result {
        let mode = match self.rate {
            Some(rate) => format!(
                "open loop at {rate} req/s, up to {} in flight",
                self.concurrency
            ),
            None => format!("closed loop, {} clients", self.concurrency),
        };
        writeln!(out, "target        {} ({mode})", self.target)?;
        writeln!(
            out,
            "requests      {} in {:.1} s = {:.1} req/s",
            self.requests, self.duration_s, self.throughput_rps
        )?;
        let l = self.latency_ms;
        writeln!(
            out,
            "latency (ms)  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.p50, l.p90, l.p99, l.p99_9, l.max
        )?;
        if let Some(l) = self.latency_ok_ms
            && self.unexpected > 0
        {
            writeln!(
                out,
                "  expected    p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                l.p50, l.p90, l.p99, l.p99_9, l.max
            )?;
        }
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{status}: {count}"))
            .collect();
        writeln!(
            out,
            "statuses      {}{}",
            if statuses.is_empty() {
                "none".to_owned()
            } else {
                statuses.join(", ")
            },
            if self.transport_errors > 0 {
                format!(", transport errors: {}", self.transport_errors)
            } else {
                String::new()
            }
        )?;
        writeln!(out, "unexpected    {}", self.unexpected)?;
        writeln!(out, "wrong tokens  {}", self.wrong_tokens)?;
        for sample in &self.unexpected_samples {
            let status = sample
                .status
                .map_or_else(|| "no answer".to_owned(), |s| s.to_string());
            writeln!(
                out,
                "  {} expected {}, got {status}: {}",
                sample.path, sample.expected_status, sample.detail
            )?;
        }
        match &self.server {
            None => writeln!(out, "server        /metrics unavailable")?,
            Some(server) => {
                writeln!(out, "server (from /metrics over the run)")?;
                writeln!(
                    out,
                    "  auth requests answered     {:.0}",
                    server.auth_requests
                )?;
                writeln!(
                    out,
                    "  SQL statements per request {}",
                    server
                        .sql_per_request
                        .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"))
                )?;
                for (query, count) in &server.sql_by_query {
                    writeln!(out, "    {query:<38} {count:.0}")?;
                }
                writeln!(
                    out,
                    "  pool acquire wait p99      {}",
                    server
                        .pool_acquire_p99_ms
                        .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3} ms"))
                )?;
                writeln!(
                    out,
                    "  pool acquire timeouts      {:.0}",
                    server.pool_acquire_timeouts
                )?;
                let peak = server
                    .peak_in_use_connections
                    .map_or_else(|| "n/a".to_owned(), |v| format!("{v:.0}"));
                let max = server
                    .pool_max_connections
                    .map_or_else(String::new, |v| format!(" of {v:.0}"));
                writeln!(
                    out,
                    "  peak connections in use    {peak}{max} (sampled every 250 ms)"
                )?;
            }
        }
        Ok(())
    }
}
