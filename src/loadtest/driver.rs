//! Sending the corpus: a fixed number of clients, each sending its next request as soon as the
//! previous one is answered (closed loop), or requests started on a fixed schedule (open loop,
//! `--rate`), where latency runs from the scheduled start so a stalled server cannot hide its
//! queueing (coordinated omission).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::corpus::CorpusLine;

/// Latencies are recorded in microseconds, up to an hour, to 3 significant digits.
const HISTOGRAM_MAX_MICROS: u64 = 3_600_000_000;
/// How many unexpected answers are kept as examples.
const SAMPLES: usize = 10;

/// How to drive the server.
#[derive(Debug, Clone)]
pub struct Plan {
    pub base_url: String,
    pub concurrency: usize,
    pub duration: Duration,
    /// Requests per second for an open loop; `None` is a closed loop.
    pub rate: Option<f64>,
    pub timeout: Duration,
}

/// A prepared request.
#[derive(Debug)]
struct Prepared {
    url: String,
    path: String,
    body: String,
    expected_status: u16,
}

/// An answer that was not the expected one (never a session token: bodies of 2xx answers are
/// not kept).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Unexpected {
    pub path: String,
    pub expected_status: u16,
    /// `None` when no HTTP answer arrived.
    pub status: Option<u16>,
    /// The error message, or the body's `message` for non-2xx answers.
    pub detail: String,
}

/// What the clients saw.
#[derive(Debug)]
pub struct Results {
    pub latency_micros: Histogram<u64>,
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub unexpected: u64,
    pub samples: Vec<Unexpected>,
    pub elapsed: Duration,
}

impl Results {
    pub fn requests(&self) -> u64 {
        self.latency_micros.len()
    }
}

/// Counters shared with the progress display.
#[derive(Debug, Default)]
pub struct Progress {
    pub completed: AtomicU64,
}

struct Shared {
    client: reqwest::Client,
    requests: Vec<Prepared>,
    plan: Plan,
    next: AtomicU64,
    start: Instant,
    progress: Arc<Progress>,
}

/// Runs the plan to its end and merges what every client saw.
pub async fn drive(
    plan: Plan,
    corpus: &[CorpusLine],
    progress: Arc<Progress>,
) -> anyhow::Result<Results> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(plan.concurrency)
        .timeout(plan.timeout)
        .tcp_nodelay(true)
        .build()?;
    let requests = corpus
        .iter()
        .map(|line| {
            Ok(Prepared {
                url: format!("{}{}", plan.base_url, line.path),
                path: line.path.clone(),
                body: serde_json::to_string(&line.body)?,
                expected_status: line.expected_status,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let shared = Arc::new(Shared {
        client,
        requests,
        plan: plan.clone(),
        next: AtomicU64::new(0),
        start: Instant::now(),
        progress,
    });
    let workers: Vec<_> = (0..plan.concurrency)
        .map(|_| tokio::spawn(client_loop(shared.clone())))
        .collect();
    let mut results = Results {
        latency_micros: new_histogram()?,
        statuses: BTreeMap::new(),
        transport_errors: 0,
        unexpected: 0,
        samples: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        let seen = worker.await??;
        results.latency_micros.add(&seen.latency_micros)?;
        for (status, count) in seen.statuses {
            *results.statuses.entry(status).or_insert(0) += count;
        }
        results.transport_errors += seen.transport_errors;
        results.unexpected += seen.unexpected;
        let room = SAMPLES.saturating_sub(results.samples.len());
        results.samples.extend(seen.samples.into_iter().take(room));
    }
    results.elapsed = shared.start.elapsed();
    Ok(results)
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?)
}

/// One client: takes the next request number, waits for its slot (open loop), sends it and
/// records the answer, until the duration is over.
async fn client_loop(shared: Arc<Shared>) -> anyhow::Result<Results> {
    let mut seen = Results {
        latency_micros: new_histogram()?,
        statuses: BTreeMap::new(),
        transport_errors: 0,
        unexpected: 0,
        samples: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let deadline = shared.start + shared.plan.duration;
    loop {
        let number = shared.next.fetch_add(1, Ordering::Relaxed);
        let started = match shared.plan.rate {
            Some(rate) => {
                let slot = shared.start + Duration::from_secs_f64(number as f64 / rate);
                if slot >= deadline {
                    break;
                }
                tokio::time::sleep_until(slot).await;
                slot
            }
            None => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                now
            }
        };
        let index = usize::try_from(number % shared.requests.len() as u64).unwrap_or(0);
        let request = &shared.requests[index];
        let answer = send(&shared.client, request).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        seen.latency_micros.saturating_record(micros.max(1));
        shared.progress.completed.fetch_add(1, Ordering::Relaxed);
        let (status, detail) = match answer {
            Ok((status, detail)) => {
                *seen.statuses.entry(status).or_insert(0) += 1;
                (Some(status), detail)
            }
            Err(err) => {
                seen.transport_errors += 1;
                (None, err.to_string())
            }
        };
        if status != Some(request.expected_status) {
            seen.unexpected += 1;
            if seen.samples.len() < SAMPLES {
                seen.samples.push(Unexpected {
                    path: request.path.clone(),
                    expected_status: request.expected_status,
                    status,
                    detail,
                });
            }
        }
    }
    Ok(seen)
}

/// Sends one request and reads the whole answer (so the connection can be reused). Returns the
/// status and, for non-2xx answers, the body's `message`.
async fn send(
    client: &reqwest::Client,
    request: &Prepared,
) -> Result<(u16, String), reqwest::Error> {
    let response = client
        .post(&request.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(request.body.clone())
        .send()
        .await?;
    let status = response.status();
    let body = response.bytes().await?;
    let detail = if status.is_success() {
        String::new()
    } else {
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    Ok((status.as_u16(), detail))
}
