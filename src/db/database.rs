//! The database side of the service: its own runtime, on threads of its own, and the pool whose
//! connections live there.
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
use super::{DatabaseSettings, Pool};

/// Threads of the database runtime: decoding rows and driving sockets costs little, and two
/// keep one slow task from holding up the rest.
const THREADS: usize = 2;

/// Work for one pooled connection, run on the database runtime.
pub(crate) type Work<T> =
    Box<dyn for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send>;

/// The runtime and the pool; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Database {
    runtime: Arc<Owned>,
    pool: Pool,
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
    /// Starts the runtime and opens the pool on it (connections open on demand).
    pub(crate) fn start(settings: &DatabaseSettings) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(THREADS)
            .thread_name("instauth-db")
            .enable_all()
            .build()?;
        // The pool's maintenance task belongs on this runtime too.
        let pool = {
            let _entered = runtime.enter();
            Pool::new(settings)
        };
        Ok(Self {
            runtime: Arc::new(Owned(Some(runtime))),
            pool,
        })
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Where database tasks are spawned.
    pub(crate) fn handle(&self) -> &Handle {
        match &self.runtime.0 {
            Some(runtime) => runtime.handle(),
            None => unreachable!("the runtime is only taken when the last handle drops"),
        }
    }

    /// One exchange ([`Pool::exchange`]) run on the database runtime.
    pub(crate) async fn exchange<T: Send + 'static>(&self, work: Work<T>) -> Exchanged<T> {
        let pool = self.pool.clone();
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
