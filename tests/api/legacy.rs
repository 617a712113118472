//! The legacy baselines (feature `legacy`): each replay costs the statements `docs/coder-contract.md` §4
//! counts, measured on the wire, and answers exactly as the single statement does.

use instauth::auth::lookup::Lookup;
use instauth::legacy::Version;

use crate::helpers::app::{spawn_app_behind_proxy_with, spawn_app_with};
use crate::helpers::rule_cases::seed_rule_cases;
use crate::load::{seeded_app, short_run};

const LEGACY: [Version; 3] = [Version::Rc2, Version::Rc3, Version::Main];

#[tokio::test]
async fn each_replay_costs_the_statements_of_its_coder_version() {
    // (strategy, one agent, two agents named, no candidate)
    let expected = [
        (Lookup::Single, 1, 1, 1),
        (Lookup::Legacy(Version::Rc2), 13, 25, 1),
        (Lookup::Legacy(Version::Rc3), 19, 26, 1),
        (Lookup::Legacy(Version::Main), 3, 3, 1),
    ];
    for (lookup, one, two, none) in expected {
        let (app, proxy) = spawn_app_behind_proxy_with(|options| options.lookup = lookup).await;
        app.seed().live_agent("dev", "i-one").await;
        app.seed().live_agents("i-two", &["alpha", "beta"]).await;

        // Twice: the second pass runs on prepared statements.
        for _ in 0..2 {
            for (instance, name, status, statements) in [
                ("i-one", None, 200, one),
                ("i-two", Some("beta"), 200, two),
                ("i-none", None, 404, none),
            ] {
                let before = proxy.statements();
                let response = app.aws(instance, name).await;
                assert_eq!(response.status, status, "{lookup} {instance}: {response:?}");
                assert_eq!(
                    proxy.statements() - before,
                    statements,
                    "{lookup} {instance} {name:?}"
                );
                let timing = response.header("server-timing").unwrap_or_default();
                let noun = if statements == 1 { "query" } else { "queries" };
                assert!(
                    timing.ends_with(&format!("desc=\"{statements} {noun}\"")),
                    "{lookup}: {timing}"
                );
            }
        }
    }
}

#[tokio::test]
async fn every_replay_answers_like_the_single_statement() {
    let reference = spawn_app_with(|options| options.lookup = Lookup::Single).await;
    let requests = seed_rule_cases(&reference).await;
    let connect = (*reference.pool.connect_options()).clone();
    let mut expected = Vec::new();
    for (instance, name) in &requests {
        let response = reference.aws(instance, *name).await;
        expected.push((response.status, response.text));
    }
    assert!(expected.iter().any(|(status, _)| *status == 200));
    assert!(expected.iter().any(|(status, _)| *status == 404));
    assert!(expected.iter().any(|(status, _)| *status == 409));
    for version in LEGACY {
        // Another app over the same database, answering with the replay.
        let app = spawn_app_with(|options| {
            options.database.connect = connect.clone();
            options.lookup = Lookup::Legacy(version);
        })
        .await;
        for ((instance, name), (status, body)) in requests.iter().zip(&expected) {
            let response = app.aws(instance, *name).await;
            assert_eq!(
                (&response.status, &response.text),
                (status, body),
                "{} {instance} {name:?}",
                version.name()
            );
        }
    }
}

#[tokio::test]
async fn the_load_tool_reads_a_replays_cost_from_metrics() {
    // Two live agents per instance, one build: rc.3 costs 26 statements per request.
    let (app, _, material) = seeded_app(
        &[
            "--prefix",
            "rc3",
            "--workspaces",
            "10",
            "--agents-per-instance",
            "2",
        ],
        Lookup::Legacy(Version::Rc3),
        1,
    )
    .await;
    let report = short_run(&app, &material, &["--duration", "1s", "--concurrency", "4"]).await;
    assert_eq!(report.unexpected, 0, "{report:#?}");
    let server = report.server.expect("server figures");
    assert_eq!(server.sql_per_request, Some(26.0));
    assert_eq!(
        server.sql_by_query.get("legacy_agents_by_instance_id"),
        Some(&server.auth_requests)
    );
}

/// With the statement cache off (PgBouncer before 1.21), the replays send every statement
/// unnamed too, so a benchmark of them behind such a pooler leaves no named statement behind.
#[tokio::test]
async fn replays_follow_the_statement_cache_setting() {
    let (app, proxy) = spawn_app_behind_proxy_with(|options| {
        options.lookup = Lookup::Legacy(Version::Main);
        options.database.max_connections = 1;
        options.database.statement_cache_capacity = 0;
    })
    .await;
    app.seed().coder_workspace("i-replay", &["dev"]).await;
    let (statements, parses, named) = (proxy.statements(), proxy.parses(), proxy.named_parses());
    for _ in 0..3 {
        assert_eq!(app.aws("i-replay", None).await.status, 200);
    }
    assert_eq!(proxy.statements() - statements, 9, "3 statements a request");
    assert_eq!(proxy.parses() - parses, 9, "each parsed as it is sent");
    assert_eq!(proxy.named_parses() - named, 0, "none of them named");
}
