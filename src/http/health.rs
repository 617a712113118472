//! Liveness and readiness probes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;
use sqlx::Connection as _;

use crate::api::error::ApiError;
use crate::api::json::json_response;
use crate::db::{Database, Failure, Pool};

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
/// same deadline as a request's exchange. With replicas, the service is ready while the
/// primary or a usable replica answers (the replicas are pinged only when the primary does
/// not): agents that exist authenticate from a replica while the primary is away. Probes are
/// not counted in the pool metrics, which are about requests.
pub(super) async fn readyz(readiness: web::Data<Readiness>) -> Result<HttpResponse, ApiError> {
    if !readiness.schema_ready.load(Ordering::Acquire) {
        return Err(ApiError::NotReady(
            "the database has not been reachable since start; migrations are pending".to_owned(),
        ));
    }
    let database = &readiness.database;
    let failure = match ping(database, database.pool()).await {
        Ok(()) => return Ok(ready()),
        Err(failure) => failure,
    };
    tracing::warn!(error = %failure, "readiness: database check failed");
    for replica in database.replicas().iter().filter(|r| r.is_usable()) {
        match ping(database, replica.pool()).await {
            Ok(()) => return Ok(ready()),
            Err(err) => {
                tracing::warn!(replica = %replica.name(), error = %err, "readiness: replica check failed");
            }
        }
    }
    Err(ApiError::NotReady(match failure {
        Failure::Deadline(_) => "the database did not answer in time".to_owned(),
        Failure::Sql(_) => ApiError::database(&failure).to_string(),
    }))
}

fn ready() -> HttpResponse {
    json_response(StatusCode::OK, &Status { status: "ready" })
}

/// One protocol-level ping on `pool`, as an exchange on the database runtime.
async fn ping(database: &Database, pool: &Pool) -> Result<(), Failure> {
    database
        .exchange_on(pool, Box::new(|conn| Box::pin(conn.ping())))
        .await
        .result
}
