//! The in-process app's WARN and ERROR events, captured as JSON lines (the shape of
//! `--log-format json`) for tests that check what an operator sees in the log. The capture is
//! installed once for the whole test binary, at the first [`capture`]; a test finds its own
//! lines by a field value only it uses, such as its instance id.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde_json::Value;

type Buffer = Arc<Mutex<Vec<u8>>>;

static CAPTURED: OnceLock<Buffer> = OnceLock::new();

struct Sink(Buffer);

impl Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // Each event arrives in one write, so lines never interleave.
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
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
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only global subscriber");
        buffer
    });
}

fn lines() -> Vec<Value> {
    let buffer = CAPTURED.get().expect("logs::capture() first");
    let bytes = buffer
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// The captured lines with `message` whose `field` is `value` (a string, or a number such as
/// a setting only one test uses), once there are at least `count` (polled for 10 s at most;
/// then whatever there is).
pub async fn wait_for(
    message: &str,
    field: &str,
    value: impl Into<Value>,
    count: usize,
) -> Vec<Value> {
    let value = value.into();
    let mut found = Vec::new();
    for _ in 0..500 {
        found = lines()
            .into_iter()
            .filter(|line| line["message"] == message && line[field] == value)
            .collect();
        if found.len() >= count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    found
}
