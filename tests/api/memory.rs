//! Memory stays bounded (issue 12, item 8): the bytes of the bodies being received stay within
//! `--max-buffered-body-bytes`, with the next body refused at once beyond it and the budget given
//! back however a body ends; and beyond `--max-connections` a connection is not accepted until
//! another closes. Each is observed through what the server exposes (`/metrics`, the listen
//! backlog's length in /proc/net/tcp), never through timing.

use std::num::NonZeroUsize;
use std::time::Duration;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::helpers::app::{AWS_PATH, TestApp, spawn_app_with};
use crate::helpers::{logs, raw};
use crate::metrics::wait_for;

const BUDGET: usize = 64 * 1024;
const BUFFERED: &str = "instauth_http_buffered_body_bytes";

async fn wait_for_buffered(app: &TestApp, bytes: usize) {
    assert_eq!(
        wait_for(app, BUFFERED, bytes as f64).await,
        Some(bytes as f64),
        "{BUFFERED} should read {bytes}"
    );
}

#[tokio::test]
async fn slow_bodies_hold_at_most_the_budget_the_next_gets_503_and_every_ending_gives_it_back() {
    logs::capture();
    let app = spawn_app_with(|o| {
        o.admission.max_buffered_body_bytes = NonZeroUsize::new(BUDGET).expect("non-zero");
    })
    .await;
    let token = app.seed().live_agent("dev", "i-mem").await.token();
    wait_for_buffered(&app, 0).await;
    // Four slow senders each declare a quarter of the budget: together they fill it.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(raw::stalled_body(&app, BUDGET / 4, "{\"sig").await);
    }
    wait_for_buffered(&app, BUDGET).await;

    // The next declared body is refused at once, before a byte of it is read.
    let refused = app.aws("i-mem", None).await;
    refused.assert_error(503, "Server is overloaded.");
    assert_eq!(
        refused.detail(),
        format!(
            "Request bodies being received already fill the {BUDGET}-byte buffer; retry later."
        )
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    // The refusal is logged (at most once a second), with the budget and what fills it.
    let warned = logs::wait_for(
        "body budget full: authentication requests refused at once",
        "max_buffered_body_bytes",
        BUDGET,
        1,
    )
    .await;
    assert!(
        !warned.is_empty(),
        "no warning that the body budget is full"
    );
    assert_eq!(warned[0]["level"], "WARN", "{warned:#?}");
    assert_eq!(warned[0]["buffered_body_bytes"], BUDGET, "{warned:#?}");
    // A body sent in chunks is refused at its first chunk.
    let mut chunked = TcpStream::connect(raw::host(&app)).await.expect("connect");
    chunked
        .write_all(
            format!("POST {AWS_PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("write");
    let text = raw::answer(&mut chunked).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.contains("already fill the 65536-byte buffer"),
        "{text}"
    );
    // Requests without a body are not affected.
    assert_eq!(app.get("/healthz").await.status, 200);

    // A sender that hangs up gives its share back, and a request fits again.
    drop(stalled.pop());
    wait_for_buffered(&app, BUDGET / 4 * 3).await;
    assert_eq!(app.aws("i-mem", None).await.token(), token);
    wait_for_buffered(&app, BUDGET / 4 * 3).await;

    // A body that arrives whole gives its share back once it is answered.
    let mut finished = stalled.pop().expect("a stalled body");
    let rest = " ".repeat(BUDGET / 4 - "{\"sig".len());
    finished.write_all(rest.as_bytes()).await.expect("write");
    let text = raw::answer(&mut finished).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("Request body must be valid JSON."), "{text}");
    wait_for_buffered(&app, BUDGET / 2).await;

    // The last two time out (408) and give theirs back.
    for mut slow in stalled {
        let text = raw::answer(&mut slow).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(
            text.contains("Request body was not received in time."),
            "{text}"
        );
    }
    wait_for_buffered(&app, 0).await;
    let metrics = app.get("/metrics").await.text;
    // Refusals are decided before any lookup (target "none"); the token came from the primary.
    for (outcome, target, count) in [
        ("body_budget_full", "none", 2),
        ("ok", "primary", 1),
        ("body_timeout", "none", 2),
    ] {
        let series = format!(
            "instauth_auth_outcomes_total{{outcome=\"{outcome}\",provider=\"aws\",target=\"{target}\"}} {count}"
        );
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_chunked_body_is_counted_chunk_by_chunk() {
    let app = spawn_app_with(|_| {}).await;
    let mut stream = TcpStream::connect(raw::host(&app)).await.expect("connect");
    let head = format!(
        "POST {AWS_PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n{}\r\n",
        " ".repeat(1000)
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    wait_for_buffered(&app, 1000).await;
    stream
        .write_all(format!("1f4\r\n{}\r\n", " ".repeat(500)).as_bytes())
        .await
        .expect("write");
    wait_for_buffered(&app, 1500).await;
    stream.write_all(b"0\r\n\r\n").await.expect("write");
    let text = raw::answer(&mut stream).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    wait_for_buffered(&app, 0).await;
}

/// Connections waiting in the accept queue of the loopback listener on `port` (for a
/// listening socket, /proc/net/tcp's rx_queue is that queue's length).
fn waiting_to_be_accepted(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| fields.get(4)?.split_once(':'))
                .flatten()
                .and_then(|(_, rx)| usize::from_str_radix(rx, 16).ok())
        })
        .expect("the listener in /proc/net/tcp")
}

async fn get_on(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    raw::answer(stream).await
}

#[tokio::test]
async fn beyond_max_connections_a_connection_waits_unaccepted_until_one_closes() {
    logs::capture();
    let app = spawn_app_with(|o| {
        o.admission.max_connections = NonZeroUsize::new(2).expect("non-zero");
    })
    .await;
    let port: u16 = app
        .address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let mut first = TcpStream::connect(raw::host(&app)).await.expect("connect");
    let mut second = TcpStream::connect(raw::host(&app)).await.expect("connect");
    assert!(
        get_on(&mut first, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(
        get_on(&mut second, "/healthz")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert_eq!(waiting_to_be_accepted(port), 0);

    // The third connection completes its handshake in the kernel but is not accepted.
    let mut third = TcpStream::connect(raw::host(&app)).await.expect("connect");
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut waited = 0;
    while waiting_to_be_accepted(port) != 1 {
        waited += 1;
        assert!(
            waited < 100,
            "the third connection never showed in the accept queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The two open connections are served meanwhile, and the gauge shows them.
    let metrics = get_on(&mut first, "/metrics").await;
    assert!(
        metrics.contains("\ninstauth_http_open_connections 2\n"),
        "{metrics}"
    );
    assert_eq!(waiting_to_be_accepted(port), 1, "still not accepted");
    let mut nothing = [0; 1];
    assert!(
        matches!(third.try_read(&mut nothing), Err(err) if err.kind() == std::io::ErrorKind::WouldBlock),
        "an unaccepted connection has no answer"
    );

    // Reaching the cap is logged (no other test runs with a cap of 2).
    let warned = logs::wait_for(
        "connection limit reached: new connections wait in the listen backlog",
        "max_connections",
        2,
        1,
    )
    .await;
    assert!(
        !warned.is_empty(),
        "no warning that the connection limit is reached"
    );
    assert_eq!(warned[0]["level"], "WARN", "{warned:#?}");

    // One closes: the third is accepted and answered.
    drop(first);
    let text = raw::answer(&mut third).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(waiting_to_be_accepted(port), 0);
    let metrics = get_on(&mut second, "/metrics").await;
    assert!(
        metrics.contains("\ninstauth_http_open_connections 2\n"),
        "{metrics}"
    );
}
