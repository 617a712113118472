//! The request corpus `instauth seed` writes and `instauth loadtest` replays: JSON lines of
//! `{"path": …, "expected_status": …, "expected_token": …, "body": {…}}` (the token optional),
//! keys in that order with the body last,
//! so that line-oriented tools (the `wrk` script in `bench/`) can cut the body out without a
//! JSON parser.

use std::io::{BufRead as _, Write as _};
use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One request and the status it should get.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusLine {
    pub path: String,
    pub expected_status: u16,
    /// The session token a 200 must carry, where the seed knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_token: Option<String>,
    pub body: Value,
}

/// Writes `lines` to `path`, one compact JSON object per line.
pub fn write(path: &Path, lines: &[CorpusLine]) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for line in lines {
        serde_json::to_writer(&mut out, line)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads a corpus; blank lines are skipped, anything else must be a [`CorpusLine`].
pub fn read(path: &Path) -> anyhow::Result<Vec<CorpusLine>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut lines = Vec::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}", path.display(), number + 1))?;
        lines.push(parsed);
    }
    anyhow::ensure!(!lines.is_empty(), "{} holds no request", path.display());
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_the_last_key() {
        let line = CorpusLine {
            path: "/p".into(),
            expected_status: 200,
            expected_token: None,
            body: serde_json::json!({"b": 1, "a": "x"}),
        };
        let text = serde_json::to_string(&line).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"path":"/p","expected_status":200,"body":{"a":"x","b":1}}"#
        );
    }
}
