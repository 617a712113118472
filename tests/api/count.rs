//! The central guarantee: every request costs exactly one SQL statement, whatever the number of
//! candidates, counted on the wire between the service and PostgreSQL.

use std::time::Duration;

use crate::helpers::app::spawn_app_behind_proxy;

#[tokio::test]
async fn one_statement_per_request_for_0_1_2_and_5_candidates() {
    let (app, proxy) = spawn_app_behind_proxy().await;

    // Candidates in different shapes: one agent; two agents of one build; five agents over
    // five workspaces, each with a stale earlier build and a template-import twin on the
    // same instance (which the query filters out, not the service).
    app.seed().live_agent("dev", "i-one").await;
    app.seed()
        .coder_workspace("i-two", &["alpha", "beta"])
        .await;
    for n in 0..5 {
        let (first, _) = app.seed().coder_workspace("i-five", &["old"]).await;
        let latest = app.seed().build(first.workspace_id, 2).await;
        app.seed()
            .agent(latest.resource_id, &format!("agent-{n}"), "i-five")
            .await;
    }

    let cases = [
        ("i-none", None, 404),
        ("i-none", Some("dev"), 404),
        ("i-one", None, 200),
        ("i-one", Some("dev"), 200),
        ("i-one", Some("missing"), 404),
        ("i-two", None, 409),
        ("i-two", Some("beta"), 200),
        ("i-five", None, 409),
        ("i-five", Some("agent-3"), 200),
        ("i-five", Some("old"), 404),
    ];
    let start = proxy.statements();
    // Twice: the first pass prepares the statement on the connection, the second reuses it.
    for pass in 0..2 {
        for (instance, name, status) in cases {
            let before = proxy.statements();
            let response = app.aws(instance, name).await;
            assert_eq!(response.status, status, "{instance} {name:?}: {response:?}");
            assert_eq!(
                proxy.statements() - before,
                1,
                "pass {pass}: {instance} with name {name:?} must cost exactly one statement"
            );
        }
    }
    assert_eq!(proxy.statements() - start, 2 * cases.len());
    assert!(
        proxy.parses() >= 1,
        "the proxy must see the statement being prepared"
    );
}

#[tokio::test]
async fn rejected_requests_cost_no_statement() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    let before = proxy.statements();
    let path = crate::helpers::app::AWS_PATH;
    assert_eq!(app.post_raw(path, "nope").await.status, 400);
    assert_eq!(app.post_raw(path, "{}").await.status, 400);
    assert_eq!(app.aws_signed("QUJD", "{}").await.status, 401);
    let document = "{}";
    let signature = crate::helpers::signing::aws_key().sign_b64(document.as_bytes());
    assert_eq!(app.aws_signed(&signature, document).await.status, 404);
    assert_eq!(proxy.statements(), before);
}

#[tokio::test]
async fn azure_and_google_cost_one_statement_when_verified_and_none_when_not() {
    use crate::helpers::app::{AZURE_PATH, GOOGLE_PATH};
    use crate::helpers::{azure, google};

    let (app, proxy) =
        crate::helpers::app::spawn_app_behind_proxy_with(azure::trust_test_pki).await;
    app.seed().coder_workspace("vm-count", &["dev"]).await;
    app.seed().coder_workspace("g-count", &["dev"]).await;

    let before = proxy.statements();
    assert_eq!(
        app.azure(&azure::attested("vm-count"), None).await.status,
        200
    );
    assert_eq!(
        app.google(&google::token_for("g-count"), None).await.status,
        200
    );
    assert_eq!(proxy.statements() - before, 2);

    let before = proxy.statements();
    assert_eq!(app.post_raw(AZURE_PATH, "{}").await.status, 400);
    assert_eq!(app.azure("AAAA", None).await.status, 401);
    assert_eq!(app.post_raw(GOOGLE_PATH, "{}").await.status, 400);
    assert_eq!(app.google("a.b.c", None).await.status, 401);
    let mut claims = google::claims("x");
    claims["google"] = serde_json::json!("not an object");
    assert_eq!(app.google(&google::token(&claims), None).await.status, 400);
    claims["google"] = serde_json::Value::Null;
    assert_eq!(app.google(&google::token(&claims), None).await.status, 404);
    assert_eq!(proxy.statements(), before);
}

