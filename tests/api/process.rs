//! The real binary as an operator runs it: graceful shutdown and what its logs may contain.

use std::time::Duration;

use serde_json::json;

use crate::helpers::app::AWS_PATH;
use crate::helpers::child::{Running, free_address, instauth};
use crate::helpers::pg::{TableLock, TestDatabase};
use crate::helpers::seed::Seed;
use crate::helpers::{google, signing};

/// A running `instauth serve` on a free port, trusting the test AWS key.
pub struct Served {
    pub running: Running,
    pub address: String,
}

impl Served {
    pub fn start(database_url: &str, extra: &[&str]) -> Self {
        let bind = free_address();
        let certificates =
            std::env::temp_dir().join(format!("instauth-aws-{}.pem", bind.replace(':', "-")));
        std::fs::write(&certificates, signing::aws_key().certificate_pem()).expect("pem");
        let mut command = instauth(&["serve", "--bind", &bind, "--aws-certificates"]);
        command
            .arg(&certificates)
            .args(extra)
            .env("DATABASE_URL", database_url);
        let mut running = Running::spawn(command);
        running.wait_for("listening");
        Self {
            running,
            address: format!("http://{bind}"),
        }
    }
}

async fn aws_request(
    client: &reqwest::Client,
    address: &str,
    instance: &str,
    name: Option<&str>,
) -> reqwest::Response {
    let (signature, document) = signing::aws_document(instance);
    let mut body = json!({"signature": signature, "document": document});
    if let Some(name) = name {
        body["agent_name"] = json!(name);
    }
    client
        .post(format!("{address}{AWS_PATH}"))
        .json(&body)
        .send()
        .await
        .expect("request")
}

#[tokio::test]
async fn sigterm_stops_accepting_and_finishes_in_flight_requests() {
    a_stop_signal_stops_accepting_and_finishes_in_flight_requests(Running::sigterm).await;
}

/// SIGINT drains like SIGTERM (actix's own handling would stop at once on SIGINT).
#[tokio::test]
async fn sigint_stops_accepting_and_finishes_in_flight_requests() {
    a_stop_signal_stops_accepting_and_finishes_in_flight_requests(Running::sigint).await;
}

