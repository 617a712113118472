//! The request path's pool (`instauth::db::Pool`), against a real server: which connections it
//! reuses, which it replaces, and what it keeps open.

use std::time::Duration;

use sqlx::Row as _;
use sqlx::postgres::PgSslMode;

use instauth::db::DatabaseSettings;
use instauth::db::{Lease, Pool};

use crate::helpers::pg::TestDatabase;
use crate::helpers::pgproxy::PgProxy;

async fn backend_pid(lease: &mut Lease) -> i32 {
    let row = sqlx::query("SELECT pg_backend_pid()")
        .fetch_one(lease.start())
        .await
        .expect("pid");
    lease.settle();
    row.get(0)
}

async fn pool_of_one() -> (TestDatabase, Pool) {
    let database = TestDatabase::create().await;
    let mut settings = DatabaseSettings::new(database.options.clone());
    settings.max_connections = 1;
    (database, Pool::new(&settings))
}

#[tokio::test]
async fn a_settled_connection_is_reused_as_it_is() {
    let (_database, pool) = pool_of_one().await;
    let first = backend_pid(&mut pool.get().await.expect("lease")).await;
    let second = backend_pid(&mut pool.get().await.expect("lease")).await;
    assert_eq!(first, second, "the same server connection, no reconnect");
    pool.close().await;
}

/// A request cut off mid-exchange (its deadline fired) leaves the connection in an unknown
/// state, perhaps with the server still working on it: the next request must not wait on it.
#[tokio::test]
async fn a_connection_whose_exchange_did_not_finish_is_replaced() {
    let (_database, pool) = pool_of_one().await;
    let first = backend_pid(&mut pool.get().await.expect("lease")).await;
    {
        let mut lease = pool.get().await.expect("lease");
        let slow = sqlx::query("SELECT pg_sleep(5)").execute(lease.start());
        assert!(
            tokio::time::timeout(Duration::from_millis(100), slow)
                .await
                .is_err(),
            "cut off"
        );
    }
    // The abandoned backend is still sleeping; a new one answers at once.
    let second = backend_pid(&mut pool.get().await.expect("lease")).await;
    assert_ne!(first, second, "a new server connection");
    pool.close().await;
}

#[tokio::test]
async fn closing_the_pool_refuses_further_use() {
    let (_database, pool) = pool_of_one().await;
    backend_pid(&mut pool.get().await.expect("lease")).await;
    pool.close().await;
    assert_eq!(pool.status().size, 0);
    assert!(matches!(pool.get().await, Err(sqlx::Error::PoolClosed)));
}

/// A database and a proxy in front of it that counts the pool's connections and Terminates.
async fn behind_proxy() -> (TestDatabase, PgProxy, DatabaseSettings) {
    let database = TestDatabase::create().await;
    let upstream =
        tokio::net::lookup_host((database.options.get_host(), database.options.get_port()))
            .await
            .expect("resolve database host")
            .next()
            .expect("an address");
    let proxy = PgProxy::start(upstream).await;
    let settings = DatabaseSettings::new(
        database
            .options
            .clone()
            .host("127.0.0.1")
            .port(proxy.port)
            .ssl_mode(PgSslMode::Disable),
    );
    (database, proxy, settings)
}

/// Polls (every 10 ms, 10 s at most) until `done` holds; `what` and `state` say what was not
/// reached.
async fn until(what: &str, done: impl Fn() -> bool, state: impl Fn() -> String) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}: {}", state());
}

fn counters(proxy: &PgProxy, pool: &Pool) -> String {
    format!(
        "connections {}, ended {}, terminates {}, pool {:?}",
        proxy.connections(),
        proxy.ended_connections(),
        proxy.terminates(),
        pool.status()
    )
}

/// Issue 14, item 3: connections idle past the idle timeout are closed with a Terminate,
/// down to `min_connections`, which stay open however long they sit unused.
#[tokio::test]
async fn idle_connections_beyond_the_minimum_are_closed_politely() {
    let (_database, proxy, mut settings) = behind_proxy().await;
    settings.max_connections = 3;
    settings.min_connections = 1;
    settings.idle_timeout = Duration::from_millis(300);
    let pool = Pool::new(&settings);
    let mut leases = Vec::new();
    for _ in 0..3 {
        let mut lease = pool.get().await.expect("lease");
        backend_pid(&mut lease).await;
        leases.push(lease);
    }
    drop(leases);
    assert_eq!(proxy.connections(), 3, "{}", counters(&proxy, &pool));
    until(
        "the idle connections beyond the minimum to close",
        || proxy.ended_connections() == 2,
        || counters(&proxy, &pool),
    )
    .await;
    assert_eq!(proxy.terminates(), 2, "each closed with a Terminate");
    assert_eq!(pool.status().size, 1);
    assert_eq!(proxy.open_connections(), 1);
    assert_eq!(
        proxy.connections(),
        3,
        "the kept connection was not reopened"
    );
    pool.close().await;
    until(
        "the last connection to close",
        || proxy.ended_connections() == 3,
        || counters(&proxy, &pool),
    )
    .await;
    assert_eq!(
        proxy.terminates(),
        3,
        "closing the pool sends Terminate too"
    );
}

/// Issue 14, item 3: `min_connections` are opened before any request, each is replaced
/// (Terminate, then a new connection) when it reaches the maximum lifetime, and the pool is
/// topped back up to the minimum.
#[tokio::test]
async fn the_minimum_is_opened_ahead_and_topped_up_after_lifetime_closes() {
    let (_database, proxy, mut settings) = behind_proxy().await;
    settings.max_connections = 4;
    settings.min_connections = 2;
    settings.max_lifetime = Duration::from_millis(400);
    let pool = Pool::new(&settings);
    until(
        "the minimum to open ahead of any request",
        || proxy.connections() == 2 && pool.status().size == 2,
        || counters(&proxy, &pool),
    )
    .await;
    assert_eq!(proxy.terminates(), 0);
    until(
        "both to be replaced at the end of their lifetime",
        || {
            let pool = pool.status();
            proxy.ended_connections() >= 2
                && proxy.connections() >= 4
                && proxy.open_connections() == 2
                && pool.size == 2
                && pool.available == 2
        },
        || counters(&proxy, &pool),
    )
    .await;
    // A Terminate reaches the proxy before the connection's end does, so every ended
    // connection having sent one reads as: no more ends than Terminates.
    let (ended, terminates) = (proxy.ended_connections(), proxy.terminates());
    assert!(ended <= terminates, "{}", counters(&proxy, &pool));
    pool.close().await;
}
