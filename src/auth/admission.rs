//! Admission control, the first step of every authentication, in this order: bodies declared
//! larger than the cap get 413; an optional per-source-IP rate limit answers 429; a request
//! that cannot be served in time gets 503 at once, before its body is read (no in-flight slot
//! free, or the database's lookup queue already longer than it can answer within the acquire
//! timeout); the body's bytes are reserved in the process-wide body budget (503 at once when
//! the bodies being received already fill it: the declared length up front, a chunked body
//! chunk by chunk); the body is read whole within a deadline (408 when too slow); then the
//! in-flight slot is taken (503 if it went meanwhile). A slow sender never holds an in-flight
//! slot, refusing costs no body read and no parse, however many senders stall their bodies
//! the bytes buffered for them stay within the budget, and nothing reaches the database before
//! all of these pass.

use std::net::{IpAddr, Ipv6Addr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::web::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt as _};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::api::error::ApiError;

/// Limits applied to the authentication routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Most authentication requests being processed at once.
    pub max_in_flight: NonZeroUsize,
    /// Requests per minute per client address (burst of the same size); `None` = no limit.
    pub rate_limit_per_minute: Option<NonZeroU32>,
    /// Most request body bytes buffered across all authentication requests at once; at least
    /// [`MAX_BODY_BYTES`], so every acceptable body fits.
    pub max_buffered_body_bytes: NonZeroUsize,
    /// Most open HTTP connections; beyond it new connections wait in the listen backlog
    /// (applied by [`crate::http`], per worker thread: see [`connections_per_worker`]).
    pub max_connections: NonZeroUsize,
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            rate_limit_per_minute: None,
            max_buffered_body_bytes: Self::DEFAULT_MAX_BUFFERED_BODY_BYTES,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl AdmissionSettings {
    /// Enough for a fleet of 10 000 agents reconnecting at once on one instance: a request
    /// waiting for its turn costs a few KiB, and the database queue, not this bound, is what
    /// refuses requests that could not be answered in time.
    pub const DEFAULT_MAX_IN_FLIGHT: NonZeroUsize = NonZeroUsize::MIN.saturating_add(16_383);

    /// 32 MiB: 512 bodies of the largest accepted size at once, or some 20 000 of the 1.5 KiB
    /// a real agent sends, so a fleet's storm never meets it; slow senders declaring 64 KiB
    /// each can hold no more than this (plus what the HTTP layer buffers per connection).
    pub const DEFAULT_MAX_BUFFERED_BODY_BYTES: NonZeroUsize =
        NonZeroUsize::MIN.saturating_add(32 * 1024 * 1024 - 1);

    /// 1024: the HTTP layer reads what a connection sent into a buffer of its own (64 KiB for
    /// a body of the largest accepted size, up to 128 KiB for a head), so this bound is what
    /// bounds that memory (about 100 MiB at worst). A fleet of 10 000 agents reconnecting at
    /// once is served 1024 connections at a time, the others waiting in the listen backlog.
    pub const DEFAULT_MAX_CONNECTIONS: NonZeroUsize = NonZeroUsize::MIN.saturating_add(1023);

    /// Refuses a budget that could never hold one body of the accepted size.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.max_buffered_body_bytes.get() >= MAX_BODY_BYTES,
            "--max-buffered-body-bytes {} is below the largest accepted body ({MAX_BODY_BYTES} \
             bytes): such bodies would always be refused",
            self.max_buffered_body_bytes
        );
        anyhow::ensure!(
            self.max_buffered_body_bytes.get() <= Semaphore::MAX_PERMITS,
            "--max-buffered-body-bytes {} is above {}",
            self.max_buffered_body_bytes,
            Semaphore::MAX_PERMITS
        );
        Ok(())
    }
}

/// actix-web bounds connections per worker thread, not in total: `max_connections` is shared
/// out evenly, rounded down so the total never exceeds it, over at most `workers` workers
/// (fewer when the bound is smaller than that). Returns the worker count and each one's bound.
pub(crate) fn connections_per_worker(
    max_connections: NonZeroUsize,
    workers: NonZeroUsize,
) -> (NonZeroUsize, NonZeroUsize) {
    let workers = workers.min(max_connections);
    let per_worker =
        NonZeroUsize::new(max_connections.get() / workers.get()).unwrap_or(NonZeroUsize::MIN);
    (workers, per_worker)
}

/// Shared admission state.
#[derive(Debug)]
pub(crate) struct Admission {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    /// One permit per body byte buffered; a body's reservation goes back when it is parsed or
    /// abandoned.
    body_budget: Arc<Semaphore>,
    max_buffered_body_bytes: usize,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Requests shed for want of an in-flight slot or a database answer in time.
    shed: Mutex<Shed>,
    /// Requests shed because the bodies being received filled the body budget.
    shed_for_bodies: Mutex<Shed>,
}

/// Refusals counted since the last warning, and when that was.
#[derive(Debug, Default)]
pub(crate) struct Shed {
    since_warning: u64,
    warned_at: Option<Instant>,
}

