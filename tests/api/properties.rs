//! Property tests: whatever bytes or JSON arrive, no verifier panics, forged material is
//! refused (with agents seeded so a false accept would be a 200), and validly signed content
//! gets exactly the answer its instance id deserves, in Coder's JSON shape.
//!
//! Case counts are modest so the suite stays fast on two cores; `PROPTEST_CASES` raises the
//! verifier-level ones for a longer soak.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use instauth::identity::aws::{AwsPolicy, AwsVerifier};
use instauth::identity::azure::{AzureSettings, AzureVerifier};
use instauth::identity::google::{GoogleSettings, GoogleVerifier, JwksSource};
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};

use crate::helpers::app::{AWS_PATH, AZURE_PATH, GOOGLE_PATH, TestApp};
use crate::helpers::azure::{self, Shape, pki, trust_test_pki};
use crate::helpers::{google, spawn_app_with};

const REAL_AZURE: &str = include_str!("../fixtures/azure/real/regular.signature.b64");
const REAL_AZURE_AT: &str = "2026-06-25T00:00:00Z";
const REAL_AWS_DOCUMENT: &str = include_str!("../fixtures/aws/real-us-east-1/document.json");
const REAL_AWS_SIGNATURE: &str = include_str!("../fixtures/aws/real-us-east-1/signature.b64");

fn aws_verifier() -> &'static AwsVerifier {
    static V: OnceLock<AwsVerifier> = OnceLock::new();
    V.get_or_init(|| AwsVerifier::new(None, &AwsPolicy::default()).expect("aws"))
}

fn azure_verifier() -> &'static AzureVerifier {
    static V: OnceLock<AzureVerifier> = OnceLock::new();
    V.get_or_init(|| AzureVerifier::new(&AzureSettings::default()).expect("azure"))
}

fn google_verifier() -> &'static GoogleVerifier {
    static V: OnceLock<GoogleVerifier> = OnceLock::new();
    V.get_or_init(|| {
        GoogleVerifier::new(&GoogleSettings {
            jwks: JwksSource::Document(google::jwks(&[google::key()], true)),
            // Every later check, whatever the audience: the audience has tests of its own
            // (tests/api/google.rs).
            audience: None,
            ..GoogleSettings::default()
        })
        .expect("google")
    })
}

fn real_azure_time() -> DateTime<Utc> {
    REAL_AZURE_AT.parse().expect("time")
}

/// Names the verifiers and handlers look for, so random objects reach past the first check.
fn key_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "signature", "document", "encoding", "json_web_token", "agent_name", "google",
            "compute_engine", "instance_id", "instanceId", "exp", "iss", "aud", "vmId",
            "timeStamp", "expiresOn", "accountId", "pendingTime", "alg", "kid",
        ])
        .prop_map(str::to_owned),
        1 => "[a-z_]{0,8}",
    ]
}

