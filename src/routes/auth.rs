//! `POST /api/v2/workspaceagents/{aws,azure,google}-instance-identity`.
//!
//! Every route runs the same pipeline: read the body → verify the cloud material → one query →
//! choose the agent → answer with its token.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::identity::Provider;
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
    let lookup = lookup::agents_by_instance_id(&state.pool, instance_id);
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
