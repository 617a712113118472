//! Read replicas (`--replica-url`): each hot standby's own pool, whether it may answer lookups
//! right now, and the background check that decides it.
//!
//! A replica is usable while its last check found a hot standby (`pg_is_in_recovery()`) whose
//! five lookup tables this role can read, and whose replay is caught up (every WAL record
//! received has been replayed: an idle primary sends nothing, which is not lag) or behind by
//! at most `--replica-max-lag`. The check runs on a connection of its own, every
//! `--replica-check-interval` while the replica answers; one that does not answer (down,
//! silent, refusing the statement) is checked again with a backoff, and skipped meanwhile.
//! A replica starts unusable: its first check runs before the service serves, so one that
//! never answers delays no request, and what is wrong with it is reported at start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};
use tokio::sync::{Notify, oneshot};

use super::exchange::Failure;
use super::trouble::Class;
use super::{DatabaseSettings, Pool, connect_options, describe_target};

/// Longest wait between checks of a replica that does not answer.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First wait before checking again a replica that did not answer (at most the interval).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// One `--replica-url`: its pool and its health; cheap to clone.
#[derive(Clone)]
pub(crate) struct Replica {
    name: Arc<str>,
    /// Where the check connects (the pool's options, under another application name).
    check_connect: PgConnectOptions,
    pool: Pool,
    health: Arc<Health>,
}

/// Shows the name and the health, never the connect options (they hold the password).
impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("name", &self.name)
            .field("target", &describe_target(&self.check_connect))
            .field("health", &self.health)
            .finish_non_exhaustive()
    }
}

/// What the last check found, read by every lookup and by the metrics.
#[derive(Debug)]
struct Health {
    usable: AtomicBool,
    /// Replay lag of the last check in milliseconds (0 when caught up), -1 when unknown.
    lag_ms: AtomicI64,
    /// Wakes the check early: a lookup found the replica failing.
    recheck: Notify,
}

/// How the replicas are checked, from the settings.
#[derive(Debug, Clone, Copy)]
struct Checks {
    every: Duration,
    max_lag: Duration,
    connect_timeout: Duration,
    work_deadline: Duration,
}

/// What one check found.
#[derive(Debug)]
enum Status {
    /// A readable standby, caught up or behind by no more than the limit.
    Usable { lag: Duration },
    /// A readable standby, further behind than the limit (or by an unknown amount).
    Lagging { lag: Option<Duration> },
    /// The server is not in recovery: a primary, or a promoted standby.
    NotStandby,
    /// No answer, or an error.
    Failed(Failure),
}

impl Replica {
    /// The replica `index` of `settings.replicas`, with a pool like the primary's (needs the
    /// database runtime entered, as [`Pool::new`]).
    pub(super) fn new(
        index: usize,
        connect: &PgConnectOptions,
        settings: &DatabaseSettings,
    ) -> Self {
        let settings = DatabaseSettings {
            connect: connect.clone(),
            ..settings.clone()
        };
        Self {
            name: format!("replica-{index}").into(),
            check_connect: connect_options(&settings).application_name("instauth-replica-check"),
            pool: Pool::new(&settings),
            health: Arc::new(Health {
                usable: AtomicBool::new(false),
                lag_ms: AtomicI64::new(-1),
                recheck: Notify::new(),
            }),
        }
    }

    /// The `target` label of this replica's metrics: `replica-<index>`, never its address.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Whether lookups may go to this replica now.
    pub(crate) fn is_usable(&self) -> bool {
        self.health.usable.load(Ordering::Acquire)
    }

    /// The replay lag its last check measured; `None` when unknown (never checked, or down).
    pub(crate) fn lag(&self) -> Option<Duration> {
        u64::try_from(self.health.lag_ms.load(Ordering::Relaxed))
            .ok()
            .map(Duration::from_millis)
    }

    /// A lookup on this replica failed: when the failure says the server is gone, silent (no
    /// answer by the lookup's deadline; a full pool fails earlier, as a pool timeout) or
    /// refuses the statement, the replica is skipped until its check finds it well again
    /// (checked at once). Passing trouble (a full pool, a server-side statement timeout) only
    /// sends that lookup to the primary.
    pub(crate) fn report(&self, failure: &Failure) {
        // A replica that gave no answer at all (a frozen host, a partition) is not passing
        // trouble: every next lookup would wait out the same deadline until the background
        // check noticed, so it is skipped at once like a lost one.
        let silent = matches!(failure, Failure::Deadline(_));
        if failure.trouble().class == Class::Transient && !silent {
            return;
        }
        if self.health.usable.swap(false, Ordering::AcqRel) {
            tracing::warn!(target = %self.name, error = %failure, "replica failed a lookup; skipped until it answers its check");
            self.health.recheck.notify_one();
        }
    }

    /// Wakes the background check (to see the pool closed, or to check at once).
    pub(super) fn wake(&self) {
        self.health.recheck.notify_one();
    }

    /// Checks this replica now, then keeps checking it in the background (on the current
    /// runtime) until its pool is closed. Returns once the first check is done.
    pub(super) async fn watch(&self, settings: &DatabaseSettings) {
        let checks = Checks {
            every: settings.replica_check_interval,
            max_lag: settings.replica_max_lag,
            connect_timeout: settings.acquire_timeout,
            work_deadline: settings.work_deadline(),
        };
        let (first, checked) = oneshot::channel();
        tokio::spawn(self.clone().keep_checking(checks, first));
        let _ = checked.await;
    }

