//! Failure modes with a real PostgreSQL: locked tables, an exhausted pool, a stopped server,
//! a start while the database is down, overload, and shutdown while requests are in flight.
//!
//! Elapsed-time bounds here are hang detectors, set many times above the configured timeouts,
//! not performance assertions.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use instauth::tools::embedded_pg::EmbeddedPostgres;

use crate::helpers::app::{AWS_PATH, TestApp, spawn_app_with};
use crate::helpers::pg::TableLock;
use crate::helpers::{logs, raw, scratch_dir};

/// Asserts the ERROR `lookup failed` lines of `instance` (docs/operations.md): `count` of
/// them, each naming the provider and the error.
async fn assert_lookup_failed_logged(instance: &str, count: usize) {
    let lines = logs::wait_for("lookup failed", "instance_id", instance, count).await;
    assert_eq!(lines.len(), count, "{lines:#?}");
    for line in &lines {
        assert_eq!(line["level"], "ERROR", "{line}");
        assert_eq!(line["provider"], "aws", "{line}");
        assert!(
            line["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{line}"
        );
    }
}

/// Asserts `/metrics` counts `count` AWS authentications that ended `outcome`.
/// `count` AWS answers of `outcome`: admission's refusals are decided before any lookup
/// (target `none`), the rest by the primary, the only database target here.
async fn assert_outcomes(app: &TestApp, outcome: &str, count: usize) {
    let target = match outcome {
        "overloaded" | "body_budget_full" | "rate_limited" | "body_timeout" => "none",
        _ => "primary",
    };
    let series = format!(
        "instauth_auth_outcomes_total{{outcome=\"{outcome}\",provider=\"aws\",target=\"{target}\"}}"
    );
    let want = count as f64;
    assert_eq!(
        crate::metrics::wait_for(app, &series, want).await,
        Some(want),
        "{series}"
    );
}

async fn seeded_agent(app: &TestApp, instance: &str) -> String {
    app.seed().live_agent("dev", instance).await.token()
}

#[tokio::test]
async fn a_locked_table_and_an_exhausted_pool_answer_503_fast_then_recover() {
    logs::capture();
    let app = spawn_app_with(|o| {
        o.database.max_connections = 2;
        o.database.acquire_timeout = Duration::from_millis(300);
        o.database.statement_timeout = Duration::from_millis(600);
        // Every lookup alone, so the pool runs out (coalesced, the rest would share one
        // statement: see the next test).
        o.database.batch_max = 1;
    })
    .await;
    let token = seeded_agent(&app, "i-lock").await;
    // Open a pooled connection first: with a 300 ms acquire timeout a cold connect on a busy
    // machine could itself time out.
    poll_until(&app, "/readyz", 200, Duration::from_secs(30)).await;
    assert_eq!(app.aws("i-lock", None).await.token(), token);

    let lock = TableLock::take(&app.database.options).await;
    let started = Instant::now();
    let responses = join_all((0..6).map(|_| app.aws("i-lock", None))).await;
    let elapsed = started.elapsed();
    let mut details: Vec<String> = Vec::new();
    for response in &responses {
        response.assert_error(503, "Internal error fetching workspace agent.");
        assert_eq!(response.header("retry-after"), Some("1"));
        details.push(response.detail());
        // The statements sent are reported even when the answer is an error.
        let sent = if response.json()["detail"] == "the lookup exceeded the statement timeout" {
            "desc=\"1 query\""
        } else {
            "desc=\"0 queries\""
        };
        assert!(
            response
                .header("server-timing")
                .is_some_and(|t| t.contains(sent)),
            "{response:?}"
        );
    }
    details.sort();
    details.dedup();
    assert_eq!(
        details,
        [
            "the lookup exceeded the statement timeout",
            "timed out waiting for a database connection"
        ],
        "two requests hold the connections until statement_timeout, the rest wait for one"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "answers took {elapsed:?}"
    );
    eprintln!("locked table: 6 concurrent requests all answered 503 within {elapsed:?}");
    assert_lookup_failed_logged("i-lock", 6).await;
    assert_outcomes(&app, "unavailable", 6).await;
    // Counted per wait for a connection (one wait may fail several queued lookups).
    let timeouts = crate::metrics::wait_for(
        &app,
        "instauth_db_pool_acquire_timeouts_total{target=\"primary\"}",
        1.0,
    )
    .await;
    assert!(timeouts.is_some_and(|n| n >= 1.0), "{timeouts:?}");

    lock.release().await;
    assert_eq!(app.aws("i-lock", None).await.token(), token);
}

#[tokio::test]
async fn a_failed_batch_answers_each_of_its_waiters_503_then_recovers() {
    let app = spawn_app_with(|o| {
        o.database.max_connections = 1;
        o.database.acquire_timeout = Duration::from_secs(5);
        o.database.statement_timeout = Duration::from_millis(600);
    })
    .await;
    let mut tokens = Vec::new();
    for i in 0..6 {
        let instance = format!("i-batch-{i}");
        tokens.push((instance.clone(), seeded_agent(&app, &instance).await));
    }
    poll_until(&app, "/readyz", 200, Duration::from_secs(30)).await;

    let lock = TableLock::take(&app.database.options).await;
    // The first lookup takes the only connection and waits on the lock; the other five queue
    // meanwhile and go out together as the next statement, which waits on the lock too.
    let responses = join_all(tokens.iter().map(|(instance, _)| app.aws(instance, None))).await;
    let mut shared = Vec::new();
    for response in &responses {
        response.assert_error(503, "Internal error fetching workspace agent.");
        assert_eq!(
            response.json()["detail"],
            "the lookup exceeded the statement timeout",
            "{response:?}"
        );
        let timing = response.header("server-timing").unwrap_or_default();
        assert!(timing.contains("desc=\"1 query"), "{timing}");
        shared.push(timing.contains("lookups\""));
    }
    assert!(
        shared.iter().filter(|s| **s).count() >= 2,
        "some lookups shared a statement: {shared:?}"
    );

    lock.release().await;
    let again = join_all(tokens.iter().map(|(instance, _)| app.aws(instance, None))).await;
    for ((instance, token), response) in tokens.iter().zip(&again) {
        assert_eq!(&response.token(), token, "{instance}");
    }
}

#[tokio::test]
async fn requests_beyond_the_in_flight_bound_are_shed_at_once() {
    logs::capture();
    let app = spawn_app_with(|o| {
        o.admission.max_in_flight = std::num::NonZeroUsize::new(2).expect("non-zero");
        o.database.statement_timeout = Duration::from_secs(20);
        o.database.acquire_timeout = Duration::from_secs(20);
        // Each lookup on its own connection, so each shows as a session waiting on the lock.
        o.database.batch_max = 1;
    })
    .await;
    let token = seeded_agent(&app, "i-busy").await;
    let mut lock = TableLock::take(&app.database.options).await;
    let blocked = tokio::spawn({
        let address = app.address.clone();
        async move {
            let client = reqwest::Client::new();
            let (signature, document) = crate::helpers::signing::aws_document("i-busy");
            let body = serde_json::json!({"signature": signature, "document": document});
            let send = |_| {
                client
                    .post(format!("{address}{AWS_PATH}"))
                    .json(&body)
                    .send()
            };
            join_all((0..2).map(send)).await
        }
    });
    // Both hold their permits once both statements wait on the lock.
    lock.wait_for_waiters(2).await;
    let started = Instant::now();
    let shed = app.aws("i-busy", None).await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(2), "shedding must not wait");
    eprintln!("in-flight bound: shed with 503 in {elapsed:?}");
    shed.assert_error(503, "Server is overloaded.");
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(
        shed.json()["detail"],
        "More than 2 authentication requests are in flight; retry later."
    );
    // Health is not subject to the bound.
    assert_eq!(app.get("/healthz").await.status, 200);
    // Only this test bounds the in-flight requests at 2: the line is its own.
    let lines = logs::wait_for(
        "shedding: authentication requests refused at once",
        "max_in_flight",
        2,
        1,
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["level"], "WARN", "{lines:#?}");
    assert_eq!(
        lines[0]["reason"], "more than 2 authentication requests in flight",
        "{lines:#?}"
    );
    assert_eq!(lines[0]["shed"], 1, "{lines:#?}");
    assert_outcomes(&app, "overloaded", 1).await;
    let series = format!("instauth_http_requests_total{{route=\"{AWS_PATH}\",status=\"503\"}}");
    assert_eq!(
        crate::metrics::wait_for(&app, &series, 1.0).await,
        Some(1.0),
        "{series}"
    );

    lock.release().await;
    for response in blocked.await.expect("join") {
        assert_eq!(response.expect("sent").status(), 200);
    }
    assert_eq!(app.aws("i-busy", None).await.token(), token);
}

