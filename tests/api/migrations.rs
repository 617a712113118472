//! The embedded migrations (`instauth::db::migrate`) run on a connection of their own, without
//! the request path's `statement_timeout`.

use std::time::Duration;

use sqlx::migrate::Migrate as _;
use sqlx::{Connection as _, PgConnection};

use instauth::db::{DatabaseSettings, migrate};

use crate::helpers::pg::TestDatabase;

/// Issue 14, item 4: with a 20 ms `--db-statement-timeout`, a migration still waits out
/// another migrator's lock (sqlx's advisory lock, as a second replica starting at the same
/// time holds it). The wait is observed on the server: the migration's lock statement has been
/// waiting 50 times the statement timeout, and the migration then succeeds. With the timeout
/// applied, PostgreSQL cancels the wait after 20 ms and the migration fails.
#[tokio::test]
async fn a_migration_waits_for_the_migration_lock_beyond_the_statement_timeout() {
    let database = TestDatabase::create().await;
    let mut other_replica = PgConnection::connect_with(&database.options)
        .await
        .expect("connect");
    other_replica.lock().await.expect("take the migration lock");
    let mut settings = DatabaseSettings::new(database.options.clone());
    settings.statement_timeout = Duration::from_millis(20);
    let migrating = tokio::spawn(async move { migrate(&settings).await });
    let mut watcher = PgConnection::connect_with(&database.options)
        .await
        .expect("connect");
    let mut waited = false;
    for _ in 0..1500 {
        waited = sqlx::query_scalar::<_, bool>(
            "SELECT coalesce(bool_or(clock_timestamp() - query_start > interval '1 second'), false) \
             FROM pg_stat_activity \
             WHERE application_name = 'instauth-migrate' AND wait_event = 'advisory'",
        )
        .fetch_one(&mut watcher)
        .await
        .expect("pg_stat_activity");
        if waited || migrating.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if migrating.is_finished() {
        panic!(
            "the migration ended while the lock was held: {:?}",
            migrating.await.expect("join")
        );
    }
    assert!(waited, "the migration never waited a second on the lock");
    other_replica.unlock().await.expect("release the lock");
    migrating
        .await
        .expect("join")
        .expect("migrations applied once the lock is free");
    let migrated: bool = sqlx::query_scalar("SELECT to_regclass('workspace_agents') IS NOT NULL")
        .fetch_one(&mut watcher)
        .await
        .expect("schema");
    assert!(migrated);
}
