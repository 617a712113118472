//! `POST /api/v2/workspaceagents/{aws,azure,google}-instance-identity`.
//!
//! Every route runs the same pipeline on the body admission control has already read: parse →
//! verify the cloud material → acquire a pooled connection → the lookup → choose the agent →
//! answer with its token. Each answer,
//! success or error, carries a `Server-Timing` header, is counted by provider and outcome, and
//! is logged as one line with the provider, outcome, instance id, agent and timings.

use std::time::Instant;

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::db;
use crate::error::ApiError;
use crate::identity::google::GoogleRejection;
use crate::identity::{Provider, Rejected};
use crate::metrics::Statements;
use crate::response::json_response;
use crate::routes::body::{RequestBody, check, parse_json, required};
use crate::startup::AppState;
use crate::timing::{SERVER_TIMING, ServerTiming};

#[derive(Debug, Default, Deserialize)]
pub struct AwsRequest {
    pub signature: Option<String>,
    pub document: Option<String>,
    pub agent_name: Option<String>,
}

impl RequestBody for AwsRequest {
    const FIELDS: &'static [&'static str] = &["signature", "document", "agent_name"];
}

#[derive(Debug, Default, Deserialize)]
pub struct AzureRequest {
    pub signature: Option<String>,
    /// Required like Coder, but its value is not used: only `signature` is verified.
    pub encoding: Option<String>,
    pub agent_name: Option<String>,
}

impl RequestBody for AzureRequest {
    const FIELDS: &'static [&'static str] = &["signature", "encoding", "agent_name"];
}

#[derive(Debug, Default, Deserialize)]
pub struct GoogleRequest {
    pub json_web_token: Option<String>,
    pub agent_name: Option<String>,
}

impl RequestBody for GoogleRequest {
    const FIELDS: &'static [&'static str] = &["json_web_token", "agent_name"];
}

#[derive(Serialize)]
struct SessionToken {
    session_token: String,
}

/// What one authentication did, for its response header, its metrics and its log line.
#[derive(Debug, Default)]
struct Record {
    timing: ServerTiming,
    instance_id: Option<String>,
    candidates: Option<usize>,
    /// Agent, workspace and build of the chosen agent.
    chosen: Option<(Uuid, Uuid, Uuid)>,
}

pub async fn aws(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let mut record = Record::default();
    let result = aws_pipeline(&state, &body, &mut record).await;
    respond(&state, Provider::Aws, &record, result)
}

async fn aws_pipeline(
    state: &AppState,
    body: &[u8],
    record: &mut Record,
) -> Result<HttpResponse, ApiError> {
    let request: AwsRequest = parse_json(body)?;
    let mut failures = Vec::new();
    let signature = required("signature", &request.signature, &mut failures);
    let document = required("document", &request.document, &mut failures);
    check(failures)?;
    let now = state.verifiers.clock.now();
    let identity = verify(state, Provider::Aws, record, || {
        state.verifiers.aws.verify(signature, document, now)
    })?;
    let agent_name = request.agent_name.as_deref();
    authenticate(
        state,
        Provider::Aws,
        &identity.instance_id,
        agent_name,
        record,
    )
    .await
}

pub async fn azure(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let mut record = Record::default();
    let result = azure_pipeline(&state, &body, &mut record).await;
    respond(&state, Provider::Azure, &record, result)
}

async fn azure_pipeline(
    state: &web::Data<AppState>,
    body: &[u8],
    record: &mut Record,
) -> Result<HttpResponse, ApiError> {
    let request: AzureRequest = parse_json(body)?;
    let mut failures = Vec::new();
    required("signature", &request.signature, &mut failures);
    required("encoding", &request.encoding, &mut failures);
    check(failures)?;
    let signature = request.signature.unwrap_or_default();
    let now = state.verifiers.clock.now();
    // PKCS#7 and X.509 parsing plus the chain cost 0.5–1 ms of CPU: on the blocking pool the
    // async worker keeps serving other connections meanwhile.
    let started = Instant::now();
    let verifying = state.clone();
    let verified = web::block(move || verifying.verifiers.azure.verify(&signature, now)).await;
    record.timing.verify = started.elapsed();
    state
        .metrics
        .observe_verify(Provider::Azure, record.timing.verify);
    let identity = verified
        .map_err(|err| {
            // The blocking pool failed (a panic in the verifier, or shutdown): a server fault,
            // not bad material.
            tracing::error!(provider = %Provider::Azure, error = %err, "verification task failed");
            ApiError::VerificationFailed
        })?
        .map_err(|rejected| invalid(Provider::Azure, rejected))?;
    let agent_name = request.agent_name.as_deref();
    authenticate(state, Provider::Azure, &identity.vm_id, agent_name, record).await
}

pub async fn google(state: web::Data<AppState>, body: web::Bytes) -> HttpResponse {
    let mut record = Record::default();
    let result = google_pipeline(&state, &body, &mut record).await;
    respond(&state, Provider::Google, &record, result)
}

