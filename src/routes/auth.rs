//! `POST /api/v2/workspaceagents/{aws,azure,google}-instance-identity`.
//!
//! Every route runs the same pipeline: read the body → verify the cloud material → acquire a
//! pooled connection → the lookup → choose the agent → answer with its token. Each answer,
//! success or error, carries a `Server-Timing` header and is counted by provider and outcome.

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::db;
use crate::error::{ApiError, json_response};
use crate::identity::{Provider, Rejected};
use crate::metrics::Statements;
use crate::routes::body::{check, read_json, required};
use crate::startup::AppState;
use crate::timing::{SERVER_TIMING, ServerTiming};

#[derive(Debug, Default, Deserialize)]
pub struct AwsRequest {
    pub signature: Option<String>,
    pub document: Option<String>,
    pub agent_name: Option<String>,
}

#[derive(Serialize)]
struct SessionToken {
    session_token: String,
}

pub async fn aws(state: web::Data<AppState>, payload: web::Payload) -> HttpResponse {
    let mut timing = ServerTiming::default();
    let result = aws_pipeline(&state, payload, &mut timing).await;
    respond(&state, Provider::Aws, &timing, result)
}

async fn aws_pipeline(
    state: &AppState,
    payload: web::Payload,
    timing: &mut ServerTiming,
) -> Result<HttpResponse, ApiError> {
    let request: AwsRequest = read_json(payload).await?;
    let mut failures = Vec::new();
    let signature = required("signature", &request.signature, &mut failures);
    let document = required("document", &request.document, &mut failures);
    check(failures)?;
    let identity = verify(state, Provider::Aws, timing, || {
        state.verifiers.aws.verify(signature, document)
    })?;
    authenticate(
        state,
        Provider::Aws,
        &identity.instance_id,
        request.agent_name.as_deref(),
        timing,
    )
    .await
}

/// Runs a provider's verifier, timing it for the header and the verification histogram.
fn verify<T>(
    state: &AppState,
    provider: Provider,
    timing: &mut ServerTiming,
    verifier: impl FnOnce() -> Result<T, Rejected>,
) -> Result<T, ApiError> {
    let started = Instant::now();
    let result = verifier();
    timing.verify = started.elapsed();
    state.metrics.observe_verify(provider, timing.verify);
    result.map_err(|rejected| {
        tracing::info!(provider = %provider, reason = %rejected, "identity rejected");
        ApiError::InvalidIdentity {
            provider,
            detail: rejected.0,
        }
    })
}

/// Turns the pipeline's result into the response: counts the outcome and adds the timings.
fn respond(
    state: &AppState,
    provider: Provider,
    timing: &ServerTiming,
    result: Result<HttpResponse, ApiError>,
) -> HttpResponse {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(err) => err.outcome(),
    };
    state.metrics.auth_outcome(provider, outcome);
    // from_error keeps the error attached to the response, so the request log still sees it.
    let mut response = result.unwrap_or_else(HttpResponse::from_error);
    response
        .headers_mut()
        .insert(SERVER_TIMING, timing.header_value());
    response
}

/// The provider-independent tail: one pooled connection, the lookup, the selection rules, the
/// token.
async fn authenticate(
    state: &AppState,
    provider: Provider,
    instance_id: &str,
    agent_name: Option<&str>,
    timing: &mut ServerTiming,
) -> Result<HttpResponse, ApiError> {
    let agent_name = crate::selection::normalise_agent_name(agent_name);
    if instance_id.is_empty() {
        // No agent can carry an empty instance id; answer Coder's 404 without a query.
        return Err(ApiError::InstanceNotFound {
            instance_id: String::new(),
        });
    }
    let database_failure = |err: sqlx::Error| {
        tracing::error!(provider = %provider, instance_id, error = %err, "lookup failed");
        ApiError::database(&err)
    };
    let (conn, waited) = db::acquire(&state.pool, &state.metrics).await;
    timing.acquire = waited;
    let mut conn = conn.map_err(database_failure)?;
    let mut statements = Statements::new(&state.metrics);
    let started = Instant::now();
    let found = state
        .lookup
        .find(&mut conn, instance_id, agent_name, &mut statements)
        .await;
    timing.db = started.elapsed();
    timing.statements = statements.count();
    // Back to the pool before logging and writing the response.
    drop(conn);
    let found = found.map_err(database_failure)?;
    let chosen = found.chosen.inspect_err(|err| {
        tracing::info!(provider = %provider, instance_id, candidates = found.candidates, outcome = err.outcome(), "no agent chosen");
    })?;
    tracing::info!(
        provider = %provider,
        instance_id,
        candidates = found.candidates,
        agent_id = %chosen.agent_id,
        workspace_id = %chosen.workspace_id,
        build_id = %chosen.build_id,
        "agent authenticated"
    );
    Ok(json_response(
        StatusCode::OK,
        &SessionToken {
            session_token: chosen.auth_token.hyphenated().to_string(),
        },
    ))
}
