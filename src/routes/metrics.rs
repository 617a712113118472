//! `GET /metrics`: the Prometheus text exposition.

use actix_web::{HttpResponse, web};

use crate::startup::AppState;

/// Refreshes the pool gauges, then renders every metric. Never touches the database: the pool's
/// counters are read in memory.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    state.metrics.refresh_pool(&state.pool);
    match state.metrics.render() {
        Ok(text) => HttpResponse::Ok()
            .content_type(prometheus::TEXT_FORMAT)
            .body(text),
        Err(err) => {
            tracing::error!(error = %err, "rendering metrics failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}
