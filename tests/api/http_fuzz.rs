//! Bad input at the HTTP layer: generated methods, paths, content types and bodies, deeply
//! nested JSON, huge headers and truncated requests. Every case has its one expected status
//! (a JSON error where a body is allowed), and the server keeps serving correct answers.
//!
//! The generated requests draw a new seed every run and print it; `INSTAUTH_TEST_FUZZ_SEED`
//! (64 hex digits) replays a run. CI clears it, so CI always explores.

use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, TestRng, TestRunner};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::app::{AWS_PATH, TestApp};
use crate::helpers::spawn_app;

const AUTH_PATHS: [&str; 3] = [
    AWS_PATH,
    "/api/v2/workspaceagents/azure-instance-identity",
    "/api/v2/workspaceagents/google-instance-identity",
];
const PROBE_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

const PATHS: [&str; 7] = [
    AUTH_PATHS[0],
    AUTH_PATHS[1],
    AUTH_PATHS[2],
    PROBE_PATHS[0],
    PROBE_PATHS[1],
    PROBE_PATHS[2],
    "/api/v2/workspaceagents/",
];

/// Generated requests that must reach the server (reqwest may refuse a few before sending).
const CASES: usize = 300;
const MIN_SENT: usize = 280;

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

/// The statuses `case` may get: exactly one for everything but a POST to an authentication
/// route, whose generated body is refused as unreadable (400) or unverifiable (401).
fn expected(case: &Case) -> &'static [u16] {
    let path = case.path.as_str();
    if AUTH_PATHS.contains(&path) {
        if case.method == "POST" {
            &[400, 401]
        } else {
            &[405]
        }
    } else if PROBE_PATHS.contains(&path) {
        if case.method == "GET" { &[200] } else { &[405] }
    } else {
        &[404]
    }
}

/// Checks one response: its expected status, and a Coder-shaped JSON error for every 4xx
/// (HEAD answers carry no body).
fn check(case: &Case, status: u16, content_type: Option<&str>, text: &str) {
    assert!(
        expected(case).contains(&status),
        "{case:?} got {status}, expected one of {:?}: {text}",
        expected(case)
    );
    if status >= 400 && case.method != "HEAD" {
        assert_eq!(
            content_type,
            Some("application/json; charset=utf-8"),
            "{case:?}"
        );
        let value: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{case:?}: {e}: {text}"));
        let message = value["message"].as_str().unwrap_or_default();
        let want = match status {
            404 => Some("Route not found."),
            405 => Some("Method not allowed."),
            _ => None,
        };
        match want {
            Some(want) => assert_eq!(message, want, "{case:?}: {text}"),
            None => assert!(!message.is_empty(), "{case:?}: {text}"),
        }
    }
}

/// This run's seed: `INSTAUTH_TEST_FUZZ_SEED` when set (to replay a failure), else fresh.
fn fuzz_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    match std::env::var("INSTAUTH_TEST_FUZZ_SEED") {
        Ok(hex) if !hex.is_empty() => {
            assert_eq!(hex.len(), 64, "INSTAUTH_TEST_FUZZ_SEED: 64 hex digits");
            for (i, byte) in seed.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .expect("INSTAUTH_TEST_FUZZ_SEED: hex digits");
            }
        }
        _ => {
            let random = *uuid::Uuid::new_v4().as_bytes();
            seed[..16].copy_from_slice(&random);
            seed[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
    }
    seed
}

async fn still_serves(app: &TestApp, token: &str) {
    assert_eq!(app.aws("i-fuzz", None).await.token(), token);
}

#[tokio::test]
async fn generated_requests_get_4xx_json_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let token = app.seed().live_agent("dev", "i-fuzz").await.token();

    let seed = fuzz_seed();
    let hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    // Printed so a failure can be replayed; cargo shows it with the failure.
    println!("generated requests: INSTAUTH_TEST_FUZZ_SEED={hex}");
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &seed),
    );
    let strategy = case();
    let mut sent = 0;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for _ in 0..CASES {
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
        sent += 1;
        let status = response.status().as_u16();
        *statuses.entry(status).or_default() += 1;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.expect("body");
        check(&case, status, content_type.as_deref(), &text);
    }
    println!("generated requests: {sent} sent, statuses {statuses:?}");
    assert!(
        sent >= MIN_SENT,
        "only {sent} of {CASES} generated requests were sent (seed {hex})"
    );
    for status in [200, 404, 405] {
        assert!(
            statuses.contains_key(&status),
            "no generated request got {status} (seed {hex}): {statuses:?}"
        );
    }
    still_serves(&app, &token).await;
}

