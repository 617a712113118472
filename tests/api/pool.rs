//! The request path's pool (`instauth::db::Pool`), against a real server: which connections it
//! reuses, which it replaces, and what it keeps open.

use std::time::Duration;

use sqlx::Row as _;

use instauth::db::DatabaseSettings;
use instauth::db::{Lease, Pool};

use crate::helpers::pg::TestDatabase;

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
