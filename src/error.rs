//! The one error type of the HTTP layer, each variant mapped to Coder's status and message.
//!
//! Coder's agents parse `{message, detail?, validations?}` bodies, and operators grep for the
//! exact messages, so both the shape and the texts follow Coder (reference §1.3–1.4) character
//! for character.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::identity::Provider;
use crate::quote::go_quote;
use crate::response::json_response;

/// Seconds a client should wait before retrying after a 503.
pub const RETRY_AFTER_SECONDS: u32 = 1;

/// One failing field of a request body, as Coder's `codersdk.ValidationError`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validation {
    pub field: &'static str,
    pub detail: String,
}

impl Validation {
    /// A required field that was absent, `null` or empty.
    pub fn required(field: &'static str) -> Self {
        Self {
            field,
            detail: r#"Validation failed for tag "required" with value: """#.to_owned(),
        }
    }
}

/// Coder's `codersdk.Response`.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub validations: Vec<Validation>,
}

/// Everything a request can fail with, each mapped to Coder's status and message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
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
    #[error("database unavailable: {0}")]
    DatabaseUnavailable(String),
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
    #[error("source rate limit exceeded")]
    RateLimited { retry_after_secs: u64 },
    #[error("route not found")]
    RouteNotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    /// Classifies a failed database call. Transient trouble (no connection in time, a broken
    /// or refused connection, a statement timeout, a server restarting) is 503 with
    /// `Retry-After`: the agent's next attempt may succeed. Anything else (missing table,
    /// permission denied) will not heal by retrying and is Coder's 500. The cause goes to the
    /// log, not to the client.
    pub fn database(err: &sqlx::Error) -> Self {
        let transient = match err {
            sqlx::Error::PoolTimedOut => Some("timed out waiting for a database connection"),
            sqlx::Error::PoolClosed => Some("the database pool is closed"),
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => {
                Some("the database connection failed")
            }
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("57014") => Some("the lookup exceeded the statement timeout"),
                // Connection exceptions, shutdown/restart, too many connections, lock and
                // serialization conflicts.
                Some(code)
                    if code.starts_with("08")
                        || code.starts_with("57P")
                        || matches!(code, "53300" | "55P03" | "40001" | "40P01") =>
                {
                    Some("the database is temporarily unavailable")
                }
                _ => None,
            },
            _ => None,
        };
        match transient {
            Some(detail) => Self::DatabaseUnavailable(detail.to_owned()),
            None => Self::DatabaseFailed,
        }
    }

    /// Short label for logs and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) | Self::Validation(_) | Self::ClaimsDecode(_) => "bad_request",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::InvalidIdentity { .. } => "invalid_identity",
            Self::InstanceNotFound { .. } | Self::AgentNameNotFound { .. } => "not_found",
            Self::Ambiguous { .. } => "ambiguous",
            Self::DatabaseUnavailable(_) | Self::NotReady(_) => "unavailable",
            Self::DatabaseFailed => "database_error",
            Self::VerificationFailed => "internal_error",
            Self::BodyTimeout { .. } => "body_timeout",
            Self::Overloaded { .. } => "overloaded",
            Self::RateLimited { .. } => "rate_limited",
            Self::RouteNotFound | Self::MethodNotAllowed => "bad_route",
        }
    }

    fn body(&self) -> ErrorBody {
        let (message, detail, validations) = match self {
            Self::InvalidJson(detail) => (
                "Request body must be valid JSON.".to_owned(),
                detail.clone(),
                Vec::new(),
            ),
            Self::Validation(v) => ("Validation failed.".to_owned(), String::new(), v.clone()),
            Self::PayloadTooLarge { limit } => (
                "Request body is too large.".to_owned(),
                format!("The body must not exceed {limit} bytes."),
                Vec::new(),
            ),
            Self::InvalidIdentity { provider, detail } => (
                format!("Invalid {} identity.", provider.message_name()),
                detail.clone(),
                Vec::new(),
            ),
            Self::ClaimsDecode(detail) => (
                "Error decoding JWT claims.".to_owned(),
                detail.clone(),
                Vec::new(),
            ),
            Self::InstanceNotFound { instance_id } => (
                format!("Instance with id {} not found.", go_quote(instance_id)),
                String::new(),
                Vec::new(),
            ),
            Self::AgentNameNotFound { instance_id, name } => (
                format!(
                    "No agent found with instance ID {} and name {}.",
                    go_quote(instance_id),
                    go_quote(name)
                ),
                String::new(),
                Vec::new(),
            ),
            Self::Ambiguous { instance_id, names } => (
                format!(
                    "Multiple agents found with instance ID {}. Set CODER_AGENT_NAME to one of: {}",
                    go_quote(instance_id),
                    names.join(", ")
                ),
                String::new(),
                Vec::new(),
            ),
            Self::DatabaseUnavailable(detail) => (
                "Internal error fetching workspace agent.".to_owned(),
                detail.clone(),
                Vec::new(),
            ),
            Self::DatabaseFailed => (
                "Internal error fetching workspace agent.".to_owned(),
                "the lookup failed; see the server log".to_owned(),
                Vec::new(),
            ),
            Self::VerificationFailed => (
                "Internal error verifying identity.".to_owned(),
                "see the server log".to_owned(),
                Vec::new(),
            ),
            Self::BodyTimeout { seconds } => (
                "Request body was not received in time.".to_owned(),
                format!("The whole body must arrive within {seconds} s."),
                Vec::new(),
            ),
            Self::NotReady(detail) => ("Service not ready.".to_owned(), detail.clone(), Vec::new()),
            Self::Overloaded { max_in_flight } => (
                "Server is overloaded.".to_owned(),
                format!(
                    "More than {max_in_flight} authentication requests are in flight; retry later."
                ),
                Vec::new(),
            ),
            Self::RateLimited { retry_after_secs } => (
                "Rate limit exceeded.".to_owned(),
                format!("Too many requests from this address; retry in {retry_after_secs} s."),
                Vec::new(),
            ),
            Self::RouteNotFound => ("Route not found.".to_owned(), String::new(), Vec::new()),
            Self::MethodNotAllowed => ("Method not allowed.".to_owned(), String::new(), Vec::new()),
        };
        ErrorBody {
            message,
            detail,
            validations,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidJson(_) | Self::Validation(_) | Self::ClaimsDecode(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::InvalidIdentity { .. } => StatusCode::UNAUTHORIZED,
            Self::InstanceNotFound { .. }
            | Self::AgentNameNotFound { .. }
            | Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::Ambiguous { .. } => StatusCode::CONFLICT,
            Self::DatabaseUnavailable(_) | Self::NotReady(_) | Self::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::DatabaseFailed | Self::VerificationFailed => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = json_response(self.status_code(), &self.body());
        let retry_after = match self {
            Self::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ if self.status_code() == StatusCode::SERVICE_UNAVAILABLE => {
                Some(u64::from(RETRY_AFTER_SECONDS))
            }
            _ => None,
        };
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
        let response = ApiError::DatabaseUnavailable("x".into()).error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from(RETRY_AFTER_SECONDS))
        );
    }
}
