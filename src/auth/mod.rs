//! One authentication, start to end, the same for all three clouds:
//!
//! 1. admit ([`admission`]): size, rate and in-flight limits, the body read within a deadline;
//! 2. decode and validate the body ([`requests`], Go's JSON rules);
//! 3. verify the cloud material into a proven instance id ([`crate::identity`]);
//! 4. look up the candidates: one database exchange, one statement ([`lookup`]);
//! 5. decide: pure, candidates and requested name in, the agent or a refusal out
//!    ([`crate::agents::decide`]);
//! 6. respond: the token or Coder's error, with `Server-Timing`, the outcome metric and one
//!    log line ([`record`]).

pub mod admission;
pub mod lookup;
mod record;
pub(crate) mod requests;

use std::sync::Arc;
use std::time::Instant;

use actix_web::error::PayloadError;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::Stream;

use crate::agents::{self, Candidate, Refusal};
use crate::api::body::parse_json;
use crate::api::error::ApiError;
use crate::client::ClientAddress;
use crate::identity::Verifiers;
use crate::metrics::Metrics;
use admission::Admission;
use lookup::Finder;
use record::Record;
use requests::IdentityRequest;

/// Everything an authentication needs, shared by every request.
#[derive(Debug)]
pub(crate) struct Authenticator {
    pub(crate) admission: Arc<Admission>,
    pub(crate) verifiers: Arc<Verifiers>,
    pub(crate) finder: Finder,
    pub(crate) metrics: Metrics,
}

impl Authenticator {
    /// Answers one request for an `R` identity from `address`.
    pub(crate) async fn authenticate<R: IdentityRequest>(
        &self,
        request: &HttpRequest,
        address: ClientAddress,
        payload: impl Stream<Item = Result<Bytes, PayloadError>> + Unpin,
    ) -> HttpResponse {
        let mut record = Record::new(address);
        let result = self.run::<R>(request, payload, &mut record).await;
        record.respond(R::PROVIDER, &self.metrics, result)
    }

    async fn run<R: IdentityRequest>(
        &self,
        http: &HttpRequest,
        payload: impl Stream<Item = Result<Bytes, PayloadError>> + Unpin,
        record: &mut Record,
    ) -> Result<Candidate, ApiError> {
        let admitted = self
            .admission
            .admit(http, record.address.client, payload, || {
                self.finder.queue_full()
            })
            .await?;
        let mut request: R = parse_json(&admitted.body.bytes)?;
        // Parsed: the raw body's bytes go back to the budget now, not when the answer is sent.
        drop(admitted.body);
        request.validate()?;
        let agent_name = request.take_agent_name();
        let instance_id = self.verify(request, record).await?;
        record.instance_id = Some(instance_id.clone());
        let agent_name = agents::normalise_agent_name(agent_name.as_deref());
        if instance_id.is_empty() {
            // No agent can carry an empty instance id; answer Coder's 404 without a query.
            return Err(ApiError::refused(&instance_id, Refusal::NoCandidate));
        }
        let candidates = self.look_up::<R>(&instance_id, agent_name, record).await?;
        record.candidates = Some(candidates.len());
        let decision = agents::decide(&candidates, agent_name);
        record::warn_of_other_claims(R::PROVIDER, &instance_id, &decision);
        decision
            .map(|decision| decision.chosen.clone())
            .map_err(|refusal| ApiError::refused(&instance_id, refusal))
    }

    /// Verifies `request` as of the clock's now, timed for the header and the histogram.
    async fn verify<R: IdentityRequest>(
        &self,
        request: R,
        record: &mut Record,
    ) -> Result<String, ApiError> {
        let now = self.verifiers.clock.now();
        let started = Instant::now();
        let verified = if R::OFF_LOOP {
            let verifiers = Arc::clone(&self.verifiers);
            web::block(move || request.verify(&verifiers, now))
                .await
                .unwrap_or_else(|err| {
                    // The blocking pool failed (a panic in the verifier, or shutdown): a server
                    // fault, not bad material.
                    tracing::error!(provider = %R::PROVIDER, error = %err, "verification task failed");
                    Err(ApiError::VerificationFailed)
                })
        } else {
            request.verify(&self.verifiers, now)
        };
        record.timing.verify = started.elapsed();
        self.metrics
            .observe_verify(R::PROVIDER, record.timing.verify);
        verified
    }

    /// The candidates for `instance_id`: one lookup, timed for the header and the log.
    async fn look_up<R: IdentityRequest>(
        &self,
        instance_id: &str,
        agent_name: Option<&str>,
        record: &mut Record,
    ) -> Result<Vec<Candidate>, ApiError> {
        let found = self.finder.candidates(instance_id, agent_name).await;
        record.timing.acquire = found.waited;
        record.timing.db = found.db;
        // Whatever the outcome, the statements sent are what the header and log report.
        record.timing.statements = found.statements;
        record.timing.shared = found.shared;
        record.target = Some(found.target);
        found.result.map_err(|failure| {
            tracing::error!(provider = %R::PROVIDER, instance_id, error = %failure, "lookup failed");
            ApiError::database(&failure)
        })
    }
}
