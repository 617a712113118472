//! Read replicas (`--replica-url`) against a real streaming replica: lookups land on the
//! standby, replication lag never turns an agent away (a miss there is asked of the primary),
//! a standby that is down, lagging or unfit is skipped, and `/readyz` is ready while either
//! answers. Statements are counted on the wire, one proxy in front of each server.

use std::time::Duration;

use instauth::auth::lookup::Lookup;
use sqlx::PgConnection;
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::helpers::app::{AppOptions, TestApp, spawn_app_on};
use crate::helpers::logs;
use crate::helpers::pg::TestDatabase;
use crate::helpers::pgproxy::PgProxy;
use crate::helpers::standby::Replicated;
use crate::metrics::scraped;

/// Long enough that no background check runs during a test (so the proxies count only the
/// lookups); the check at start still runs.
const NO_RECHECK: Duration = Duration::from_secs(3600);

fn through(proxy: &PgProxy, options: &PgConnectOptions) -> PgConnectOptions {
    options
        .clone()
        .host("127.0.0.1")
        .port(proxy.port)
        .ssl_mode(PgSslMode::Disable)
}

/// A primary and its standby, each behind a counting proxy: (pair, primary's, standby's).
async fn proxied_pair() -> (Replicated, PgProxy, PgProxy) {
    let pair = Replicated::start().await;
    let primary = PgProxy::start(([127, 0, 0, 1], pair.primary_port()).into()).await;
    let standby = PgProxy::start(([127, 0, 0, 1], pair.standby_port).into()).await;
    (pair, primary, standby)
}

/// The app over the pair's primary, with its standby as the one replica; both through
/// `proxies` (primary, standby) when given.
async fn spawn_replicated(
    pair: &Replicated,
    proxies: Option<(&PgProxy, &PgProxy)>,
    configure: impl FnOnce(&mut AppOptions),
) -> TestApp {
    let (primary, standby) = match proxies {
        Some((primary, standby)) => (
            through(primary, &pair.database),
            through(standby, &pair.standby()),
        ),
        None => (pair.database.clone(), pair.standby()),
    };
    spawn_app_on(pair.test_database(), |o| {
        o.lookup = Lookup::Single;
        o.migrate = false;
        o.database.connect = primary;
        o.database.replicas = vec![standby];
        o.database.replica_check_interval = NO_RECHECK;
        o.database.replica_max_lag = NO_RECHECK;
        configure(o);
    })
    .await
}

fn statements(target: &str) -> String {
    format!("instauth_sql_statements_total{{query=\"agents_by_instance_id\",target=\"{target}\"}}")
}

/// Statements each proxy saw while `request` ran: (primary, standby).
async fn counted<T>(
    proxies: (&PgProxy, &PgProxy),
    request: impl Future<Output = T>,
) -> (T, (usize, usize)) {
    let before = (proxies.0.statements(), proxies.1.statements());
    let answer = request.await;
    let after = (proxies.0.statements(), proxies.1.statements());
    (answer, (after.0 - before.0, after.1 - before.1))
}

async fn standby_sees(pair: &Replicated, instance_id: &str) -> i64 {
    let mut conn = <PgConnection as sqlx::Connection>::connect_with(&pair.standby())
        .await
        .expect("standby");
    sqlx::query_scalar("SELECT count(*) FROM workspace_agents WHERE auth_instance_id = $1")
        .bind(instance_id)
        .fetch_one(&mut conn)
        .await
        .expect("count on the standby")
}

