//! AWS verification end to end: the real us-east-1 document against the embedded region keys,
//! and every way a signature can be wrong.

use std::time::Duration;

use chrono::{DateTime, Utc};
use instauth::identity::clock::Clock;
use serde_json::json;

use crate::helpers::app::{AWS_PATH, AppOptions, TestApp};
use crate::helpers::{signing, spawn_app, spawn_app_with};

const REAL_DOCUMENT: &str = include_str!("../fixtures/aws/real-us-east-1/document.json");
const REAL_SIGNATURE: &str = include_str!("../fixtures/aws/real-us-east-1/signature.b64");
const REAL_INSTANCE: &str = "i-076e9b91f7c420782";

/// An app set up by `configure` with agent `dev` on the real document's instance; the real
/// document and signature must get that agent's token or, given `rejection`, a 401 whose detail
/// starts with it. Returns the app for further requests.
async fn check_real_document(
    configure: impl FnOnce(&mut AppOptions),
    rejection: Option<&str>,
) -> TestApp {
    let app = spawn_app_with(configure).await;
    let agent = app.seed().live_agent("dev", REAL_INSTANCE).await;
    let response = app.aws_signed(REAL_SIGNATURE, REAL_DOCUMENT).await;
    match rejection {
        None => assert_eq!(response.token(), agent.token()),
        Some(detail) => response.assert_rejected("Invalid AWS identity.", detail),
    }
    app
}

#[tokio::test]
async fn real_us_east_1_document_authenticates_its_agent() {
    check_real_document(|_| {}, None).await;
}

#[tokio::test]
async fn tampered_or_untrusted_material_is_401() {
    let app = spawn_app().await;
    app.seed().live_agent("dev", REAL_INSTANCE).await;

    let one_byte = REAL_DOCUMENT.replacen("t2.micro", "t2.micrO", 1);
    let (_, test_document) = signing::aws_document(REAL_INSTANCE);
    let untrusted = signing::untrusted_key().sign_b64(test_document.as_bytes());
    let cases = [
        (
            REAL_SIGNATURE.to_owned(),
            one_byte,
            "signature does not verify",
        ),
        (
            REAL_SIGNATURE.to_owned(),
            "{}".to_owned(),
            "signature does not verify",
        ),
        (untrusted, test_document, "signature does not verify"),
        (
            "%%%".to_owned(),
            REAL_DOCUMENT.to_owned(),
            "decode signature",
        ),
    ];
    for (signature, document, detail) in cases {
        app.aws_signed(&signature, &document)
            .await
            .assert_rejected("Invalid AWS identity.", detail);
    }
}

#[tokio::test]
async fn a_signed_document_that_is_not_json_is_401() {
    let app = spawn_app().await;
    let document = "instanceId=i-123";
    let signature = signing::aws_key().sign_b64(document.as_bytes());
    app.aws_signed(&signature, document)
        .await
        .assert_rejected("Invalid AWS identity.", "parse document:");
}

#[tokio::test]
async fn signature_wrapped_at_76_columns_is_accepted() {
    let app = spawn_app().await;
    let agent = app.seed().live_agent("dev", "i-wrapped").await;
    let (signature, document) = signing::aws_document("i-wrapped");
    let wrapped: String = signature
        .as_bytes()
        .chunks(76)
        .map(|line| String::from_utf8_lossy(line).into_owned())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(wrapped.contains('\n'));
    let response = app.aws_signed(&wrapped, &document).await;
    assert_eq!(response.token(), agent.token());
}

#[tokio::test]
async fn an_account_allow_list_admits_only_listed_accounts() {
    for (accounts, rejection) in [
        (vec!["111111111111", "628783029487"], None),
        (
            vec!["111111111111"],
            Some("accountId is not an allowed account"),
        ),
    ] {
        let app = check_real_document(
            |options| {
                options.identity.aws_policy.allowed_accounts =
                    accounts.iter().map(|a| (*a).to_owned()).collect();
            },
            rejection,
        )
        .await;
        // Coder-style test documents carry no accountId at all.
        app.aws("i-test", None)
            .await
            .assert_rejected("Invalid AWS identity.", "document has no accountId");
    }
}

#[tokio::test]
async fn a_maximum_instance_age_is_measured_from_pending_time() {
    // pendingTime of the real document: 2022-03-25T20:07:16Z.
    for (now, rejection) in [
        ("2022-03-26T20:07:16Z", None),
        (
            "2022-03-26T20:07:17Z",
            Some("instance is older than the allowed maximum age"),
        ),
    ] {
        let now: DateTime<Utc> = now.parse().expect("time");
        let app = check_real_document(
            |options| {
                options.identity.clock = Clock::Fixed(now);
                options.identity.aws_policy.max_instance_age = Some(Duration::from_secs(86_400));
            },
            rejection,
        )
        .await;
        app.aws("i-test", None)
            .await
            .assert_rejected("Invalid AWS identity.", "document has no pendingTime");
    }
}

/// Issue 12, item 6: when keys differ only in case, Go's decoder lets the later one win;
/// serde_json's sorted map let the one that sorts last win instead.
#[tokio::test]
async fn the_later_of_two_keys_differing_in_case_wins_as_in_go() {
    let app = spawn_app().await;
    let workspace = app.seed().workspace().await;
    let build = app.seed().build(workspace, 1).await;
    let main = app.seed().agent(build.resource_id, "main", "i-fold").await;
    app.seed().agent(build.resource_id, "nope", "i-fold").await;
    let (signature, document) = signing::aws_document("i-fold");
    let (signature, document) = (json!(signature), json!(document));
    // Built as text: a JSON library would merge or reorder the keys.
    let body = format!(
        r#"{{"signature":{signature},"document":{document},"Document":"garbage","agent_name":"main"}}"#
    );
    app.post_raw(AWS_PATH, body)
        .await
        .assert_rejected("Invalid AWS identity.", "");
    let body = format!(
        r#"{{"signature":{signature},"document":{document},"agent_name":"nope","AGENT_NAME":"main"}}"#
    );
    assert_eq!(app.post_raw(AWS_PATH, body).await.token(), main.token());
    // A repeated key counts where it is repeated.
    let body = format!(
        r#"{{"signature":{signature},"document":{document},"AGENT_NAME":"x","agent_name":"nope","AGENT_NAME":"main"}}"#
    );
    assert_eq!(app.post_raw(AWS_PATH, body).await.token(), main.token());
    // Order decides, not spelling: the lower-case key wins when it comes last.
    let body = format!(
        r#"{{"signature":{signature},"Document":"garbage","document":{document},"agent_name":"main"}}"#
    );
    assert_eq!(app.post_raw(AWS_PATH, body).await.token(), main.token());
}
