//! Admission control in front of the authentication routes: a bound on requests in flight,
//! shed at once with 503 so queues never grow without limit, an optional per-source-IP rate
//! limit answered with 429, and bodies declared larger than the cap refused with 413. All
//! answer before any body is read or any database work is done.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::web;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::routes::body::MAX_BODY_BYTES;

/// Limits applied to the authentication routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Most authentication requests being processed at once.
    pub max_in_flight: usize,
    /// Requests per minute per source IP (burst of the same size); `None` = no limit.
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
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
}

/// Shared admission state.
#[derive(Debug)]
pub struct Admission {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// How often idle per-IP entries are dropped, bounding the limiter's memory.
const PER_IP_SWEEP: Duration = Duration::from_secs(60);

impl Admission {
    pub fn new(settings: AdmissionSettings) -> Arc<Self> {
        let admission = Arc::new(Self {
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            max_in_flight: settings.max_in_flight,
            per_ip: settings
                .rate_limit_per_minute
                .map(|per_minute| RateLimiter::keyed(Quota::per_minute(per_minute))),
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
        limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }
}

/// Middleware for the authentication scope.
pub async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(admission) = req.app_data::<web::Data<Admission>>().cloned() else {
        return next.call(req).await;
    };
    let declared_length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_length.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        }
        .into());
    }
    admission.check_rate(req.peer_addr().map(|addr| addr.ip()))?;
    let Ok(_permit) = admission.in_flight.clone().try_acquire_owned() else {
        tracing::warn!(
            max_in_flight = admission.max_in_flight,
            "shedding: too many authentication requests in flight"
        );
        return Err(ApiError::Overloaded {
            max_in_flight: admission.max_in_flight,
        }
        .into());
    };
    next.call(req).await
}
