//! The one error type of the HTTP edge and its one table: each variant's status, outcome label
//! and Coder-shaped body.
//!
//! Coder's agents parse `{message, detail?, validations?}` bodies, and operators grep for the
//! exact messages, so both the shape and the texts follow Coder character for character
//! (`docs/coder-contract.md` §1.3–1.4).

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use uuid::Uuid;

use crate::agents::Refusal;
use crate::db::{self, Class};
use crate::identity::Provider;

use super::json::json_response;
use super::quote::go_quote;

/// Seconds a client should wait before retrying after a 503.
pub(crate) const RETRY_AFTER_SECONDS: u32 = 1;

/// One failing field of a request body, as Coder's `codersdk.ValidationError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Validation {
    pub field: &'static str,
    pub detail: String,
}

impl Validation {
    /// A required field that was absent, `null` or empty.
    pub(crate) fn required(field: &'static str) -> Self {
        Self {
            field,
            detail: r#"Validation failed for tag "required" with value: """#.to_owned(),
        }
    }
}

/// Coder's `codersdk.Response`.
#[derive(Debug, Serialize)]
struct ErrorBody {
    message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    validations: Vec<Validation>,
}

/// Declares [`Outcome`] and its list together, so the list cannot miss a variant.
macro_rules! outcomes {
    ($($(#[$doc:meta])* $variant:ident => $label:literal,)*) => {
        /// How an authentication request ended: the `outcome` label of its log line and of
        /// `instauth_auth_outcomes_total`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Outcome {
            $($(#[$doc])* $variant,)*
        }

        impl Outcome {
            /// Every outcome, for metrics to show at zero.
            pub(crate) const ALL: &[Outcome] = &[$(Outcome::$variant,)*];

            pub(crate) fn label(self) -> &'static str {
                match self {
                    $(Outcome::$variant => $label,)*
                }
            }
        }
    };
}

outcomes! {
    /// The agent's token was returned.
    Ok => "ok",
    BadRequest => "bad_request",
    PayloadTooLarge => "payload_too_large",
    BodyTimeout => "body_timeout",
    RateLimited => "rate_limited",
    Overloaded => "overloaded",
    /// The bodies being received already filled `--max-buffered-body-bytes` (503).
    BodyBudgetFull => "body_budget_full",
    InvalidIdentity => "invalid_identity",
    NotFound => "not_found",
    Ambiguous => "ambiguous",
    /// The agents the request could mean belong to more than one workspace (409).
    ClaimedByManyWorkspaces => "claimed_by_many_workspaces",
    /// Database trouble a retry may heal (503).
    Unavailable => "unavailable",
    /// Database trouble a retry will not heal (500).
    DatabaseError => "database_error",
    InternalError => "internal_error",
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("request body failed validation")]
    Validation(Vec<Validation>),
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("invalid {provider} identity: {detail}")]
    InvalidIdentity { provider: Provider, detail: String },
    #[error("JWT claims do not decode: {0}")]
    ClaimsDecode(String),
    #[error("no agent for instance {}", go_quote(.instance_id))]
    InstanceNotFound { instance_id: String },
    #[error("no agent named {} for instance {}", go_quote(.name), go_quote(.instance_id))]
    AgentNameNotFound { instance_id: String, name: String },
    #[error("{} agents share instance {} and no name was given", .names.len(), go_quote(.instance_id))]
    Ambiguous {
        instance_id: String,
        names: Vec<String>,
    },
    #[error("instance {} is claimed by {} workspaces", go_quote(.instance_id), .workspace_ids.len())]
    ClaimedByManyWorkspaces {
        instance_id: String,
        workspace_ids: Vec<Uuid>,
    },
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(&'static str),
    #[error("database error")]
    DatabaseFailed,
    #[error("the verification task failed")]
    VerificationFailed,
    #[error("request body not received within {seconds} s")]
    BodyTimeout { seconds: u64 },
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("more than {max_in_flight} authentication requests in flight")]
    Overloaded { max_in_flight: usize },
    #[error("the database's lookup queue would not be answered in time")]
    QueueFull,
    #[error("the request bodies being received fill the {max_buffered_body_bytes}-byte budget")]
    BodyBudgetFull { max_buffered_body_bytes: usize },
    #[error("source rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    #[error("route not found")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
}

