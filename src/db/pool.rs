//! The request path's pool of server connections: opened on demand, given back without a round
//! trip, replaced when an exchange did not finish, kept to a minimum and closed when idle.

use std::time::{Duration, Instant};

use deadpool::managed::{PoolError, RecycleError, RecycleResult};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};

use super::trouble::{Class, Trouble};
use super::{DatabaseSettings, StatementMode, connect_options};

/// The request path's pool of server connections.
///
/// Connections open on demand, so the service starts (and `/healthz` answers) while the
/// database is down. A connection goes back to the pool the moment its answer has been read:
/// no round trip to the server on the way back (sqlx's own pool pings every connection it
/// takes back, which kept each connection busy for a second round trip per request). A
/// connection whose exchange did not finish cleanly is never reused: it is closed and
/// replaced.
#[derive(Clone, Debug)]
pub struct Pool {
    inner: deadpool::managed::Pool<Manager>,
    acquire_timeout: Duration,
    /// Bound on the work of one exchange once it has its connection.
    pub(super) work_deadline: Duration,
    statement_mode: StatementMode,
}

/// A connection taken from the [`Pool`]; dropping it returns the connection.
pub type Lease = deadpool::managed::Object<Manager>;

/// How often idle connections are checked against the idle timeout and the maximum lifetime
/// and the pool is topped up to `--db-min-connections`; more often when a limit is shorter, so
/// a connection outlives its limit by half of it at most.
const MAINTAIN_EVERY: Duration = Duration::from_secs(10);
/// Longest wait for the server to take a Terminate message when a connection is closed.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

impl Pool {
    /// A pool of at most `max_connections`; `min_connections` (at most the maximum) are kept
    /// open. Needs a Tokio runtime: a background task maintains the idle connections for as
    /// long as the pool exists.
    pub fn new(settings: &DatabaseSettings) -> Self {
        let manager = Manager {
            connect: connect_options(settings),
            test_before_acquire: settings.test_before_acquire,
            max_lifetime: settings.max_lifetime,
        };
        let max_size = usize::try_from(settings.max_connections).unwrap_or(usize::MAX);
        let inner = deadpool::managed::Pool::builder(manager)
            .max_size(max_size)
            .build()
            // Building fails only for a timeout without a runtime; none is configured (the
            // acquire timeout is applied around `get` instead).
            .unwrap_or_else(|err| unreachable!("pool without timeouts: {err}"));
        let min = usize::try_from(settings.min_connections)
            .unwrap_or(usize::MAX)
            .min(max_size);
        // Weak, so dropping every `Pool` ends the task and closes the connections.
        tokio::spawn(maintain(
            inner.weak(),
            Limits {
                min,
                idle_timeout: settings.idle_timeout,
                max_lifetime: settings.max_lifetime,
            },
            settings.acquire_timeout,
        ));
        Self {
            inner,
            acquire_timeout: settings.acquire_timeout,
            work_deadline: settings.work_deadline(),
            statement_mode: StatementMode::for_settings(settings),
        }
    }

    /// Takes a connection, opening one if none is idle and the pool has room, within the
    /// acquire timeout (connecting included).
    pub async fn get(&self) -> Result<Lease, sqlx::Error> {
        self.get_within(self.acquire_timeout).await
    }

    /// [`Pool::get`] within `limit` instead of the acquire timeout.
    pub(crate) async fn get_within(&self, limit: Duration) -> Result<Lease, sqlx::Error> {
        match tokio::time::timeout(limit, self.inner.get()).await {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(err)) => Err(pool_error(err)),
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }

    /// Records how the exchange that began at `started` on `conn` ended. Success settles the
    /// connection for reuse. A failure showing the server gone (a restart, a failover) also
    /// drops the idle connections opened before `started`: they are most likely as dead, and
    /// each would otherwise fail a request of its own before the pool noticed. Connections
    /// opened since are kept (one opened in the milliseconds before the server died fails its
    /// own request later; a live one opened just before `started` is reopened). Returns how
    /// many were dropped when the connection was lost.
    pub(super) fn finish(
        &self,
        conn: &mut Connection,
        started: Instant,
        error: Option<&sqlx::Error>,
    ) -> Option<usize> {
        match error {
            None => {
                conn.settle();
                None
            }
            Some(err) if Trouble::of(err).class == Class::Lost => Some(
                self.inner
                    .retain(|_, metrics| metrics.created > started)
                    .removed
                    .len(),
            ),
            Some(_) => None,
        }
    }

    /// How statements are sent on this pool's connections.
    pub(crate) fn statement_mode(&self) -> StatementMode {
        self.statement_mode
    }

    /// Connections open, idle, and the most allowed.
    pub fn status(&self) -> deadpool::Status {
        self.inner.status()
    }

    /// Whether [`Pool::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Closes the idle connections politely (a Terminate message, so the server logs no
    /// lost client) and refuses further use; connections still lent out are dropped on return.
    pub async fn close(&self) {
        let idle = self.inner.retain(|_, _| false).removed;
        self.inner.close();
        close_all(idle).await;
    }
}