async fn a_stop_signal_stops_accepting_and_finishes_in_flight_requests(send: fn(&Running)) {
    let database = TestDatabase::create().await;
    let served = Served::start(
        &database.url,
        &["--db-statement-timeout", "30s", "--log-format", "json"],
    );
    let pool = sqlx::PgPool::connect_with(database.options.clone())
        .await
        .expect("pool");
    let token = Seed::new(&pool).live_agent("dev", "i-drain").await.token();

    let mut lock = TableLock::take(&database.options).await;
    let client = reqwest::Client::new();
    let in_flight = tokio::spawn({
        let client = client.clone();
        let address = served.address.clone();
        async move { aws_request(&client, &address, "i-drain", None).await }
    });
    // The request is in flight once its statement waits on the lock.
    lock.wait_for_waiters(1).await;
    send(&served.running);

    // No new connections are taken while the old request drains: connecting is refused once
    // the signal is handled (a connect that still succeeds came before it).
    let bind = served.address.trim_start_matches("http://").to_owned();
    let mut refused = None;
    for _ in 0..1500 {
        match tokio::net::TcpStream::connect(&bind).await {
            Ok(stream) => drop(stream),
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("connections were still accepted after the signal");
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
    assert!(
        !in_flight.is_finished(),
        "the in-flight request is still draining when new connections are refused"
    );

    lock.release().await;
    let response = in_flight.await.expect("join");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["session_token"], token.as_str());
    let (status, lines) = served.running.finish();
    assert!(status.success(), "{status:?}");
    let stopped = logged(&lines, "stopped");
    assert_eq!(stopped.len(), 1, "{lines:#?}");
    assert_eq!(stopped[0]["level"], "INFO", "{lines:#?}");
}

/// `--shutdown-timeout` bounds the drain after SIGTERM: a request still blocked when it runs
/// out is cut off (its connection closed without an answer) and the process exits cleanly,
/// without waiting for the 30 s statement timeout.
#[tokio::test]
async fn the_shutdown_timeout_cuts_off_a_request_that_outlasts_it() {
    let database = TestDatabase::create().await;
    let served = Served::start(
        &database.url,
        &["--db-statement-timeout", "30s", "--shutdown-timeout", "1s"],
    );
    let mut lock = TableLock::take(&database.options).await;
    let in_flight = tokio::spawn({
        let address = served.address.clone();
        async move {
            let (signature, document) = signing::aws_document("i-cut");
            reqwest::Client::new()
                .post(format!("{address}{AWS_PATH}"))
                .json(&json!({"signature": signature, "document": document}))
                .send()
                .await
        }
    });
    lock.wait_for_waiters(1).await;
    served.running.sigterm();
    let (status, lines) = tokio::task::spawn_blocking(move || served.running.finish())
        .await
        .expect("join");
    assert!(status.success(), "{status:?}: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("stopped")), "{lines:#?}");
    // The lock is still held: the request cannot have been answered, only cut off.
    let cut = in_flight.await.expect("join");
    assert!(cut.is_err(), "the blocked request got an answer: {cut:?}");
    lock.release().await;
}

/// `INSTAUTH_DATABASE_URL` wins over `DATABASE_URL` (README, Configuration): with the first
/// pointing at the test database and the second at a port nothing listens on, the service
/// becomes ready and answers from the test database.
#[tokio::test]
async fn instauth_database_url_takes_precedence_over_database_url() {
    let database = TestDatabase::create().await;
    let closed = free_address();
    let bogus = format!("postgres://nobody@{closed}/nothing");
    let bind = free_address();
    let certificates =
        std::env::temp_dir().join(format!("instauth-env-{}.pem", bind.replace(':', "-")));
    std::fs::write(&certificates, signing::aws_key().certificate_pem()).expect("pem");
    let mut command = instauth(&["serve", "--bind", &bind, "--aws-certificates"]);
    command
        .arg(&certificates)
        .env("INSTAUTH_DATABASE_URL", &database.url)
        .env("DATABASE_URL", &bogus);
    let mut running = Running::spawn(command);
    running.wait_for("listening");
    let address = format!("http://{bind}");
    let client = reqwest::Client::new();
    let mut ready = 0;
    for _ in 0..300 {
        ready = client
            .get(format!("{address}/readyz"))
            .send()
            .await
            .expect("readyz")
            .status()
            .as_u16();
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, 200, "never ready: DATABASE_URL was used");
    // Ready means migrated: the schema is there to seed.
    let pool = sqlx::PgPool::connect_with(database.options.clone())
        .await
        .expect("pool");
    let token = Seed::new(&pool).live_agent("dev", "i-env").await.token();
    let response = aws_request(&client, &address, "i-env", None).await;
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["session_token"], token.as_str());
    running.sigterm();
    let (status, _) = running.finish();
    assert!(status.success(), "{status:?}");
}

/// A migration that fails for good (here a table of the schema already exists, not created by
/// the migrations: SQLSTATE 42P07) stops `serve` with a non-zero exit and the error, instead
/// of serving unready forever.
#[tokio::test]
async fn a_permanent_migration_failure_exits_non_zero() {
    let database = TestDatabase::create().await;
    let pool = sqlx::PgPool::connect_with(database.options.clone())
        .await
        .expect("pool");
    sqlx::query("CREATE TABLE workspaces (id integer)")
        .execute(&pool)
        .await
        .expect("a conflicting table");
    pool.close().await;
    let bind = free_address();
    let mut command = instauth(&["serve", "--bind", &bind]);
    command.env("DATABASE_URL", &database.url);
    let mut running = Running::spawn(command);
    // At start the error ends `serve` itself (the ERROR line `migrations failed; stopping` is
    // the background retry's).
    running.wait_for("applying migrations");
    let (status, lines) = tokio::task::spawn_blocking(move || running.finish())
        .await
        .expect("join");
    assert!(!status.success(), "{status:?}: {lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("already exists")),
        "the error is shown: {lines:#?}"
    );
}

/// `url` with a password in it: the real one if it has one, else a canary the server ignores
/// (trust authentication).
fn with_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("URL scheme");
    let (userinfo, host) = rest.split_once('@').expect("URL user");
    match userinfo.split_once(':') {
        Some((_, password)) => (url.to_owned(), password.to_owned()),
        None => {
            let password = "instauth-canary-password".to_owned();
            (format!("{scheme}://{userinfo}:{password}@{host}"), password)
        }
    }
}

#[tokio::test]
async fn logs_errors_and_metrics_of_a_full_run_hold_no_token_and_no_password() {
    let database = TestDatabase::create().await;
    let (url, password) = with_password(&database.url);
    for format in ["json", "text"] {
        let served = Served::start(&url, &["--log-format", format]);
        let pool = sqlx::PgPool::connect_with(database.options.clone())
            .await
            .expect("pool");
        let seed = Seed::new(&pool);
        let instance = format!("i-secret-{format}");
        let (_, agents) = seed
            .live_agents(&instance, &["alpha", "beta", "gamma"])
            .await;
        let tokens: Vec<String> = agents.iter().map(|agent| agent.token()).collect();
        let client = reqwest::Client::new();
        for name in ["alpha", "beta", "gamma"] {
            let response = aws_request(&client, &served.address, &instance, Some(name)).await;
            assert_eq!(response.status(), 200);
        }
        // Error bodies and metrics are searched with the log.
        let mut answers = Vec::new();
        for (name, status) in [(None, 409), (Some("nope"), 404)] {
            let response = aws_request(&client, &served.address, &instance, name).await;
            assert_eq!(response.status().as_u16(), status);
            answers.push(response.text().await.expect("body"));
        }
        let bad = client
            .post(format!("{}{AWS_PATH}", served.address))
            .body("{}")
            .send()
            .await
            .expect("request");
        assert_eq!(bad.status(), 400);
        answers.push(bad.text().await.expect("body"));
        let metrics = client
            .get(format!("{}/metrics", served.address))
            .send()
            .await
            .expect("metrics");
        answers.push(metrics.text().await.expect("metrics body"));
        served.running.sigterm();
        let (status, lines) = served.running.finish();
        assert!(status.success());
        let log = lines.join("\n");
        assert!(
            log.contains("outcome") && log.contains("verify_ms") && log.contains("db_ms"),
            "each authentication logs its outcome and timings ({format})"
        );
        let answers = answers.join("\n");
        for token in &tokens {
            assert!(
                !answers.contains(token.as_str()),
                "a session token leaked into an error body or /metrics"
            );
        }
        assert!(
            log.contains(&instance),
            "auth lines name the instance ({format})"
        );
        for token in &tokens {
            assert!(
                !log.contains(token.as_str()),
                "a session token leaked into the {format} log"
            );
        }
        assert!(
            !log.contains(&password),
            "the database password leaked into the {format} log"
        );
        pool.close().await;
    }
}

/// `serve` with JSON logs, Google keys from a file (nothing fetched) and `extra`.
pub fn served_quietly(database_url: &str, extra: &[&str]) -> Served {
    let jwks = std::env::temp_dir().join(format!("instauth-jwks-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&jwks, google::jwks(&[google::key()], true)).expect("jwks");
    let jwks = jwks.to_str().expect("utf8").to_owned();
    let args = [
        &["--log-format", "json", "--google-jwks", jwks.as_str()][..],
        extra,
    ]
    .concat();
    Served::start(database_url, &args)
}

/// The JSON log lines whose message is `message`.
pub fn logged(lines: &[String], message: &str) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == message)
        .collect()
}

/// Issue 12, item 3: what each provider checks is logged once at start, defaults included.
#[tokio::test]
async fn the_effective_identity_policy_of_each_provider_is_logged_once_at_start() {
    let database = TestDatabase::create().await;
    let served = served_quietly(
        &database.url,
        &["--aws-allowed-accounts", "111122223333,444455556666"],
    );
    served.running.sigterm();
    let (_, lines) = served.running.finish();
    let policies = logged(&lines, "identity policy");
    assert_eq!(policies.len(), 3, "{lines:#?}");
    let of = |provider: &str| {
        policies
            .iter()
            .find(|line| line["provider"] == provider)
            .unwrap_or_else(|| panic!("no {provider} policy: {policies:#?}"))
    };
    assert_eq!(of("aws")["allowed_accounts"], "111122223333,444455556666");
    assert_eq!(of("aws")["max_instance_age"], "none");
    assert_eq!(of("azure")["fetch_intermediates"], "Online");
    assert_eq!(of("azure")["expiry_skew"], "5m");
    assert_eq!(of("google")["audience"], "coder");
    assert_eq!(of("google")["keys"], "file");
}

/// Issue 12, item 1: a contested instance is logged as a warning naming the workspaces, and
/// so is the other claim when a name picks one of them.
#[tokio::test]
async fn an_instance_claimed_by_two_workspaces_is_logged_with_their_ids() {
    let database = TestDatabase::create().await;
    let served = served_quietly(&database.url, &[]);
    let pool = sqlx::PgPool::connect_with(database.options.clone())
        .await
        .expect("pool");
    let seed = Seed::new(&pool);
    let mut workspaces = Vec::new();
    for name in ["dev", "other"] {
        let workspace = seed.workspace().await;
        let build = seed.build(workspace, 1).await;
        seed.agent(build.resource_id, name, "i-contested").await;
        workspaces.push(workspace.to_string());
    }
    let client = reqwest::Client::new();
    let refused = aws_request(&client, &served.address, "i-contested", None).await;
    assert_eq!(refused.status(), 409);
    let named = aws_request(&client, &served.address, "i-contested", Some("other")).await;
    assert_eq!(named.status(), 200);
    served.running.sigterm();
    let (_, lines) = served.running.finish();
    let refusals = logged(
        &lines,
        "instance claimed by more than one workspace; refused",
    );
    assert_eq!(refusals.len(), 1, "{lines:#?}");
    assert_eq!(refusals[0]["level"], "WARN");
    assert_eq!(refusals[0]["instance_id"], "i-contested");
    let mut sorted = workspaces.clone();
    sorted.sort();
    assert_eq!(refusals[0]["workspace_ids"], sorted.join(","));
    let others = logged(
        &lines,
        "instance also claimed by other workspaces; the named agent's workspace was chosen",
    );
    assert_eq!(others.len(), 1, "{lines:#?}");
    assert_eq!(others[0]["workspace_id"], workspaces[1].as_str());
    assert_eq!(others[0]["other_workspace_ids"], workspaces[0].as_str());
    // The authentication line says what was refused.
    let answers = logged(&lines, "authentication");
    assert!(
        answers
            .iter()
            .any(|line| line["outcome"] == "claimed_by_many_workspaces"),
        "{answers:#?}"
    );
    pool.close().await;
}

/// Issue 12, item 10: `--metrics-bind` serves `/metrics` on its own listener (404 on the public
/// one), and SIGTERM stops both: the process exits cleanly and neither port accepts any more.
#[tokio::test]
async fn metrics_bind_serves_metrics_apart_and_sigterm_stops_both_listeners() {
    let database = TestDatabase::create().await;
    let metrics_bind = free_address();
    let served = served_quietly(&database.url, &["--metrics-bind", &metrics_bind]);
    let client = reqwest::Client::new();
    let scrape = client
        .get(format!("http://{metrics_bind}/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(scrape.status(), 200);
    assert!(
        scrape
            .text()
            .await
            .expect("text")
            .contains("instauth_auth_outcomes_total"),
    );
    let public = client
        .get(format!("{}/metrics", served.address))
        .send()
        .await
        .expect("public /metrics");
    assert_eq!(public.status(), 404);
    let body: serde_json::Value = public.json().await.expect("json");
    assert_eq!(body["message"], "Route not found.");
    served.running.sigterm();
    let (status, lines) =
        tokio::task::spawn_blocking(move || served.running.finish_within(Duration::from_secs(20)))
            .await
            .expect("join");
    assert!(
        status.is_some_and(|s| s.success()),
        "did not stop cleanly within 20 s ({status:?}): {lines:#?}"
    );
    assert_eq!(
        logged(&lines, "serving /metrics apart").len(),
        1,
        "{lines:#?}"
    );
    let public_bind = served_address(&lines);
    for address in [metrics_bind.as_str(), public_bind.as_str()] {
        let refused = tokio::net::TcpStream::connect(address)
            .await
            .expect_err("nothing listens after the exit");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}

/// The `--bind` of the `listening` line.
fn served_address(lines: &[String]) -> String {
    let listening = logged(lines, "listening");
    listening[0]["bind"]
        .as_str()
        .expect("bind is logged")
        .to_owned()
}

/// Issue 14, item 7: a test that fails while its `serve` runs (here: the `Running` is simply
/// dropped) leaves no process behind, not even a zombie: `kill(pid, 0)` finds nothing.
#[tokio::test]
async fn a_dropped_running_stops_and_reaps_its_child() {
    let bind = free_address();
    let mut running = Running::spawn(instauth(&[
        "serve",
        "--bind",
        &bind,
        "--database-url",
        "postgres://instauth@127.0.0.1:1/nowhere",
    ]));
    running.wait_for("listening");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(running.pid()).expect("pid"));
    assert_eq!(
        nix::sys::signal::kill(pid, None),
        Ok(()),
        "serve is running"
    );
    drop(running);
    assert_eq!(
        nix::sys::signal::kill(pid, None),
        Err(nix::errno::Errno::ESRCH),
        "the dropped child is stopped and reaped"
    );
}
