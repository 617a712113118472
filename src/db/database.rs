//! The database side of the service: its own runtime, on threads of its own, and the pools whose
//! connections live there: the primary's and each read replica's ([`Replica`]).
//!
//! Every round trip is driven by a task of this runtime. HTTP workers hand work over and await
//! the answer; thousands of open HTTP connections on their event loops can then delay an answer
//! reaching its client, but never a connection going back to the pool. (Driven from the HTTP
//! workers, each round trip waited for a turn of a loop busy with HTTP, holding its connection
//! meanwhile, and under a burst the pool starved.)

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::PgConnection;
use tokio::runtime::{Handle, Runtime};

use super::exchange::{Exchanged, Failure};
use super::{DatabaseSettings, Pool, Replica};

/// Threads of the database runtime: decoding rows and driving sockets costs little, and two
/// keep one slow task from holding up the rest.
const THREADS: usize = 2;

/// Work for one pooled connection, run on the database runtime.
pub(crate) type Work<T> =
    Box<dyn for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send>;

/// The runtime, the primary's pool and the replicas; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Database {
    runtime: Arc<Owned>,
    pool: Pool,
    replicas: Arc<[Replica]>,
}

/// Shuts the runtime down when the last handle goes.
#[derive(Debug)]
struct Owned(Option<Runtime>);

impl Drop for Owned {
    fn drop(&mut self) {
        // Allowed anywhere, also inside another runtime: in-flight round trips are abandoned,
        // and their connections with them.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl Database {
    /// Starts the runtime and opens the pools on it (connections open on demand). The
    /// replicas are unusable until [`Database::check_replicas`].
    pub(crate) fn start(settings: &DatabaseSettings) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .thread_name("instauth-db")
            .enable_all()
            .build()?;
        // The pools' maintenance tasks belong on this runtime too.
        let (pool, replicas) = {
            let _entered = runtime.enter();
            let replicas = settings
                .replicas
                .iter()
                .enumerate()
                .map(|(index, connect)| Replica::new(index, connect, settings))
                .collect();
            (Pool::new(settings), replicas)
        };
        Ok(Self {
            runtime: Arc::new(Owned(Some(runtime))),
            pool,
            replicas,
        })
    }

    /// The primary's pool.
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The replicas, in `--replica-url` order.
    pub(crate) fn replicas(&self) -> &[Replica] {
        &self.replicas
    }

    /// Checks every replica once (side by side, each within a connect and a work deadline),
    /// reporting what is wrong with any, then keeps checking them in the background.
    pub(crate) async fn check_replicas(&self, settings: &DatabaseSettings) {
        let checks = self.replicas.iter().map(|replica| {
            let (replica, settings) = (replica.clone(), settings.clone());
            self.handle()
                .spawn(async move { replica.watch(&settings).await })
        });
        futures_util::future::join_all(checks).await;
    }

    /// Closes every pool politely (see [`Pool::close`]); the replica checks stop.
    pub(crate) async fn close(&self) {
        self.pool.close().await;
        for replica in self.replicas.iter() {
            replica.pool().close().await;
            replica.wake();
        }
    }

    /// Where database tasks are spawned.
    pub(crate) fn handle(&self) -> &Handle {
        match &self.runtime.0 {
            Some(runtime) => runtime.handle(),
            None => unreachable!("the runtime is only taken when the last handle drops"),
        }
    }

    /// One exchange ([`Pool::exchange`]) on the primary, run on the database runtime.
    pub(crate) async fn exchange<T: Send + 'static>(&self, work: Work<T>) -> Exchanged<T> {
        self.exchange_on(&self.pool, work).await
    }

    /// One exchange on `pool` (the primary's or a replica's), run on the database runtime.
    pub(crate) async fn exchange_on<T: Send + 'static>(
        &self,
        pool: &Pool,
        work: Work<T>,
    ) -> Exchanged<T> {
        let pool = pool.clone();
        let task = self
            .handle()
            .spawn(async move { pool.exchange(async |conn| work(conn).await).await });
        task.await.unwrap_or_else(|_| Exchanged {
            // The runtime is shutting down (the service is stopping).
            result: Err(Failure::Sql(sqlx::Error::PoolClosed)),
            acquire: std::time::Duration::ZERO,
            db: std::time::Duration::ZERO,
        })
    }
}
