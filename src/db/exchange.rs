//! One exchange with the database, the way every request and probe makes it: take a pooled
//! connection (timed on its own), run the caller's work on it, settle or replace the
//! connection, all within the pool's deadline.

use std::time::{Duration, Instant};

use sqlx::PgConnection;

use super::Pool;
use super::trouble::Trouble;

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
    pub(crate) fn is_acquire_timeout(&self) -> bool {
        matches!(self, Self::Sql(sqlx::Error::PoolTimedOut))
    }
}

/// What one exchange did. The durations are reported whatever the result: the wait for a
/// connection, and the work on it (up to the deadline when nothing came back).
#[derive(Debug)]
pub(crate) struct Exchanged<T> {
    pub result: Result<T, Failure>,
    pub acquire: Duration,
    pub db: Duration,
}

impl Pool {
    /// Takes a connection and runs `work` on it, bounded by the pool's deadline, which holds
    /// even when the database host goes silent and its own `statement_timeout` can never fire.
    ///
    /// A connection whose work succeeded goes back to the pool as it is; one whose work failed
    /// or was cut off is replaced. When the failure shows the server gone, the idle connections
    /// opened before the work began are dropped with it.
    pub(crate) async fn exchange<T>(
        &self,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Exchanged<T> {
        let mut acquire = Duration::ZERO;
        let mut db_started = None;
        let bounded = async {
            let started = Instant::now();
            let lease = self.get().await;
            acquire = started.elapsed();
            let mut lease = lease?;
            let started = Instant::now();
            db_started = Some(started);
            let result = work(lease.start()).await;
            if let Some(dropped) = self.finish(&mut lease, started, result.as_ref().err()) {
                tracing::warn!(
                    dropped,
                    "database connection lost; older idle connections dropped"
                );
            }
            result
        };
        let result = match tokio::time::timeout(self.deadline, bounded).await {
            Ok(result) => result.map_err(Failure::Sql),
            Err(_) => Err(Failure::Deadline(self.deadline)),
        };
        Exchanged {
            result,
            acquire,
            db: db_started.map_or(Duration::ZERO, |started| started.elapsed()),
        }
    }
}