/// Instance ids the endpoint properties seed an agent for, and that generated strings
/// sometimes are: an identity that verified when it should not is a 200, not a quiet 404.
const SEEDED: [&str; 3] = ["i-seeded", "vm-seeded", "g-seeded"];

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        prop::sample::select(SEEDED.to_vec()).prop_map(|id| Value::String(id.to_owned())),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key_name(), inner, 0..5)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// The real Azure DER with up to four bytes overwritten, inserted or removed.
fn mutated_azure() -> impl Strategy<Value = Vec<u8>> {
    let der = STANDARD.decode(REAL_AZURE).expect("fixture");
    prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..5).prop_map(
        move |edits| {
            let mut out = der.clone();
            for (index, byte, kind) in edits {
                let at = index.index(out.len());
                match kind {
                    0 => out[at] = byte,
                    1 => out.insert(at, byte),
                    _ => {
                        out.remove(at);
                    }
                }
            }
            out
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn aws_never_panics(signature in any::<String>(), document in any::<String>(), raw in prop::collection::vec(any::<u8>(), 0..256)) {
        prop_assert!(aws_verifier().verify(&signature, &document, Utc::now()).is_err());
        prop_assert!(aws_verifier().verify(&STANDARD.encode(&raw), &document, Utc::now()).is_err());
        prop_assert!(aws_verifier().verify(REAL_AWS_SIGNATURE, &document, Utc::now()).is_err()
            || document == REAL_AWS_DOCUMENT);
    }

    #[test]
    fn azure_never_panics_on_arbitrary_input(text in any::<String>(), raw in prop::collection::vec(any::<u8>(), 0..4096)) {
        prop_assert!(azure_verifier().verify(&text, Utc::now()).is_err());
        prop_assert!(azure_verifier().verify(&STANDARD.encode(&raw), Utc::now()).is_err());
    }

    /// Mutations of a payload that verifies at this time: parser and verifier paths deep in
    /// OpenSSL. Most mutations are refused; any that are not (bytes no check covers) must still
    /// name the original VM, never another.
    #[test]
    fn azure_never_panics_on_mutated_real_payloads(der in mutated_azure()) {
        if let Ok(identity) = azure_verifier().verify(&STANDARD.encode(&der), real_azure_time()) {
            prop_assert_eq!(identity.vm_id, "dc18de58-292f-4794-9a5d-a4192bad0039");
        }
    }

    #[test]
    fn google_never_panics_on_arbitrary_tokens(text in any::<String>(), segments in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..5)) {
        prop_assert!(google_verifier().verify(&text, Utc::now()).is_err());
        let dotted: Vec<String> = segments.iter().map(|s| URL_SAFE_NO_PAD.encode(s)).collect();
        prop_assert!(google_verifier().verify(&dotted.join("."), Utc::now()).is_err());
    }

    /// Validly signed tokens whose header and claims are arbitrary JSON reach every later check,
    /// and the verifier accepts exactly the tokens [`google_model`] accepts, with its instance id.
    #[test]
    fn google_accepts_signed_arbitrary_json_exactly_when_it_is_valid(header in json_value(), claims in json_value(), base in 0..4u8, issuer in json_value()) {
        let now = Utc::now();
        let mut claims = claims;
        // Most cases carry a valid expiry, so the later checks are reached, and then Google's
        // issuer, an arbitrary one or none.
        if let (1.., Value::Object(map)) = (base, &mut claims) {
            map.insert("exp".into(), json!(now.timestamp() + 600));
            match base {
                1 => map.insert("iss".into(), json!("accounts.google.com")),
                2 => map.insert("iss".into(), issuer),
                _ => map.remove("iss"),
            };
        }
        let token = google::sign_with(&header, &claims, google::key());
        prop_assume!(token.len() <= 8 * 1024);
        let header_ok = header["alg"] == "RS256" && header["kid"] == google::key().kid.as_str();
        prop_assert_eq!(
            google_verifier().verify(&token, now).ok(),
            header_ok.then(|| google_model(&claims, now)).flatten(),
            "header {} claims {}", header, claims
        );
        let mut pinned = header;
        if let Value::Object(map) = &mut pinned {
            map.insert("alg".into(), json!("RS256"));
            map.insert("kid".into(), json!(google::key().kid));
        }
        let expected = pinned.is_object().then(|| google_model(&claims, now)).flatten();
        let token = google::sign_with(&pinned, &claims, google::key());
        prop_assume!(token.len() <= 8 * 1024);
        prop_assert_eq!(
            google_verifier().verify(&token, now).ok(),
            expected,
            "header {} claims {}", pinned, claims
        );
    }
}

/// What a correctly signed Google token with these claims verifies to (no audience, 60 s
/// leeway, issuer required), written from the contract rather than from the verifier: an
/// object, an integer `exp` not past, Google's `iss`, and `google.compute_engine.instance_id`
/// a string (absent or null anywhere on the path: the empty id).
fn google_model(claims: &Value, now: DateTime<Utc>) -> Option<String> {
    let map = claims.as_object()?;
    let exp = map.get("exp")?.as_i64()?;
    if now.timestamp() > exp.saturating_add(60) {
        return None;
    }
    let iss = map.get("iss")?.as_str()?;
    if !["accounts.google.com", "https://accounts.google.com"].contains(&iss) {
        return None;
    }
    let mut node = claims;
    for name in ["google", "compute_engine"] {
        match node.get(name) {
            None | Some(Value::Null) => return Some(String::new()),
            Some(object @ Value::Object(_)) => node = object,
            Some(_) => return None,
        }
    }
    match node.get("instance_id") {
        None | Some(Value::Null) => Some(String::new()),
        Some(Value::String(id)) => Some(id.clone()),
        Some(_) => None,
    }
}

