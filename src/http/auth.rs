//! `POST /api/v2/workspaceagents/{aws,azure,google}-instance-identity`: one line each, into
//! the shared pipeline.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::auth::Authenticator;
use crate::auth::requests::{AwsRequest, AzureRequest, GoogleRequest};
use crate::client::ClientAddress;

pub(super) async fn aws(
    auth: web::Data<Authenticator>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    auth.authenticate::<AwsRequest>(&request, ClientAddress::of(&request), payload)
        .await
}

pub(super) async fn azure(
    auth: web::Data<Authenticator>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    auth.authenticate::<AzureRequest>(&request, ClientAddress::of(&request), payload)
        .await
}

pub(super) async fn google(
    auth: web::Data<Authenticator>,
    request: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    auth.authenticate::<GoogleRequest>(&request, ClientAddress::of(&request), payload)
        .await
}
