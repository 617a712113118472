//! Coalesced lookups: requests that wait for the database together share one statement, and
//! each gets exactly the answer it gets alone.

use std::time::Duration;

use futures_util::future::join_all;
use instauth::auth::lookup::Lookup;

use crate::helpers::app::spawn_app_with;
use crate::helpers::pg::TableLock;
use crate::helpers::rule_cases::seed_rule_cases;

/// Every rule case answered alone, then all at once on one connection, with cached and with
/// unnamed statements: the same status and the same body, byte for byte. For the second pass
/// the lookups' table is locked until the first lookup waits on it with the only connection and
/// every request is sent, so the others wait for the connection together and share statements
/// whatever the machine's timing.
#[tokio::test]
async fn coalesced_lookups_get_the_answers_they_get_alone() {
    for cache in [100, 0] {
        let app = spawn_app_with(|o| {
            o.lookup = Lookup::Single;
            o.database.max_connections = 1;
            o.database.statement_cache_capacity = cache;
            // Lookups wait behind the lock for as long as the test holds it.
            o.database.acquire_timeout = Duration::from_secs(30);
            o.database.statement_timeout = Duration::from_secs(30);
        })
        .await;
        let requests = seed_rule_cases(&app).await;
        let mut alone = Vec::new();
        for (instance, name) in &requests {
            let response = app.aws(instance, *name).await;
            let timing = response.header("server-timing").unwrap_or_default();
            assert!(timing.ends_with("desc=\"1 query\""), "alone: {timing}");
            alone.push(response);
        }
        let mut lock = TableLock::take(&app.database.options).await;
        let together = join_all(
            requests
                .iter()
                .map(|(instance, name)| app.aws(instance, *name)),
        );
        let hold = async {
            lock.wait_for_waiters(1).await;
            // Every request has its own connection once it is sent (plus the scrape's).
            let connections = "instauth_http_open_connections";
            let mut open = 0.0;
            for _ in 0..500 {
                open = crate::metrics::scraped(&app, connections)
                    .await
                    .unwrap_or_default();
                if open >= requests.len() as f64 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(open >= requests.len() as f64, "{connections} {open}");
            lock.release().await;
        };
        let (together, ()) = tokio::join!(together, hold);
        let mut shared = 0;
        for (((instance, name), one), many) in requests.iter().zip(&alone).zip(&together) {
            assert_eq!(
                (many.status, &many.text),
                (one.status, &one.text),
                "cache {cache}: {instance} {name:?}"
            );
            let timing = many.header("server-timing").unwrap_or_default();
            if timing.contains(" lookups\"") {
                shared += 1;
            }
        }
        assert!(
            shared > requests.len() / 2,
            "cache {cache}: only {shared} of {} requests shared a statement",
            requests.len()
        );
    }
}

/// `target="primary"` statements of both lookup statements, as `/metrics` reads now.
async fn statements(app: &crate::helpers::app::TestApp) -> f64 {
    let mut sent = 0.0;
    for query in ["agents_by_instance_id", "agents_by_instance_ids"] {
        let series =
            format!("instauth_sql_statements_total{{query=\"{query}\",target=\"primary\"}}");
        sent += crate::metrics::scraped(app, &series)
            .await
            .unwrap_or_default();
    }
    sent
}

/// While a statement is in flight, the queue rides the next one instead of taking the free
/// connections; a full batch goes at once; a queue whose statement is late (two round trips)
/// goes on a free connection without waiting for it. The statements are held on a table lock,
/// and the first round trip is made long (the lock held 1.5 s), so "late" is 3 s: the phases
/// below are seconds apart however slow the machine.
#[tokio::test]
async fn lookups_ride_the_statement_in_flight_unless_their_batch_is_full_or_it_is_late() {
    let app = spawn_app_with(|o| {
        o.lookup = Lookup::Single;
        o.database.max_connections = 4;
        o.database.batch_max = 4;
        o.database.acquire_timeout = Duration::from_secs(30);
        o.database.statement_timeout = Duration::from_secs(30);
    })
    .await;
    let mut expected = Vec::new();
    for i in 0..13 {
        let instance = format!("i-ride-{i}");
        let agent = app.seed().live_agent("dev", &instance).await;
        expected.push((instance, agent.token()));
    }
    let app = std::sync::Arc::new(app);
    // The requests for `range`, sent at once in the background.
    let ask = |range: std::ops::Range<usize>| {
        let (app, instances) = (std::sync::Arc::clone(&app), expected[range].to_vec());
        tokio::spawn(async move {
            join_all(
                instances
                    .iter()
                    .map(|(instance, _)| app.aws(instance, None)),
            )
            .await
        })
    };
    // The first round trip: 1.5 s behind the lock.
    let mut lock = TableLock::take(&app.database.options).await;
    let warm = app.aws(&expected[0].0, None);
    let hold = async {
        lock.wait_for_waiters(1).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        lock.release().await;
    };
    let (warm, ()) = tokio::join!(warm, hold);
    assert_eq!(warm.token(), expected[0].1);
    let before = statements(&app).await;

    let mut lock = TableLock::take(&app.database.options).await;
    let first = ask(1..2);
    lock.wait_for_waiters(1).await;
    // Eight lookups: two full batches, each at once on a connection of its own.
    let started = std::time::Instant::now();
    let full = ask(2..10);
    lock.wait_for_waiters(3).await;
    let full_went = started.elapsed();
    // Three more with a connection free: they wait for the statement in flight, which is
    // late after 3 s, and then go together on the free connection.
    let started = std::time::Instant::now();
    let riders = ask(10..13);
    lock.wait_for_waiters(4).await;
    let riders_went = started.elapsed();
    lock.release().await;

    let first = first.await.expect("first").remove(0);
    let full = full.await.expect("full batches");
    let riders = riders.await.expect("riders");
    assert_eq!(first.token(), expected[1].1);
    assert_eq!(
        first
            .header("server-timing")
            .map(|t| t.ends_with("desc=\"1 query\"")),
        Some(true),
        "{first:?}"
    );
    for (answers, (from, lookups)) in [(&full, (2, 4)), (&riders, (10, 3))] {
        for (offset, answer) in answers.iter().enumerate() {
            let (instance, token) = &expected[from + offset];
            assert_eq!(&answer.token(), token, "{instance}");
            let timing = answer.header("server-timing").unwrap_or_default();
            assert!(
                timing.ends_with(&format!("desc=\"1 query, {lookups} lookups\"")),
                "{instance}: {timing}"
            );
        }
    }
    assert!(
        full_went < Duration::from_millis(2500),
        "full batches waited {full_went:?} for the statement in flight"
    );
    assert!(
        riders_went >= Duration::from_millis(2500),
        "the riders took a free connection after {riders_went:?}, not waiting for the statement in flight"
    );
    assert_eq!(statements(&app).await - before, 4.0);
}
