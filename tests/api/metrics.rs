//! `GET /metrics` and the `Server-Timing` header: every declared metric is recorded by a real
//! request path, and every auth answer says where its time went.

use std::time::Duration;

use sqlx::Executor as _;

use instauth::auth::lookup::Lookup;

use crate::helpers::app::{AWS_PATH, TestApp, spawn_app_with};
use crate::helpers::raw;

/// These tests count the single statement's metrics, whatever INSTAUTH_TEST_LOOKUP says.
async fn spawn_app() -> TestApp {
    spawn_app_with(|options| options.lookup = Lookup::Single).await
}

/// The value of the sample line `series` (name with its labels, exactly as exposed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// `series` as `/metrics` reads now.
pub async fn scraped(app: &TestApp, series: &str) -> Option<f64> {
    value(&scrape(app).await, series)
}

/// Polls `/metrics` until `series` reads `want` (at most 5 s); returns the last value read.
pub async fn wait_for(app: &TestApp, series: &str, want: f64) -> Option<f64> {
    let mut last = None;
    for _ in 0..100 {
        last = scraped(app, series).await;
        if last == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

async fn scrape(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "{response:?}"
    );
    response.text
}

/// `Server-Timing` parsed into (verify, acquire, db) milliseconds and the statement text.
fn server_timing(response: &crate::helpers::app::Response) -> (f64, f64, f64, String) {
    let header = response
        .header("server-timing")
        .unwrap_or_else(|| panic!("no Server-Timing on {response:?}"));
    let parts: Vec<&str> = header.split(", ").collect();
    assert_eq!(parts.len(), 3, "{header}");
    let dur = |part: &str, name: &str| -> f64 {
        let rest = part
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix(";dur="))
            .unwrap_or_else(|| panic!("{name} missing in {header}"));
        let number = rest.split(';').next().unwrap_or_default();
        number
            .parse()
            .unwrap_or_else(|_| panic!("bad duration in {header}"))
    };
    let desc = parts[2]
        .split_once(";desc=")
        .map(|(_, d)| d.to_owned())
        .unwrap_or_default();
    (
        dur(parts[0], "verify"),
        dur(parts[1], "acquire"),
        dur(parts[2], "db"),
        desc,
    )
}

#[tokio::test]
async fn auth_answers_carry_server_timing() {
    let app = spawn_app().await;
    app.seed().coder_workspace("i-timed", &["dev"]).await;

    let ok = app.aws("i-timed", None).await;
    assert_eq!(ok.status, 200);
    let (verify, acquire, db, desc) = server_timing(&ok);
    assert!(verify > 0.0 && acquire >= 0.0 && db > 0.0, "{ok:?}");
    assert_eq!(desc, "\"1 query\"");

    let missing = app.aws("i-missing", None).await;
    assert_eq!(missing.status, 404);
    assert_eq!(server_timing(&missing).3, "\"1 query\"");

    // Rejected before the database: zero for the stages that did not run.
    let invalid = app.aws_signed("QUJD", "{}").await;
    assert_eq!(invalid.status, 401);
    let (verify, acquire, db, desc) = server_timing(&invalid);
    assert!(verify > 0.0);
    assert_eq!((acquire, db, desc.as_str()), (0.0, 0.0, "\"0 queries\""));

    let malformed = app.post_raw(AWS_PATH, "nope").await;
    assert_eq!(malformed.status, 400);
    assert_eq!(
        malformed.header("server-timing"),
        Some("verify;dur=0.000, acquire;dur=0.000, db;dur=0.000;desc=\"0 queries\"")
    );

    // Not an auth route: no header.
    assert_eq!(app.get("/healthz").await.header("server-timing"), None);
}

