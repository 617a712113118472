//! Issue 12, item 7: the client address that is logged and rate-limited is the socket peer,
//! unless the peer is a `--trusted-proxies` proxy; then it is the rightmost untrusted hop of
//! `X-Forwarded-For`. The real binary runs with JSON logs; loopback sources 127.0.0.2 and
//! 127.0.0.3 are distinct clients.

use std::net::IpAddr;

use serde_json::{Value, json};

use crate::helpers::app::AWS_PATH;
use crate::helpers::pg::TestDatabase;
use crate::helpers::signing;
use crate::process::{logged, served_quietly};

/// Every request's instance: no agent has it, so an admitted request is answered 404.
const INSTANCE: &str = "i-forwarded";

/// A client whose connections come from `source`.
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(source))
        .build()
        .expect("client")
}

/// An AWS request for [`INSTANCE`], with `X-Forwarded-For: forwarded_for` when given; the
/// status and the Coder-shaped body.
async fn ask(client: &reqwest::Client, address: &str, forwarded_for: Option<&str>) -> (u16, Value) {
    let (signature, document) = signing::aws_document(INSTANCE);
    let mut request = client
        .post(format!("{address}{AWS_PATH}"))
        .json(&json!({"signature": signature, "document": document}));
    if let Some(header) = forwarded_for {
        request = request.header("x-forwarded-for", header);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let body = response.json().await.expect("a JSON body");
    (status, body)
}

const NOT_FOUND: &str = "Instance with id \"i-forwarded\" not found.";
const LIMITED: &str = "Rate limit exceeded.";

/// Asserts the answer's status and message.
fn assert_answer((status, body): &(u16, Value), want: u16, message: &str, case: &str) {
    assert_eq!(*status, want, "{case}: {body}");
    assert_eq!(body["message"], message, "{case}: {body}");
}

/// (client, peer) of every `authentication` line, in order.
fn addresses(lines: &[String]) -> Vec<(String, String)> {
    logged(lines, "authentication")
        .iter()
        .map(|line| {
            let field = |name: &str| line[name].as_str().unwrap_or_default().to_owned();
            (field("client.address"), field("network.peer.address"))
        })
        .collect()
}

/// The request spans' (client, peer) of every `authentication` line, in order.
fn span_addresses(lines: &[String]) -> Vec<(String, String)> {
    logged(lines, "authentication")
        .iter()
        .map(|line| {
            let field = |name: &str| line["span"][name].as_str().unwrap_or_default().to_owned();
            (field("client.address"), field("network.peer.address"))
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(client, peer)| ((*client).to_owned(), (*peer).to_owned()))
        .collect()
}

/// Without `--trusted-proxies`, `X-Forwarded-For` is ignored: a forged address is neither
/// logged nor its own rate-limit bucket; the socket peer is both.
#[tokio::test]
async fn without_trusted_proxies_a_forged_forwarded_for_is_ignored() {
    let database = TestDatabase::create().await;
    let served = served_quietly(&database.url, &["--rate-limit-per-minute", "2"]);
    let local = reqwest::Client::new();
    for forged in ["10.0.0.4", "10.0.0.5"] {
        let answer = ask(&local, &served.address, Some(forged)).await;
        assert_answer(&answer, 404, NOT_FOUND, forged);
    }
    // A third forged address is still 127.0.0.1's third request.
    let answer = ask(&local, &served.address, Some("10.0.0.6")).await;
    assert_answer(&answer, 429, LIMITED, "third request of 127.0.0.1");
    // Another source has a bucket of its own, whatever it forwards.
    let other = ask(
        &client_from([127, 0, 0, 2]),
        &served.address,
        Some("127.0.0.1"),
    )
    .await;
    assert_answer(&other, 404, NOT_FOUND, "127.0.0.2");
    served.running.sigterm();
    let (_, lines) = served.running.finish();
    let expected = pairs(&[
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.2"),
    ]);
    let log = lines.join("\n");
    for forged in ["10.0.0.4", "10.0.0.5", "10.0.0.6"] {
        let line = lines.iter().find(|line| line.contains(forged));
        assert!(line.is_none(), "{forged} was logged: {line:?}");
    }
    assert_eq!(addresses(&lines), expected, "{log}");
    assert_eq!(span_addresses(&lines), expected, "{log}");
}

/// With `--trusted-proxies 127.0.0.1/32`, requests relayed by 127.0.0.1 are the forwarded
/// clients' own: logged as them and limited per client. The rightmost untrusted hop counts, so
/// a forged hop left of it does not; a peer outside the trusted networks is its own client
/// whatever it forwards; a malformed header from the proxy falls back to the proxy's address
/// with a warning.
#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_is_logged_and_limited_as_itself() {
    let database = TestDatabase::create().await;
    let served = served_quietly(
        &database.url,
        &[
            "--rate-limit-per-minute",
            "2",
            "--trusted-proxies",
            "127.0.0.1/32",
        ],
    );
    let proxy = reqwest::Client::new();
    let address = served.address.as_str();
    for _ in 0..2 {
        assert_answer(
            &ask(&proxy, address, Some("127.0.0.2")).await,
            404,
            NOT_FOUND,
            ".2",
        );
    }
    let cases = [
        (
            Some("127.0.0.2"),
            429,
            LIMITED,
            "127.0.0.2's bucket is empty",
        ),
        (
            Some("127.0.0.3"),
            404,
            NOT_FOUND,
            "127.0.0.3 has a bucket of its own",
        ),
        (
            Some("127.0.0.3, 127.0.0.2"),
            429,
            LIMITED,
            "a forged leftmost hop does not win",
        ),
        (
            Some("127.0.0.3, 127.0.0.1"),
            404,
            NOT_FOUND,
            "trusted hops are skipped",
        ),
        (
            Some("not-an-address"),
            404,
            NOT_FOUND,
            "malformed: the proxy is the client",
        ),
    ];
    for (header, status, message, case) in cases {
        assert_answer(&ask(&proxy, address, header).await, status, message, case);
    }
    // 127.0.0.2 is not a trusted proxy: its header is ignored, and its own bucket is empty.
    let direct = ask(&client_from([127, 0, 0, 2]), address, Some("127.0.0.9")).await;
    assert_answer(&direct, 429, LIMITED, "an untrusted peer forwarding");
    served.running.sigterm();
    let (_, lines) = served.running.finish();
    let expected = pairs(&[
        ("127.0.0.2", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.1"),
        ("127.0.0.3", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.1"),
        ("127.0.0.3", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.2"),
    ]);
    assert_eq!(addresses(&lines), expected, "{lines:#?}");
    assert_eq!(span_addresses(&lines), expected, "{lines:#?}");
    let warnings = logged(
        &lines,
        "malformed X-Forwarded-For from a trusted proxy ignored; the proxy's address is the client",
    );
    assert_eq!(warnings.len(), 1, "{lines:#?}");
    assert_eq!(warnings[0]["level"], "WARN");
    assert_eq!(warnings[0]["x_forwarded_for"], "not-an-address");
    assert_eq!(warnings[0]["network.peer.address"], "127.0.0.1");
    let start = logged(
        &lines,
        "client addresses: X-Forwarded-For is honoured only from trusted proxies",
    );
    assert_eq!(start.len(), 1, "{lines:#?}");
    assert_eq!(start[0]["trusted_proxies"], "127.0.0.1/32");
}
