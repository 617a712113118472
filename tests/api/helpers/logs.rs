//! The in-process app's log events, captured as JSON lines (the shape of `--log-format json`)
//! at the levels `serve` logs by default (INFO and above, sqlx and actix-server from WARN), for
//! tests that check what an operator sees in the log. The capture is installed once for the
//! whole test binary, at the first [`capture`], so it holds every test's lines from then on; a
//! test finds its own by a field value only it uses, such as its instance id, a setting, or the
//! `User-Agent` its requests send (a field of the request span).

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde_json::Value;

/// The app's default filter (`src/telemetry.rs`): what "logged at INFO" means for an operator.
const DEFAULT_FILTER: &str = "info,sqlx=warn,actix_server=warn";

/// The newest lines kept. A refused request logs about 2 KiB at INFO (its `authentication`
/// line and tracing-actix-web's WARN); the bound keeps a test that sends many requests from
/// growing the binary without limit, and is far above what one test waits on.
const MAX_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Lines {
    lines: VecDeque<String>,
    bytes: usize,
}

type Buffer = Arc<Mutex<Lines>>;

static CAPTURED: OnceLock<Buffer> = OnceLock::new();

struct Sink(Buffer);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // Each event arrives in one write, so a write is one line.
        let line = String::from_utf8_lossy(bytes).into_owned();
        let mut captured = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        captured.bytes += line.len();
        captured.lines.push_back(line);
        while captured.bytes > MAX_BYTES {
            let oldest = captured.lines.pop_front().map_or(0, |line| line.len());
            captured.bytes -= oldest;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Starts capturing (once per test binary); call before the app under test logs.
pub fn capture() {
    CAPTURED.get_or_init(|| {
        let buffer = Buffer::default();
        let sink = Arc::clone(&buffer);
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter(tracing_subscriber::EnvFilter::new(DEFAULT_FILTER))
            .with_writer(move || Sink(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        buffer
    });
}

/// The captured lines that `keep` keeps, parsed; `hint` (a string every kept line contains as
/// written) spares parsing the others.
fn lines(hint: &str, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    let buffer = CAPTURED.get().expect("logs::capture() first");
    let captured = buffer.lock().unwrap_or_else(PoisonError::into_inner);
    captured
        .lines
        .iter()
        .filter(|line| line.contains(hint))
        .filter_map(|line| serde_json::from_str(line).ok())
        .filter(keep)
        .collect()
}

/// The captured lines with `message` whose `field`, or the field of the request span they were
/// logged in, is `value` (a string, or a number such as a setting only one test uses), once
/// there are at least `count` (polled for 10 s at most; then whatever there is).
pub async fn wait_for(
    message: &str,
    field: &str,
    value: impl Into<Value>,
    count: usize,
) -> Vec<Value> {
    let value = value.into();
    let hint = Value::from(message).to_string();
    let mut found = Vec::new();
    for _ in 0..500 {
        found = lines(&hint, |line| {
            line["message"] == message && (line[field] == value || line["span"][field] == value)
        });
        if found.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    found
}

/// The captured lines that `target` (a module path such as `actix_http`) or a module under it
/// logged, for lines outside any request span. Lines are captured as they are logged: whatever
/// the server logged before an observable step (an answer, a close) is already here.
pub fn logged_by(target: &str) -> Vec<Value> {
    let prefix = format!("{target}::");
    lines(target, |line| {
        line["target"]
            .as_str()
            .is_some_and(|logged| logged == target || logged.starts_with(&prefix))
    })
}

/// Asserts the lines an authentication refused with `status` logs, found by the `User-Agent`
/// its request sent: one INFO `authentication` with `outcome` and `detail`, and one WARN from
/// tracing-actix-web naming the error (`error`, as `{:?}` shows it) in the request span, which
/// by then holds the status.
pub async fn assert_refusal_logged(
    user_agent: &str,
    outcome: &str,
    detail: &str,
    status: u16,
    error: &str,
) {
    let lines = wait_for("authentication", "http.user_agent", user_agent, 1).await;
    assert_eq!(lines.len(), 1, "{user_agent}: {lines:#?}");
    let line = &lines[0];
    assert_eq!(line["level"], "INFO", "{line:#?}");
    assert_eq!(line["outcome"], outcome, "{line:#?}");
    assert_eq!(line["detail"], detail, "{line:#?}");
    let message = format!("Error encountered while processing the incoming HTTP request: {error}");
    let lines = wait_for(&message, "http.user_agent", user_agent, 1).await;
    assert_eq!(lines.len(), 1, "{user_agent}: no {message:?}: {lines:#?}");
    assert_eq!(lines[0]["level"], "WARN", "{lines:#?}");
    let span = &lines[0]["span"];
    assert_eq!(span["http.status_code"], status, "{lines:#?}");
    // The rest of the request span, filled in only for a span that is recorded.
    assert_eq!(span["http.method"], "POST", "{span:#?}");
    let route = span["http.route"].as_str().unwrap_or_default();
    assert!(
        route.starts_with("/api/v2/workspaceagents/") && route.ends_with("-instance-identity"),
        "{span:#?}"
    );
    assert_eq!(span["http.target"], route, "{span:#?}");
    let request_id = span["request_id"].as_str().unwrap_or_default();
    assert!(uuid::Uuid::parse_str(request_id).is_ok(), "{span:#?}");
}
