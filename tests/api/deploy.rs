//! The deployment files in `deploy/` are checked by the real tools that would load them.

use std::path::{Path, PathBuf};
use std::process::Command;

use uuid::Uuid;

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// deploy/instauth.service with its binary path pointed at the binary under test, written to a
/// fresh directory as `instauth.service` (systemd-analyze names the unit after the file).
fn unit_under_test() -> (PathBuf, String) {
    let unit = std::fs::read_to_string(repository().join("deploy/instauth.service"))
        .expect("deploy/instauth.service");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/instauth "),
        "the unit runs /usr/local/bin/instauth, as its install notes say: {unit}"
    );
    let unit = unit.replace("/usr/local/bin/instauth", env!("CARGO_BIN_EXE_instauth"));
    let dir = std::env::temp_dir().join(format!("instauth-unit-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("unit dir");
    let path = dir.join("instauth.service");
    std::fs::write(&path, &unit).expect("write unit");
    (path, unit)
}

fn systemd_analyze(args: &[&str], unit: &Path) -> (bool, String, String) {
    let output = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze runs (Debian's systemd package)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `systemd-analyze verify` exits 0 on unknown keys and unparsable values (it only prints
/// them), so the test requires it to print nothing at all.
#[test]
fn the_service_unit_verifies_without_a_warning() {
    let (path, _) = unit_under_test();
    let (ok, stdout, stderr) = systemd_analyze(&["verify"], &path);
    assert!(
        ok && stdout.is_empty() && stderr.is_empty(),
        "systemd-analyze verify: {stdout}{stderr}"
    );

    // The check can fail: a value systemd cannot parse is reported, though verify exits 0.
    let broken = std::fs::read_to_string(&path)
        .expect("unit")
        .replace("Restart=on-failure", "Restart=sometimes");
    std::fs::write(&path, broken).expect("write");
    let (_, stdout, stderr) = systemd_analyze(&["verify"], &path);
    assert!(
        stderr.contains("Failed to parse service restart specifier"),
        "an unparsable value is reported: {stdout}{stderr}"
    );
    std::fs::remove_dir_all(path.parent().expect("dir")).ok();
}

/// The hardening the unit promises, as systemd itself scores it offline.
#[test]
fn the_service_unit_is_hardened() {
    let (path, unit) = unit_under_test();
    for line in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "EnvironmentFile=/etc/instauth/instauth.env",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(line), "the unit lacks {line:?}");
    }
    // The password travels in the environment file only, never on the command line.
    let exec = unit
        .lines()
        .find(|line| line.starts_with("ExecStart="))
        .expect("ExecStart");
    assert!(
        !exec.contains("--database-url") && !exec.contains("postgres://"),
        "{exec}"
    );
    // coderd owns the schema: instauth must never migrate it.
    assert!(exec.contains(" serve --no-migrate "), "{exec}");

    let (ok, stdout, stderr) = systemd_analyze(&["security", "--offline=true"], &path);
    assert!(ok, "systemd-analyze security: {stdout}{stderr}");
    let level = stdout
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for instauth.service: ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no exposure level: {stdout}{stderr}"));
    let score: f64 = level
        .split_whitespace()
        .next()
        .and_then(|score| score.parse().ok())
        .unwrap_or_else(|| panic!("exposure level {level:?}"));
    // systemd calls 0-1.9 "OK" (the best of its ratings) and 2.0 and above "MEDIUM" or worse.
    assert!(score < 2.0, "exposure {level}: {stdout}");
    std::fs::remove_dir_all(path.parent().expect("dir")).ok();
}

/// Every flag the unit passes exists on `instauth serve`.
#[test]
fn the_service_unit_passes_only_flags_serve_has() {
    let (path, unit) = unit_under_test();
    let help = Command::new(env!("CARGO_BIN_EXE_instauth"))
        .args(["serve", "--help"])
        .output()
        .expect("serve --help");
    let help = String::from_utf8_lossy(&help.stdout);
    let exec = unit
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let flags: Vec<&str> = exec
        .split_whitespace()
        .filter(|word| word.starts_with("--"))
        .collect();
    assert!(!flags.is_empty(), "{exec}");
    for flag in flags {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "serve has no {flag}: {help}"
        );
    }
    std::fs::remove_dir_all(path.parent().expect("dir")).ok();
}