#[tokio::test]
async fn lookups_land_on_the_standby_and_replication_lag_never_turns_an_agent_away() {
    let (pair, primary, standby) = proxied_pair().await;
    let proxies = (&primary, &standby);
    let app = spawn_replicated(&pair, Some(proxies), |_| {}).await;
    assert_eq!(
        scraped(&app, "instauth_db_replica_usable{target=\"replica-0\"}").await,
        Some(1.0)
    );

    let old = app.seed().live_agent("dev", "i-old").await;
    let (pair_build, pair_agents) = app.seed().live_agents("i-pair", &["alpha"]).await;
    pair.wait_until_caught_up().await;
    let (ok, cost) = counted(proxies, app.aws("i-old", None)).await;
    assert_eq!(ok.token(), old.token());
    assert_eq!(cost, (0, 1), "an agent the standby has is its answer alone");
    assert_eq!(
        ok.header("server-timing")
            .map(|t| t.ends_with("desc=\"1 query\"")),
        Some(true)
    );

    // Replay paused: what the primary writes now reaches the standby but is not replayed.
    pair.pause_replay().await;
    let new = app.seed().live_agent("dev", "i-new").await;
    let beta = app
        .seed()
        .agent(pair_build.resource_id, "beta", "i-pair")
        .await;
    pair.wait_until_behind().await;
    assert_eq!(standby_sees(&pair, "i-new").await, 0, "the standby lags");

    let (fresh, cost) = counted(proxies, app.aws("i-new", None)).await;
    assert_eq!(
        fresh.token(),
        new.token(),
        "created after the replay stopped, still in"
    );
    assert_eq!(cost, (1, 1), "one statement on each");
    assert_eq!(
        fresh
            .header("server-timing")
            .map(|t| t.ends_with("desc=\"2 queries\"")),
        Some(true),
        "{fresh:?}"
    );
    // A name the standby does not know yet is asked of the primary too; one it knows is not.
    let (named, cost) = counted(proxies, app.aws("i-pair", Some("beta"))).await;
    assert_eq!((named.token(), cost), (beta.token(), (1, 1)));
    let (known, cost) = counted(proxies, app.aws("i-pair", Some("alpha"))).await;
    assert_eq!((known.token(), cost), (pair_agents[0].token(), (0, 1)));
    // Only the primary says 404.
    let (missing, cost) = counted(proxies, app.aws("i-nowhere", None)).await;
    missing.assert_error(404, "Instance with id \"i-nowhere\" not found.");
    assert_eq!(cost, (1, 1));

    assert_eq!(scraped(&app, &statements("replica-0")).await, Some(5.0));
    assert_eq!(scraped(&app, &statements("primary")).await, Some(3.0));
    let fallbacks = "instauth_db_replica_fallbacks_total{reason=\"miss\",target=\"replica-0\"}";
    assert_eq!(scraped(&app, fallbacks).await, Some(3.0));
    let outcome = |outcome: &str, target: &str| {
        format!(
            "instauth_auth_outcomes_total{{outcome=\"{outcome}\",provider=\"aws\",target=\"{target}\"}}"
        )
    };
    assert_eq!(scraped(&app, &outcome("ok", "replica-0")).await, Some(2.0));
    assert_eq!(scraped(&app, &outcome("ok", "primary")).await, Some(2.0));
    assert_eq!(
        scraped(&app, &outcome("not_found", "primary")).await,
        Some(1.0)
    );
    assert_eq!(
        scraped(&app, &outcome("not_found", "replica-0")).await,
        Some(0.0)
    );
    let open = "instauth_db_pool_open_connections{target=\"replica-0\"}";
    assert!(scraped(&app, open).await.unwrap_or_default() >= 1.0);

    // The same standby, still paused behind, with a lag limit it exceeds: skipped from the
    // start, every lookup on the primary.
    let strict = spawn_replicated(&pair, Some(proxies), |o| {
        o.database.replica_max_lag = Duration::from_millis(1);
    })
    .await;
    assert_eq!(
        scraped(&strict, "instauth_db_replica_usable{target=\"replica-0\"}").await,
        Some(0.0)
    );
    let (ok, cost) = counted(proxies, strict.aws("i-old", None)).await;
    assert_eq!((ok.token(), cost), (old.token(), (1, 0)));

    // Replay resumed and caught up: however long ago the last commit replayed, nothing is
    // waiting to be replayed, so an idle primary is no lag even under a 1 ms limit.
    let mut conn = <PgConnection as sqlx::Connection>::connect_with(&pair.standby())
        .await
        .expect("standby");
    sqlx::Executor::execute(&mut conn, "SELECT pg_wal_replay_resume()")
        .await
        .expect("resume");
    pair.wait_until_caught_up().await;
    let idle = spawn_replicated(&pair, Some(proxies), |o| {
        o.database.replica_max_lag = Duration::from_millis(1);
    })
    .await;
    assert_eq!(
        scraped(&idle, "instauth_db_replica_usable{target=\"replica-0\"}").await,
        Some(1.0)
    );
    assert_eq!(
        scraped(
            &idle,
            "instauth_db_replica_lag_seconds{target=\"replica-0\"}"
        )
        .await,
        Some(0.0)
    );
    let (ok, cost) = counted(proxies, idle.aws("i-new", None)).await;
    assert_eq!((ok.token(), cost), (new.token(), (0, 1)));
}

