//! `POST /api/v2/workspaceagents/{aws,azure,google}-instance-identity`.
//!
//! Every route runs the same pipeline: read the body → verify the cloud material → one query →
//! choose the agent → answer with its token.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, json_response};
use crate::identity::Provider;
use crate::routes::body::{check, read_json, required};
use crate::startup::AppState;
use crate::{lookup, selection};

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
        .verify(signature, document)
        .map_err(|rejected| invalid(Provider::Aws, rejected))?;
    authenticate(
        &state,
        Provider::Aws,
        &identity.instance_id,
        request.agent_name.as_deref(),
    )
    .await
}

fn invalid(provider: Provider, rejected: crate::identity::Rejected) -> ApiError {
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
    let candidates = lookup::agents_by_instance_id(&state.pool, state.statements, instance_id)
        .await
        .map_err(|err| {
            tracing::error!(provider = %provider, instance_id, error = %err, "lookup failed");
            ApiError::database(&err)
        })?;
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
