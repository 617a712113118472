//! Liveness and readiness probes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use sqlx::Connection as _;

use crate::api::error::ApiError;
use crate::api::json::json_response;
use crate::db::{Database, Failure};

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// What the readiness probe checks.
#[derive(Debug)]
pub(super) struct Readiness {
    pub(crate) database: Database,
    /// False until the migrations have been applied (always true with `--no-migrate`).
    pub schema_ready: Arc<AtomicBool>,
}

/// The process is up and serving HTTP. Never touches the database, so an outage does not get
/// the process restarted by an orchestrator.
pub(super) async fn healthz() -> HttpResponse {
    json_response(StatusCode::OK, &Status { status: "ok" })
}

/// The database answers: the migrations are applied, a connection is acquired within the
/// acquire timeout and a protocol-level ping (no SQL statement) round-trips, all within the
/// same deadline as a request's exchange. Probes are not counted in the pool metrics, which
/// are about requests.
pub(super) async fn readyz(readiness: web::Data<Readiness>) -> Result<HttpResponse, ApiError> {
    if !readiness.schema_ready.load(Ordering::Acquire) {
        return Err(ApiError::NotReady(
            "the database has not been reachable since start; migrations are pending".to_owned(),
        ));
    }
    let pinged = readiness
        .database
        .exchange(Box::new(|conn| Box::pin(conn.ping())))
        .await;
    match pinged.result {
        Ok(()) => Ok(json_response(StatusCode::OK, &Status { status: "ready" })),
        Err(failure) => {
            tracing::warn!(error = %failure, "readiness: database check failed");
            Err(ApiError::NotReady(match failure {
                Failure::Deadline(_) => "the database did not answer in time".to_owned(),
                Failure::Sql(_) => ApiError::database(&failure).to_string(),
            }))
        }
    }
}
