//! `POST /api/v2/workspaceagents/{aws,azure,google}-instance-identity`.
//!
//! Every route runs the same pipeline: read the body → verify the cloud material → one query →
//! choose the agent → answer with its token.
//!
//! AWS (about 20 µs) and Google (about 35–60 µs) verify inline on the async worker: less than
//! handing the work to another thread would save. Azure (0.5–1 ms, measured by
//! `cargo bench --bench verify`) runs on the blocking pool.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::identity::google::GoogleRejection;
use crate::identity::{Provider, Rejected};
use crate::response::json_response;
use crate::routes::body::{RequestBody, check, read_json, required};
use crate::startup::AppState;
use crate::{lookup, selection};

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

pub async fn aws(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let request: AwsRequest = read_json(payload).await?;
    let mut failures = Vec::new();
    let signature = required("signature", &request.signature, &mut failures);
    let document = required("document", &request.document, &mut failures);
    check(failures)?;
    let identity = state
        .verifiers
        .aws
        .verify(signature, document, state.verifiers.clock.now())
        .map_err(|rejected| invalid(Provider::Aws, rejected))?;
    authenticate(
        &state,
        Provider::Aws,
        &identity.instance_id,
        request.agent_name.as_deref(),
    )
    .await
}

pub async fn azure(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let request: AzureRequest = read_json(payload).await?;
    let mut failures = Vec::new();
    required("signature", &request.signature, &mut failures);
    required("encoding", &request.encoding, &mut failures);
    check(failures)?;
    let signature = request.signature.unwrap_or_default();
    let now = state.verifiers.clock.now();
    // PKCS#7 and X.509 parsing plus the chain cost 0.5–1 ms of CPU: on the blocking pool the
    // async worker keeps serving other connections meanwhile.
    let verifying = state.clone();
    let identity = web::block(move || verifying.verifiers.azure.verify(&signature, now))
        .await
        .map_err(|err| {
            tracing::error!(provider = %Provider::Azure, error = %err, "verification task failed");
            invalid(
                Provider::Azure,
                Rejected::new("verification could not be completed"),
            )
        })?
        .map_err(|rejected| invalid(Provider::Azure, rejected))?;
    authenticate(
        &state,
        Provider::Azure,
        &identity.vm_id,
        request.agent_name.as_deref(),
    )
    .await
}

pub async fn google(
    state: web::Data<AppState>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let request: GoogleRequest = read_json(payload).await?;
    let mut failures = Vec::new();
    let token = required("json_web_token", &request.json_web_token, &mut failures);
    check(failures)?;
    let instance_id = state
        .verifiers
        .google
        .verify(token, state.verifiers.clock.now())
        .map_err(|rejection| match rejection {
            GoogleRejection::Invalid(rejected) => invalid(Provider::Google, rejected),
            GoogleRejection::Claims(detail) => {
                tracing::info!(provider = %Provider::Google, reason = %detail, "claims rejected");
                ApiError::ClaimsDecode(detail)
            }
        })?;
    authenticate(
        &state,
        Provider::Google,
        &instance_id,
        request.agent_name.as_deref(),
    )
    .await
}

fn invalid(provider: Provider, rejected: Rejected) -> ApiError {
    tracing::info!(provider = %provider, reason = %rejected, "identity rejected");
    ApiError::InvalidIdentity {
        provider,
        detail: rejected.0,
    }
}

/// The provider-independent tail: one lookup, the selection rules, the token.
async fn authenticate(
    state: &AppState,
    provider: Provider,
    instance_id: &str,
    agent_name: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let agent_name = selection::normalise_agent_name(agent_name);
    if instance_id.is_empty() {
        // No agent can carry an empty instance id; answer Coder's 404 without a query.
        return Err(ApiError::InstanceNotFound {
            instance_id: String::new(),
        });
    }
    let lookup = lookup::agents_by_instance_id(&state.pool, state.statements, instance_id);
    let candidates = match tokio::time::timeout(state.db_deadline, lookup).await {
        Ok(Ok(candidates)) => candidates,
        Ok(Err(err)) => {
            tracing::error!(provider = %provider, instance_id, error = %err, "lookup failed");
            return Err(ApiError::database(&err));
        }
        Err(_) => {
            tracing::error!(provider = %provider, instance_id, deadline = ?state.db_deadline, "lookup got no answer from the database");
            return Err(ApiError::DatabaseUnavailable(
                "the database did not answer in time".to_owned(),
            ));
        }
    };
    let chosen = selection::choose(instance_id, &candidates, agent_name).inspect_err(|err| {
        tracing::info!(provider = %provider, instance_id, candidates = candidates.len(), outcome = err.outcome(), "no agent chosen");
    })?;
    tracing::info!(
        provider = %provider,
        instance_id,
        candidates = candidates.len(),
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
