//! What one authentication did, and the answer made of it: the response (the token, or
//! Coder's error) with its `Server-Timing` header, the outcome metric and one log line.

use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use serde::Serialize;
use uuid::Uuid;

use crate::agents::{Candidate, Decision, Refusal};
use crate::api::error::{ApiError, Outcome};
use crate::api::json::json_response;
use crate::api::timing::{SERVER_TIMING, ServerTiming, millis};
use crate::client::ClientAddress;
use crate::identity::Provider;
use crate::metrics::{Metrics, NO_TARGET};

#[derive(Serialize)]
struct SessionToken {
    session_token: String,
}

/// Filled in as the authentication goes; stages that did not run leave their part empty.
#[derive(Debug)]
pub(super) struct Record {
    /// Who asked: the client the rate limiter keys, and the socket peer.
    pub address: ClientAddress,
    pub timing: ServerTiming,
    pub instance_id: Option<String>,
    pub candidates: Option<usize>,
    /// The database target whose candidates (or failure) decided the answer, once looked up.
    pub target: Option<std::sync::Arc<str>>,
}

impl Record {
    pub(super) fn new(address: ClientAddress) -> Self {
        Self {
            address,
            timing: ServerTiming::default(),
            instance_id: None,
            candidates: None,
            target: None,
        }
    }

    /// The answer to `result`, counted and logged.
    pub(super) fn respond(
        self,
        provider: Provider,
        metrics: &Metrics,
        result: Result<Candidate, ApiError>,
    ) -> HttpResponse {
        let (outcome, detail) = match &result {
            Ok(_) => (Outcome::Ok, String::new()),
            // Every error an authentication produces has an outcome; the fallback is for the
            // routing and readiness answers, which never reach here.
            Err(err) => (
                err.outcome().unwrap_or(Outcome::InternalError),
                err.to_string(),
            ),
        };
        let target = self.target.as_deref().unwrap_or(NO_TARGET);
        metrics.auth_outcome(provider, outcome.label(), target);
        let timing = &self.timing;
        let ids = |id: fn(&Candidate) -> Uuid| {
            result
                .as_ref()
                .map(|chosen| id(chosen).to_string())
                .unwrap_or_default()
        };
        tracing::info!(
            provider = %provider,
            outcome = outcome.label(),
            client.address = %ClientAddress::show(self.address.client),
            network.peer.address = %ClientAddress::show(self.address.peer),
            instance_id = self.instance_id.as_deref().unwrap_or_default(),
            candidates = self.candidates,
            target,
            agent_id = ids(|c| c.agent_id),
            workspace_id = ids(|c| c.workspace_id),
            build_id = ids(|c| c.build_id),
            verify_ms = millis(timing.verify),
            acquire_ms = millis(timing.acquire),
            db_ms = millis(timing.db),
            statements = timing.statements,
            detail,
            "authentication"
        );
        let mut response = match result {
            Ok(chosen) => json_response(
                StatusCode::OK,
                &SessionToken {
                    session_token: chosen.auth_token.hyphenated().to_string(),
                },
            ),
            // from_error keeps the error attached to the response, so the request span sees it.
            Err(err) => HttpResponse::from_error(err),
        };
        response
            .headers_mut()
            .insert(SERVER_TIMING, timing.header_value());
        response
    }
}

/// A warning when more than one workspace claims the instance: the request was refused for it
/// (409), or a name picked an agent out of one of them. Operators see which workspaces carry the
/// same instance id; the client never does.
pub(super) fn warn_of_other_claims(
    provider: Provider,
    instance_id: &str,
    decision: &Result<Decision<'_>, Refusal>,
) {
    let ids = |ids: &[Uuid]| {
        ids.iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    match decision {
        Err(Refusal::ClaimedByManyWorkspaces(workspaces)) => tracing::warn!(
            provider = %provider,
            instance_id,
            workspace_ids = ids(workspaces),
            "instance claimed by more than one workspace; refused"
        ),
        Ok(decision) if !decision.other_claims.is_empty() => tracing::warn!(
            provider = %provider,
            instance_id,
            workspace_id = %decision.chosen.workspace_id,
            other_workspace_ids = ids(&decision.other_claims),
            "instance also claimed by other workspaces; the named agent's workspace was chosen"
        ),
        _ => {}
    }
}
