//! The span every request is logged in. tracing-actix-web's default takes `http.client_ip` from
//! `Forwarded`/`X-Forwarded-For`, which any client can write; this one logs the socket peer and
//! the client [`ClientAddress`] resolved, the same address the rate limiter keys.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage as _};
use tracing::Span;
use tracing::field::Empty;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

use crate::client::ClientAddress;

use super::routes::route_of;

#[derive(Debug)]
pub(super) struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let address = ClientAddress::of(request.request());
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        let user_agent = request
            .headers()
            .get(actix_web::http::header::USER_AGENT)
            .and_then(|agent| agent.to_str().ok())
            .unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            // Known once routing has run: see `on_request_end`.
            http.route = Empty,
            http.target = %request.uri().path_and_query().map(|p| p.as_str()).unwrap_or_default(),
            http.user_agent = %user_agent,
            http.status_code = Empty,
            client.address = %ClientAddress::show(address.client),
            network.peer.address = %ClientAddress::show(address.peer),
            request_id = %request_id,
            exception.message = Empty,
            exception.details = Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        if let Ok(response) = outcome {
            span.record("http.route", route_of(response.request()));
        }
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
