//! One exchange with the database, the way every request and probe makes it: take a pooled
//! connection (timed on its own), run the caller's work on it, settle or replace the
//! connection, all within the pool's deadline.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use super::trouble::Trouble;
use super::{Lease, Pool};

/// Why an exchange produced no result.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// The pool or the server answered with an error.
    #[error(transparent)]
    Sql(sqlx::Error),
    /// Nothing came back within the deadline (a silent database host).
    #[error("no answer from the database within {0:?}")]
    Deadline(Duration),
}

impl Failure {
    /// How the HTTP edge and the logs describe this failure.
    pub(crate) fn trouble(&self) -> Trouble {
        match self {
            Self::Sql(err) => Trouble::of(err),
            Self::Deadline(_) => Trouble {
                class: super::Class::Transient,
                detail: "the database did not answer in time",
            },
        }
    }

    /// Whether the wait for a pooled connection ran out.
    #[cfg_attr(
        not(feature = "legacy"),
        expect(
            dead_code,
            reason = "the product's lookups count their waits in the coalescer"
        )
    )]
    pub(crate) fn is_acquire_timeout(&self) -> bool {
        matches!(self, Self::Sql(sqlx::Error::PoolTimedOut))
    }
}

/// What one exchange did. The durations are reported whatever the result: the wait for a
/// connection, and the work on it (up to the deadline when nothing came back).
#[derive(Debug)]
#[cfg_attr(
    not(feature = "legacy"),
    expect(
        dead_code,
        reason = "only the replays report an exchange's timings; the product's lookups are timed by the coalescer"
    )
)]
pub(crate) struct Exchanged<T> {
    pub result: Result<T, Failure>,
    pub acquire: Duration,
    pub db: Duration,
}

impl Pool {
    /// Takes a connection and runs `work` on it: at most the acquire timeout for the first, then
    /// [`Pool::run_on`]'s bound for the second.
    ///
    /// A connection whose work succeeded goes back to the pool as it is; one whose work failed
    /// or was cut off is replaced. When the failure shows the server gone, the idle connections
    /// opened before the work began are dropped with it.
    pub(crate) async fn exchange<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Exchanged<T> {
        let started = Instant::now();
        let lease = self.get().await;
        let acquire = started.elapsed();
        let mut lease = match lease {
            Ok(lease) => lease,
            Err(err) => {
                return Exchanged {
                    result: Err(Failure::Sql(err)),
                    acquire,
                    db: Duration::ZERO,
                };
            }
        };
        let (result, db) = self.run_on(&mut lease, work).await;
        Exchanged {
            result,
            acquire,
            db,
        }
    }

    /// Runs `work` on an acquired connection, bounded by the statement timeout plus a margin,
    /// which holds even when the database host goes silent and its own `statement_timeout` can
    /// never fire. Returns the result and how long the work took.
    pub(crate) async fn run_on<T>(
        &self,
        lease: &mut Lease,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> (Result<T, Failure>, Duration) {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.work_deadline, work(lease.start())).await {
            Ok(result) => result,
            Err(_) => {
                return (
                    Err(Failure::Deadline(self.work_deadline)),
                    started.elapsed(),
                );
            }
        };
        if let Some(dropped) = self.finish(lease, started, result.as_ref().err()) {
            tracing::warn!(
                dropped,
                "database connection lost; older idle connections dropped"
            );
        }
        (result.map_err(Failure::Sql), started.elapsed())
    }
}
