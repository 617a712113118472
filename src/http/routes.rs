//! The route table, and the request metrics every route is measured by. Unknown methods on a
//! known path get a JSON 405, unknown paths a JSON 404.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, web};

use crate::api::error::ApiError;
use crate::metrics::{Metrics, UNMATCHED_ROUTE};

use super::{auth, health, metrics};

/// Every route of the service.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v2/workspaceagents")
            .service(post_only("/aws-instance-identity", auth::aws))
            .service(post_only("/azure-instance-identity", auth::azure))
            .service(post_only("/google-instance-identity", auth::google)),
    )
    .service(get_only("/healthz", health::healthz))
    .service(get_only("/readyz", health::readyz))
    .service(get_only("/metrics", metrics::metrics))
    .default_service(web::to(not_found));
}

/// A route that answers POST with `handler` and any other method with a JSON 405.
fn post_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(method_not_allowed))
}

/// A route that answers GET with `handler` and any other method with a JSON 405.
fn get_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::get().to(handler))
        .default_service(web::to(method_not_allowed))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

/// Counts and times every answer by route pattern and status. Outermost, so the latency covers
/// the whole request, logging included.
pub(super) async fn measure(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = request.app_data::<web::Data<Metrics>>().cloned();
    // Resolved before the call: an answer given as an error has no response to read it from.
    let route = request
        .match_pattern()
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let result = next.call(request).await;
    if let Some(metrics) = metrics {
        let status = match &result {
            Ok(response) => response.status(),
            Err(err) => err.as_response_error().status_code(),
        };
        metrics.observe_http(&route, status.as_u16(), started.elapsed());
    }
    result
}
