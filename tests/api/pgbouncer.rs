//! The service through a real PgBouncer (Debian's 1.18) in transaction pooling mode, as the
//! read-only role of the DBA docs, with the settings docs/dba.md gives for it:
//! `--db-statement-timeout 0` (the role carries the timeout) and
//! `--db-statement-cache-capacity 0` (unnamed statements).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use sqlx::{Connection as _, Executor as _, PgConnection};

use crate::helpers::app::{TestApp, spawn_app_on};
use crate::helpers::pg::TestDatabase;
use crate::helpers::pgbouncer::{BouncerConfig, PgBouncer};
use crate::helpers::pgproxy::PgProxy;
use crate::helpers::roles::ReadOnlyRole;

/// A migrated database, its read-only role, and PgBouncer in front of it.
async fn bouncer_for_a_coder_database() -> (TestDatabase, ReadOnlyRole, PgBouncer) {
    let database = TestDatabase::create_migrated().await;
    let role = ReadOnlyRole::create(&database).await;
    let bouncer = PgBouncer::start(
        &database.options,
        &[(&role.name, &role.password)],
        &BouncerConfig::default(),
    );
    (database, role, bouncer)
}

/// `serve --no-migrate --db-statement-timeout 0 --db-statement-cache-capacity 0`, connecting
/// with `connect`.
async fn spawn_documented_app(
    database: TestDatabase,
    connect: sqlx::postgres::PgConnectOptions,
    max_connections: u32,
) -> TestApp {
    spawn_app_on(database, |options| {
        options.migrate = false;
        options.database.connect = connect;
        options.database.statement_timeout = Duration::ZERO;
        options.database.statement_cache_capacity = 0;
        options.database.max_connections = max_connections;
        // Two SCRAM logins per new connection (client to PgBouncer, PgBouncer to server) can
        // take seconds on a loaded machine; these tests are about PgBouncer, not timeouts.
        options.database.acquire_timeout = Duration::from_secs(30);
    })
    .await
}

#[tokio::test]
async fn authenticates_through_pgbouncer_in_transaction_mode() {
    let (database, role, bouncer) = bouncer_for_a_coder_database().await;
    let through_bouncer = bouncer.connect_options(&role.name, &role.password);
    // More client connections than PgBouncer has server connections (2), so server
    // connections change hands between requests all the time.
    let app = spawn_documented_app(database, through_bouncer, 8).await;
    let (_, single) = app.seed().coder_workspace("i-bounced", &["dev"]).await;
    let (_, pair) = app
        .seed()
        .coder_workspace("i-pair", &["alpha", "beta"])
        .await;

    assert_eq!(app.aws("i-bounced", None).await.token(), single[0].token());

    let mut failures = Vec::new();
    for round in 0..10 {
        let app = &app;
        let responses = join_all((0..24).map(|n| async move {
            let response = match n % 3 {
                0 => app.aws("i-bounced", None).await,
                1 => app.aws("i-pair", Some("beta")).await,
                _ => app.aws("i-nowhere", None).await,
            };
            (n, response)
        }))
        .await;
        for (n, response) in responses {
            let expected = match n % 3 {
                0 => Some(single[0].token()),
                1 => Some(pair[1].token()),
                _ => None,
            };
            let ok = match expected {
                Some(token) => response.status == 200 && response.token() == token,
                None => response.status == 404,
            };
            if !ok {
                failures.push(format!("round {round} request {n}: {response:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures: {failures:#?}\n{}",
        failures.len(),
        bouncer.log()
    );
}

/// The race the re-parse exists for, made deterministic: the client's Bind is held at a proxy
/// while another client pins the server connection that parsed the statement, so PgBouncer
/// must send the Bind to a server connection it opens just for it.
#[tokio::test]
async fn a_bind_routed_to_a_fresh_server_connection_is_parsed_again() {
    let (database, role, bouncer) = bouncer_for_a_coder_database().await;
    let proxy = PgProxy::start(SocketAddr::from(([127, 0, 0, 1], bouncer.port))).await;
    let via_proxy = bouncer
        .connect_options(&role.name, &role.password)
        .port(proxy.port);
    let app = spawn_documented_app(database, via_proxy, 1).await;
    let (_, agents) = app.seed().coder_workspace("i-fresh", &["dev"]).await;
    // Warm up: the app's connection and PgBouncer's first server connection now exist, and that
    // server connection holds the unnamed statement.
    assert_eq!(app.aws("i-fresh", None).await.token(), agents[0].token());
    let parses = proxy.parses();

    proxy.hold_binds();
    let binds = proxy.binds();
    let (response, pinning) = tokio::join!(app.aws("i-fresh", None), async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while proxy.binds() == binds {
            assert!(
                Instant::now() < deadline,
                "the request never reached its Bind"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The Parse is done and its server connection is back in PgBouncer's pool: another
        // client's open transaction takes it.
        let mut other =
            PgConnection::connect_with(&bouncer.connect_options(&role.name, &role.password))
                .await
                .expect("another client through PgBouncer");
        other.execute("BEGIN").await.expect("begin");
        proxy.release_binds();
        other
    });
    assert_eq!(response.token(), agents[0].token(), "{}", bouncer.log());
    assert_eq!(
        proxy.parses() - parses,
        2,
        "parsed, refused at Bind by the fresh server connection (26000), parsed again"
    );
    assert_eq!(proxy.named_parses(), 0);
    pinning.close().await.ok();
}

#[tokio::test]
async fn pgbouncer_refuses_the_default_statement_timeout_parameter() {
    let (database, role, bouncer) = bouncer_for_a_coder_database().await;
    let through_bouncer = bouncer.connect_options(&role.name, &role.password);
    // The defaults send statement_timeout in the startup `options` parameter.
    let app = spawn_app_on(database, |options| {
        options.migrate = false;
        options.database.connect = through_bouncer;
    })
    .await;
    app.seed().coder_workspace("i-refused", &["dev"]).await;
    app.aws("i-refused", None)
        .await
        .assert_error(503, "Internal error fetching workspace agent.");
    let log = bouncer.log();
    assert!(
        log.contains("unsupported startup parameter: options"),
        "{log}"
    );
}