/// An AWS request for `instance` sent in the background: its status and body.
fn aws_in_background(
    app: &TestApp,
    instance: &str,
) -> tokio::task::JoinHandle<(u16, serde_json::Value)> {
    let url = format!("{}{AWS_PATH}", app.address);
    let (signature, document) = crate::helpers::signing::aws_document(instance);
    tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(url)
            .json(&serde_json::json!({"signature": signature, "document": document}))
            .send()
            .await
            .expect("sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON body"))
    })
}

/// Polls `done` every 20 ms until it holds (30 s at most, then fails with `what`).
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}

/// The lookup queue refusal of docs/operations.md: a lookup that would queue behind more than
/// the database answers within the acquire timeout (at the recent round trip) is refused by
/// admission with 503 at once, before its body is read, and the next one after the queue
/// drains is served. The wire proxy makes each step observable: the first lookup's statement
/// is held at the proxy for longer than the acquire timeout, so the moving average round trip
/// exceeds it; the second lookup's statement is held the same way on the pool's one open
/// connection; the third must open the pool's second connection, which the stalled proxy keeps
/// from finishing, so the proxy seeing that connection means a lookup is queued.
#[tokio::test]
async fn a_lookup_queue_longer_than_the_acquire_timeout_is_refused_at_once() {
    const ACQUIRE: Duration = Duration::from_secs(2);
    // Only this test sets it: its shedding line is found by it.
    const MAX_IN_FLIGHT: usize = 4099;
    const DETAIL: &str = "The database could not answer another lookup in time; retry later.";
    logs::capture();
    let (app, proxy) = crate::helpers::app::spawn_app_behind_proxy_with(|o| {
        o.lookup = instauth::auth::lookup::Lookup::Single;
        o.database.max_connections = 2;
        o.database.batch_max = 1;
        o.database.acquire_timeout = ACQUIRE;
        o.database.statement_timeout = Duration::from_secs(20);
        o.admission.max_in_flight = std::num::NonZeroUsize::new(MAX_IN_FLIGHT).expect("non-zero");
    })
    .await;
    let token = seeded_agent(&app, "i-queue").await;
    // The pool's first connection, opened by the probe (which sends no statement, so the
    // round trip average starts with the lookup below).
    poll_until(&app, "/readyz", 200, Duration::from_secs(30)).await;

    proxy.hold_binds();
    let binds = proxy.binds();
    let slow = aws_in_background(&app, "i-queue");
    wait_until("the first statement reaches the proxy", || {
        proxy.binds() > binds
    })
    .await;
    // Not a wait for something to happen: the held statement's round trip is now longer
    // than the acquire timeout whatever else the machine does.
    tokio::time::sleep(ACQUIRE + Duration::from_millis(200)).await;
    proxy.release_binds();
    let (status, body) = slow.await.expect("join");
    assert_eq!(
        (status, body["session_token"].as_str()),
        (200, Some(token.as_str()))
    );

    proxy.hold_binds();
    let binds = proxy.binds();
    let holding = aws_in_background(&app, "i-queue");
    wait_until("the second statement reaches the proxy", || {
        proxy.binds() > binds
    })
    .await;
    proxy.stall(true);
    let connections = proxy.connections();
    let queued = aws_in_background(&app, "i-queue");
    wait_until("the pool connects for the queued lookup", || {
        proxy.connections() > connections
    })
    .await;

    let refused = app.aws("i-queue", None).await;
    refused.assert_error(503, "Server is overloaded.");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(refused.detail(), DETAIL);
    assert!(
        refused
            .header("server-timing")
            .is_some_and(|t| t.contains("desc=\"0 queries\"")),
        "{refused:?}"
    );
    // Before the body is read: a request whose body never comes gets the same answer, not
    // the 408 of an unfinished body 10 s later.
    let unread = raw::answer(&mut raw::stalled_body(&app, 100, "{").await).await;
    assert!(unread.starts_with("HTTP/1.1 503"), "{unread}");
    assert!(unread.contains(DETAIL), "{unread}");

    proxy.stall(false);
    proxy.release_binds();
    for lookup in [holding, queued] {
        let (status, body) = lookup.await.expect("join");
        assert_eq!(
            (status, body["session_token"].as_str()),
            (200, Some(token.as_str()))
        );
    }
    // The queue has drained: the next lookup goes, however slow the last round trips were.
    assert_eq!(app.aws("i-queue", None).await.token(), token);

    // One line for both refusals: at most one a second.
    let lines = logs::wait_for(
        "shedding: authentication requests refused at once",
        "max_in_flight",
        MAX_IN_FLIGHT,
        1,
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["level"], "WARN", "{lines:#?}");
    assert_eq!(
        lines[0]["reason"], "the database's lookup queue would not be answered in time",
        "{lines:#?}"
    );
    assert_eq!(lines[0]["shed"], 1, "{lines:#?}");
    assert_outcomes(&app, "overloaded", 2).await;
    assert_outcomes(&app, "ok", 4).await;
    let series = format!("instauth_http_requests_total{{route=\"{AWS_PATH}\",status=\"503\"}}");
    assert_eq!(
        crate::metrics::wait_for(&app, &series, 2.0).await,
        Some(2.0),
        "{series}"
    );
}

