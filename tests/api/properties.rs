//! Property tests: whatever bytes or JSON arrive, no verifier panics and every endpoint answers
//! a 4xx in Coder's JSON shape (never a 5xx, never a dropped connection).
//!
//! Case counts are modest so the suite stays fast on two cores; `PROPTEST_CASES` raises the
//! verifier-level ones for a longer soak.

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

    /// Validly signed tokens whose header and claims are arbitrary JSON reach every later check.
    #[test]
    fn google_never_panics_on_signed_arbitrary_json(header in json_value(), claims in json_value()) {
        let _ = google_verifier().verify(&google::sign_with(&header, &claims, google::key()), Utc::now());
        let mut pinned = header;
        if let Value::Object(map) = &mut pinned {
            map.insert("alg".into(), json!("RS256"));
            map.insert("kid".into(), json!(google::key().kid));
        }
        let _ = google_verifier().verify(&google::sign_with(&pinned, &claims, google::key()), Utc::now());
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

async fn assert_4xx_json(app: &TestApp, path: &str, body: Vec<u8>) {
    let response = app.post_raw(path, body.clone()).await;
    assert!(
        (400..500).contains(&response.status),
        "{path} answered {} to {:?}: {}",
        response.status,
        String::from_utf8_lossy(&body),
        response.text
    );
    assert_eq!(
        response.header("content-type"),
        Some("application/json; charset=utf-8"),
        "{path}: {:?}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        response.json()["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{path}: {}",
        response.text
    );
}

const PATHS: [&str; 3] = [AWS_PATH, AZURE_PATH, GOOGLE_PATH];

/// One app (no agents: whatever verifies is a 404), many bodies.
#[tokio::test]
async fn every_endpoint_answers_arbitrary_bodies_with_a_4xx_json_error() {
    let app = spawn_app_with(trust_test_pki).await;
    for body in sample(prop::collection::vec(any::<u8>(), 0..512), 32) {
        for path in PATHS {
            assert_4xx_json(&app, path, body.clone()).await;
        }
    }
    for value in sample(json_value(), 48) {
        for path in PATHS {
            assert_4xx_json(&app, path, value.to_string().into_bytes()).await;
        }
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
            assert_4xx_json(&app, AWS_PATH, body.to_string().into_bytes()).await;
            assert_4xx_json(&app, AZURE_PATH, body.to_string().into_bytes()).await;
        }
        for body in [
            json!({"json_web_token": a, "agent_name": b}),
            json!({"json_web_token": s, "agent_name": t}),
        ] {
            assert_4xx_json(&app, GOOGLE_PATH, body.to_string().into_bytes()).await;
        }
    }
}

/// Material that passes the signature checks but carries arbitrary content.
#[tokio::test]
async fn validly_signed_arbitrary_content_gets_a_4xx_json_error() {
    let app = spawn_app_with(trust_test_pki).await;
    for (content, claims, name) in sample((json_value(), json_value(), any::<String>()), 32) {
        let document = content.to_string();
        let aws = json!({
            "signature": crate::helpers::signing::aws_key().sign_b64(document.as_bytes()),
            "document": document,
            "agent_name": name,
        });
        assert_4xx_json(&app, AWS_PATH, aws.to_string().into_bytes()).await;
        let der = azure::sign(&document, &pki().leaf, &[], Shape::NoAttributes);
        let body = json!({"signature": azure::b64(&der), "encoding": "pkcs7", "agent_name": name});
        assert_4xx_json(&app, AZURE_PATH, body.to_string().into_bytes()).await;
        let mut claims = claims;
        if let Value::Object(map) = &mut claims {
            map.insert("exp".into(), json!(Utc::now().timestamp() + 600));
            map.insert("iss".into(), json!("accounts.google.com"));
        }
        let body = json!({"json_web_token": google::token(&claims), "agent_name": name});
        assert_4xx_json(&app, GOOGLE_PATH, body.to_string().into_bytes()).await;
    }
}
