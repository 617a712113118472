//! The PostgreSQL server the tests use, and one throwaway database per test.
//!
//! With DATABASE_URL set, that server is used. Otherwise a private cluster is started once per
//! run (under the system temp directory, reachable by the `postgres` user when run as root)
//! and stopped when the test process exits.

use std::hash::{Hash as _, Hasher as _};
use std::path::PathBuf;
use std::str::FromStr as _;
use std::sync::OnceLock;

use instauth::tools::embedded_pg::EmbeddedPostgres;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, Executor as _, PgConnection};
use uuid::Uuid;

const PREFIX: &str = "instauth_test_";

struct Server {
    admin: PgConnectOptions,
    /// The same as a URL, for processes started by tests (the real binary).
    admin_url: String,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static CLUSTER: OnceLock<EmbeddedPostgres> = OnceLock::new();

/// Connection options of a superuser on the test server.
pub fn admin_options() -> PgConnectOptions {
    server().admin.clone()
}

fn server() -> &'static Server {
    SERVER.get_or_init(|| {
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            let admin = PgConnectOptions::from_str(&url).expect("DATABASE_URL parses");
            let admin_url = url.clone();
            return Server { admin, admin_url };
        }
        let dir = test_cluster_dir();
        let cluster = EmbeddedPostgres::start(&dir, false)
            .unwrap_or_else(|err| panic!("starting the test PostgreSQL cluster: {err}"));
        let admin = cluster.connect_options();
        let password = std::fs::read_to_string(dir.join("password")).expect("cluster password");
        let admin_url = format!(
            "postgres://postgres:{}@127.0.0.1:{}/postgres",
            password.trim(),
            cluster.port()
        );
        if CLUSTER.set(cluster).is_ok() {
            register_stop_at_exit();
        }
        // Databases of earlier, interrupted runs only take space on this private cluster.
        let cleanup = admin.clone();
        std::thread::spawn(move || block_on(drop_stale_databases(cleanup)))
            .join()
            .expect("cleanup thread");
        Server { admin, admin_url }
    })
}

/// One directory per checkout, under the temp dir so `postgres` can reach it when run as root.
fn test_cluster_dir() -> PathBuf {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    env!("CARGO_MANIFEST_DIR").hash(&mut hasher);
    std::env::temp_dir().join(format!("instauth-test-pg-{:016x}", hasher.finish()))
}

#[expect(
    unsafe_code,
    reason = "atexit is the only hook that runs after the libtest harness finishes"
)]
fn register_stop_at_exit() {
    extern "C" fn stop_cluster() {
        if let Some(cluster) = CLUSTER.get() {
            cluster.stop();
        }
    }
    // SAFETY: registers a plain extern "C" function with no arguments, as atexit requires.
    unsafe {
        libc::atexit(stop_cluster);
    }
}

async fn drop_stale_databases(admin: PgConnectOptions) {
    let mut conn = PgConnection::connect_with(&admin)
        .await
        .expect("admin connection");
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
            .bind(format!("{PREFIX}%"))
            .fetch_all(&mut conn)
            .await
            .expect("list databases");
    for name in names {
        let _ = conn
            .execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str())
            .await;
    }
}

/// `url` with its database name replaced, query string kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_end..]
        .find('/')
        .map_or(base.len(), |i| authority_end + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Runs `future` to completion on a fresh runtime (for use from `Drop` and `OnceLock` init,
/// which may run inside a test's runtime).
pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(future)
}

/// A database that exists for one test and is dropped with it.
#[derive(Debug)]
pub struct TestDatabase {
    pub name: String,
    pub options: PgConnectOptions,
    /// URL of this database, password included, for the real binary.
    pub url: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        let admin = admin_options();
        let name = format!("{PREFIX}{}", Uuid::new_v4().simple());
        let mut conn = PgConnection::connect_with(&admin)
            .await
            .expect("admin connection");
        conn.execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("create test database");
        conn.close().await.ok();
        let options = admin.database(&name);
        let url = with_database(&server().admin_url, &name);
        Self { name, options, url }
    }

    /// A fresh database with instauth's schema applied by the superuser, as on a Coder
    /// database whose schema instauth does not own.
    pub async fn create_migrated() -> Self {
        let database = Self::create().await;
        let settings = instauth::db::DatabaseSettings::new(database.options.clone());
        instauth::db::migrate(&settings)
            .await
            .expect("migrations apply");
        database
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = admin_options();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            block_on(async move {
                if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                    let _ = conn
                        .execute(
                            format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str(),
                        )
                        .await;
                }
            })
        })
        .join();
    }
}

/// Holds an exclusive lock on `workspace_agents` until dropped (or `release`d), so every lookup
/// blocks on it.
pub struct TableLock(PgConnection);

impl TableLock {
    pub async fn take(options: &PgConnectOptions) -> Self {
        let mut conn = PgConnection::connect_with(options)
            .await
            .expect("lock connection");
        conn.execute("BEGIN").await.expect("begin");
        conn.execute("LOCK TABLE workspace_agents IN ACCESS EXCLUSIVE MODE")
            .await
            .expect("lock");
        Self(conn)
    }

    /// Waits until `count` other sessions of this database wait on a lock (the lock's
    /// victims: requests whose statement is blocked), polling `pg_locks` (not
    /// `pg_stat_activity`, which a transaction sees as one snapshot).
    pub async fn wait_for_waiters(&mut self, count: i64) {
        let mut waiting = 0;
        for _ in 0..1500 {
            waiting = sqlx::query_scalar::<_, i64>(
                "SELECT count(DISTINCT pid) FROM pg_locks WHERE NOT granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_one(&mut self.0)
            .await
            .expect("pg_locks");
            if waiting >= count {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("{waiting} sessions wait on the lock, expected {count}");
    }

    pub async fn release(mut self) {
        self.0.execute("ROLLBACK").await.expect("rollback");
        self.0.close().await.ok();
    }
}
