//! Sending the corpus: a fixed number of clients, each sending its next request as soon as the
//! previous one is answered (closed loop), or requests started on a fixed schedule (open loop,
//! `--rate`), where latency runs from the scheduled start so a stalled server cannot hide its
//! queueing (coordinated omission).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::tools::corpus::CorpusLine;

use super::threads;

/// Latencies are recorded in microseconds, up to an hour, to 3 significant digits.
const HISTOGRAM_MAX_MICROS: u64 = 3_600_000_000;
/// How many unexpected answers are kept as examples.
const SAMPLES: usize = 10;

/// How to drive the server.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    /// Where the server listens (tried in order, as resolved), the `Host` header that names
    /// it, and the path of the target URL, put in front of each corpus path.
    pub target: Target,
    pub concurrency: usize,
    pub duration: Duration,
    /// Requests per second for an open loop; `None` is a closed loop.
    pub rate: Option<f64>,
    pub timeout: Duration,
}

/// The server under test.
#[derive(Debug, Clone)]
pub(super) struct Target {
    pub addresses: Vec<SocketAddr>,
    pub authority: String,
    pub path_prefix: String,
}

/// A prepared request: the body is shared, so sending it copies nothing.
#[derive(Debug)]
pub(super) struct Prepared {
    path: String,
    body: Bytes,
    expected_status: u16,
    expected_token: Option<String>,
}

/// The corpus as requests to `target`.
pub(super) fn prepare(target: &Target, corpus: &[CorpusLine]) -> anyhow::Result<Vec<Prepared>> {
    corpus
        .iter()
        .map(|line| {
            Ok(Prepared {
                path: format!("{}{}", target.path_prefix, line.path),
                body: Bytes::from(serde_json::to_vec(&line.body)?),
                expected_status: line.expected_status,
                expected_token: line.expected_token.clone(),
            })
        })
        .collect()
}

/// What came back for one request.
#[derive(Debug)]
pub(super) struct Answer {
    pub status: u16,
    /// The body's `message` for non-2xx answers.
    pub detail: String,
    /// For a 2xx answer to a request whose token is known: whether it carried that token.
    /// The token itself is never kept.
    pub right_token: Option<bool>,
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
    /// Latency of the answers that were the expected ones.
    pub expected_latency_micros: Histogram<u64>,
    pub statuses: BTreeMap<u16, u64>,
    pub transport_errors: u64,
    pub unexpected: u64,
    /// 2xx answers with a session token other than the seeded one.
    pub wrong_tokens: u64,
    pub samples: Vec<Unexpected>,
    pub elapsed: Duration,
}

impl Results {
    /// Nothing seen yet.
    fn empty() -> anyhow::Result<Self> {
        Ok(Self {
            latency_micros: Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?,
            expected_latency_micros: Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)?,
            statuses: BTreeMap::new(),
            transport_errors: 0,
            unexpected: 0,
            wrong_tokens: 0,
            samples: Vec::new(),
            elapsed: Duration::ZERO,
        })
    }

    pub fn requests(&self) -> u64 {
        self.latency_micros.len()
    }
}

/// Counters shared with the progress display.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub completed: AtomicU64,
}

struct Shared {
    requests: Vec<Prepared>,
    plan: Plan,
    next: AtomicU64,
    start: Instant,
    progress: Arc<Progress>,
}

/// Runs the plan to its end and merges what every client saw.
pub(super) async fn drive(
    plan: Plan,
    corpus: &[CorpusLine],
    progress: Arc<Progress>,
) -> anyhow::Result<Results> {
    let requests = prepare(&plan.target, corpus)?;
    let shared = Arc::new(Shared {
        requests,
        plan: plan.clone(),
        next: AtomicU64::new(0),
        start: Instant::now(),
        progress,
    });
    let clients = {
        let shared = Arc::clone(&shared);
        threads::spread(plan.concurrency, move |_| client_loop(Arc::clone(&shared))).await?
    };
    let mut results = Results::empty()?;
    for seen in clients {
        let seen = seen?;
        results.latency_micros.add(&seen.latency_micros)?;
        results
            .expected_latency_micros
            .add(&seen.expected_latency_micros)?;
        for (status, count) in seen.statuses {
            *results.statuses.entry(status).or_insert(0) += count;
        }
        results.transport_errors += seen.transport_errors;
        results.unexpected += seen.unexpected;
        results.wrong_tokens += seen.wrong_tokens;
        let room = SAMPLES.saturating_sub(results.samples.len());
        results.samples.extend(seen.samples.into_iter().take(room));
    }
    results.elapsed = shared.start.elapsed();
    Ok(results)
}