/// Draws `count` values of `strategy` (no shrinking: a failure prints the input instead).
fn sample<S: Strategy>(strategy: S, count: usize) -> Vec<S::Value> {
    let mut runner = TestRunner::default();
    (0..count)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .expect("strategy generates")
                .current()
        })
        .collect()
}

/// Posts `body` to `path` and asserts a refusal in Coder's JSON shape: 400 (unreadable or
/// invalid body) or 401 (identity does not verify). Never 404, 409 or 200: those mean the
/// material verified, which forged material must not.
async fn assert_refused(app: &TestApp, path: &str, body: Vec<u8>) {
    let response = app.post_raw(path, body.clone()).await;
    assert!(
        matches!(response.status, 400 | 401),
        "{path} answered {} to {:?}: {}",
        response.status,
        String::from_utf8_lossy(&body),
        response.text
    );
    assert_json_error(path, &body, &response);
}

fn assert_json_error(path: &str, body: &[u8], response: &crate::helpers::app::Response) {
    assert_eq!(
        response.header("content-type"),
        Some("application/json; charset=utf-8"),
        "{path}: {:?}",
        String::from_utf8_lossy(body)
    );
    assert!(
        response.json()["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{path}: {}",
        response.text
    );
}

/// Seeds one agent on each of [`SEEDED`]; returns their tokens by instance id.
async fn seed_agents(app: &TestApp) -> HashMap<&'static str, String> {
    let mut tokens = HashMap::new();
    for id in SEEDED {
        tokens.insert(id, app.seed().live_agent("dev", id).await.token());
    }
    tokens
}

/// Posts validly signed `body` to `path`, whose content names instance `id` ("" when it names
/// none) and asks for `name`, and asserts the answer that id deserves: the seeded agent's token
/// (and only for a seeded id with no name or its name), a 404 for any other id or name, or a
/// refusal of the content (400/401). Never a 409: each seeded id has one agent.
async fn assert_signed_answer(
    app: &TestApp,
    tokens: &HashMap<&'static str, String>,
    path: &str,
    body: &Value,
    id: &str,
    name: Option<&str>,
) {
    let bytes = body.to_string().into_bytes();
    let response = app.post_raw(path, bytes.clone()).await;
    let wants_dev = name.is_none_or(|name| matches!(name.trim(), "" | "dev"));
    let token = tokens.get(id).filter(|_| wants_dev);
    match (response.status, token) {
        (200, Some(token)) => assert_eq!(&response.token(), token, "{path}: {body}"),
        (404, None) => {
            let message = response.message();
            let plain = id
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
            assert!(
                !plain || message.contains(&format!("\"{id}\"")),
                "{path}: {message} for {body}"
            );
        }
        (400 | 401, _) => {}
        (status, _) => panic!(
            "{path} answered {status} to {body} (id {id:?}, token expected: {}): {}",
            token.is_some(),
            response.text
        ),
    }
    if response.status != 200 {
        assert_json_error(path, &bytes, &response);
    }
}

/// A string field of `value` at `pointer`, "" when absent or not a string.
fn text_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn agent_name() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("dev".to_owned())),
        any::<String>().prop_map(Some),
    ]
}

fn with_name(mut body: Value, name: Option<&String>) -> Value {
    if let Some(name) = name {
        body["agent_name"] = json!(name);
    }
    body
}

const PATHS: [&str; 3] = [AWS_PATH, AZURE_PATH, GOOGLE_PATH];

