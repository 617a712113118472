//! Bad input at the HTTP layer: generated methods, paths, content types and bodies, deeply
//! nested JSON, huge headers and truncated requests. Every answer is a 4xx (a JSON error where
//! a body is allowed), nothing is a 5xx, and the server keeps serving correct answers.

use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, TestRng, TestRunner};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::app::{AWS_PATH, TestApp};
use crate::helpers::spawn_app;

const PATHS: [&str; 6] = [
    AWS_PATH,
    "/api/v2/workspaceagents/azure-instance-identity",
    "/api/v2/workspaceagents/google-instance-identity",
    "/healthz",
    "/readyz",
    "/api/v2/workspaceagents/",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("signature".to_owned()),
                    Just("document".to_owned()),
                    Just("agent_name".to_owned()),
                    Just("encoding".to_owned()),
                    Just("json_web_token".to_owned()),
                    "[a-z_]{1,10}"
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (".{0,60}", ".{0,200}", proptest::option::of("[ a-z]{0,12}")).prop_map(|(s, d, n)| {
            json!({"signature": s, "document": d, "agent_name": n})
                .to_string()
                .into_bytes()
        }),
    ]
}

#[derive(Debug, Clone)]
struct Case {
    method: String,
    path: String,
    content_type: String,
    body: Vec<u8>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop_oneof![
            Just("POST".to_owned()),
            Just("GET".to_owned()),
            Just("PUT".to_owned()),
            Just("DELETE".to_owned()),
            Just("PATCH".to_owned()),
            Just("OPTIONS".to_owned()),
            Just("HEAD".to_owned()),
            "[A-Z]{3,8}",
        ],
        prop_oneof![
            prop::sample::select(PATHS.to_vec()).prop_map(str::to_owned),
            "/[a-zA-Z0-9/_.%-]{0,40}",
        ],
        prop_oneof![
            Just("application/json".to_owned()),
            Just("text/plain".to_owned()),
            "[ -~]{0,40}",
        ],
        body(),
    )
        .prop_map(|(method, path, content_type, body)| Case {
            method,
            path,
            content_type,
            body,
        })
}

/// Checks one response: a 4xx with a Coder-shaped JSON error (unless HEAD or a probe's 200).
fn check(case: &Case, status: u16, content_type: Option<&str>, text: &str) {
    assert!(status < 500, "{case:?} got {status}: {text}");
    if status >= 400 && case.method != "HEAD" {
        assert_eq!(
            content_type,
            Some("application/json; charset=utf-8"),
            "{case:?}"
        );
        let value: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{case:?}: {e}: {text}"));
        assert!(
            value["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{case:?}: {text}"
        );
    }
}

async fn still_serves(app: &TestApp, token: &str) {
    assert_eq!(app.aws("i-fuzz", None).await.token(), token);
}

#[tokio::test]
async fn generated_requests_get_4xx_json_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let token = app.seed().live_agent("dev", "i-fuzz").await.token();

    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(proptest::test_runner::RngAlgorithm::ChaCha),
    );
    let strategy = case();
    for _ in 0..300 {
        let case = strategy.new_tree(&mut runner).expect("case").current();
        let Ok(method) = reqwest::Method::from_bytes(case.method.as_bytes()) else {
            continue;
        };
        let mut request = app
            .client
            .request(method, format!("{}{}", app.address, case.path))
            .body(case.body.clone());
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&case.content_type) {
            request = request.header("content-type", value);
        }
        let Ok(response) = request.send().await else {
            // reqwest refuses some generated paths before sending; nothing reached the server.
            continue;
        };
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.expect("body");
        check(&case, status, content_type.as_deref(), &text);
    }
    still_serves(&app, &token).await;
}

#[tokio::test]
async fn deeply_nested_json_is_400() {
    let app = spawn_app().await;
    for body in [
        "[".repeat(100_000),
        format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000)),
        format!(
            r#"{{"signature": "s", "document": "d", "agent_name": {}null{}}}"#,
            "{\"a\":".repeat(1_000),
            "}".repeat(1_000)
        ),
    ] {
        let response = app.post_raw(AWS_PATH, body).await;
        assert!(
            matches!(response.status, 400 | 413),
            "{} {}",
            response.status,
            response.text
        );
        assert!(response.json()["message"].is_string());
    }
}

/// Sends raw bytes, half-closes, and returns what came back (possibly nothing).
async fn raw_exchange(app: &TestApp, request: &[u8]) -> String {
    let address = app.address.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.expect("connect");
    let _ = stream.write_all(request).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    // An answer or a closed connection must come; waiting forever is the failure.
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stream.read_to_end(&mut answer),
    )
    .await;
    assert!(
        read.is_ok(),
        "no answer and no close within 20 s: {answer:?}"
    );
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_of(answer: &str) -> Option<u16> {
    answer.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test]
async fn malformed_and_truncated_requests_do_not_hurt_the_server() {
    let app = spawn_app().await;
    let token = app.seed().live_agent("dev", "i-fuzz").await.token();

    // A body cut short by the client: answered 400 as unreadable, or the connection dropped.
    let truncated = format!(
        "POST {AWS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"signature\": \"ab"
    );
    let answer = raw_exchange(&app, truncated.as_bytes()).await;
    if let Some(status) = status_of(&answer) {
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer.contains("Request body must be valid JSON."),
            "{answer}"
        );
    }

    // Declared too large: refused with 413 before reading it.
    let oversized =
        format!("POST {AWS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n{{");
    let answer = raw_exchange(&app, oversized.as_bytes()).await;
    assert_eq!(status_of(&answer), Some(413), "{answer}");
    assert!(answer.contains("Request body is too large."), "{answer}");

    // Protocol-level garbage is refused by the HTTP layer (no handler runs, so no JSON body).
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    for request in [
        huge_header.as_bytes(),
        b"NOT HTTP AT ALL\r\n\r\n".as_slice(),
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".as_slice(),
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".as_slice(),
        b"\xff\xfe\x00\x01".as_slice(),
    ] {
        let answer = raw_exchange(&app, request).await;
        if let Some(status) = status_of(&answer) {
            assert!((400..500).contains(&status), "{answer}");
        }
    }
    still_serves(&app, &token).await;
}
