//! Google verification end to end: tokens signed by a test key published in an in-memory JWKS,
//! and every way a token can be wrong.

use std::time::Duration;

use chrono::Utc;
use instauth::identity::google::refresh::{FetchJwks as _, HttpJwks, MAX_RESPONSE_BYTES};
use instauth::identity::google::{GoogleSettings, JwksSource};
use serde_json::{Value, json};

use crate::helpers::app::{GOOGLE_PATH, TestApp};
use crate::helpers::google::{self, claims, key, stranger, token_for};
use crate::helpers::http_stub::HttpStub;
use crate::helpers::{spawn_app, spawn_app_with};

const INVALID: &str = "Invalid GCP identity.";

fn header() -> Value {
    json!({"alg": "RS256", "kid": key().kid, "typ": "JWT"})
}

async fn app_with_dev(instance: &str) -> (TestApp, String) {
    let app = spawn_app().await;
    let (_, agents) = app.seed().coder_workspace(instance, &["dev"]).await;
    (app, agents[0].token())
}

#[tokio::test]
async fn a_valid_token_authenticates_its_agent() {
    let (app, token) = app_with_dev("1234567890123456789").await;
    assert_eq!(
        app.google(&token_for("1234567890123456789"), None)
            .await
            .token(),
        token
    );
}

#[tokio::test]
async fn exp_is_required_and_checked_with_60_seconds_leeway() {
    let (app, token) = app_with_dev("g-exp").await;
    let now = Utc::now().timestamp();
    let mut c = claims("g-exp");
    c["exp"] = json!(now - 30);
    assert_eq!(app.google(&google::token(&c), None).await.token(), token);
    c["exp"] = json!(now - 120);
    app.google(&google::token(&c), None)
        .await
        .assert_rejected(INVALID, "token expired");
    c.as_object_mut().expect("object").remove("exp");
    app.google(&google::token(&c), None)
        .await
        .assert_rejected(INVALID, "token has no exp");
    for odd in [json!("soon"), json!(1.5e12), json!(null)] {
        c["exp"] = odd;
        app.google(&google::token(&c), None)
            .await
            .assert_error(401, INVALID);
    }
}

