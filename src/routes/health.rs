//! Liveness and readiness probes.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use sqlx::Connection as _;

use crate::error::ApiError;
use crate::response::json_response;
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

/// The database answers: the migrations are applied, a connection is acquired within the
/// acquire timeout and a protocol-level ping (no SQL statement) round-trips.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if !state.schema_ready() {
        return Err(ApiError::NotReady(
            "the database has not been reachable since start; migrations are pending".to_owned(),
        ));
    }
    let probe = async {
        // Straight from the pool: probes must not count as request waits in the pool metrics.
        let mut conn = state.pool.get().await?;
        let started = std::time::Instant::now();
        let pinged = conn.start().ping().await;
        state.pool.finish(&mut conn, started, pinged.as_ref().err());
        pinged
    };
    match tokio::time::timeout(state.db_deadline, probe).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "readiness: database check failed");
            return Err(ApiError::NotReady(ApiError::database(&err).to_string()));
        }
        Err(_) => {
            tracing::warn!(deadline = ?state.db_deadline, "readiness: no answer from the database");
            return Err(ApiError::NotReady(
                "the database did not answer in time".to_owned(),
            ));
        }
    }
    Ok(json_response(StatusCode::OK, &Status { status: "ready" }))
}