#[tokio::test]
async fn with_the_standby_stopped_auths_still_succeed() {
    let pair = Replicated::start().await;
    let app = spawn_replicated(&pair, None, |_| {}).await;
    let agent = app.seed().live_agent("dev", "i-kept").await;
    pair.wait_until_caught_up().await;
    assert_eq!(standby_sees(&pair, "i-kept").await, 1, "replayed");
    assert_eq!(app.aws("i-kept", None).await.token(), agent.token());
    assert_eq!(scraped(&app, &statements("replica-0")).await, Some(1.0));
    assert_eq!(scraped(&app, &statements("primary")).await, Some(0.0));

    pair.stop_standby();
    // The first lookup finds the standby gone and is asked of the primary; the standby is
    // then skipped, so the next goes to the primary alone.
    assert_eq!(app.aws("i-kept", None).await.token(), agent.token());
    let errors = "instauth_db_replica_fallbacks_total{reason=\"error\",target=\"replica-0\"}";
    assert_eq!(scraped(&app, errors).await, Some(1.0));
    assert_eq!(
        scraped(&app, "instauth_db_replica_usable{target=\"replica-0\"}").await,
        Some(0.0)
    );
    assert_eq!(app.aws("i-kept", None).await.token(), agent.token());
    assert_eq!(
        scraped(&app, errors).await,
        Some(1.0),
        "a skipped replica is not tried"
    );
    assert_eq!(scraped(&app, &statements("primary")).await, Some(2.0));
    assert_eq!(app.get("/readyz").await.status, 200);
}

/// A standby that goes silent while in use (frozen host, partition: no answer, no reset)
/// costs the request that meets it one acquire timeout at most, then the primary answers it,
/// and the standby is skipped: the next request goes to the primary alone.
#[tokio::test]
async fn a_standby_that_goes_silent_in_use_costs_one_request_the_acquire_timeout_at_most() {
    logs::capture();
    let (pair, primary, standby) = proxied_pair().await;
    let proxies = (&primary, &standby);
    let acquire = Duration::from_millis(400);
    let app = spawn_replicated(&pair, Some(proxies), |o| {
        o.database.acquire_timeout = acquire;
        // The statement timeout is the server's: a silent server never applies it.
        o.database.statement_timeout = Duration::from_secs(30);
    })
    .await;
    let agent = app.seed().live_agent("dev", "i-frozen").await;
    pair.wait_until_caught_up().await;
    let (ok, cost) = counted(proxies, app.aws("i-frozen", None)).await;
    assert_eq!(ok.token(), agent.token());
    assert_eq!(cost, (0, 1), "the standby answers while it can");

    standby.stall(true);
    let started = std::time::Instant::now();
    let (ok, cost) = counted(proxies, app.aws("i-frozen", None)).await;
    let waited = started.elapsed();
    assert_eq!(ok.token(), agent.token(), "the primary answers instead");
    assert_eq!(cost.0, 1, "one statement on the primary");
    // Bounded by the acquire timeout plus the deadline's margin (db/mod.rs), not by the
    // 30 s statement timeout: the request did not wait for the silent server to answer.
    assert!(
        waited < Duration::from_secs(5),
        "a silent standby held the request for {waited:?}"
    );
    let errors = "instauth_db_replica_fallbacks_total{reason=\"error\",target=\"replica-0\"}";
    assert_eq!(scraped(&app, errors).await, Some(1.0));
    assert_eq!(
        scraped(&app, "instauth_db_replica_usable{target=\"replica-0\"}").await,
        Some(0.0),
        "the silent standby is skipped"
    );
    // The line names the replica as every test's first one (replica-0), but this message is
    // logged only when a lookup fails on a replica in use.
    let lines = logs::wait_for(
        "replica failed a lookup; skipped until it answers its check",
        "level",
        "WARN",
        1,
    )
    .await;
    assert!(
        !lines.is_empty(),
        "no log line for the failed replica lookup"
    );

    let (ok, cost) = counted(proxies, app.aws("i-frozen", None)).await;
    assert_eq!(ok.token(), agent.token());
    assert_eq!(cost, (1, 0), "a skipped standby is not tried");
    standby.stall(false);
}