#[tokio::test]
async fn only_rs256_is_accepted() {
    let (app, _) = app_with_dev("g-alg").await;
    let c = claims("g-alg");
    let none = google::unsigned(&json!({"alg": "none", "kid": key().kid}), &c);
    app.google(&none, None)
        .await
        .assert_rejected(INVALID, r#"algorithm "none" is not RS256"#);
    // CVE-2015-9235: HMAC keyed with the public key that verifies RS256.
    let confused = google::hs256(
        &json!({"alg": "HS256", "kid": key().kid}),
        &c,
        &key().public_pem(),
    );
    app.google(&confused, None)
        .await
        .assert_rejected(INVALID, r#"algorithm "HS256" is not RS256"#);
    for alg in ["RS384", "PS256", "ES256", "rs256"] {
        let other = google::sign_with(&json!({"alg": alg, "kid": key().kid}), &c, key());
        app.google(&other, None)
            .await
            .assert_rejected(INVALID, "algorithm ");
    }
}

#[tokio::test]
async fn the_key_is_chosen_by_kid_from_the_trusted_set_only() {
    let (app, _) = app_with_dev("g-kid").await;
    let c = claims("g-kid");
    // Signed by a stranger, under its own kid and under the trusted kid.
    let unknown = google::sign_with(
        &json!({"alg": "RS256", "kid": stranger().kid}),
        &c,
        stranger(),
    );
    app.google(&unknown, None)
        .await
        .assert_rejected(INVALID, "unknown key id \"stranger-kid\"");
    let impostor = google::sign_with(&header(), &c, stranger());
    app.google(&impostor, None)
        .await
        .assert_rejected(INVALID, "signature does not verify");
    // Key material offered by the token itself is ignored.
    let embedded = google::sign_with(
        &json!({"alg": "RS256", "kid": stranger().kid, "jwk": stranger().jwk(true),
                "jku": "http://127.0.0.1:1/jwks"}),
        &c,
        stranger(),
    );
    app.google(&embedded, None)
        .await
        .assert_rejected(INVALID, "unknown key id");
    let no_kid = google::sign_with(&json!({"alg": "RS256"}), &c, key());
    app.google(&no_kid, None)
        .await
        .assert_rejected(INVALID, "header has no kid");
}

#[tokio::test]
async fn the_issuer_must_be_google_unless_a_missing_one_is_allowed() {
    let (app, token) = app_with_dev("g-iss").await;
    let mut c = claims("g-iss");
    c["iss"] = json!("accounts.google.com");
    assert_eq!(app.google(&google::token(&c), None).await.token(), token);
    for wrong in [
        json!("https://evil.example"),
        json!(["accounts.google.com"]),
    ] {
        c["iss"] = wrong;
        app.google(&google::token(&c), None)
            .await
            .assert_rejected(INVALID, "iss is not Google's");
    }
    c.as_object_mut().expect("object").remove("iss");
    app.google(&google::token(&c), None)
        .await
        .assert_rejected(INVALID, "token has no iss");

    let lenient =
        spawn_app_with(|options| options.identity.google.allow_missing_issuer = true).await;
    let (_, agents) = lenient.seed().coder_workspace("g-iss", &["dev"]).await;
    assert_eq!(
        lenient.google(&google::token(&c), None).await.token(),
        agents[0].token()
    );
    c["iss"] = json!("https://evil.example");
    lenient
        .google(&google::token(&c), None)
        .await
        .assert_rejected(INVALID, "iss is not Google's");
}

/// Issue 12, item 2: the Coder agent always asks for `audience=coder`, so that is required by
/// default; `any` (`None`) restores Coder's unchecked audience.
#[tokio::test]
async fn the_audience_is_coder_by_default_and_any_turns_the_check_off() {
    let (app, token) = app_with_dev("g-aud").await;
    let mut c = claims("g-aud");
    assert_eq!(app.google(&google::token(&c), None).await.token(), token);
    c["aud"] = json!("someone-else");
    app.google(&google::token(&c), None)
        .await
        .assert_rejected(INVALID, "aud does not match");
    c.as_object_mut().expect("object").remove("aud");
    app.google(&google::token(&c), None)
        .await
        .assert_rejected(INVALID, "aud does not match");
    c["aud"] = json!(["other", "coder"]);
    assert_eq!(app.google(&google::token(&c), None).await.token(), token);

    let any = spawn_app_with(|options| options.identity.google.audience = None).await;
    let (_, agents) = any.seed().coder_workspace("g-aud", &["dev"]).await;
    c["aud"] = json!("someone-else");
    assert_eq!(
        any.google(&google::token(&c), None).await.token(),
        agents[0].token(),
        "any audience"
    );
}

/// The same default and escape hatch on `serve`'s command line.
#[test]
fn serve_requires_the_coder_audience_unless_told_any() {
    use clap::Parser as _;
    use instauth::cli::{Cli, Command};

    let audience = |extra: &[&str]| {
        let args = [&["instauth", "serve"][..], extra].concat();
        let Command::Serve(serve) = Cli::try_parse_from(args).expect("parses").command else {
            panic!("not serve");
        };
        serve.identity.settings().expect("settings").google.audience
    };
    assert_eq!(audience(&[]).as_deref(), Some("coder"));
    assert_eq!(audience(&["--google-audience", "any"]), None);
    assert_eq!(
        audience(&["--google-audience", "my-aud"]).as_deref(),
        Some("my-aud")
    );
}

#[tokio::test]
async fn malformed_tokens_are_401() {
    let app = spawn_app().await;
    let good = token_for("g-bad");
    let segments: Vec<&str> = good.split('.').collect();
    let padded = format!("{}=.{}.{}", segments[0], segments[1], segments[2]);
    let four = format!("{good}.x");
    for (bad, detail) in [
        ("abc", "token must have three segments"),
        ("a.b", "token must have three segments"),
        (four.as_str(), "token must have three segments"),
        (padded.as_str(), "decode header: "),
        ("%%%.e30.e30", "decode header: "),
        ("e30.e30.e30", "header has no alg"),
        ("bnVsbA.e30.e30", "header is not a JSON object"),
        ("eyJ9.e30.e30", "parse header: "),
    ] {
        app.google(bad, None).await.assert_rejected(INVALID, detail);
    }
    let long = format!("{good}{}", "A".repeat(9000));
    app.google(&long, None)
        .await
        .assert_rejected(INVALID, "token is too long");
    // Validly signed, but the claims are not an object.
    let not_object = google::sign_with(&header(), &json!([1, 2]), key());
    app.google(&not_object, None)
        .await
        .assert_rejected(INVALID, "claims are not a JSON object");
}

#[tokio::test]
async fn claims_of_the_wrong_shape_are_400() {
    let app = spawn_app().await;
    for (path, value) in [
        ("/google/compute_engine/instance_id", json!(1234)),
        ("/google/compute_engine", json!("x")),
        ("/google", json!([1])),
        ("/google", json!([])),
        ("/google/compute_engine", json!([])),
        ("/google/compute_engine/instance_id", json!({"id": "x"})),
    ] {
        let mut c = claims("g-shape");
        *c.pointer_mut(path).expect("path") = value;
        let response = app.google(&google::token(&c), None).await;
        response.assert_error(400, "Error decoding JWT claims.");
        assert!(!response.detail().is_empty(), "{response:?}");
    }
}

#[tokio::test]
async fn a_token_without_an_instance_id_is_404_for_the_empty_id() {
    let app = spawn_app().await;
    for path in ["/google/compute_engine/instance_id", "/google"] {
        let mut c = claims("x");
        *c.pointer_mut(path).expect("path") = Value::Null;
        app.google(&google::token(&c), None)
            .await
            .assert_error(404, r#"Instance with id "" not found."#);
    }
}

/// Coder's own test doubles: a JWKS without `kty`, tokens with only the instance claim and
/// `exp` (no `iss`, no `aud`). They pass once a missing issuer is allowed and the audience is
/// not checked (`--google-audience any`).
#[tokio::test]
async fn coder_style_tokens_and_jwks_work_in_parity_mode() {
    let app = spawn_app_with(|options| {
        options.identity.google = GoogleSettings {
            jwks: JwksSource::Document(google::jwks(&[key()], false)),
            allow_missing_issuer: true,
            audience: None,
            ..GoogleSettings::default()
        };
    })
    .await;
    let (_, agents) = app.seed().coder_workspace("g-coder", &["dev"]).await;
    let c = json!({
        "google": {"compute_engine": {"instance_id": "g-coder"}},
        "exp": Utc::now().timestamp() + 365 * 86_400,
    });
    assert_eq!(
        app.google(&google::token(&c), None).await.token(),
        agents[0].token()
    );
}

#[tokio::test]
async fn a_configured_leeway_replaces_the_default() {
    let app = spawn_app_with(|options| {
        options.identity.google.leeway = Duration::ZERO;
    })
    .await;
    app.seed().coder_workspace("g-leeway", &["dev"]).await;
    let mut c = claims("g-leeway");
    c["exp"] = json!(Utc::now().timestamp() - 5);
    app.google(&google::token(&c), None)
        .await
        .assert_rejected(INVALID, "token expired");
}

#[tokio::test]
async fn without_keys_every_token_is_401() {
    let app = spawn_app_with(|options| {
        options.identity.google.jwks = JwksSource::Disabled;
    })
    .await;
    app.google(&token_for("g-none"), None)
        .await
        .assert_rejected(INVALID, "unknown key id");
}

#[tokio::test]
async fn missing_token_is_a_validation_error() {
    let app = spawn_app().await;
    for body in [
        "{}",
        r#"{"json_web_token": ""}"#,
        r#"{"agent_name": "dev"}"#,
    ] {
        app.post_raw(GOOGLE_PATH, body)
            .await
            .assert_missing_fields(&["json_web_token"]);
    }
}

/// Without a JWKS file the keys come from a URL at startup (here a loopback stand-in for
/// Google's endpoint; no test reaches the network).
#[tokio::test]
async fn keys_are_fetched_from_the_jwks_url_at_startup() {
    let stub = HttpStub::start(
        "200 OK",
        &[
            ("cache-control", "public, max-age=3600"),
            ("content-type", "application/json"),
        ],
        google::jwks(&[key()], true),
    )
    .await;
    let url = stub.url.clone();
    let app = spawn_app_with(|options| options.identity.google.jwks = JwksSource::Url(url)).await;
    assert_eq!(stub.hits(), 1, "fetched once before serving");
    let (_, agents) = app.seed().coder_workspace("g-url", &["dev"]).await;
    assert_eq!(
        app.google(&token_for("g-url"), None).await.token(),
        agents[0].token()
    );
}

#[tokio::test]
async fn bad_jwks_responses_are_refused() {
    let ok_body = google::jwks(&[key()], true);
    let fetch = |stub: &HttpStub| HttpJwks::new(&stub.url).expect("client");
    assert!(HttpJwks::new("not a url").is_err());
    assert!(HttpJwks::new("file:///etc/passwd").is_err());
    let not_found = HttpStub::start("404 Not Found", &[], ok_body.clone()).await;
    let err = fetch(&not_found).fetch().await.expect_err("404");
    assert!(err.to_string().contains("404"), "{err}");
    let huge = HttpStub::start("200 OK", &[], vec![b' '; MAX_RESPONSE_BYTES + 1]).await;
    let err = fetch(&huge).fetch().await.expect_err("too large");
    assert!(err.to_string().contains("exceeds"), "{err}");
    let garbage = HttpStub::start("200 OK", &[], b"<html>".to_vec()).await;
    assert!(fetch(&garbage).fetch().await.is_err());
    let good = HttpStub::start(
        "200 OK",
        &[("cache-control", "max-age=120"), ("age", "20")],
        ok_body,
    )
    .await;
    let fetched = fetch(&good).fetch().await.expect("fetches");
    assert_eq!(fetched.keys.len(), 1);
    assert_eq!(fetched.max_age, Some(Duration::from_secs(100)));

    // A service whose first fetch fails still starts; Google tokens are 401 until keys arrive.
    let url = not_found.url.clone();
    let app = spawn_app_with(|options| options.identity.google.jwks = JwksSource::Url(url)).await;
    app.google(&token_for("g-down"), None)
        .await
        .assert_rejected(INVALID, "unknown key id");
}