/// One row of the table: what a variant answers.
struct Entry {
    status: StatusCode,
    /// `None` for answers that never end an authentication (routing, readiness).
    outcome: Option<Outcome>,
    message: String,
    detail: String,
    validations: Vec<Validation>,
}

impl Entry {
    fn new(status: StatusCode, outcome: Option<Outcome>, message: impl Into<String>) -> Self {
        Self {
            status,
            outcome,
            message: message.into(),
            detail: String::new(),
            validations: Vec::new(),
        }
    }

    fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }
}

impl ApiError {
    /// A failed database exchange. Lost and transient trouble (no connection in time, a broken
    /// or refused connection, a statement timeout, a server restarting, no answer at all) is
    /// 503 with `Retry-After`: the agent's next attempt may succeed. Permanent trouble (missing
    /// table, permission denied) will not heal by retrying and is Coder's 500. The cause goes
    /// to the log, not to the client.
    pub(crate) fn database(failure: &db::Failure) -> Self {
        let trouble = failure.trouble();
        match trouble.class {
            Class::Lost | Class::Transient => Self::DatabaseUnavailable(trouble.detail),
            Class::Permanent => Self::DatabaseFailed,
        }
    }

    /// Coder's answer when no agent may authenticate as `instance_id`.
    pub(crate) fn refused(instance_id: &str, refusal: Refusal) -> Self {
        let instance_id = instance_id.to_owned();
        match refusal {
            Refusal::NoCandidate => Self::InstanceNotFound { instance_id },
            Refusal::NoAgentNamed(name) => Self::AgentNameNotFound { instance_id, name },
            Refusal::Ambiguous(names) => Self::Ambiguous { instance_id, names },
            Refusal::ClaimedByManyWorkspaces(workspace_ids) => Self::ClaimedByManyWorkspaces {
                instance_id,
                workspace_ids,
            },
        }
    }

