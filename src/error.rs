//! The one error type of the HTTP layer and the JSON shape every response is written in.
//!
//! Coder's agents parse `{message, detail?, validations?}` bodies, and operators grep for the exact
//! messages, so both the shape and the texts follow Coder (reference §1.3–1.4) character for
//! character. Bodies are serialised like Go's `encoding/json` (HTML characters escaped, trailing
//! newline) so a byte-level comparison with Coder's output holds.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::identity::Provider;
use crate::quote::go_quote;

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
    /// Classifies a failed lookup. Every database failure is answered with 503 and
    /// `Retry-After`: the agent retries on its own, and the next attempt may find a free
    /// connection or a recovered server. The cause goes to the log, not to the client.
    pub fn database(err: &sqlx::Error) -> Self {
        let detail = match err {
            sqlx::Error::PoolTimedOut => "timed out waiting for a database connection",
            sqlx::Error::PoolClosed => "the database pool is closed",
            sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => {
                "the lookup exceeded the statement timeout"
            }
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => "the database connection failed",
            _ => "the lookup failed",
        };
        Self::DatabaseUnavailable(detail.to_owned())
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

/// Writes `value` as Coder's `httpapi.Write` does: Go-escaped JSON, a trailing newline and
/// `application/json; charset=utf-8`.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> HttpResponse {
    let mut body = Vec::with_capacity(128);
    let mut serializer = serde_json::Serializer::with_formatter(&mut body, GoEscapes);
    if let Err(err) = value.serialize(&mut serializer) {
        // Only plain structs of strings reach here; a failure is a programming error, reported
        // as such rather than as a half-written body.
        tracing::error!(error = %err, "response serialisation failed");
        return HttpResponse::InternalServerError().finish();
    }
    body.push(b'\n');
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"))
        .body(body)
}

/// serde_json formatter that additionally escapes what Go's encoder escapes by default:
/// `<`, `>`, `&`, U+2028 and U+2029.
struct GoEscapes;

impl serde_json::ser::Formatter for GoEscapes {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
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
    fn escapes_like_go() {
        let body = body_of(json_response(
            StatusCode::OK,
            &serde_json::json!({"m": "<a & b>\u{2028}\"\n"}),
        ));
        assert_eq!(
            body,
            "{\"m\":\"\\u003ca \\u0026 b\\u003e\\u2028\\\"\\n\"}\n"
        );
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