/// A deadpool error as the request path reports database trouble.
fn pool_error(err: PoolError<sqlx::Error>) -> sqlx::Error {
    match err {
        PoolError::Backend(err) => err,
        PoolError::Closed => sqlx::Error::PoolClosed,
        PoolError::Timeout(_) => sqlx::Error::PoolTimedOut,
        // No hooks and no deadpool timeouts are configured, so these cannot happen; they are
        // configuration faults, not a lost connection.
        err @ (PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_)) => {
            sqlx::Error::Configuration(err.to_string().into())
        }
    }
}

/// What [`maintain`] keeps the idle connections to.
#[derive(Clone, Copy)]
struct Limits {
    min: usize,
    idle_timeout: Duration,
    max_lifetime: Duration,
}

/// Every [`MAINTAIN_EVERY`] (or half the shorter limit): closes idle connections past the idle
/// timeout or the maximum lifetime or left unsettled, then opens connections until `min` are
/// open, so the first requests after a quiet period or an outage do not pay for connecting.
/// Opening is bounded by `connect_timeout`, so a silent database host cannot keep a slot
/// taken. Ends when the pool is dropped or closed.
async fn maintain(
    pool: deadpool::managed::WeakPool<Manager>,
    limits: Limits,
    connect_timeout: Duration,
) {
    let every = MAINTAIN_EVERY
        .min(limits.idle_timeout / 2)
        .min(limits.max_lifetime / 2)
        .max(Duration::from_millis(1));
    loop {
        {
            let Some(pool) = pool.upgrade() else { return };
            if pool.is_closed() {
                return;
            }
            // Unused connections beyond `min` time out, least recently used first; `min` stay
            // open however quiet the service is.
            let mut open = pool.status().size;
            let expired = pool
                .retain(|connection, m| {
                    let keep = connection.settled
                        && m.age() < limits.max_lifetime
                        && (m.last_used() < limits.idle_timeout || open <= limits.min);
                    if !keep {
                        open -= 1;
                    }
                    keep
                })
                .removed;
            close_all(expired).await;
            let _ = tokio::time::timeout(connect_timeout, top_up(&pool, limits.min)).await;
        }
        tokio::time::sleep(every).await;
    }
}

/// Opens connections until `min` are open, only while no request holds or waits for one (under
/// load the requests open what they need themselves). The leases are taken without waiting and
/// at once, so the missing connections open side by side while the idle ones are held, and a
/// request arriving meanwhile waits one connect at most.
async fn top_up(pool: &deadpool::managed::Pool<Manager>, min: usize) {
    let status = pool.status();
    if status.size >= min || status.available < status.size {
        return;
    }
    let no_wait = deadpool::managed::Timeouts {
        wait: Some(Duration::ZERO),
        create: None,
        recycle: None,
    };
    let leases = futures_util::future::join_all((0..min).map(|_| pool.timeout_get(&no_wait))).await;
    drop(leases);
}

async fn close_all(connections: Vec<Connection>) {
    for connection in connections {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.raw.close()).await;
    }
}

/// A pooled server connection.
#[derive(Debug)]
pub struct Connection {
    raw: PgConnection,
    /// False while an exchange is under way, and after one that failed or was abandoned
    /// (a timeout cancels mid-protocol): such a connection is not reused.
    settled: bool,
}

impl Connection {
    /// The connection for one exchange. Until [`Connection::settle`] is called, it counts as
    /// interrupted.
    pub fn start(&mut self) -> &mut PgConnection {
        self.settled = false;
        &mut self.raw
    }

    /// The exchange finished and its answer was read in full: the connection is reusable
    /// as it is.
    pub fn settle(&mut self) {
        self.settled = true;
    }
}

/// Opens and vets the pool's connections.
pub struct Manager {
    connect: PgConnectOptions,
    test_before_acquire: bool,
    max_lifetime: Duration,
}

impl std::fmt::Debug for Manager {
    // The connect options hold the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("test_before_acquire", &self.test_before_acquire)
            .finish_non_exhaustive()
    }
}

impl deadpool::managed::Manager for Manager {
    type Type = Connection;
    type Error = sqlx::Error;

    async fn create(&self) -> Result<Connection, sqlx::Error> {
        let raw = PgConnection::connect_with(&self.connect).await?;
        Ok(Connection { raw, settled: true })
    }

    async fn recycle(
        &self,
        connection: &mut Connection,
        metrics: &deadpool::managed::Metrics,
    ) -> RecycleResult<sqlx::Error> {
        if metrics.age() > self.max_lifetime {
            return Err(RecycleError::message(
                "connection reached its maximum lifetime",
            ));
        }
        if !connection.settled {
            // Its last exchange failed or was abandoned mid-protocol: the server may still be
            // working on it, or be gone. A fresh connection costs less than finding out.
            return Err(RecycleError::message(
                "the connection's last exchange did not finish",
            ));
        }
        if self.test_before_acquire {
            connection.raw.ping().await?;
        }
        Ok(())
    }
}
