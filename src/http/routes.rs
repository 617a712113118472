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
            .service(only("/aws-instance-identity", web::post().to(auth::aws)))
            .service(only(
                "/azure-instance-identity",
                web::post().to(auth::azure),
            ))
            .service(only(
                "/google-instance-identity",
                web::post().to(auth::google),
            )),
    )
    .service(only("/healthz", web::get().to(health::healthz)))
    .service(only("/readyz", web::get().to(health::readyz)))
    .service(only("/metrics", web::get().to(metrics::metrics)))
    .default_service(web::to(not_found));
}

/// `path` answered by `route`, and any other method by a JSON 405.
fn only(path: &str, route: actix_web::Route) -> actix_web::Resource {
    web::resource(path)
        .route(route)
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