    /// How this error ends an authentication, for logs and metrics.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        self.entry().outcome
    }

    /// The table.
    fn entry(&self) -> Entry {
        use Outcome as O;
        use StatusCode as S;
        let internal = "Internal error fetching workspace agent.";
        match self {
            Self::InvalidJson(detail) => Entry::new(
                S::BAD_REQUEST,
                Some(O::BadRequest),
                "Request body must be valid JSON.",
            )
            .detail(detail),
            Self::Validation(validations) => Entry {
                validations: validations.clone(),
                ..Entry::new(S::BAD_REQUEST, Some(O::BadRequest), "Validation failed.")
            },
            Self::ClaimsDecode(detail) => Entry::new(
                S::BAD_REQUEST,
                Some(O::BadRequest),
                "Error decoding JWT claims.",
            )
            .detail(detail),
            Self::PayloadTooLarge { limit } => Entry::new(
                S::PAYLOAD_TOO_LARGE,
                Some(O::PayloadTooLarge),
                "Request body is too large.",
            )
            .detail(format!("The body must not exceed {limit} bytes.")),
            Self::BodyTimeout { seconds } => Entry::new(
                S::REQUEST_TIMEOUT,
                Some(O::BodyTimeout),
                "Request body was not received in time.",
            )
            .detail(format!("The whole body must arrive within {seconds} s.")),
            Self::RateLimited { retry_after_secs } => Entry::new(
                S::TOO_MANY_REQUESTS,
                Some(O::RateLimited),
                "Rate limit exceeded.",
            )
            .detail(format!(
                "Too many requests from this address; retry in {retry_after_secs} s."
            )),
            Self::Overloaded { max_in_flight } => Entry::new(
                S::SERVICE_UNAVAILABLE,
                Some(O::Overloaded),
                "Server is overloaded.",
            )
            .detail(format!(
                "More than {max_in_flight} authentication requests are in flight; retry later."
            )),
            Self::QueueFull => Entry::new(
                S::SERVICE_UNAVAILABLE,
                Some(O::Overloaded),
                "Server is overloaded.",
            )
            .detail("The database could not answer another lookup in time; retry later."),
            Self::BodyBudgetFull {
                max_buffered_body_bytes,
            } => Entry::new(
                S::SERVICE_UNAVAILABLE,
                Some(O::BodyBudgetFull),
                "Server is overloaded.",
            )
            .detail(format!(
                "Request bodies being received already fill the {max_buffered_body_bytes}-byte \
                 buffer; retry later."
            )),
            Self::InvalidIdentity { provider, detail } => Entry::new(
                S::UNAUTHORIZED,
                Some(O::InvalidIdentity),
                format!("Invalid {} identity.", provider.message_name()),
            )
            .detail(detail),
            Self::InstanceNotFound { instance_id } => Entry::new(
                S::NOT_FOUND,
                Some(O::NotFound),
                format!("Instance with id {} not found.", go_quote(instance_id)),
            ),
            Self::AgentNameNotFound { instance_id, name } => Entry::new(
                S::NOT_FOUND,
                Some(O::NotFound),
                format!(
                    "No agent found with instance ID {} and name {}.",
                    go_quote(instance_id),
                    go_quote(name)
                ),
            ),
            Self::Ambiguous { instance_id, names } => Entry::new(
                S::CONFLICT,
                Some(O::Ambiguous),
                format!(
                    "Multiple agents found with instance ID {}. Set CODER_AGENT_NAME to one of: {}",
                    go_quote(instance_id),
                    names.join(", ")
                ),
            ),
            // No agent names: they belong to other workspaces. The ids go to the log only.
            Self::ClaimedByManyWorkspaces { instance_id, .. } => Entry::new(
                S::CONFLICT,
                Some(O::ClaimedByManyWorkspaces),
                format!(
                    "Instance with id {} is claimed by more than one workspace.",
                    go_quote(instance_id)
                ),
            ),
            Self::DatabaseUnavailable(detail) => {
                Entry::new(S::SERVICE_UNAVAILABLE, Some(O::Unavailable), internal).detail(*detail)
            }
            Self::DatabaseFailed => {
                Entry::new(S::INTERNAL_SERVER_ERROR, Some(O::DatabaseError), internal)
                    .detail("the lookup failed; see the server log")
            }
            Self::VerificationFailed => Entry::new(
                S::INTERNAL_SERVER_ERROR,
                Some(O::InternalError),
                "Internal error verifying identity.",
            )
            .detail("see the server log"),
            Self::NotReady(detail) => {
                Entry::new(S::SERVICE_UNAVAILABLE, None, "Service not ready.").detail(detail)
            }
            Self::RouteNotFound => Entry::new(S::NOT_FOUND, None, "Route not found."),
            Self::MethodNotAllowed => {
                Entry::new(S::METHOD_NOT_ALLOWED, None, "Method not allowed.")
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.entry().status
    }

    fn error_response(&self) -> HttpResponse {
        let entry = self.entry();
        let retry_after = match self {
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ if entry.status == StatusCode::SERVICE_UNAVAILABLE => {
                Some(u64::from(RETRY_AFTER_SECONDS))
            }
            _ => None,
        };
        let mut response = json_response(
            entry.status,
            &ErrorBody {
                message: entry.message,
                detail: entry.detail,
                validations: entry.validations,
            },
        );
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::body::MessageBody;

    fn body_of(response: HttpResponse) -> String {
        let bytes = response.into_body().try_into_bytes().unwrap_or_default();
        String::from_utf8(bytes.to_vec()).unwrap_or_default()
    }

    #[test]
    fn omits_empty_detail_and_validations() {
        let body = body_of(
            ApiError::InstanceNotFound {
                instance_id: "i-1".into(),
            }
            .error_response(),
        );
        assert_eq!(
            body,
            "{\"message\":\"Instance with id \\\"i-1\\\" not found.\"}\n"
        );
    }

    #[test]
    fn unavailable_carries_retry_after() {
        let response = ApiError::DatabaseUnavailable("x").error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(RETRY_AFTER_SECONDS))
        );
    }
}
