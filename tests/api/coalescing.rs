//! Coalesced lookups: requests that wait for the database together share one statement, and
//! each gets exactly the answer it gets alone.

use futures_util::future::join_all;
use instauth::auth::lookup::Lookup;

use crate::helpers::app::spawn_app_with;
use crate::helpers::rule_cases::seed_rule_cases;

/// Every rule case answered alone, then all at once on one connection (so most share
/// statements), with cached and with unnamed statements: the same status and the same body,
/// byte for byte.
#[tokio::test]
async fn coalesced_lookups_get_the_answers_they_get_alone() {
    for cache in [100, 0] {
        let app = spawn_app_with(|o| {
            o.lookup = Lookup::Single;
            o.database.max_connections = 1;
            o.database.statement_cache_capacity = cache;
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
        let together = join_all(
            requests
                .iter()
                .map(|(instance, name)| app.aws(instance, *name)),
        )
        .await;
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
