//! Raw HTTP on a socket, for what a client library will not send: a request head whose body
//! never comes, or stops part way.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::app::{AWS_PATH, TestApp};

/// `app`'s `host:port`.
pub fn host(app: &TestApp) -> String {
    app.address.trim_start_matches("http://").to_owned()
}

/// A connection that sent the head of an AWS authentication declaring `declared` body bytes,
/// then `first` of them (possibly none), and stalls there.
pub async fn stalled_body(app: &TestApp, declared: usize, first: &str) -> TcpStream {
    let mut stream = TcpStream::connect(host(app)).await.expect("connect");
    let head =
        format!("POST {AWS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n{first}");
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

/// The next answer on `stream`, read whole: up to the end of its declared body, or until the
/// server closes (30 s at most, then the test fails).
pub async fn answer(stream: &mut TcpStream) -> String {
    let mut text = Vec::new();
    let read = async {
        let mut buffer = [0; 4096];
        loop {
            let n = stream.read(&mut buffer).await.expect("read");
            text.extend_from_slice(&buffer[..n]);
            let so_far = String::from_utf8_lossy(&text);
            if n == 0
                || so_far.split_once("\r\n\r\n").is_some_and(|(head, body)| {
                    content_length(head).is_some_and(|len| body.len() >= len)
                })
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("an answer within 30 s");
    String::from_utf8_lossy(&text).into_owned()
}

/// The status code of a raw answer.
pub fn status(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"))
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}
