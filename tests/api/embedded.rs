//! The embedded PostgreSQL cluster and the command line that starts it.

use instauth::tools::embedded_pg::EmbeddedPostgres;
use sqlx::{Connection as _, Executor as _, PgConnection};

use crate::helpers::child::{Running, free_address, instauth};
use crate::helpers::scratch_dir;

#[tokio::test]
async fn a_cluster_is_created_owned_alone_stopped_and_restarted() {
    let dir = scratch_dir("cluster");
    let first = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || EmbeddedPostgres::start(&dir, false)
    })
    .await
    .expect("join")
    .expect("cluster starts");
    let mut conn = PgConnection::connect_with(&first.connect_options())
        .await
        .expect("connects");
    conn.execute("CREATE TABLE kept (id int)")
        .await
        .expect("create");
    conn.close().await.ok();

    // A second user of the same directory is refused while the first holds it.
    let second = EmbeddedPostgres::start(&dir, false).expect_err("in use");
    assert!(
        second
            .to_string()
            .contains("another instauth process is using"),
        "{second}"
    );

    first.stop();
    assert!(
        PgConnection::connect_with(&first.connect_options())
            .await
            .is_err(),
        "stopped"
    );
    let port = first.port();
    drop(first);

    // Started again: same data, new server.
    let restarted = EmbeddedPostgres::start(&dir, false).expect("restarts");
    let mut conn = PgConnection::connect_with(&restarted.connect_options())
        .await
        .expect("connects");
    conn.execute("SELECT count(*) FROM kept")
        .await
        .expect("data kept");
    conn.close().await.ok();
    assert_eq!(restarted.port(), port, "a restart takes its previous port");
    restarted.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_server_left_by_a_killed_owner_is_adopted_and_stopped() {
    let dir = scratch_dir("orphan");
    let (mut serve, _) = serve_embedded(&dir);
    serve.kill();
    let _ = serve.finish();
    // The postmaster outlives its killed owner, and the lock went with the owner.
    assert!(dir.join("pgdata/postmaster.pid").exists());
    crate::helpers::logs::capture();
    let adopted = EmbeddedPostgres::start(&dir, false).expect("adopts");
    let pgdata = dir.join("pgdata").display().to_string();
    let lines = crate::helpers::logs::wait_for(
        "adopting an embedded PostgreSQL left running by an instauth that died",
        "pgdata",
        pgdata.as_str(),
        1,
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["level"], "WARN", "{lines:#?}");
    let conn = PgConnection::connect_with(&adopted.connect_options())
        .await
        .expect("the orphan serves");
    conn.close().await.ok();
    adopted.stop();
    assert!(
        !dir.join("pgdata/postmaster.pid").exists(),
        "the adopted server is stopped"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_password_file_is_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = scratch_dir("password");
    let cluster = EmbeddedPostgres::start(&dir, false).expect("cluster starts");
    let mode = std::fs::metadata(dir.join("password"))
        .expect("password file")
        .permissions()
        .mode();
    cluster.stop();
    assert_eq!(mode & 0o777, 0o600);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `instauth serve` on a free port with its embedded cluster under `dir`, once listening.
fn serve_embedded(dir: &std::path::Path) -> (Running, String) {
    let bind = free_address();
    let data_dir = dir.to_str().expect("utf8");
    let mut serve = Running::spawn(instauth(&[
        "serve",
        "--bind",
        &bind,
        "--data-dir",
        data_dir,
    ]));
    serve.wait_for("listening");
    (serve, bind)
}

#[tokio::test]
async fn serve_starts_its_own_database_and_stops_it_on_sigterm() {
    let dir = scratch_dir("serve");
    let (serve, bind) = serve_embedded(&dir);
    let ready = reqwest::get(format!("http://{bind}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    serve.sigterm();
    let (status, log) = serve.finish();
    assert!(status.success(), "{status:?}");
    assert!(
        log.iter()
            .any(|l| l.contains("embedded PostgreSQL stopped")),
        "{log:#?}"
    );
    // The cluster it started is stopped with it.
    let pid_file = dir.join("pgdata/postmaster.pid");
    assert!(!pid_file.exists(), "postmaster.pid left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn demo_prints_curl_commands_that_work() {
    let dir = scratch_dir("demo");
    let data_dir = dir.to_str().expect("utf8");
    let mut demo = Running::spawn(instauth(&[
        "demo",
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        data_dir,
    ]));
    demo.wait_for("aws-no-name.json");
    let commands: Vec<&String> = demo
        .seen
        .iter()
        .filter(|l| l.trim_start().starts_with("curl "))
        .collect();
    assert_eq!(commands.len(), 2, "{:?}", demo.seen);
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for command in commands {
        let words: Vec<&str> = command.split_whitespace().collect();
        let url = words
            .iter()
            .find(|w| w.starts_with("http://"))
            .expect("url");
        let file = words
            .iter()
            .find_map(|w| w.strip_prefix('@'))
            .expect("body file");
        let body = std::fs::read(file).expect("body file exists");
        let response = client.post(*url).body(body).send().await.expect("request");
        let status = response.status().as_u16();
        let json: serde_json::Value = response.json().await.expect("json");
        if status == 200 {
            assert!(
                json["session_token"]
                    .as_str()
                    .is_some_and(|t| t.len() == 36),
                "{json}"
            );
        } else {
            assert!(
                json["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("alpha, beta")),
                "{json}"
            );
        }
        statuses.push(status);
    }
    assert_eq!(statuses, [200, 409]);
    demo.sigterm();
    assert!(demo.finish().0.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let output = instauth(&["serve", "--help"]).output().expect("help");
    let help = String::from_utf8_lossy(&output.stdout);
    for (flag, env) in [
        ("--bind", "INSTAUTH_BIND"),
        ("--metrics-bind", "INSTAUTH_METRICS_BIND"),
        ("--trusted-proxies", "INSTAUTH_TRUSTED_PROXIES"),
        ("--database-url", "INSTAUTH_DATABASE_URL"),
        ("--data-dir", "INSTAUTH_DATA_DIR"),
        ("--aws-certificates", "INSTAUTH_AWS_CERTIFICATES"),
        ("--db-max-connections", "INSTAUTH_DB_MAX_CONNECTIONS"),
        ("--db-acquire-timeout", "INSTAUTH_DB_ACQUIRE_TIMEOUT"),
        ("--db-statement-timeout", "INSTAUTH_DB_STATEMENT_TIMEOUT"),
        (
            "--db-statement-cache-capacity",
            "INSTAUTH_DB_STATEMENT_CACHE_CAPACITY",
        ),
        ("--no-migrate", "INSTAUTH_NO_MIGRATE"),
        ("--db-min-connections", "INSTAUTH_DB_MIN_CONNECTIONS"),
        (
            "--db-test-before-acquire",
            "INSTAUTH_DB_TEST_BEFORE_ACQUIRE",
        ),
        ("--max-in-flight", "INSTAUTH_MAX_IN_FLIGHT"),
        ("--rate-limit-per-minute", "INSTAUTH_RATE_LIMIT_PER_MINUTE"),
        ("--shutdown-timeout", "INSTAUTH_SHUTDOWN_TIMEOUT"),
        ("--log-format", "INSTAUTH_LOG_FORMAT"),
        ("--aws-allowed-accounts", "INSTAUTH_AWS_ALLOWED_ACCOUNTS"),
        ("--aws-max-instance-age", "INSTAUTH_AWS_MAX_INSTANCE_AGE"),
        ("--azure-roots", "INSTAUTH_AZURE_ROOTS"),
        ("--azure-intermediates", "INSTAUTH_AZURE_INTERMEDIATES"),
        (
            "--azure-fetch-intermediates",
            "INSTAUTH_AZURE_FETCH_INTERMEDIATES",
        ),
        ("--azure-expiry-skew", "INSTAUTH_AZURE_EXPIRY_SKEW"),
        (
            "--azure-allow-missing-timestamp",
            "INSTAUTH_AZURE_ALLOW_MISSING_TIMESTAMP",
        ),
        ("--google-jwks", "INSTAUTH_GOOGLE_JWKS"),
        ("--google-jwks-url", "INSTAUTH_GOOGLE_JWKS_URL"),
        ("--google-audience", "INSTAUTH_GOOGLE_AUDIENCE"),
        (
            "--google-allow-missing-issuer",
            "INSTAUTH_GOOGLE_ALLOW_MISSING_ISSUER",
        ),
        ("--google-leeway", "INSTAUTH_GOOGLE_LEEWAY"),
    ] {
        assert!(help.contains(flag), "{flag} missing from serve --help");
        assert!(help.contains(env), "{env} missing from serve --help");
    }
    assert!(help.contains("DATABASE_URL"));
    let top = instauth(&["--help"]).output().expect("help");
    let top = String::from_utf8_lossy(&top.stdout);
    for command in ["serve", "migrate", "explain", "demo"] {
        assert!(top.contains(command), "{command} missing from --help");
    }
}

#[test]
fn settings_that_would_disable_a_safeguard_are_refused() {
    for (flag, value) in [
        ("--db-statement-timeout", "500us"),
        ("--db-acquire-timeout", "0ms"),
        ("--shutdown-timeout", "0s"),
        ("--max-in-flight", "0"),
        ("--db-max-connections", "0"),
    ] {
        let dir = scratch_dir("refused");
        let data_dir = dir.to_str().expect("utf8");
        let command = instauth(&[
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
            data_dir,
            flag,
            value,
        ]);
        // An accepted value would start a server: give it a bounded time to refuse.
        let (status, stderr) = run_until_refused(command);
        assert!(
            status.is_some_and(|s| !s.success()),
            "{flag} {value} accepted: {stderr}"
        );
        assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
        assert!(
            !dir.join("pgdata").exists(),
            "nothing starts for {flag} {value}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn identity_flags_are_read_from_the_environment_and_checked_before_anything_starts() {
    let dir = scratch_dir("identity-env");
    let data_dir = dir.to_str().expect("utf8");
    let missing = dir.join("no-such-jwks.json");
    let output = instauth(&["serve", "--data-dir", data_dir])
        .env("INSTAUTH_GOOGLE_JWKS", &missing)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no-such-jwks.json"),
        "the unreadable file is named: {stderr}"
    );
    let output = instauth(&["serve", "--data-dir", data_dir])
        .env("INSTAUTH_AWS_MAX_INSTANCE_AGE", "a while")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--aws-max-instance-age"));
    assert!(
        !dir.join("pgdata").exists(),
        "no cluster is started for a bad configuration"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 12, item 3: an empty or malformed hardening value stops the start with an error naming
/// it, instead of silently turning its check off.
#[test]
fn empty_or_malformed_hardening_values_refuse_to_start() {
    let jwks = scratch_dir("hardening").join("jwks.json");
    std::fs::write(
        &jwks,
        crate::helpers::google::jwks(&[crate::helpers::google::key()], true),
    )
    .expect("jwks");
    let jwks = jwks.to_str().expect("utf8");
    // An accepted configuration would serve (unready: nothing listens on port 1) until killed.
    let refusal = |args: &[&str], env: Option<(&str, &str)>| -> String {
        let base = [
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--database-url",
            "postgres://nobody@127.0.0.1:1/none",
            "--google-jwks",
            jwks,
        ];
        let mut command = instauth(&[&base[..], args].concat());
        if let Some((variable, value)) = env {
            command.env(variable, value);
        }
        let (status, stderr) = run_until_refused(command);
        assert!(
            status.is_some_and(|s| !s.success()),
            "{args:?} {env:?} was accepted"
        );
        stderr
    };
    let empty_account = "--aws-allowed-accounts holds an empty account id";
    let empty_audience = "--google-audience is empty; use `any`";
    for (variable, value, error) in [
        ("INSTAUTH_AWS_ALLOWED_ACCOUNTS", "", empty_account),
        ("INSTAUTH_AWS_ALLOWED_ACCOUNTS", " , ", empty_account),
        (
            "INSTAUTH_AWS_ALLOWED_ACCOUNTS",
            "111122223333,12345",
            "\"12345\" is not an AWS account id (12 digits)",
        ),
        (
            "INSTAUTH_AWS_ALLOWED_ACCOUNTS",
            "11112222333a",
            "is not an AWS account id",
        ),
        (
            "INSTAUTH_TRUSTED_PROXIES",
            "",
            "--trusted-proxies holds an empty entry",
        ),
        (
            "INSTAUTH_TRUSTED_PROXIES",
            "10.0.0.0/8,",
            "--trusted-proxies holds an empty entry",
        ),
        (
            "INSTAUTH_TRUSTED_PROXIES",
            "10.0.0.0/33",
            "--trusted-proxies: \"10.0.0.0/33\" is not an address or CIDR",
        ),
        ("INSTAUTH_GOOGLE_AUDIENCE", "", empty_audience),
        ("INSTAUTH_GOOGLE_AUDIENCE", "  ", empty_audience),
        (
            "INSTAUTH_AWS_MAX_INSTANCE_AGE",
            "",
            "--aws-max-instance-age",
        ),
        (
            "INSTAUTH_AZURE_FETCH_INTERMEDIATES",
            "",
            "--azure-fetch-intermediates",
        ),
        (
            "INSTAUTH_AZURE_FETCH_INTERMEDIATES",
            "sometimes",
            "--azure-fetch-intermediates",
        ),
    ] {
        let stderr = refusal(&[], Some((variable, value)));
        assert!(stderr.contains(error), "{variable}={value:?}: {stderr}");
    }
    for (flag, value, error) in [
        ("--aws-allowed-accounts", "", empty_account),
        ("--google-audience", "", empty_audience),
        (
            "--trusted-proxies",
            "proxy.internal",
            "--trusted-proxies: \"proxy.internal\" is not an address or CIDR",
        ),
    ] {
        let stderr = refusal(&[flag, value], None);
        assert!(stderr.contains(error), "{flag} {value:?}: {stderr}");
    }
}

/// Runs `command` for at most 20 s (an accepted setting would start a server, which is then
/// killed) and returns how it exited, `None` when it had to be killed, and its stderr.
fn run_until_refused(
    mut command: std::process::Command,
) -> (Option<std::process::ExitStatus>, String) {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    (status, stderr)
}