#[tokio::test]
async fn requests_outcomes_statements_and_verification_are_counted() {
    let app = spawn_app().await;
    app.seed()
        .coder_workspace("i-counted", &["alpha", "beta"])
        .await;
    assert_eq!(app.aws("i-counted", Some("alpha")).await.status, 200);
    assert_eq!(app.aws("i-counted", None).await.status, 409);
    assert_eq!(app.aws_signed("QUJD", "{}").await.status, 401);
    assert_eq!(app.get("/no-such-route").await.status, 404);

    let text = scrape(&app).await;
    let route = "route=\"/api/v2/workspaceagents/aws-instance-identity\"";
    for (status, count) in [("200", 1.0), ("409", 1.0), ("401", 1.0)] {
        let series = format!("instauth_http_requests_total{{{route},status=\"{status}\"}}");
        assert_eq!(value(&text, &series), Some(count), "{series}\n{text}");
        let series =
            format!("instauth_http_request_duration_seconds_count{{{route},status=\"{status}\"}}");
        assert_eq!(value(&text, &series), Some(count), "{series}");
    }
    assert_eq!(
        value(
            &text,
            "instauth_http_requests_total{route=\"unmatched\",status=\"404\"}"
        ),
        Some(1.0),
        "unknown paths share one label value"
    );
    let outcome = |provider: &str, outcome: &str, target: &str| {
        value(
            &text,
            &format!(
                "instauth_auth_outcomes_total{{outcome=\"{outcome}\",provider=\"{provider}\",target=\"{target}\"}}"
            ),
        )
    };
    // Looked-up answers are the primary's; a refused identity never reached a database.
    assert_eq!(outcome("aws", "ok", "primary"), Some(1.0));
    assert_eq!(outcome("aws", "ambiguous", "primary"), Some(1.0));
    assert_eq!(outcome("aws", "invalid_identity", "none"), Some(1.0));
    assert_eq!(outcome("aws", "invalid_identity", "primary"), Some(0.0));
    assert_eq!(outcome("aws", "ok", "none"), Some(0.0));
    // Every provider's series exists from the start.
    assert_eq!(outcome("azure", "ok", "primary"), Some(0.0));
    assert_eq!(outcome("google", "not_found", "none"), Some(0.0));
    assert_eq!(
        value(
            &text,
            "instauth_identity_verify_seconds_count{provider=\"aws\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            "instauth_identity_verify_seconds_count{provider=\"google\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "instauth_sql_statements_total{query=\"agents_by_instance_id\",target=\"primary\"}"
        ),
        Some(2.0),
        "one statement per looked-up request, none for the rejected one"
    );
    assert_eq!(
        value(
            &text,
            "instauth_db_pool_acquire_seconds_count{target=\"primary\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "instauth_db_pool_acquire_timeouts_total{target=\"primary\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "instauth_db_pool_max_connections{target=\"primary\"}"
        ),
        Some(10.0)
    );
    // Migrations at start-up may have opened more than the lookups needed; all are idle now.
    let open = value(
        &text,
        "instauth_db_pool_open_connections{target=\"primary\"}",
    )
    .unwrap_or_default();
    assert!(open >= 1.0, "{text}");
    assert_eq!(
        value(
            &text,
            "instauth_db_pool_idle_connections{target=\"primary\"}"
        ),
        Some(open)
    );
    assert_eq!(
        value(
            &text,
            "instauth_db_pool_in_use_connections{target=\"primary\"}"
        ),
        Some(0.0)
    );
    // Session tokens never reach the metrics.
    assert!(!text.contains("session_token"));
}

/// The remembered AWS pairs, read at scrape time: one per pair that verified (whether or not an
/// agent answered for it), the same pair again still one, a refused pair none.
#[tokio::test]
async fn verified_aws_documents_show_as_remembered() {
    let app = spawn_app().await;
    let series = "instauth_identity_remembered_aws_documents";
    assert_eq!(scraped(&app, series).await, Some(0.0));
    app.seed().coder_workspace("i-remembered", &["alpha"]).await;
    for _ in 0..3 {
        assert_eq!(app.aws("i-remembered", None).await.status, 200);
    }
    assert_eq!(app.aws_signed("QUJD", "{}").await.status, 401);
    assert_eq!(scraped(&app, series).await, Some(1.0));
    assert_eq!(app.aws("i-nobody-owns", None).await.status, 404);
    assert_eq!(scraped(&app, series).await, Some(2.0));
}

#[tokio::test]
async fn an_exhausted_pool_shows_in_use_connections_waits_and_timeouts() {
    let app = spawn_app_with(|options| {
        options.lookup = Lookup::Single;
        options.database.max_connections = 1;
        options.database.acquire_timeout = Duration::from_millis(300);
        options.database.statement_timeout = Duration::from_secs(20);
    })
    .await;
    // Open the only connection first, so the first wait is not a cold connect on a busy machine.
    crate::faults::poll_until(&app, "/readyz", 200, Duration::from_secs(30)).await;
    // Hold a lock the lookup needs, so the app's only connection stays busy.
    let mut blocker = app.pool.begin().await.expect("begin");
    blocker
        .execute("LOCK TABLE workspace_agents IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let held = tokio::spawn({
        let client = app.client.clone();
        let url = format!("{}{AWS_PATH}", app.address);
        let (signature, document) = crate::helpers::signing::aws_document("i-held");
        async move {
            client
                .post(url)
                .json(&serde_json::json!({"signature": signature, "document": document}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    let in_use = wait_for(
        &app,
        "instauth_db_pool_in_use_connections{target=\"primary\"}",
        1.0,
    )
    .await;
    assert_eq!(in_use, Some(1.0), "the blocked lookup holds the connection");
    assert_eq!(
        value(
            &scrape(&app).await,
            "instauth_db_pool_max_connections{target=\"primary\"}"
        ),
        Some(1.0),
        "every connection the pool may open is in use"
    );

    let starved = app.aws("i-starved", None).await;
    starved.assert_error(503, "Internal error fetching workspace agent.");
    assert_eq!(
        starved.detail(),
        "timed out waiting for a database connection"
    );
    assert_eq!(starved.header("retry-after"), Some("1"));
    let (_, acquire, db, desc) = server_timing(&starved);
    assert!(acquire >= 300.0, "waited the acquire timeout: {acquire}");
    assert_eq!((db, desc.as_str()), (0.0, "\"0 queries\""));

    blocker.rollback().await.expect("unlock");
    assert_eq!(held.await.expect("join").expect("answer"), 404);

    let text = scrape(&app).await;
    assert_eq!(
        value(
            &text,
            "instauth_db_pool_acquire_timeouts_total{target=\"primary\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "instauth_db_pool_acquire_seconds_count{target=\"primary\"}"
        ),
        Some(2.0)
    );
    // The timed-out wait lands above the 0.25 s bucket.
    assert_eq!(
        value(
            &text,
            "instauth_db_pool_acquire_seconds_bucket{target=\"primary\",le=\"0.25\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "instauth_auth_outcomes_total{outcome=\"unavailable\",provider=\"aws\",target=\"primary\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn answers_given_by_admission_are_counted_too() {
    let app = spawn_app_with(|options| {
        options.lookup = Lookup::Single;
        options.admission.rate_limit_per_minute = std::num::NonZeroU32::new(1);
    })
    .await;
    assert_eq!(app.aws("i-admitted", None).await.status, 404);
    assert_eq!(app.aws("i-admitted", None).await.status, 429);
    let text = scrape(&app).await;
    let route = "route=\"/api/v2/workspaceagents/aws-instance-identity\"";
    for status in ["404", "429"] {
        let series = format!("instauth_http_requests_total{{{route},status=\"{status}\"}}");
        assert_eq!(value(&text, &series), Some(1.0), "{series}\n{text}");
    }
}

#[tokio::test]
async fn min_connections_are_opened_without_waiting_for_requests() {
    let app = spawn_app_with(|options| {
        options.lookup = Lookup::Single;
        options.database.min_connections = 3;
    })
    .await;
    let open = wait_for(
        &app,
        "instauth_db_pool_open_connections{target=\"primary\"}",
        3.0,
    )
    .await;
    assert_eq!(
        open,
        Some(3.0),
        "three connections opened before any request"
    );
    let text = scrape(&app).await;
    assert_eq!(
        value(
            &text,
            "instauth_db_pool_idle_connections{target=\"primary\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            "instauth_db_pool_acquire_seconds_count{target=\"primary\"}"
        ),
        Some(0.0),
        "warming the pool is not a request's wait"
    );
}

/// The outcome labels `/metrics` exposes for `provider` (every one is there from the start,
/// once per target).
fn outcome_labels(text: &str, provider: &str) -> Vec<String> {
    let suffix = format!("\",provider=\"{provider}\",target=\"none\"}}");
    text.lines()
        .filter_map(|line| {
            let series = line.split(' ').next()?;
            let label = series
                .strip_prefix("instauth_auth_outcomes_total{outcome=\"")?
                .strip_suffix(&suffix)?;
            Some(label.to_owned())
        })
        .collect()
}

/// Each label's AWS count, summed over the targets (`none` and `primary`, both exposed).
fn outcome_counts(text: &str, labels: &[String]) -> Vec<f64> {
    labels
        .iter()
        .map(|label| {
            ["none", "primary"]
                .iter()
                .map(|target| {
                    let series = format!(
                        "instauth_auth_outcomes_total{{outcome=\"{label}\",provider=\"aws\",target=\"{target}\"}}"
                    );
                    value(text, &series).unwrap_or_else(|| panic!("{series} missing"))
                })
                .sum()
        })
        .collect()
}

/// Outcomes no request from outside can produce: a verification task that panicked.
const UNPRODUCIBLE: [&str; 1] = ["internal_error"];

/// Every outcome label shown at start (not a list kept here: a new outcome fails this test
/// until it gets a request below) moves by exactly one, and alone, for one request that
/// produces it. Each gets an app of its own, set up so the next AWS request ends that way.
#[tokio::test]
async fn every_exposed_outcome_moves_for_a_request_that_produces_it() {
    let labels = outcome_labels(&scrape(&spawn_app().await).await, "aws");
    assert!(labels.len() >= 10, "{labels:?}");
    for label in &labels {
        if UNPRODUCIBLE.contains(&label.as_str()) {
            continue;
        }
        let produced = produce(label, &labels).await;
        let moved: Vec<(String, f64)> = labels
            .iter()
            .cloned()
            .zip(produced)
            .filter(|(_, delta)| *delta != 0.0)
            .collect();
        assert_eq!(
            moved,
            [(label.clone(), 1.0)],
            "the request producing {label:?} moved exactly its label"
        );
    }
}

/// Sets up an app for `label`, makes one request that should end with it, and returns how
/// much each of `labels` moved across that one request.
async fn produce(label: &str, labels: &[String]) -> Vec<f64> {
    use std::num::{NonZeroU32, NonZeroUsize};

    use crate::helpers::pg::TableLock;

    let app = spawn_app_with(|o| {
        o.lookup = Lookup::Single;
        o.database.batch_max = 1;
        match label {
            "rate_limited" => o.admission.rate_limit_per_minute = NonZeroU32::new(1),
            "overloaded" => o.admission.max_in_flight = NonZeroUsize::MIN,
            "body_budget_full" => {
                o.admission.max_buffered_body_bytes =
                    NonZeroUsize::new(64 * 1024).expect("non-zero");
            }
            "unavailable" => o.database.statement_timeout = Duration::from_millis(300),
            _ => {}
        }
    })
    .await;
    app.seed().live_agents("i-pair", &["a", "b"]).await;
    // One instance claimed by two workspaces.
    app.seed().live_agent("dev", "i-twice").await;
    app.seed().live_agent("dev", "i-twice").await;
    let token = app.seed().live_agent("dev", "i-one").await.token();
    let mut lock = None;
    let mut pending = None;
    let mut held = None;
    match label {
        "body_budget_full" => {
            // A slow sender declaring the whole budget holds it.
            held = Some(raw::stalled_body(&app, 64 * 1024, "").await);
            assert_eq!(
                wait_for(&app, "instauth_http_buffered_body_bytes", 65536.0).await,
                Some(65536.0)
            );
        }
        "rate_limited" => assert_eq!(app.aws("i-none", None).await.status, 404),
        "overloaded" | "unavailable" => {
            let mut taken = TableLock::take(&app.database.options).await;
            if label == "overloaded" {
                let address = app.address.clone();
                pending = Some(tokio::spawn(async move {
                    let (signature, document) = crate::helpers::signing::aws_document("i-one");
                    reqwest::Client::new()
                        .post(format!("{address}{AWS_PATH}"))
                        .json(&serde_json::json!({"signature": signature, "document": document}))
                        .send()
                        .await
                        .map(|r| r.status().as_u16())
                }));
                taken.wait_for_waiters(1).await;
            }
            lock = Some(taken);
        }
        "database_error" => {
            sqlx::query("ALTER TABLE workspace_agents RENAME TO workspace_agents_gone")
                .execute(&app.pool)
                .await
                .expect("rename");
        }
        _ => {}
    }
    let expected = match label {
        "ok" => 200,
        "bad_request" => 400,
        "payload_too_large" => 413,
        "body_timeout" => 408,
        "rate_limited" => 429,
        "invalid_identity" => 401,
        "not_found" => 404,
        "ambiguous" | "claimed_by_many_workspaces" => 409,
        "overloaded" | "body_budget_full" | "unavailable" => 503,
        _ => 500,
    };
    let answers =
        format!("instauth_http_requests_total{{route=\"{AWS_PATH}\",status=\"{expected}\"}}");
    let text = scrape(&app).await;
    let before = outcome_counts(&text, labels);
    let answered_before = value(&text, &answers).unwrap_or_default();
    let status = match label {
        "ok" => {
            assert_eq!(app.aws("i-one", None).await.token(), token);
            200
        }
        "bad_request" => app.post_raw(AWS_PATH, "nope").await.status,
        "payload_too_large" => app.post_raw(AWS_PATH, " ".repeat(70_000)).await.status,
        "invalid_identity" => app.aws_signed("QUJD", "{}").await.status,
        "not_found" => app.aws("i-none", None).await.status,
        "ambiguous" => app.aws("i-pair", None).await.status,
        "claimed_by_many_workspaces" => app.aws("i-twice", None).await.status,
        "rate_limited" | "overloaded" | "body_budget_full" | "unavailable" | "database_error" => {
            app.aws("i-one", None).await.status
        }
        "body_timeout" => {
            raw::status(&raw::answer(&mut raw::stalled_body(&app, 100, "{").await).await)
        }
        other => panic!(
            "outcome {other:?} is exposed, and this test has no request producing it: add one"
        ),
    };
    let text = scrape(&app).await;
    let after = outcome_counts(&text, labels);
    assert_eq!(status, expected, "the request meant to produce {label:?}");
    // The answer is counted under its route and status too.
    assert_eq!(
        value(&text, &answers).unwrap_or_default() - answered_before,
        1.0,
        "{answers} for {label:?}"
    );
    if let Some(lock) = lock {
        lock.release().await;
    }
    drop(held);
    if let Some(pending) = pending {
        assert_eq!(pending.await.expect("join").expect("sent"), 200);
    }
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

/// Issue 12, item 9: a request is counted under the route that answered it. A percent-encoded
/// path runs the AWS handler (the router decodes it) and is counted as that route, not as
/// `unmatched`.
#[tokio::test]
async fn a_percent_encoded_path_is_counted_under_the_route_that_answered() {
    let app = spawn_app().await;
    let (signature, document) = crate::helpers::signing::aws_document("i-encoded");
    let encoded = AWS_PATH.replace("identity", "identit%79");
    let response = app
        .post_json(
            &encoded,
            &serde_json::json!({"signature": signature, "document": document}),
        )
        .await;
    // The AWS handler's answer, not the router's 404.
    response.assert_error(404, "Instance with id \"i-encoded\" not found.");
    let text = scrape(&app).await;
    let route = "route=\"/api/v2/workspaceagents/aws-instance-identity\"";
    let series = format!("instauth_http_requests_total{{{route},status=\"404\"}}");
    assert_eq!(value(&text, &series), Some(1.0), "{series}\n{text}");
    assert_eq!(
        value(
            &text,
            "instauth_http_requests_total{route=\"unmatched\",status=\"404\"}"
        ),
        None,
        "{text}"
    );
}

/// Issue 12, item 10: with `--metrics-bind`, `/metrics` is served on its own listener and
/// nowhere else; that listener serves nothing else, each refusal in Coder's shape.
#[tokio::test]
async fn metrics_bind_serves_metrics_apart_and_only_there() {
    let app = spawn_app_with(|options| {
        options.lookup = Lookup::Single;
        options.metrics_bind = Some("127.0.0.1:0".to_owned());
    })
    .await;
    let metrics = app
        .metrics_address
        .clone()
        .expect("a metrics listener was bound");
    assert_ne!(metrics, app.address);
    app.get("/metrics")
        .await
        .assert_error(404, "Route not found.");
    assert_eq!(app.get("/healthz").await.status, 200);

    let apart = TestApp {
        address: metrics,
        ..app
    };
    let text = scrape(&apart).await;
    assert_eq!(
        value(
            &text,
            "instauth_http_requests_total{route=\"unmatched\",status=\"404\"}"
        ),
        Some(1.0),
        "the public /metrics 404 is counted: {text}"
    );
    apart
        .get("/healthz")
        .await
        .assert_error(404, "Route not found.");
    apart
        .aws("i-apart", None)
        .await
        .assert_error(404, "Route not found.");
    apart
        .post_raw("/metrics", "")
        .await
        .assert_error(405, "Method not allowed.");
    let text = scrape(&apart).await;
    assert_eq!(
        value(
            &text,
            "instauth_http_requests_total{route=\"/metrics\",status=\"200\"}"
        ),
        Some(1.0),
        "scrapes on the metrics listener are counted: {text}"
    );
}
