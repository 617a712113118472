//! `--storm N`: a fleet reconnecting at once. N distinct agents (the first N corpus lines)
//! start together, each on a connection of its own, and each retries every answer but 200 the
//! way Coder's agent does (`docs/coder-contract.md` §5): a backoff from 100 ms doubling to 10 s,
//! no jitter, `Retry-After` ignored, 30 s per request, until it holds its token or the run's
//! duration is over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use super::driver::{Connection, Prepared, Target};
use super::scrape::ServerDeltas;
use super::threads;

/// The agent's first retry delay; each further one doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long the agent waits for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What one agent went through.
#[derive(Debug, Default)]
pub(super) struct Agent {
    /// From the storm's start to holding its token.
    token_after: Option<Duration>,
    requests: u64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    wrong_tokens: u64,
}

/// The storm's report.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub target: String,
    pub agents: usize,
    /// Agents that held their token by the end.
    pub authenticated: usize,
    /// From the start until the last agent held its token; `None` unless every agent did.
    pub makespan_s: Option<f64>,
    /// Per-agent time from the start to its token, over the authenticated agents.
    pub time_to_token_ms: Option<TimeToToken>,
    pub requests: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    /// 200 answers with a session token other than the seeded one.
    pub wrong_tokens: u64,
    /// The server's statements over the storm per authenticated agent (from `/metrics`).
    pub statements_per_agent: Option<f64>,
    /// `None` when `/metrics` could not be read.
    pub server: Option<ServerDeltas>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct TimeToToken {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

/// Runs the storm: every one of `requests` is one agent.
pub(super) async fn storm(
    target: &Target,
    requests: Vec<Prepared>,
    duration: Duration,
) -> anyhow::Result<(usize, Vec<Agent>)> {
    let start = Instant::now();
    let deadline = start + duration;
    let requests = Arc::new(requests);
    let count = requests.len();
    let target = target.clone();
    let seen = threads::spread(count, move |index| {
        let requests = Arc::clone(&requests);
        let target = target.clone();
        async move { agent(&target, &requests[index], start, deadline).await }
    })
    .await?;
    Ok((count, seen))
}

/// One agent, until it holds its token or `deadline` passes.
async fn agent(target: &Target, request: &Prepared, start: Instant, deadline: Instant) -> Agent {
    let mut seen = Agent::default();
    let mut connection = Connection::default();
    let mut backoff = FIRST_BACKOFF;
    while Instant::now() < deadline {
        let timeout = REQUEST_TIMEOUT.min(deadline.saturating_duration_since(Instant::now()));
        seen.requests += 1;
        match connection.send(target, timeout, request).await {
            Ok(answer) => {
                *seen.statuses.entry(answer.status).or_insert(0) += 1;
                if answer.status == 200 {
                    if answer.right_token == Some(false) {
                        seen.wrong_tokens += 1;
                    }
                    seen.token_after = Some(start.elapsed());
                    return seen;
                }
            }
            Err(_) => seen.transport_errors += 1,
        }
        let wake = (Instant::now() + backoff).min(deadline);
        tokio::time::sleep_until(wake).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    seen
}

impl StormReport {
    pub(super) fn new(
        target: String,
        agents: usize,
        seen: &[Agent],
        server: Option<ServerDeltas>,
    ) -> anyhow::Result<Self> {
        let mut times = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
        let mut statuses = BTreeMap::new();
        let (mut requests, mut transport_errors, mut wrong_tokens) = (0, 0, 0);
        for agent in seen {
            if let Some(after) = agent.token_after {
                times
                    .saturating_record(u64::try_from(after.as_micros()).unwrap_or(u64::MAX).max(1));
            }
            requests += agent.requests;
            transport_errors += agent.transport_errors;
            wrong_tokens += agent.wrong_tokens;
            for (status, count) in &agent.statuses {
                *statuses.entry(*status).or_insert(0) += count;
            }
        }
        let authenticated = usize::try_from(times.len()).unwrap_or(usize::MAX);
        let ms = |micros: u64| micros as f64 / 1000.0;
        let makespan = seen
            .iter()
            .map(|agent| agent.token_after)
            .collect::<Option<Vec<_>>>()
            .and_then(|times| times.into_iter().max());
        let statements_per_agent = server
            .as_ref()
            .filter(|_| authenticated > 0)
            .map(|server| server.sql_statements / authenticated as f64);
        Ok(Self {
            target,
            agents,
            authenticated,
            makespan_s: makespan.map(|m| m.as_secs_f64()),
            time_to_token_ms: (authenticated > 0).then(|| TimeToToken {
                p50: ms(times.value_at_quantile(0.5)),
                p99: ms(times.value_at_quantile(0.99)),
                max: ms(times.max()),
            }),
            requests,
            statuses,
            transport_errors,
            wrong_tokens,
            statements_per_agent,
            server,
        })
    }

    /// The human-readable summary.
    pub fn table(&self) -> String {
        let optional = |value: Option<f64>, digits: usize| {
            value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.digits$}"))
        };
        let mut out = format!(
            "storm of {} agents against {}\n\
             authenticated       {} of {}\n\
             makespan            {} s\n",
            self.agents,
            self.target,
            self.authenticated,
            self.agents,
            optional(self.makespan_s, 3),
        );
        if let Some(t) = &self.time_to_token_ms {
            out.push_str(&format!(
                "time to token       p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
                t.p50, t.p99, t.max
            ));
        }
        out.push_str(&format!(
            "requests            {}\nstatuses            {:?}\ntransport errors    {}\nwrong tokens        {}\nstatements / agent  {}\n",
            self.requests,
            self.statuses,
            self.transport_errors,
            self.wrong_tokens,
            optional(self.statements_per_agent, 3),
        ));
        out
    }
}
