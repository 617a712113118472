//! The reviewed query artefacts stay in step: `queries/*.sql` ↔ `.sqlx/` ↔ `sqlx-data.json`.
//!
//! `sqlx-data.json` is `.sqlx/` in sqlx 0.6's single-file shape, for DBAs: `"db"` first, then
//! one key per query hash (SHA-256 of the query file) → `{query, describe}`, sorted by hash.
//! Regenerate it with `INSTAUTH_BLESS=1 cargo test --test api sqlx_data`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn hex_sha256(bytes: &[u8]) -> String {
    openssl::sha::sha256(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("reading {}: {err}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    files.sort();
    files
}

/// Hash → `.sqlx` entry.
fn offline_entries() -> BTreeMap<String, Value> {
    files_with_extension(&root().join(".sqlx"), "json")
        .into_iter()
        .map(|path| {
            let text = fs::read_to_string(&path).expect("read .sqlx entry");
            let value: Value = serde_json::from_str(&text).expect(".sqlx entry is JSON");
            let hash = value["hash"].as_str().expect("entry has a hash").to_owned();
            (hash, value)
        })
        .collect()
}

fn expected_sqlx_data() -> String {
    let mut out = String::from("{\n  \"db\": \"PostgreSQL\"");
    for (hash, entry) in offline_entries() {
        let value = json!({ "describe": entry["describe"], "query": entry["query"] });
        let pretty = serde_json::to_string_pretty(&value).expect("serialise");
        out.push_str(&format!(
            ",\n  {}: {}",
            json!(hash),
            pretty.replace('\n', "\n  ")
        ));
    }
    out.push_str("\n}\n");
    out
}

#[test]
fn sqlx_data_json_is_generated_from_dot_sqlx() {
    let path = root().join("sqlx-data.json");
    let expected = expected_sqlx_data();
    if std::env::var_os("INSTAUTH_BLESS").is_some() {
        fs::write(&path, &expected).expect("write sqlx-data.json");
    }
    let actual = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "sqlx-data.json is stale: regenerate it with `INSTAUTH_BLESS=1 cargo test --test api sqlx_data` \
         (after refreshing .sqlx/ as docs/queries.md describes) and commit it"
    );
}

#[test]
fn every_query_file_is_checked_in_and_nothing_else_is() {
    let file_hashes: BTreeMap<String, PathBuf> =
        files_with_extension(&root().join("queries"), "sql")
            .into_iter()
            .map(|path| (hex_sha256(&fs::read(&path).expect("read query")), path))
            .collect();
    assert!(
        !file_hashes.is_empty(),
        "queries/ holds the service's statements"
    );
    let entries = offline_entries();
    let data: Value = serde_json::from_str(
        &fs::read_to_string(root().join("sqlx-data.json")).expect("sqlx-data.json exists"),
    )
    .expect("sqlx-data.json is JSON");
    let data_keys: Vec<&String> = data
        .as_object()
        .expect("object")
        .keys()
        .filter(|key| *key != "db")
        .collect();
    for (hash, path) in &file_hashes {
        assert!(
            entries.contains_key(hash),
            "{} changed or is new: refresh .sqlx/ (docs/queries.md)",
            path.display()
        );
        assert!(
            data_keys.contains(&hash),
            "{} is not in sqlx-data.json",
            path.display()
        );
    }
    for hash in entries.keys().chain(data_keys.iter().copied()) {
        assert!(
            file_hashes.contains_key(hash),
            "query {hash} does not come from a queries/*.sql file: inline SQL, or a stale entry"
        );
    }
}

#[test]
fn the_service_source_has_no_inline_sql() {
    let patterns = [
        "sqlx::query(",
        "sqlx::query_as(",
        "sqlx::query_scalar(",
        "query!(",
        "query_as!(",
        "query_scalar!(",
        "raw_sql(",
        ".execute(\"",
    ];
    let mut offenders = Vec::new();
    let mut dirs = vec![root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("read src").filter_map(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = fs::read_to_string(&path).expect("read source");
                for pattern in patterns {
                    if text.contains(pattern) {
                        offenders.push(format!("{}: {pattern}", path.display()));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "inline SQL in src/: {offenders:?}");
}