impl Shed {
    /// Counts one refusal; returns the count to warn of when a warning is due.
    pub(crate) fn count(this: &Mutex<Self>) -> Option<u64> {
        let mut shed = this.lock().unwrap_or_else(PoisonError::into_inner);
        shed.since_warning += 1;
        let due = shed
            .warned_at
            .is_none_or(|at| at.elapsed() >= SHED_WARNING_EVERY);
        due.then(|| {
            shed.warned_at = Some(Instant::now());
            std::mem::take(&mut shed.since_warning)
        })
    }
}

/// At most one warning per this interval while requests are shed: under a burst, shedding is
/// tens of thousands of answers a second, each counted and logged as its own outcome already.
const SHED_WARNING_EVERY: Duration = Duration::from_secs(1);

/// Above this many tracked sources, idle entries are dropped at once rather than at the next
/// sweep, bounding memory against a flood of distinct addresses.
const MAX_TRACKED_SOURCES: usize = 100_000;

/// The rate-limit key of a peer: its IPv4 address, or its IPv6 /64 (one host's share of a
/// typical allocation, which a single client can rotate through freely).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX)))
        }
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// How often idle per-IP entries are dropped, bounding the limiter's memory.
const PER_IP_SWEEP: Duration = Duration::from_secs(60);

impl Admission {
    pub(crate) fn new(settings: AdmissionSettings) -> Arc<Self> {
        let admission = Arc::new(Self {
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.get())),
            max_in_flight: settings.max_in_flight.get(),
            body_budget: Arc::new(Semaphore::new(settings.max_buffered_body_bytes.get())),
            max_buffered_body_bytes: settings.max_buffered_body_bytes.get(),
            per_ip: settings
                .rate_limit_per_minute
                .map(|per_minute| RateLimiter::keyed(Quota::per_minute(per_minute))),
            shed: Mutex::new(Shed::default()),
            shed_for_bodies: Mutex::new(Shed::default()),
        });
        if admission.per_ip.is_some() {
            let weak = Arc::downgrade(&admission);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PER_IP_SWEEP);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(admission) = weak.upgrade() else {
                        return;
                    };
                    if let Some(limiter) = &admission.per_ip {
                        limiter.retain_recent();
                        limiter.shrink_to_fit();
                    }
                }
            });
        }
        admission
    }

    fn check_rate(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(limiter), Some(ip)) = (&self.per_ip, ip) else {
            return Ok(());
        };
        if limiter.len() > MAX_TRACKED_SOURCES {
            limiter.retain_recent();
        }
        limiter.check_key(&source_key(ip)).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }

    /// Request body bytes buffered right now, reserved from the budget.
    pub(crate) fn buffered_body_bytes(&self) -> usize {
        self.max_buffered_body_bytes - self.body_budget.available_permits()
    }

    /// Takes `bytes` more from the body budget into `reservation`, or refuses the request.
    fn reserve(
        &self,
        reservation: &mut Option<OwnedSemaphorePermit>,
        bytes: usize,
    ) -> Result<(), ApiError> {
        // At most MAX_BODY_BYTES: the callers refuse larger bodies first.
        let Ok(permits) = u32::try_from(bytes) else {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        };
        if permits == 0 {
            return Ok(());
        }
        let taken = self
            .body_budget
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| self.shedding_for_bodies())?;
        match reservation {
            Some(held) => held.merge(taken),
            None => *reservation = Some(taken),
        }
        Ok(())
    }
}

/// An admitted request: its whole body, and its in-flight slot until dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) body: Body,
    _slot: OwnedSemaphorePermit,
}

/// A whole request body, holding its share of the body budget until dropped.
#[derive(Debug)]
pub(crate) struct Body {
    pub(crate) bytes: Bytes,
    _reservation: Option<OwnedSemaphorePermit>,
}