    async fn keep_checking(self, checks: Checks, first: oneshot::Sender<()>) {
        let connect = &self.check_connect;
        let target = describe_target(connect);
        let mut connection = None;
        let mut first = Some(first);
        let mut backoff = FIRST_BACKOFF.min(checks.every);
        loop {
            let status = check(&mut connection, connect, checks).await;
            self.record(&status, &target, checks, first.is_some());
            if let Some(first) = first.take() {
                let _ = first.send(());
            }
            let wait = match status {
                Status::Usable { .. } | Status::Lagging { .. } => {
                    backoff = FIRST_BACKOFF.min(checks.every);
                    checks.every
                }
                Status::NotStandby | Status::Failed(_) => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF.max(checks.every));
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.health.recheck.notified() => {}
            }
            if self.pool.is_closed() {
                if let Some(connection) = connection.take() {
                    let _ = tokio::time::timeout(checks.connect_timeout, connection.close()).await;
                }
                return;
            }
        }
    }

    /// Stores `status` and logs it when usability changed (or on the first check, so what is
    /// wrong with a replica is reported at start).
    fn record(&self, status: &Status, target: &str, checks: Checks, first: bool) {
        let (usable, lag) = match status {
            Status::Usable { lag } => (true, Some(*lag)),
            Status::Lagging { lag } => (false, *lag),
            Status::NotStandby | Status::Failed(_) => (false, None),
        };
        let lag_ms = lag.map_or(-1, |lag| i64::try_from(lag.as_millis()).unwrap_or(i64::MAX));
        self.health.lag_ms.store(lag_ms, Ordering::Relaxed);
        let was = self.health.usable.swap(usable, Ordering::AcqRel);
        if !first && was == usable {
            return;
        }
        let name = &*self.name;
        match status {
            Status::Usable { lag } => {
                tracing::info!(
                    replica = name,
                    target,
                    lag_ms = lag.as_millis(),
                    "replica usable"
                );
            }
            Status::Lagging { lag } => tracing::warn!(
                replica = name,
                target,
                lag_ms = lag.map(|lag| lag.as_millis()),
                max_lag_ms = checks.max_lag.as_millis(),
                "replica replay lags too far behind; skipped"
            ),
            Status::NotStandby => tracing::error!(
                replica = name,
                target,
                "replica is not a standby (pg_is_in_recovery() is false); skipped"
            ),
            Status::Failed(failure) => {
                let permanent = failure.trouble().class == Class::Permanent;
                if permanent {
                    tracing::error!(replica = name, target, error = %failure, "replica refuses the check for a reason retrying cannot fix; skipped");
                } else {
                    tracing::warn!(replica = name, target, error = %failure, "replica does not answer; skipped");
                }
            }
        }
    }
}

/// The row of `queries/replica_status.sql`.
struct Row {
    in_recovery: bool,
    caught_up: bool,
    replay_lag_ms: Option<i64>,
}

/// One check on `connection` (opened first when there is none; dropped when the check fails).
async fn check(
    connection: &mut Option<PgConnection>,
    connect: &PgConnectOptions,
    checks: Checks,
) -> Status {
    if connection.is_none() {
        match tokio::time::timeout(checks.connect_timeout, PgConnection::connect_with(connect))
            .await
        {
            Ok(Ok(opened)) => *connection = Some(opened),
            Ok(Err(err)) => return Status::Failed(Failure::Sql(err)),
            Err(_) => return Status::Failed(Failure::Deadline(checks.connect_timeout)),
        }
    }
    let Some(conn) = connection.as_mut() else {
        unreachable!("opened above")
    };
    let query = sqlx::query_file_as!(Row, "queries/replica_status.sql").fetch_one(conn);
    let row = match tokio::time::timeout(checks.work_deadline, query).await {
        Ok(Ok(row)) => row,
        Ok(Err(err)) => {
            *connection = None;
            return Status::Failed(Failure::Sql(err));
        }
        Err(_) => {
            *connection = None;
            return Status::Failed(Failure::Deadline(checks.work_deadline));
        }
    };
    judge(&row, checks.max_lag)
}

/// What a check's row means for lookups.
fn judge(row: &Row, max_lag: Duration) -> Status {
    if !row.in_recovery {
        return Status::NotStandby;
    }
    if row.caught_up {
        return Status::Usable {
            lag: Duration::ZERO,
        };
    }
    let lag = row
        .replay_lag_ms
        .and_then(|ms| u64::try_from(ms.max(0)).ok())
        .map(Duration::from_millis);
    match lag {
        Some(lag) if lag <= max_lag => Status::Usable { lag },
        lag => Status::Lagging { lag },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(in_recovery: bool, caught_up: bool, replay_lag_ms: Option<i64>) -> Row {
        Row {
            in_recovery,
            caught_up,
            replay_lag_ms,
        }
    }

    const MAX: Duration = Duration::from_secs(10);

    #[test]
    fn a_caught_up_standby_is_usable_however_old_its_last_replay() {
        // An idle primary sends nothing: hours since the last replayed commit are no lag.
        assert!(matches!(
            judge(&row(true, true, Some(7_200_000)), MAX),
            Status::Usable { lag } if lag.is_zero()
        ));
        assert!(matches!(
            judge(&row(true, true, None), MAX),
            Status::Usable { .. }
        ));
    }

    #[test]
    fn a_standby_behind_is_usable_up_to_the_limit() {
        assert!(matches!(
            judge(&row(true, false, Some(10_000)), MAX),
            Status::Usable { lag } if lag == MAX
        ));
        assert!(matches!(
            judge(&row(true, false, Some(10_001)), MAX),
            Status::Lagging { lag: Some(_) }
        ));
        // Behind, and nothing replayed yet: the lag is unknown, so it is not trusted.
        assert!(matches!(
            judge(&row(true, false, None), MAX),
            Status::Lagging { lag: None }
        ));
    }

    #[test]
    fn a_server_not_in_recovery_is_refused() {
        assert!(matches!(
            judge(&row(false, true, None), MAX),
            Status::NotStandby
        ));
    }
}
