//! The span every request is logged in. tracing-actix-web's default takes `http.client_ip` from
//! `Forwarded`/`X-Forwarded-For`, which any client can write; this one logs the socket peer and
//! the client [`ClientAddress`] resolved, the same address the rate limiter keys.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage as _};
use tracing::Span;
use tracing::field::{Empty, display};
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};

use crate::client::ClientAddress;

use super::routes::route_of;

#[derive(Debug)]
pub(super) struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let span = tracing::info_span!(
            "HTTP request",
            http.method = Empty,
            // Known once routing has run: see `on_request_end`.
            http.route = Empty,
            http.target = Empty,
            http.user_agent = Empty,
            http.status_code = Empty,
            client.address = Empty,
            network.peer.address = Empty,
            request_id = Empty,
            exception.message = Empty,
            exception.details = Empty,
        );
        // A span no subscriber wants costs nothing more: its fields are made only for one
        // that is recorded (at `RUST_LOG=warn` they were strings built on every request and
        // dropped unread).
        if span.is_disabled() {
            return span;
        }
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
        span.record("http.method", display(request.method()));
        span.record(
            "http.target",
            request
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or_default(),
        );
        span.record("http.user_agent", user_agent);
        span.record("client.address", ClientAddress::show(address.client));
        span.record("network.peer.address", ClientAddress::show(address.peer));
        span.record("request_id", request_id);
        span
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        if let Ok(response) = outcome
            && !span.is_disabled()
        {
            span.record("http.route", route_of(response.request()));
        }
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}