/// One client: takes the next request number, waits for its slot (open loop), sends it and
/// records the answer, until the duration is over.
async fn client_loop(shared: Arc<Shared>) -> anyhow::Result<Results> {
    let mut seen = Results::empty()?;
    let deadline = shared.start + shared.plan.duration;
    let mut connection = Connection::default();
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
        let answer = connection
            .send(&shared.plan.target, shared.plan.timeout, request)
            .await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        seen.latency_micros.saturating_record(micros.max(1));
        shared.progress.completed.fetch_add(1, Ordering::Relaxed);
        let (status, detail, wrong_token) = match answer {
            Ok(answer) => {
                *seen.statuses.entry(answer.status).or_insert(0) += 1;
                let wrong = answer.right_token == Some(false);
                let detail = if wrong {
                    "a session token other than the seeded one".to_owned()
                } else {
                    answer.detail
                };
                (Some(answer.status), detail, wrong)
            }
            Err(err) => {
                seen.transport_errors += 1;
                (None, err, false)
            }
        };
        if wrong_token {
            seen.wrong_tokens += 1;
        }
        if status == Some(request.expected_status) && !wrong_token {
            seen.expected_latency_micros
                .saturating_record(micros.max(1));
        } else {
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

/// One client's own HTTP/1.1 connection, kept alive across its requests like a real agent's
/// and opened again after a failure. One connection per client, with no shared pool in
/// between, keeps the load tool's own CPU per request low: on one machine it competes with
/// the server it measures.
#[derive(Default)]
pub(super) struct Connection {
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// Sends one request and reads the whole answer within `timeout`.
    pub(super) async fn send(
        &mut self,
        target: &Target,
        timeout: Duration,
        request: &Prepared,
    ) -> Result<Answer, String> {
        let answer = tokio::time::timeout(timeout, self.exchange(target, request)).await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(_) => Err(format!("no answer within {timeout:?}")),
        };
        if answer.is_err() {
            // The connection's state is unknown after a failure or a timeout: start afresh.
            self.sender = None;
        }
        answer
    }

    /// One request and its answer. A kept-alive connection the server has meanwhile closed
    /// can fail before the request was written to it; such a request, never sent, is sent
    /// once on a new connection, as an agent would. A request that may have reached the
    /// server is never sent again, so the server's figures count what the clients sent.
    async fn exchange(&mut self, target: &Target, request: &Prepared) -> Result<Answer, String> {
        let response = match self.round_trip(target, request).await {
            Err(Failed::NotSent(_)) => {
                self.sender = None;
                self.round_trip(target, request).await
            }
            response => response,
        }
        .map_err(|failed| match failed {
            Failed::NotSent(err) | Failed::Other(err) => err,
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|err| err.to_string())?
            .to_bytes();
        let field = |name: &str| {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v[name].as_str().map(str::to_owned))
        };
        let (detail, right_token) = if status.is_success() {
            let right = request
                .expected_token
                .as_ref()
                .map(|expected| field("session_token").as_ref() == Some(expected));
            (String::new(), right)
        } else {
            (field("message").unwrap_or_default(), None)
        };
        Ok(Answer {
            status: status.as_u16(),
            detail,
            right_token,
        })
    }

    /// Sends the request, on the open connection or a new one, and waits for the answer's head.
    async fn round_trip(
        &mut self,
        target: &Target,
        request: &Prepared,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Failed> {
        let sender = match &mut self.sender {
            Some(sender) if !sender.is_closed() => sender,
            stale => stale.insert(connect(&target.addresses).await.map_err(Failed::Other)?),
        };
        let http_request = hyper::Request::post(request.path.as_str())
            .header(hyper::header::HOST, target.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(request.body.clone()))
            .map_err(|err| Failed::Other(err.to_string()))?;
        if let Err(err) = sender.ready().await {
            return Err(Failed::NotSent(err.to_string()));
        }
        sender
            .try_send_request(http_request)
            .await
            .map_err(|mut err| match err.take_message() {
                Some(_) => Failed::NotSent(err.error().to_string()),
                None => Failed::Other(err.error().to_string()),
            })
    }
}

/// Why a request got no answer.
enum Failed {
    /// The connection failed before the request was written: it never reached the server.
    NotSent(String),
    Other(String),
}

/// Opens a connection to the first of `addresses` that accepts one.
async fn connect(addresses: &[SocketAddr]) -> Result<SendRequest<Full<Bytes>>, String> {
    let mut refused = Vec::new();
    let mut stream = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(err) => refused.push(format!("{address}: {err}")),
        }
    }
    let stream = stream.ok_or_else(|| format!("connecting to {}", refused.join("; ")))?;
    stream.set_nodelay(true).map_err(|err| err.to_string())?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|err| err.to_string())?;
    // Drives the connection until the sender is dropped or the server closes it; an error
    // there surfaces on the sender as well.
    tokio::spawn(connection);
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name such as `localhost` may resolve to an address nobody listens on first (`::1`
    /// while the server is on 127.0.0.1): the clients go on to the next one.
    #[tokio::test]
    async fn connecting_tries_each_resolved_address_in_turn() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        };
        let open = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = open.local_addr().expect("addr");
        tokio::spawn(async move {
            let _connection = open.accept().await;
            std::future::pending::<()>().await;
        });
        assert!(connect(&[closed, address]).await.is_ok());
        let refused = connect(&[closed]).await.err().unwrap_or_default();
        assert!(refused.contains(&closed.to_string()), "{refused}");
    }
}
