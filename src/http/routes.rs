//! The route tables, public and metrics, and the request metrics every route is measured by.
//! Unknown methods on a known path get a JSON 405, unknown paths a JSON 404.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::api::error::ApiError;
use crate::metrics::{Metrics, UNMATCHED_ROUTE};

use super::{auth, health, metrics};

/// Every route of the public listener; `/metrics` too unless it has a listener of its own.
pub(super) fn public(cfg: &mut web::ServiceConfig, with_metrics: bool) {
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
    .service(only("/readyz", web::get().to(health::readyz)));
    if with_metrics {
        metrics_only(cfg);
    } else {
        cfg.default_service(web::to(not_found));
    }
}

/// The `--metrics-bind` listener: `/metrics` and nothing else.
pub(super) fn metrics_only(cfg: &mut web::ServiceConfig) {
    cfg.service(only("/metrics", web::get().to(metrics::metrics)))
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
    let result = next.call(request).await;
    if let Some(metrics) = metrics {
        let (route, status) = match &result {
            Ok(response) => (route_of(response.request()), response.status()),
            // An answer given as an error carries no request to read the route from. None of
            // ours is given so (actix turns a handler's or an extractor's error into a
            // response), so the route is not matched on every request just for this case.
            Err(err) => (
                UNMATCHED_ROUTE.to_owned(),
                err.as_response_error().status_code(),
            ),
        };
        metrics.observe_http(&route, status.as_str(), started.elapsed());
    }
    result
}

/// The pattern of the route that answered `request`, or [`UNMATCHED_ROUTE`]. Read after
/// routing: before it, a percent-encoded path (`…/aws-instance-identit%79`) matches no pattern
/// although the router decodes it and runs that route.
pub(super) fn route_of(request: &HttpRequest) -> String {
    request
        .match_pattern()
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned())
}