async fn google_pipeline(
    state: &AppState,
    body: &[u8],
    record: &mut Record,
) -> Result<HttpResponse, ApiError> {
    let request: GoogleRequest = parse_json(body)?;
    let mut failures = Vec::new();
    let token = required("json_web_token", &request.json_web_token, &mut failures);
    check(failures)?;
    let now = state.verifiers.clock.now();
    let started = Instant::now();
    let verified = state.verifiers.google.verify(token, now);
    record.timing.verify = started.elapsed();
    state
        .metrics
        .observe_verify(Provider::Google, record.timing.verify);
    let instance_id = verified.map_err(|rejection| match rejection {
        GoogleRejection::Invalid(rejected) => invalid(Provider::Google, rejected),
        GoogleRejection::Claims(detail) => ApiError::ClaimsDecode(detail),
    })?;
    let agent_name = request.agent_name.as_deref();
    authenticate(state, Provider::Google, &instance_id, agent_name, record).await
}

/// Runs a provider's verifier inline, timing it for the header and the verification histogram.
fn verify<T>(
    state: &AppState,
    provider: Provider,
    record: &mut Record,
    verifier: impl FnOnce() -> Result<T, Rejected>,
) -> Result<T, ApiError> {
    let started = Instant::now();
    let result = verifier();
    record.timing.verify = started.elapsed();
    state.metrics.observe_verify(provider, record.timing.verify);
    result.map_err(|rejected| invalid(provider, rejected))
}

fn invalid(provider: Provider, rejected: Rejected) -> ApiError {
    ApiError::InvalidIdentity {
        provider,
        detail: rejected.0,
    }
}

/// Turns the pipeline's result into the response: counts and logs the outcome and adds the
/// timings.
fn respond(
    state: &AppState,
    provider: Provider,
    record: &Record,
    result: Result<HttpResponse, ApiError>,
) -> HttpResponse {
    let (outcome, detail) = match &result {
        Ok(_) => ("ok", String::new()),
        Err(err) => (err.outcome(), err.to_string()),
    };
    state.metrics.auth_outcome(provider, outcome);
    let timing = &record.timing;
    let (agent_id, workspace_id, build_id) = record
        .chosen
        .map(|(a, w, b)| (a.to_string(), w.to_string(), b.to_string()))
        .unwrap_or_default();
    tracing::info!(
        provider = %provider,
        outcome,
        instance_id = record.instance_id.as_deref().unwrap_or_default(),
        candidates = record.candidates,
        agent_id,
        workspace_id,
        build_id,
        verify_ms = millis(timing.verify),
        acquire_ms = millis(timing.acquire),
        db_ms = millis(timing.db),
        statements = timing.statements,
        detail,
        "authentication"
    );
    // from_error keeps the error attached to the response, so the request span sees it.
    let mut response = result.unwrap_or_else(HttpResponse::from_error);
    response
        .headers_mut()
        .insert(SERVER_TIMING, timing.header_value());
    response
}

fn millis(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The provider-independent tail: one pooled connection, the lookup, the selection rules, the
/// token. The whole database part is bounded by the state's deadline, which holds even when
/// the database host goes silent and its own `statement_timeout` can never fire.
async fn authenticate(
    state: &AppState,
    provider: Provider,
    instance_id: &str,
    agent_name: Option<&str>,
    record: &mut Record,
) -> Result<HttpResponse, ApiError> {
    record.instance_id = Some(instance_id.to_owned());
    let agent_name = crate::selection::normalise_agent_name(agent_name);
    if instance_id.is_empty() {
        // No agent can carry an empty instance id; answer Coder's 404 without a query.
        return Err(ApiError::InstanceNotFound {
            instance_id: String::new(),
        });
    }
    let mut statements = Statements::new(&state.metrics);
    let timing = &mut record.timing;
    let lookup_started = Instant::now();
    let lookup = async {
        let (conn, waited) = db::acquire(&state.pool, &state.metrics).await;
        timing.acquire = waited;
        let mut conn = conn?;
        let started = Instant::now();
        let found = state
            .lookup
            .find(
                conn.start(),
                state.statements,
                instance_id,
                agent_name,
                &mut statements,
            )
            .await;
        timing.db = started.elapsed();
        if let Some(dropped) = state.pool.finish(&mut conn, started, found.as_ref().err()) {
            tracing::warn!(
                dropped,
                "database connection lost; older idle connections dropped"
            );
        }
        // Back to the pool before logging and writing the response.
        drop(conn);
        found
    };
    let outcome = tokio::time::timeout(state.db_deadline, lookup).await;
    // Whatever the outcome, the statements sent so far are what the header and log report.
    record.timing.statements = statements.count();
    let found = match outcome {
        Ok(Ok(found)) => found,
        Ok(Err(err)) => {
            tracing::error!(provider = %provider, instance_id, error = %err, "lookup failed");
            return Err(ApiError::database(&err));
        }
        Err(_) => {
            record.timing.db = lookup_started
                .elapsed()
                .saturating_sub(record.timing.acquire);
            tracing::error!(provider = %provider, instance_id, deadline = ?state.db_deadline, "lookup got no answer from the database");
            return Err(ApiError::DatabaseUnavailable(
                "the database did not answer in time".to_owned(),
            ));
        }
    };
    record.candidates = Some(found.candidates);
    let chosen = found.chosen?;
    record.chosen = Some((chosen.agent_id, chosen.workspace_id, chosen.build_id));
    Ok(json_response(
        StatusCode::OK,
        &SessionToken {
            session_token: chosen.auth_token.hyphenated().to_string(),
        },
    ))
}