/// One app with an agent on every [`SEEDED`] id (so forged material that verified would be a
/// 200), many bodies: every one is refused.
#[tokio::test]
async fn every_endpoint_refuses_arbitrary_bodies_with_a_json_error() {
    let app = spawn_app_with(trust_test_pki).await;
    seed_agents(&app).await;
    for body in sample(prop::collection::vec(any::<u8>(), 0..512), 32) {
        for path in PATHS {
            assert_refused(&app, path, body.clone()).await;
        }
    }
    for value in sample(json_value(), 48) {
        for path in PATHS {
            assert_refused(&app, path, value.to_string().into_bytes()).await;
        }
    }
    // Well-formed claims naming a seeded instance, under signatures of arbitrary bytes: only
    // the signature check stands between them and a 200.
    let document = json!({"instanceId": SEEDED[0], "accountId": "1"}).to_string();
    let header = URL_SAFE_NO_PAD
        .encode(json!({"alg": "RS256", "kid": google::key().kid, "typ": "JWT"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(
        json!({
            "iss": "accounts.google.com",
            "exp": Utc::now().timestamp() + 600,
            "google": {"compute_engine": {"instance_id": SEEDED[2]}},
        })
        .to_string(),
    );
    for raw in sample(prop::collection::vec(any::<u8>(), 0..300), 32) {
        let aws = json!({"signature": STANDARD.encode(&raw), "document": document});
        assert_refused(&app, AWS_PATH, aws.to_string().into_bytes()).await;
        let token = format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode(&raw));
        let google = json!({"json_web_token": token});
        assert_refused(&app, GOOGLE_PATH, google.to_string().into_bytes()).await;
    }
    // Objects with each endpoint's own fields holding arbitrary JSON or strings.
    let fields = (json_value(), json_value(), any::<String>(), any::<String>());
    for (a, b, s, t) in sample(fields, 48) {
        for body in [
            json!({"signature": a, "document": b, "agent_name": s}),
            json!({"signature": s, "document": t}),
            json!({"signature": a, "encoding": b}),
            json!({"signature": s, "encoding": "pkcs7", "agent_name": t}),
        ] {
            assert_refused(&app, AWS_PATH, body.to_string().into_bytes()).await;
            assert_refused(&app, AZURE_PATH, body.to_string().into_bytes()).await;
        }
        for body in [
            json!({"json_web_token": a, "agent_name": b}),
            json!({"json_web_token": s, "agent_name": t}),
        ] {
            assert_refused(&app, GOOGLE_PATH, body.to_string().into_bytes()).await;
        }
    }
}

/// Material that passes the signature checks but carries arbitrary content: the answer is
/// the one the named instance id deserves, against agents seeded on [`SEEDED`].
#[tokio::test]
async fn validly_signed_arbitrary_content_gets_the_answer_its_instance_id_deserves() {
    let app = spawn_app_with(trust_test_pki).await;
    let tokens = seed_agents(&app).await;
    let cases = (json_value(), json_value(), agent_name(), any::<bool>());
    for (content, claims, name, seeded) in sample(cases, 48) {
        // Half the contents name a seeded id in every provider's field.
        let mut content = content;
        if let (true, Value::Object(map)) = (seeded, &mut content) {
            map.insert("instanceId".into(), json!(SEEDED[0]));
            map.insert("vmId".into(), json!(SEEDED[1]));
        }
        let document = content.to_string();
        let aws = json!({
            "signature": crate::helpers::signing::aws_key().sign_b64(document.as_bytes()),
            "document": document,
        });
        let id = text_at(&content, "/instanceId");
        let aws = with_name(aws, name.as_ref());
        assert_signed_answer(&app, &tokens, AWS_PATH, &aws, id, name.as_deref()).await;
        let der = azure::sign(&document, &pki().leaf, &[], Shape::NoAttributes);
        let body = json!({"signature": azure::b64(&der), "encoding": "pkcs7"});
        let body = with_name(body, name.as_ref());
        let id = text_at(&content, "/vmId");
        assert_signed_answer(&app, &tokens, AZURE_PATH, &body, id, name.as_deref()).await;
        let mut claims = claims;
        if let Value::Object(map) = &mut claims {
            map.insert("exp".into(), json!(Utc::now().timestamp() + 600));
            map.insert("iss".into(), json!("accounts.google.com"));
            if seeded {
                map.insert(
                    "google".into(),
                    json!({"compute_engine": {"instance_id": SEEDED[2]}}),
                );
            }
        }
        let body = json!({"json_web_token": google::token(&claims)});
        let body = with_name(body, name.as_ref());
        let id = text_at(&claims, "/google/compute_engine/instance_id");
        assert_signed_answer(&app, &tokens, GOOGLE_PATH, &body, id, name.as_deref()).await;
    }
}