/// The statement is also the request's only round trip: the connection goes back to the pool
/// as soon as the answer is read, with no ping on the way (sqlx's own pool sends one per
/// return, which kept every connection busy for a second round trip per request).
#[tokio::test]
async fn each_request_is_one_round_trip_to_the_database() {
    let (app, proxy) = spawn_app_behind_proxy().await;
    app.seed().coder_workspace("i-trip", &["dev"]).await;
    // The first request opens the connection and prepares the statement.
    assert_eq!(app.aws("i-trip", None).await.status, 200);
    // Whatever the pool does with a returned connection happens in the background: leave it
    // time to show on the wire before counting, and again at the end.
    let settle = Duration::from_millis(300);
    tokio::time::sleep(settle).await;
    let (syncs, statements) = (proxy.syncs(), proxy.statements());
    for _ in 0..5 {
        assert_eq!(app.aws("i-trip", None).await.status, 200);
    }
    assert_eq!(app.aws("i-unknown", None).await.status, 404);
    tokio::time::sleep(settle).await;
    assert_eq!(proxy.statements() - statements, 6);
    assert_eq!(
        proxy.syncs() - syncs,
        6,
        "one round trip per request, the statement's own"
    );
}

/// The counter counts statements, not messages: a simple query carrying two statements is two,
/// and a function call (`F`, no SQL at all) is one. A client speaks the protocol to the proxy,
/// which forwards to a listener that only reads: no database, so nothing else is counted.
#[tokio::test]
async fn the_proxy_counts_statements_not_messages() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use crate::helpers::pgproxy::{PgProxy, statements_in_query};

    for (sql, statements) in [
        ("SELECT 1", 1),
        ("SELECT 1;", 1),
        ("SELECT 1; SELECT 2", 2),
        ("SELECT 1;; ;SELECT 2;", 2),
        ("SELECT ';' AS \"a;b\"", 1),
        ("SELECT 'it''s; one'", 1),
        ("SELECT $$;$$; SELECT $tag$ ; $tag$", 2),
        ("-- a comment; still one\nSELECT 1", 1),
        ("/* nested /* ; */ ; */ SELECT 1; /* trailing */", 1),
        ("BEGIN; SELECT 1; COMMIT", 3),
        ("", 0),
        ("  ; -- nothing\n", 0),
    ] {
        assert_eq!(statements_in_query(sql), statements, "{sql:?}");
    }

    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = upstream.local_addr().expect("address");
    tokio::spawn(async move {
        let (mut server, _) = upstream.accept().await.expect("accept");
        let mut sink = Vec::new();
        let _ = server.read_to_end(&mut sink).await;
    });
    let proxy = PgProxy::start(address).await;
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", proxy.port))
        .await
        .expect("connect to the proxy");
    let message = |kind: u8, body: &[u8]| {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&(u32::try_from(body.len()).expect("short") + 4).to_be_bytes());
        bytes.extend_from_slice(body);
        bytes
    };
    // Startup packet: length, protocol 3.0, no parameters.
    let mut wire = vec![0, 0, 0, 9, 0, 3, 0, 0, 0];
    wire.extend(message(b'Q', b"SELECT 1; SELECT 2\0"));
    // FunctionCall: function oid, no argument formats, no arguments, text result.
    wire.extend(message(b'F', &[0, 0, 4, 210, 0, 0, 0, 0, 0, 0]));
    wire.extend(message(b'E', b"\0\0\0\0\0"));
    wire.extend(message(b'S', b""));
    client.write_all(&wire).await.expect("send");
    // The Sync is the last message: once it is counted, everything before it was.
    for _ in 0..1000 {
        if proxy.syncs() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.syncs(), 1, "the proxy forwarded everything");
    assert_eq!(
        proxy.statements(),
        4,
        "two statements in one Query, one function call, one Execute"
    );
}

/// `--db-test-before-acquire` pings each connection before handing it out: one more round trip
/// per request, and still one statement (the ping is a bare Sync).
#[tokio::test]
async fn test_before_acquire_adds_exactly_one_round_trip_per_request() {
    let (app, proxy) = crate::helpers::app::spawn_app_behind_proxy_with(|options| {
        options.lookup = instauth::auth::lookup::Lookup::Single;
        options.database.test_before_acquire = true;
        options.database.max_connections = 1;
    })
    .await;
    app.seed().coder_workspace("i-ping", &["dev"]).await;
    assert_eq!(app.aws("i-ping", None).await.status, 200);
    assert_eq!(
        crate::metrics::wait_for(
            &app,
            "instauth_db_pool_in_use_connections{target=\"primary\"}",
            0.0
        )
        .await,
        Some(0.0)
    );
    let (syncs, statements) = (proxy.syncs(), proxy.statements());
    for _ in 0..5 {
        assert_eq!(app.aws("i-ping", None).await.status, 200);
    }
    assert_eq!(proxy.statements() - statements, 5, "one statement each");
    assert_eq!(
        proxy.syncs() - syncs,
        10,
        "two round trips per request: the ping, then the statement"
    );
}
