//! The HTTP contract: bodies, statuses and messages of `docs/coder-contract.md` §1, byte for byte.

use serde_json::json;

use crate::helpers::app::{AWS_PATH, REQUIRED};
use crate::helpers::{signing, spawn_app};

#[tokio::test]
async fn malformed_bodies_are_400_invalid_json() {
    let app = spawn_app().await;
    for (body, detail_fragment) in [
        ("", "EOF"),
        ("{", "EOF while parsing"),
        ("xyz", "expected value"),
        ("[]", "expected a JSON object, found an array"),
        (
            r#"["sig", "doc", "name"]"#,
            "expected a JSON object, found an array",
        ),
        ("\"text\"", "expected a JSON object, found a string"),
        ("42", "expected a JSON object, found a number"),
        (
            r#"{"signature": 5, "document": "x"}"#,
            "invalid type: integer",
        ),
        (
            r#"{"signature": "s", "document": {"a": 1}}"#,
            "invalid type: map",
        ),
        (
            r#"{"signature": "s", "document": "d", "agent_name": ["x"]}"#,
            "invalid type: sequence",
        ),
        ("{\"signature\": \"\u{0}\"", "control character"),
    ] {
        let response = app.post_raw(AWS_PATH, body).await;
        response.assert_error(400, "Request body must be valid JSON.");
        let detail = response.detail();
        assert!(
            detail.contains(detail_fragment),
            "{body:?}: detail {detail:?}"
        );
    }
}

#[tokio::test]
async fn invalid_utf8_becomes_replacement_characters_like_go() {
    let app = spawn_app().await;
    let response = app
        .post_raw(AWS_PATH, b"{\"signature\": \"\xff\xfe\"}".to_vec())
        .await;
    // Decoded (as U+FFFD), so the only failure left is the missing document.
    response.assert_missing_fields(&["document"]);
}

#[tokio::test]
async fn keys_match_field_names_case_insensitively_like_go() {
    let app = spawn_app().await;
    let (_, agents) = app.seed().live_agents("i-case", &["dev", "other"]).await;
    let agent = agents[0];
    let (signature, document) = signing::aws_document("i-case");
    let body = json!({"Signature": signature, "DOCUMENT": document, "Agent_Name": "dev"});
    assert_eq!(app.post_json(AWS_PATH, &body).await.token(), agent.token());
}

#[tokio::test]
async fn missing_fields_list_every_failure_in_field_order() {
    let app = spawn_app().await;
    for body in [
        "{}",
        "null",
        r#"{"signature": "", "document": null}"#,
        r#"{"agent_name": "dev"}"#,
    ] {
        let response = app.post_raw(AWS_PATH, body).await;
        response.assert_error(400, "Validation failed.");
        assert_eq!(
            response.json(),
            json!({
                "message": "Validation failed.",
                "validations": [
                    {"field": "signature", "detail": REQUIRED},
                    {"field": "document", "detail": REQUIRED},
                ]
            }),
            "{body}"
        );
    }
    let response = app.post_raw(AWS_PATH, r#"{"signature": "abc"}"#).await;
    assert_eq!(
        response.json()["validations"],
        json!([{"field": "document", "detail": REQUIRED}])
    );
}

#[tokio::test]
async fn oversized_bodies_are_413_json() {
    crate::helpers::logs::capture();
    let app = spawn_app().await;
    let body = format!(
        r#"{{"signature": "{}", "document": "x"}}"#,
        "A".repeat(65 * 1024)
    );
    let response = app.post_raw_as(AWS_PATH, "contract-413", body).await;
    response.assert_error(413, "Request body is too large.");
    assert_eq!(
        response.json()["detail"],
        "The body must not exceed 65536 bytes."
    );
    // docs/operations.md, "Body over 64 KiB": refused from its declared length.
    crate::helpers::logs::assert_refusal_logged(
        "contract-413",
        "payload_too_large",
        "request body exceeds 65536 bytes",
        413,
        "PayloadTooLarge { limit: 65536 }",
    )
    .await;
    // A body of exactly the limit is read (and then fails on its content).
    let filler = 64 * 1024 - r#"{"signature": "", "document": "x"}"#.len();
    let body = format!(
        r#"{{"signature": "{}", "document": "x"}}"#,
        "A".repeat(filler)
    );
    assert_eq!(body.len(), 64 * 1024);
    app.post_raw(AWS_PATH, body)
        .await
        .assert_error(401, "Invalid AWS identity.");
}

#[tokio::test]
async fn unknown_fields_and_trailing_data_are_ignored_like_go() {
    let app = spawn_app().await;
    let agent = app.seed().live_agent("dev", "i-extra").await;
    let (signature, document) = signing::aws_document("i-extra");
    let body = format!(
        "{} trailing garbage",
        json!({"signature": signature, "document": document, "unknown": [1, 2], "encoding": "x"})
    );
    assert_eq!(app.post_raw(AWS_PATH, body).await.token(), agent.token());
}

#[tokio::test]
async fn successful_body_is_exactly_the_token_like_go_writes_it() {
    let app = spawn_app().await;
    let agent = app.seed().live_agent("dev", "i-ok").await;
    let response = app.aws("i-ok", None).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.text,
        format!("{{\"session_token\":\"{}\"}}\n", agent.token())
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/json; charset=utf-8")
    );
}

#[tokio::test]
async fn not_found_messages_quote_like_go() {
    let app = spawn_app().await;
    let response = app.aws("i-\"odd\"\n\u{a0}<&>", None).await;
    response.assert_error(
        404,
        "Instance with id \"i-\\\"odd\\\"\\n\\u00a0<&>\" not found.",
    );
    // HTML characters are escaped in the body as Go's encoder does.
    assert!(
        response.text.contains(r"\u003c\u0026\u003e"),
        "{}",
        response.text
    );
    assert!(response.json().get("detail").is_none());
    assert!(response.json().get("validations").is_none());

    app.seed().live_agent("dev", "i-1").await;
    app.aws("i-1", Some(" say \"hi\"\t")).await.assert_error(
        404,
        r#"No agent found with instance ID "i-1" and name "say \"hi\""."#,
    );
}

#[tokio::test]
async fn a_signed_document_without_instance_id_is_404_for_the_empty_id() {
    let app = spawn_app().await;
    for document in ["{}", r#"{"instanceId": ""}"#, r#"{"instanceId": null}"#] {
        let signature = signing::aws_key().sign_b64(document.as_bytes());
        app.aws_signed(&signature, document)
            .await
            .assert_error(404, r#"Instance with id "" not found."#);
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = spawn_app().await;
    app.get("/api/v2/nope")
        .await
        .assert_error(404, "Route not found.");
    app.get(AWS_PATH)
        .await
        .assert_error(405, "Method not allowed.");
    app.post_raw("/healthz", "")
        .await
        .assert_error(405, "Method not allowed.");
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let health = app.get("/healthz").await;
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );
    let ready = app.get("/readyz").await;
    assert_eq!(
        (ready.status, ready.json()),
        (200, json!({"status": "ready"}))
    );
}