impl Admission {
    /// Checks `request` from `client` against every limit, reading its body on the way; the
    /// order is the module's. `queue_full` says whether the database's lookup queue is already
    /// longer than it can answer in time.
    pub(crate) async fn admit<S>(
        &self,
        request: &HttpRequest,
        client: Option<IpAddr>,
        payload: S,
        queue_full: impl FnOnce() -> bool,
    ) -> Result<Admitted, ApiError>
    where
        S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    {
        let declared_length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared_length.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_BODY_BYTES,
            });
        }
        self.check_rate(client)?;
        if self.in_flight.available_permits() == 0 {
            return Err(self.shedding(ApiError::Overloaded {
                max_in_flight: self.max_in_flight,
            }));
        }
        if queue_full() {
            return Err(self.shedding(ApiError::QueueFull));
        }
        let body = self.read_capped(payload, declared_length).await?;
        let Ok(slot) = self.in_flight.clone().try_acquire_owned() else {
            return Err(self.shedding(ApiError::Overloaded {
                max_in_flight: self.max_in_flight,
            }));
        };
        Ok(Admitted { body, _slot: slot })
    }

    /// Counts a shed request, warning at most once per [`SHED_WARNING_EVERY`].
    fn shedding(&self, answer: ApiError) -> ApiError {
        if let Some(shed) = Shed::count(&self.shed) {
            tracing::warn!(
                shed,
                max_in_flight = self.max_in_flight,
                reason = %answer,
                "shedding: authentication requests refused at once"
            );
        }
        answer
    }

    /// Counts a request refused for the body budget, warning at most once per
    /// [`SHED_WARNING_EVERY`].
    fn shedding_for_bodies(&self) -> ApiError {
        if let Some(shed) = Shed::count(&self.shed_for_bodies) {
            tracing::warn!(
                shed,
                max_buffered_body_bytes = self.max_buffered_body_bytes,
                buffered_body_bytes = self.buffered_body_bytes(),
                "body budget full: authentication requests refused at once"
            );
        }
        ApiError::BodyBudgetFull {
            max_buffered_body_bytes: self.max_buffered_body_bytes,
        }
    }

    /// Reads the whole body within [`BODY_DEADLINE`], refusing more than [`MAX_BODY_BYTES`]
    /// and more than the body budget has left: a declared length is reserved before the first
    /// byte is read, a body without one chunk by chunk.
    async fn read_capped<S>(
        &self,
        mut payload: S,
        declared_length: Option<u64>,
    ) -> Result<Body, ApiError>
    where
        S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    {
        let mut reservation = None;
        let declared = declared_length.and_then(|len| usize::try_from(len).ok());
        if let Some(len) = declared {
            self.reserve(&mut reservation, len)?;
        }
        let read = async {
            // The chunks are kept as the HTTP layer handed them (no copy while a slow sender
            // trickles) and joined once, at the end.
            let mut chunks: Vec<Bytes> = Vec::new();
            let mut received = 0;
            while let Some(chunk) = payload.next().await {
                let chunk = chunk.map_err(|err| match err {
                    PayloadError::Overflow => ApiError::PayloadTooLarge {
                        limit: MAX_BODY_BYTES,
                    },
                    other => ApiError::InvalidJson(format!("reading the body: {other}")),
                })?;
                received += chunk.len();
                if received > MAX_BODY_BYTES {
                    return Err(ApiError::PayloadTooLarge {
                        limit: MAX_BODY_BYTES,
                    });
                }
                if declared.is_none() {
                    self.reserve(&mut reservation, chunk.len())?;
                }
                chunks.push(chunk);
            }
            Ok(join(chunks, received))
        };
        let bytes = tokio::time::timeout(BODY_DEADLINE, read)
            .await
            .unwrap_or(Err(ApiError::BodyTimeout {
                seconds: BODY_DEADLINE.as_secs(),
            }))?;
        Ok(Body {
            bytes,
            _reservation: reservation,
        })
    }
}

/// The chunks of a body as one buffer; a body that came in one chunk is not copied.
fn join(mut chunks: Vec<Bytes>, len: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut joined = BytesMut::with_capacity(len);
    for chunk in chunks {
        joined.extend_from_slice(&chunk);
    }
    joined.freeze()
}

/// Largest accepted body. Real identity material is under 5 KiB (Azure's PKCS#7 is the largest).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest time a client may take to send its whole body. Without it, slow senders would hold
/// connections and in-flight slots at will.
pub(crate) const BODY_DEADLINE: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::{AdmissionSettings, MAX_BODY_BYTES, connections_per_worker, source_key};
    use std::net::IpAddr;
    use std::num::NonZeroUsize;

    fn n(value: usize) -> NonZeroUsize {
        NonZeroUsize::new(value).unwrap_or(NonZeroUsize::MIN)
    }

    #[test]
    fn the_connection_bound_is_shared_out_without_exceeding_it() {
        assert_eq!(connections_per_worker(n(1024), n(2)), (n(2), n(512)));
        assert_eq!(connections_per_worker(n(1025), n(2)), (n(2), n(512)));
        assert_eq!(connections_per_worker(n(2), n(8)), (n(2), n(1)));
        assert_eq!(connections_per_worker(n(1), n(2)), (n(1), n(1)));
    }

    #[test]
    fn a_body_budget_smaller_than_one_body_is_refused() {
        let settings = |bytes| AdmissionSettings {
            max_buffered_body_bytes: n(bytes),
            ..AdmissionSettings::default()
        };
        assert!(settings(MAX_BODY_BYTES).check().is_ok());
        let err = settings(MAX_BODY_BYTES - 1)
            .check()
            .err()
            .map(|err| err.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("below the largest accepted body (65536 bytes)"),
            "{err}"
        );
    }

    #[test]
    fn ipv6_sources_are_keyed_by_their_64_prefix() {
        let key = |s: &str| source_key(s.parse::<IpAddr>().expect("address"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("192.0.2.7"), key("::ffff:192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }
}