#[tokio::test]
async fn a_per_ip_rate_limit_answers_429_with_retry_after() {
    let app = spawn_app_with(|o| {
        o.admission.rate_limit_per_minute = std::num::NonZeroU32::new(3);
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.aws("i-rate", None).await.status, 404);
    }
    let limited = app.aws("i-rate", None).await;
    limited.assert_error(429, "Rate limit exceeded.");
    let retry_after: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("numeric Retry-After");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Probes are not limited.
    assert_eq!(app.get("/healthz").await.status, 200);
}

async fn start_cluster(dir: &std::path::Path) -> EmbeddedPostgres {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&dir, false))
        .await
        .expect("join")
        .expect("cluster starts")
}

/// One workspace with agent `dev` on `instance_id`, written straight to the cluster; returns
/// the agent's token.
async fn seed_agent(cluster: &EmbeddedPostgres, instance_id: &str) -> String {
    let pool = sqlx::PgPool::connect_with(cluster.connect_options())
        .await
        .expect("pool");
    let token = crate::helpers::seed::Seed::new(&pool)
        .live_agent("dev", instance_id)
        .await
        .token();
    pool.close().await;
    token
}

pub async fn poll_until(app: &TestApp, path: &str, status: u16, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if app.get(path).await.status == status {
            return started.elapsed();
        }
        assert!(started.elapsed() < within, "{path} never answered {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_database_outage_gets_fast_503s_and_the_service_recovers_alone() {
    logs::capture();
    let dir = scratch_dir("outage");
    let cluster = start_cluster(&dir).await;
    let app = spawn_app_with(|o| {
        o.database.connect = cluster.connect_options();
    })
    .await;
    let token = seed_agent(&cluster, "i-out").await;
    assert_eq!(app.aws("i-out", None).await.token(), token);

    cluster.stop();
    let port = cluster.port();
    drop(cluster);
    for attempt in 0..3 {
        let started = Instant::now();
        let response = app.aws("i-out", None).await;
        response.assert_error(503, "Internal error fetching workspace agent.");
        assert_eq!(response.header("retry-after"), Some("1"));
        // The pooled connection hears of the shutdown (57P01); later connects are refused.
        let detail = if attempt == 0 {
            "the database is temporarily unavailable"
        } else {
            "the database connection failed"
        };
        assert_eq!(response.detail(), detail, "attempt {attempt}");
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
        eprintln!("database stopped: 503 in {elapsed:?}");
    }
    assert_lookup_failed_logged("i-out", 3).await;
    assert_outcomes(&app, "unavailable", 3).await;
    assert_eq!(
        crate::metrics::wait_for(
            &app,
            "instauth_db_pool_open_connections{target=\"primary\"}",
            0.0
        )
        .await,
        Some(0.0),
        "no connection stays open to a stopped database"
    );
    let ready = app.get("/readyz").await;
    ready.assert_error(503, "Service not ready.");
    assert_eq!(app.get("/healthz").await.status, 200);

    let restarted = start_cluster(&dir).await;
    assert_eq!(restarted.port(), port, "a restart keeps its port");
    let recovery = poll_until(&app, "/readyz", 200, Duration::from_secs(20)).await;
    assert_eq!(app.aws("i-out", None).await.token(), token);
    restarted.stop();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("recovered {recovery:?} after the restart");
}

/// After a restart every pooled connection is dead. The first request to find out gets its
/// 503; the pool then drops the other idle connections instead of letting each fail a request
/// of its own.
#[tokio::test]
async fn a_restarted_database_costs_one_failed_request_not_one_per_connection() {
    const POOL: usize = 4;
    logs::capture();
    let dir = scratch_dir("restart");
    let cluster = start_cluster(&dir).await;
    let app = spawn_app_with(|o| {
        o.database.connect = cluster.connect_options();
        o.database.min_connections = POOL as u32;
        o.database.max_connections = POOL as u32;
    })
    .await;
    let token = seed_agent(&cluster, "i-restart").await;
    let open = crate::metrics::wait_for(
        &app,
        "instauth_db_pool_open_connections{target=\"primary\"}",
        POOL as f64,
    )
    .await;
    assert_eq!(
        open,
        Some(POOL as f64),
        "the pool opened its {POOL} connections"
    );

    cluster.stop();
    drop(cluster);
    let restarted = start_cluster(&dir).await;
    let mut statuses = Vec::new();
    for _ in 0..POOL {
        statuses.push(app.aws("i-restart", None).await.status);
    }
    assert_eq!(
        statuses,
        [503, 200, 200, 200],
        "one request pays for the restart"
    );
    // Only this test loses a pool of four at once: the line naming the three others is its.
    let lines = logs::wait_for(
        "database connection lost; older idle connections dropped",
        "dropped",
        POOL - 1,
        1,
    )
    .await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["level"], "WARN", "{lines:#?}");
    assert_eq!(app.aws("i-restart", None).await.token(), token);
    restarted.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn serve_starts_unready_while_the_database_is_down_and_becomes_ready() {
    let dir = scratch_dir("late");
    // Create the cluster (for its password and port), then take it down before the app starts.
    let cluster = start_cluster(&dir).await;
    let options = cluster.connect_options();
    cluster.stop();
    let port = cluster.port();
    drop(cluster);

    logs::capture();
    let app = spawn_app_with(|o| o.database.connect = options).await;
    assert_eq!(app.get("/healthz").await.status, 200);
    // No other test starts the app with its database down; the line carries no field of its
    // own to tell (the error is a refused connect).
    let lines = logs::wait_for(
        "database unreachable at start; serving unready and retrying",
        "level",
        "WARN",
        1,
    )
    .await;
    assert!(
        !lines.is_empty(),
        "no warning that the database is unreachable"
    );
    let unready = app.get("/readyz").await;
    unready.assert_error(503, "Service not ready.");
    assert_eq!(
        unready.json()["detail"],
        "the database has not been reachable since start; migrations are pending"
    );
    app.aws("i-late", None)
        .await
        .assert_error(503, "Internal error fetching workspace agent.");

    let restarted = start_cluster(&dir).await;
    assert_eq!(restarted.port(), port);
    // Migrations are retried with backoff (0.5 s, 1 s, 2 s, …) until they apply.
    let became_ready = poll_until(&app, "/readyz", 200, Duration::from_secs(30)).await;
    let lines = logs::wait_for("database reachable; migrations applied", "level", "INFO", 1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    // The first attempt was at start; this line is logged by a retry.
    assert!(lines[0]["attempt"].as_u64() >= Some(2), "{lines:#?}");
    app.aws("i-late", None)
        .await
        .assert_error(404, r#"Instance with id "i-late" not found."#);
    restarted.stop();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("ready {became_ready:?} after the database came up");
}

#[tokio::test]
async fn a_database_that_stops_answering_gets_503_within_the_deadline() {
    logs::capture();
    let (app, proxy) = crate::helpers::app::spawn_app_behind_proxy_with(|o| {
        o.database.acquire_timeout = Duration::from_millis(300);
        o.database.statement_timeout = Duration::from_millis(300);
    })
    .await;
    let token = seeded_agent(&app, "i-silent").await;
    // A pooled connection first: a cold connect on a busy machine may outlast 300 ms itself.
    poll_until(&app, "/readyz", 200, Duration::from_secs(30)).await;
    assert_eq!(app.aws("i-silent", None).await.token(), token);
    // The connection is back in the pool, idle, so the next request gets it and waits on the
    // statement itself.
    assert_eq!(
        crate::metrics::wait_for(
            &app,
            "instauth_db_pool_in_use_connections{target=\"primary\"}",
            0.0
        )
        .await,
        Some(0.0)
    );

    proxy.stall(true);
    let started = Instant::now();
    let response = app.aws("i-silent", None).await;
    let elapsed = started.elapsed();
    response.assert_error(503, "Internal error fetching workspace agent.");
    assert_eq!(
        response.json()["detail"],
        "the database did not answer in time"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let ready = app.get("/readyz").await;
    ready.assert_error(503, "Service not ready.");
    assert_eq!(health_status(&app).await, 200);
    eprintln!("silent database: 503 in {elapsed:?}");
    let logged = logs::wait_for("lookup failed", "instance_id", "i-silent", 1).await;
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert_eq!(logged[0]["level"], "ERROR");
    assert!(
        logged[0]["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no answer from the database within")),
        "{logged:#?}"
    );
    assert_outcomes(&app, "unavailable", 1).await;

    proxy.stall(false);
    let recovery = poll_until(&app, "/readyz", 200, Duration::from_secs(20)).await;
    assert_eq!(app.aws("i-silent", None).await.token(), token);
    eprintln!("silent database: ready again {recovery:?} after it answered");
}

async fn health_status(app: &TestApp) -> u16 {
    app.get("/healthz").await.status
}

#[tokio::test]
async fn a_slow_body_gets_408_and_never_holds_an_in_flight_slot() {
    logs::capture();
    let app = spawn_app_with(|o| {
        o.admission.max_in_flight = std::num::NonZeroUsize::MIN;
    })
    .await;
    let token = seeded_agent(&app, "i-slow").await;
    // A warm pool, so the requests below are quick.
    assert_eq!(app.aws("i-slow", None).await.token(), token);
    // A slow sender that arrives while a request holds the only slot is shed at once (the
    // bound is checked before reading, too); then it tries again. Once it is reading its body,
    // the slot stays free: every request until its 408 arrives (10 s of them) is served.
    for attempt in 1..=5 {
        let address = app.address.trim_start_matches("http://").to_owned();
        let (sent, head_sent) = tokio::sync::oneshot::channel();
        let slow = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("connect");
            let head = format!(
                "POST {AWS_PATH} HTTP/1.1\r\nHost: x\r\nUser-Agent: slow-body-{attempt}\r\nContent-Length: 100\r\n\r\n{{\"sig"
            );
            stream.write_all(head.as_bytes()).await.expect("write");
            let _ = sent.send(());
            let mut answer = vec![0; 4096];
            let read = stream.read(&mut answer).await.expect("read");
            String::from_utf8_lossy(&answer[..read]).into_owned()
        });
        head_sent.await.expect("head sent");
        let mut served = 0;
        while !slow.is_finished() {
            assert_eq!(app.aws("i-slow", None).await.token(), token);
            served += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let answer = slow.await.expect("join");
        if answer.contains("Server is overloaded.") && attempt < 5 {
            continue;
        }
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.contains("Request body was not received in time."),
            "{answer}"
        );
        assert!(
            served >= 2,
            "only {served} requests overlapped the slow body"
        );
        logs::assert_refusal_logged(
            &format!("slow-body-{attempt}"),
            "body_timeout",
            "request body not received within 10 s",
            408,
            "BodyTimeout { seconds: 10 }",
        )
        .await;
        return;
    }
}

/// A database error that retrying cannot fix (here the table is missing, SQLSTATE 42P01, as on
/// a wrong `--no-migrate` target) is a 500 without `Retry-After`, counted as `database_error`;
/// a statement cancelled by `statement_timeout` (57014) stays a 503 with `Retry-After`.
#[tokio::test]
async fn a_permanent_database_error_is_500_without_retry_after() {
    logs::capture();
    let app = spawn_app_with(|o| o.lookup = instauth::auth::lookup::Lookup::Single).await;
    let token = seeded_agent(&app, "i-perm").await;
    poll_until(&app, "/readyz", 200, Duration::from_secs(30)).await;
    // Before any lookup, so no connection holds a plan of the old table.
    sqlx::query("ALTER TABLE workspace_agents RENAME TO workspace_agents_gone")
        .execute(&app.pool)
        .await
        .expect("rename");
    let response = app.aws("i-perm", None).await;
    response.assert_error(500, "Internal error fetching workspace agent.");
    assert_eq!(response.detail(), "the lookup failed; see the server log");
    assert_eq!(response.header("retry-after"), None, "{response:?}");
    assert_lookup_failed_logged("i-perm", 1).await;
    assert_eq!(
        crate::metrics::wait_for(
            &app,
            "instauth_auth_outcomes_total{outcome=\"database_error\",provider=\"aws\",target=\"primary\"}",
            1.0
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        crate::metrics::wait_for(
            &app,
            "instauth_auth_outcomes_total{outcome=\"unavailable\",provider=\"aws\",target=\"primary\"}",
            0.0
        )
        .await,
        Some(0.0)
    );
    sqlx::query("ALTER TABLE workspace_agents_gone RENAME TO workspace_agents")
        .execute(&app.pool)
        .await
        .expect("rename back");
    assert_eq!(app.aws("i-perm", None).await.token(), token);
}

/// The limit is per source: another loopback address (127.0.0.2) is not limited by the first
/// one's use, and a source's bucket refills at the configured rate (60 a minute: one a second).
#[tokio::test]
async fn the_rate_limit_is_per_source_and_refills() {
    const RATE: u32 = 60;
    let app = spawn_app_with(|o| {
        o.admission.rate_limit_per_minute = std::num::NonZeroU32::new(RATE);
    })
    .await;
    for _ in 0..RATE {
        assert_eq!(app.aws("i-rate", None).await.status, 404);
    }
    app.aws("i-rate", None)
        .await
        .assert_error(429, "Rate limit exceeded.");

    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .expect("client");
    let (signature, document) = crate::helpers::signing::aws_document("i-rate");
    let body = serde_json::json!({"signature": signature, "document": document});
    for _ in 0..3 {
        let response = other
            .post(format!("{}{AWS_PATH}", app.address))
            .json(&body)
            .send()
            .await
            .expect("sent from 127.0.0.2");
        assert_eq!(response.status(), 404, "another source is not limited");
    }
    assert_eq!(app.aws("i-rate", None).await.status, 429, "still limited");

    // Refused requests do not drain the bucket: polling until one passes ends.
    let mut refused = 0;
    loop {
        let status = app.aws("i-rate", None).await.status;
        if status == 404 {
            break;
        }
        assert_eq!(status, 429);
        refused += 1;
        assert!(refused < 200, "the bucket never refilled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