/// Coalescing on a replica: a burst of distinct lookups on a one-connection standby pool shares
/// statements there, each waiter gets exactly its own token, and the primary sees none of it.
#[tokio::test]
async fn a_burst_is_coalesced_on_the_standby_and_each_agent_gets_its_own_token() {
    const AGENTS: usize = 120;
    let (pair, primary, standby) = proxied_pair().await;
    let proxies = (&primary, &standby);
    let app = spawn_replicated(&pair, Some(proxies), |o| {
        o.database.max_connections = 1;
        o.database.batch_max = 64;
    })
    .await;
    let mut expected = Vec::with_capacity(AGENTS);
    for i in 0..AGENTS {
        let instance = format!("i-burst-{i}");
        let agent = app.seed().live_agent("dev", &instance).await;
        expected.push((instance, agent.token()));
    }
    pair.wait_until_caught_up().await;
    let (answers, cost) = counted(
        proxies,
        futures_util::future::join_all(
            expected.iter().map(|(instance, _)| app.aws(instance, None)),
        ),
    )
    .await;
    for ((instance, token), answer) in expected.iter().zip(&answers) {
        assert_eq!(&answer.token(), token, "{instance}");
    }
    assert_eq!(
        cost.0, 0,
        "the primary is not asked: every agent is on the standby"
    );
    assert!(
        cost.1 < AGENTS,
        "{} statements on the standby for {AGENTS} lookups: not coalesced",
        cost.1
    );
    let batched = "instauth_db_lookups_total";
    assert!(
        scraped(&app, batched)
            .await
            .is_some_and(|n| n >= AGENTS as f64),
        "{batched}"
    );
}

