//! Liveness and readiness probes.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use sqlx::Connection as _;

use crate::error::{ApiError, json_response};
use crate::startup::AppState;

#[derive(Serialize)]
struct Status {
    status: &'static str,
}

/// The process is up and serving HTTP. Never touches the database, so an outage does not get
/// the process restarted by an orchestrator.
pub async fn healthz() -> HttpResponse {
    json_response(StatusCode::OK, &Status { status: "ok" })
}

/// The database answers: a connection is acquired within the acquire timeout and a protocol
/// level ping (no SQL statement) round-trips.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = crate::db::acquire(&state.pool, &state.metrics)
        .await
        .0
        .map_err(|err| {
            tracing::warn!(error = %err, "readiness: no database connection");
            ApiError::database(&err)
        })?;
    conn.ping().await.map_err(|err| {
        tracing::warn!(error = %err, "readiness: ping failed");
        ApiError::database(&err)
    })?;
    Ok(json_response(StatusCode::OK, &Status { status: "ready" }))
}
