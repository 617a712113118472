//! `GET /metrics`: the Prometheus text exposition.

use actix_web::{HttpResponse, web};

use crate::auth::Authenticator;
use crate::db::Pool;
use crate::metrics::Metrics;

/// Refreshes the pool and body budget gauges, then renders every metric. Never touches the
/// database: the pool's counters are read in memory.
pub(super) async fn metrics(
    metrics: web::Data<Metrics>,
    pool: web::Data<Pool>,
    auth: web::Data<Authenticator>,
) -> HttpResponse {
    metrics.refresh_pool(&pool);
    metrics.refresh_buffered_body_bytes(auth.admission.buffered_body_bytes());
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