/// A standby cut off from its primary has replayed everything it received, so its receive and
/// replay positions agree forever; without a running WAL receiver that is not "caught up", and
/// once its last replayed commit is older than `--replica-max-lag` it is skipped.
#[tokio::test]
async fn a_standby_cut_off_from_its_primary_is_skipped_after_the_max_lag() {
    let pair = Replicated::start().await;
    let app = spawn_replicated(&pair, None, |o| {
        o.database.replica_check_interval = Duration::from_millis(100);
        o.database.replica_max_lag = Duration::from_secs(1);
    })
    .await;
    let agent = app.seed().live_agent("dev", "i-cut").await;
    pair.wait_until_caught_up().await;
    assert_eq!(app.aws("i-cut", None).await.token(), agent.token());
    assert_eq!(scraped(&app, &statements("replica-0")).await, Some(1.0));

    pair.cut_off_standby().await;
    let usable = "instauth_db_replica_usable{target=\"replica-0\"}";
    let mut skipped = false;
    for _ in 0..100 {
        if scraped(&app, usable).await == Some(0.0) {
            skipped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        skipped,
        "a standby with no WAL receiver stayed usable 10 s past a 1 s max lag"
    );
    assert_eq!(app.aws("i-cut", None).await.token(), agent.token());
    assert_eq!(
        scraped(&app, &statements("primary")).await,
        Some(1.0),
        "the primary answers instead"
    );
}

/// A replica whose pool is full is not a silent one: the lookup that cannot get a connection
/// in time is asked of the primary, and the replica stays in use.
#[tokio::test]
async fn a_full_replica_pool_sends_one_lookup_to_the_primary_and_keeps_the_replica() {
    let (pair, primary, standby) = proxied_pair().await;
    let proxies = (&primary, &standby);
    let app = spawn_replicated(&pair, Some(proxies), |o| {
        o.database.max_connections = 1;
        o.database.batch_max = 1;
        o.database.acquire_timeout = Duration::from_secs(4);
        // The held statement must outlive the second lookup's wait for the connection, so
        // the statement's own bound (statement timeout + 0.5 s) is set far above it.
        o.database.statement_timeout = Duration::from_secs(10);
    })
    .await;
    let first = app.seed().live_agent("dev", "i-busy-1").await;
    let second = app.seed().live_agent("dev", "i-busy-2").await;
    pair.wait_until_caught_up().await;
    // Warm the standby's one connection, so the held lookup needs no connect.
    assert_eq!(app.aws("i-busy-1", None).await.token(), first.token());

    // The first lookup's statement is held at the standby's proxy: its connection is busy.
    standby.hold_binds();
    let binds = standby.binds();
    let held = app.aws("i-busy-1", None);
    let meanwhile = async {
        for _ in 0..500 {
            if standby.binds() > binds {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            standby.binds() > binds,
            "the first lookup reached the standby"
        );
        // The second waits for that connection, gives up (a pool timeout), and the primary
        // answers it.
        assert_eq!(app.aws("i-busy-2", None).await.token(), second.token());
        assert_eq!(scraped(&app, &statements("primary")).await, Some(1.0));
        assert_eq!(
            scraped(&app, "instauth_db_replica_usable{target=\"replica-0\"}").await,
            Some(1.0),
            "a full pool is passing trouble: the replica stays in use"
        );
        standby.release_binds();
    };
    let (held, ()) = tokio::join!(held, meanwhile);
    assert_eq!(held.token(), first.token());
    assert_eq!(scraped(&app, &statements("replica-0")).await, Some(2.0));
}

#[tokio::test]
async fn ready_while_a_replica_answers_with_the_primary_stopped() {
    let pair = Replicated::start().await;
    let app = spawn_replicated(&pair, None, |o| {
        o.database.acquire_timeout = Duration::from_millis(500);
    })
    .await;
    let agent = app.seed().live_agent("dev", "i-standing").await;
    pair.wait_until_caught_up().await;
    app.pool.close().await;

    pair.stop_primary();
    assert_eq!(app.get("/readyz").await.status, 200, "the standby answers");
    assert_eq!(app.aws("i-standing", None).await.token(), agent.token());
    // A miss needs the primary, which is gone: 503, never a false 404.
    let missing = app.aws("i-unknown", None).await;
    missing.assert_error(503, "Internal error fetching workspace agent.");
    assert_eq!(missing.header("retry-after"), Some("1"));

    pair.stop_standby();
    let unready = app.get("/readyz").await;
    assert_eq!(unready.status, 503, "{unready:?}");
}

/// A TCP listener that accepts connections and never says a word.
async fn silent_server() -> (tokio::task::JoinHandle<()>, u16) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (task, port)
}

/// Replicas that cannot serve lookups (a missing database, missing tables, a primary, a host
/// that never answers) are skipped from the start: every lookup goes to the primary alone,
/// and none waits for them.
#[tokio::test]
async fn replicas_that_cannot_serve_are_skipped_from_the_start() {
    logs::capture();
    let database = TestDatabase::create_migrated().await;
    let unmigrated = TestDatabase::create().await;
    let (silent, silent_port) = silent_server().await;
    let replicas = vec![
        database
            .options
            .clone()
            .database("instauth_no_such_database"),
        unmigrated.options.clone(),
        database.options.clone(),
        database.options.clone().host("127.0.0.1").port(silent_port),
    ];
    // What each is reported as at start (by name: no other test has a replica-1 to 3, nor a
    // replica-0 the check refuses).
    let reports = [
        (
            "replica-0",
            "ERROR",
            "replica refuses the check for a reason retrying cannot fix; skipped",
        ),
        (
            "replica-1",
            "ERROR",
            "replica refuses the check for a reason retrying cannot fix; skipped",
        ),
        (
            "replica-2",
            "ERROR",
            "replica is not a standby (pg_is_in_recovery() is false); skipped",
        ),
        ("replica-3", "WARN", "replica does not answer; skipped"),
    ];
    let app = spawn_app_on(database, |o| {
        o.lookup = Lookup::Single;
        o.migrate = false;
        o.database.acquire_timeout = Duration::from_millis(500);
        o.database.replicas = replicas;
        o.database.replica_check_interval = NO_RECHECK;
    })
    .await;
    let agent = app.seed().live_agent("dev", "i-primary").await;
    assert_eq!(app.aws("i-primary", None).await.token(), agent.token());
    let missing = app.aws("i-absent", None).await;
    missing.assert_error(404, "Instance with id \"i-absent\" not found.");
    assert_eq!(scraped(&app, &statements("primary")).await, Some(2.0));
    for replica in 0..4 {
        let target = format!("replica-{replica}");
        let usable = format!("instauth_db_replica_usable{{target=\"{target}\"}}");
        assert_eq!(scraped(&app, &usable).await, Some(0.0), "{target}");
        assert_eq!(
            scraped(&app, &statements(&target)).await,
            Some(0.0),
            "{target}"
        );
    }
    for (replica, level, message) in reports {
        let lines = logs::wait_for(message, "replica", replica, 1).await;
        assert!(!lines.is_empty(), "{replica}: {message}");
        assert_eq!(lines[0]["level"], level, "{lines:#?}");
    }
    drop(unmigrated);
    silent.abort();
}
