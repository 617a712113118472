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
