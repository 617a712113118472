//! Coder's Azure and Google scenarios (`docs/coder-contract.md` §6) on their own routes, with the same
//! fixture as Coder: a template-import twin beside the workspace build's agents.

use serde_json::json;

use crate::helpers::azure::{self, trust_test_pki};
use crate::helpers::google::{self, token_for};
use crate::helpers::{spawn_app, spawn_app_with};

#[tokio::test]
async fn azure_success() {
    let app = spawn_app_with(trust_test_pki).await;
    let (_, agents) = app.seed().coder_workspace("vm-success", &["dev"]).await;
    let response = app.azure(&azure::attested("vm-success"), None).await;
    assert_eq!(response.token(), agents[0].token());
}

#[tokio::test]
async fn azure_with_selector() {
    let app = spawn_app_with(trust_test_pki).await;
    let (_, agents) = app
        .seed()
        .coder_workspace("vm-amb", &["alpha", "beta"])
        .await;
    let signature = azure::attested("vm-amb");
    assert_eq!(
        app.azure(&signature, Some("alpha")).await.token(),
        agents[0].token()
    );
    app.azure(&signature, None).await.assert_error(
        409,
        r#"Multiple agents found with instance ID "vm-amb". Set CODER_AGENT_NAME to one of: alpha, beta"#,
    );
}

#[tokio::test]
async fn azure_instance_not_found() {
    let app = spawn_app_with(trust_test_pki).await;
    app.azure(&azure::attested("vm-nowhere"), None)
        .await
        .assert_error(404, r#"Instance with id "vm-nowhere" not found."#);
}

#[tokio::test]
async fn google_success() {
    let app = spawn_app().await;
    let (_, agents) = app.seed().coder_workspace("g-success", &["dev"]).await;
    assert_eq!(
        app.google(&token_for("g-success"), None).await.token(),
        agents[0].token()
    );
}

#[tokio::test]
async fn google_with_selector() {
    let app = spawn_app().await;
    let (_, agents) = app
        .seed()
        .coder_workspace("g-amb", &["alpha", "beta"])
        .await;
    assert_eq!(
        app.google(&token_for("g-amb"), Some("alpha")).await.token(),
        agents[0].token()
    );
}

/// Coder's "expired" token has no `exp` at all.
#[tokio::test]
async fn google_expired() {
    let app = spawn_app().await;
    let mut claims = google::claims("g-expired");
    claims.as_object_mut().expect("object").remove("exp");
    app.google(&google::token(&claims), None)
        .await
        .assert_error(401, "Invalid GCP identity.");
    let body = app
        .post_json(
            crate::helpers::app::GOOGLE_PATH,
            &json!({"json_web_token": google::token(&claims), "agent_name": "dev"}),
        )
        .await;
    body.assert_error(401, "Invalid GCP identity.");
}

#[tokio::test]
async fn google_instance_not_found() {
    let app = spawn_app().await;
    app.google(&token_for("g-nowhere"), None)
        .await
        .assert_error(404, r#"Instance with id "g-nowhere" not found."#);
}
