//! The embedded PostgreSQL cluster and the command line that starts it.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use instauth::embedded_pg::EmbeddedPostgres;
use sqlx::{Connection as _, Executor as _, PgConnection};

fn scratch_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "instauth-{label}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[tokio::test]
async fn a_cluster_is_created_reused_and_stopped() {
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

    // A second start while it runs reuses the running server and does not own it.
    let again = EmbeddedPostgres::start(&dir, false).expect("reuse");
    assert_eq!(again.port(), first.port());
    again.stop();
    let conn = PgConnection::connect_with(&first.connect_options())
        .await
        .expect("still up");
    conn.close().await.ok();

    first.stop();
    assert!(
        PgConnection::connect_with(&first.connect_options())
            .await
            .is_err(),
        "stopped"
    );

    // Started again: same data, new server.
    let restarted = EmbeddedPostgres::start(&dir, false).expect("restarts");
    let mut conn = PgConnection::connect_with(&restarted.connect_options())
        .await
        .expect("connects");
    conn.execute("SELECT count(*) FROM kept")
        .await
        .expect("data kept");
    conn.close().await.ok();
    restarted.stop();
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

/// Runs the real binary with no database URL, so it must bring up its own cluster.
fn instauth(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_instauth"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("INSTAUTH_DATABASE_URL")
        .env("RUST_LOG", "info");
    command
}

/// Collects `child`'s stdout or stderr lines until one contains `needle`; the rest is still
/// drained in the background so the child never writes into a closed pipe.
fn wait_for_line(child: &mut Child, needle: &str, from_stdout: bool) -> Vec<String> {
    let reader: Box<dyn std::io::Read + Send> = if from_stdout {
        Box::new(child.stdout.take().expect("stdout"))
    } else {
        Box::new(child.stderr.take().expect("stderr"))
    };
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    while let Ok(line) = receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let done = line.contains(needle);
        lines.push(line);
        if done {
            break;
        }
    }
    lines
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    child.wait().expect("exits")
}

#[tokio::test]
async fn serve_starts_its_own_database_and_stops_it_on_sigterm() {
    let dir = scratch_dir("serve");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let bind = format!("127.0.0.1:{port}");
    let mut child = instauth(&[
        "serve",
        "--bind",
        &bind,
        "--data-dir",
        dir.to_str().expect("utf8"),
    ])
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn serve");
    let log = wait_for_line(&mut child, "listening", false);
    assert!(log.iter().any(|l| l.contains("listening")), "{log:?}");
    let ready = reqwest::get(format!("http://{bind}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200);
    let status = terminate(&mut child);
    assert!(status.success(), "{status:?}");
    // The cluster it started is stopped with it.
    let pid_file = dir.join("pgdata/postmaster.pid");
    assert!(!pid_file.exists(), "postmaster.pid left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn demo_prints_curl_commands_that_work() {
    let dir = scratch_dir("demo");
    let mut child = instauth(&[
        "demo",
        "--bind",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().expect("utf8"),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawn demo");
    let out = wait_for_line(&mut child, "aws-no-name.json", true);
    let commands: Vec<&String> = out
        .iter()
        .filter(|l| l.trim_start().starts_with("curl "))
        .collect();
    assert_eq!(commands.len(), 2, "{out:?}");
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
    assert!(terminate(&mut child).success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_documents_every_flag_and_its_environment_variable() {
    let output = instauth(&["serve", "--help"]).output().expect("help");
    let help = String::from_utf8_lossy(&output.stdout);
    for (flag, env) in [
        ("--bind", "INSTAUTH_BIND"),
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
