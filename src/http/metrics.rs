//! `GET /metrics`: the Prometheus text exposition.

use actix_web::{HttpResponse, web};

use crate::auth::Authenticator;
use crate::db::Database;
use crate::metrics::Metrics;

/// Refreshes the pool, replica, body budget and remembered-document gauges, then renders every
/// metric. Never touches the database: the pools' counters and the replicas' last checks are
/// read in memory.
pub(super) async fn metrics(
    metrics: web::Data<Metrics>,
    database: web::Data<Database>,
    auth: web::Data<Authenticator>,
) -> HttpResponse {
    metrics.refresh_database(&database);
    metrics.refresh_buffered_body_bytes(auth.admission.buffered_body_bytes());
    metrics.refresh_remembered_aws_documents(auth.verifiers.aws.remembered());
    match metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type(prometheus::TEXT_FORMAT)
            .body(text),
        Err(err) => {
            tracing::error!(error = %err, "rendering metrics failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}