#[tokio::test]
async fn deeply_nested_json_is_400_and_an_oversized_one_413() {
    let app = spawn_app().await;
    let invalid = "Request body must be valid JSON.";
    for (body, status, message) in [
        ("[".repeat(100_000), 413, "Request body is too large."),
        (
            format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000)),
            400,
            invalid,
        ),
        (
            format!(
                r#"{{"signature": "s", "document": "d", "agent_name": {}null{}}}"#,
                "{\"a\":".repeat(1_000),
                "}".repeat(1_000)
            ),
            400,
            invalid,
        ),
    ] {
        let response = app.post_raw(AWS_PATH, body).await;
        response.assert_error(status, message);
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
    crate::helpers::logs::capture();
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
    // Each is logged by the HTTP layer alone (no handler runs, so no request span and no
    // `authentication` line): one ERROR, written before the connection closes. Other tests
    // may log the same, so the count must grow by one at least.
    let refusals = |message: &str| {
        crate::helpers::logs::logged_by("actix_http::h1::dispatcher")
            .into_iter()
            .filter(|line| line["message"] == message && line["level"] == "ERROR")
            .count()
    };
    for (request, status, error) in [
        (huge_header.as_bytes(), 431, "message head is too large"),
        (
            b"NOT HTTP AT ALL\r\n\r\n".as_slice(),
            400,
            "invalid HTTP version specified",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".as_slice(),
            400,
            "invalid Header provided",
        ),
        (
            b"\xff\xfe\x00\x01".as_slice(),
            400,
            "invalid Header provided",
        ),
    ] {
        let message = format!("stream error: request parse error: {error}");
        let before = refusals(&message);
        let answer = raw_exchange(&app, request).await;
        assert_eq!(
            status_of(&answer),
            Some(status),
            "{:?} answered {answer:?}",
            String::from_utf8_lossy(&request[..request.len().min(60)])
        );
        assert!(!answer.contains("application/json"), "{answer}");
        assert!(refusals(&message) > before, "no {message:?} logged");
    }

    // Bad chunking: an authentication route fails reading the body, in Coder's JSON; another
    // route answers before reading one.
    let bad_chunk = |path: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nUser-Agent: fuzz-bad-chunk\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
    };
    let answer = raw_exchange(&app, bad_chunk(AWS_PATH).as_bytes()).await;
    assert_eq!(status_of(&answer), Some(400), "{answer}");
    assert!(
        answer.contains("Request body must be valid JSON."),
        "{answer}"
    );
    // docs/operations.md, "Bad chunking in a body": the `authentication` line, `bad_request`.
    crate::helpers::logs::assert_refusal_logged(
        "fuzz-bad-chunk",
        "bad_request",
        "request body is not valid JSON: reading the body: payload reached EOF before completing: None",
        400,
        "InvalidJson(\"reading the body: payload reached EOF before completing: None\")",
    )
    .await;
    let answer = raw_exchange(&app, bad_chunk("/healthz").as_bytes()).await;
    assert_eq!(status_of(&answer), Some(405), "{answer}");
    assert!(answer.contains("Method not allowed."), "{answer}");
    still_serves(&app, &token).await;
}

/// A chunked body declares no length: the 64 KiB limit applies while reading it. Just under
/// it, the body is read and judged as JSON; just over it, 413.
#[tokio::test]
async fn a_chunked_body_over_64_kib_is_413() {
    crate::helpers::logs::capture();
    let app = spawn_app().await;
    let chunked = |padding: usize| {
        let mut request = format!(
            "POST {AWS_PATH} HTTP/1.1\r\nHost: x\r\nUser-Agent: fuzz-chunked-{padding}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        let mut body = vec![b' '; padding];
        body.extend_from_slice(b"{}");
        for chunk in body.chunks(4096) {
            request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            request.extend_from_slice(chunk);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        request
    };
    let answer = raw_exchange(&app, &chunked(64 * 1024 - 2)).await;
    assert_eq!(status_of(&answer), Some(400), "{answer}");
    assert!(answer.contains("Validation failed."), "{answer}");
    let answer = raw_exchange(&app, &chunked(64 * 1024 - 1)).await;
    assert_eq!(status_of(&answer), Some(413), "{answer}");
    assert!(answer.contains("Request body is too large."), "{answer}");
    // docs/operations.md, "Body over 64 KiB": refused while reading.
    crate::helpers::logs::assert_refusal_logged(
        &format!("fuzz-chunked-{}", 64 * 1024 - 1),
        "payload_too_large",
        "request body exceeds 65536 bytes",
        413,
        "PayloadTooLarge { limit: 65536 }",
    )
    .await;
}
