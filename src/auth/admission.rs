//! Admission control, the first step of every authentication, in this order: bodies declared
//! larger than the cap get 413; an optional per-source-IP rate limit answers 429; a request
//! that cannot be served in time gets 503 at once, before its body is read (no in-flight slot
//! free, or the database's lookup queue already longer than it can answer within the acquire
//! timeout); the body is read whole within a deadline (408 when too slow); then the in-flight
//! slot is taken (503 if it went meanwhile). A slow sender never holds an in-flight slot,
//! refusing costs no body read and no parse, and nothing reaches the database before all of
//! these pass.

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
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
            rate_limit_per_minute: None,
        }
    }
}

impl AdmissionSettings {
    /// Enough for a fleet of 10 000 agents reconnecting at once on one instance: a request
    /// waiting for its turn costs a few KiB, and the database queue, not this bound, is what
    /// refuses requests that could not be answered in time.
    pub const DEFAULT_MAX_IN_FLIGHT: NonZeroUsize = NonZeroUsize::MIN.saturating_add(16_383);
}

/// Shared admission state.
#[derive(Debug)]
pub(crate) struct Admission {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Requests shed since the last warning, and when that was.
    shed: Mutex<Shed>,
}

#[derive(Debug, Default)]
struct Shed {
    since_warning: u64,
    warned_at: Option<Instant>,
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
            per_ip: settings
                .rate_limit_per_minute
                .map(|per_minute| RateLimiter::keyed(Quota::per_minute(per_minute))),
            shed: Mutex::new(Shed::default()),
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
}

/// An admitted request: its whole body, and its in-flight slot until dropped.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) body: Bytes,
    _slot: OwnedSemaphorePermit,
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
        let body = read_capped(payload).await?;
        let Ok(slot) = self.in_flight.clone().try_acquire_owned() else {
            return Err(self.shedding(ApiError::Overloaded {
                max_in_flight: self.max_in_flight,
            }));
        };
        Ok(Admitted { body, _slot: slot })
    }

    /// Counts a shed request, warning at most once per [`SHED_WARNING_EVERY`].
    fn shedding(&self, answer: ApiError) -> ApiError {
        let mut shed = self.shed.lock().unwrap_or_else(PoisonError::into_inner);
        shed.since_warning += 1;
        let due = shed
            .warned_at
            .is_none_or(|at| at.elapsed() >= SHED_WARNING_EVERY);
        if due {
            tracing::warn!(
                shed = shed.since_warning,
                max_in_flight = self.max_in_flight,
                reason = %answer,
                "shedding: authentication requests refused at once"
            );
            shed.since_warning = 0;
            shed.warned_at = Some(Instant::now());
        }
        answer
    }
}

/// Largest accepted body. Real identity material is under 5 KiB (Azure's PKCS#7 is the largest).
pub(crate) const MAX_BODY_BYTES: usize = 64 * 1024;

/// Longest time a client may take to send its whole body. Without it, slow senders would hold
/// connections and in-flight slots at will.
pub(crate) const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// Reads the whole body within [`BODY_DEADLINE`], refusing more than [`MAX_BODY_BYTES`], before
/// an in-flight slot is taken.
async fn read_capped<S>(mut payload: S) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    let read = async {
        let mut bytes = BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|err| match err {
                PayloadError::Overflow => ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                },
                other => ApiError::InvalidJson(format!("reading the body: {other}")),
            })?;
            if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes.freeze())
    };
    tokio::time::timeout(BODY_DEADLINE, read)
        .await
        .unwrap_or(Err(ApiError::BodyTimeout {
            seconds: BODY_DEADLINE.as_secs(),
        }))
}

#[cfg(test)]
mod tests {
    use super::source_key;
    use std::net::IpAddr;

    #[test]
    fn ipv6_sources_are_keyed_by_their_64_prefix() {
        let key = |s: &str| source_key(s.parse::<IpAddr>().expect("address"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:bbbb::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("192.0.2.7"), key("::ffff:192.0.2.7"));
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }
}
