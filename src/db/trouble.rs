//! The one classifier of database errors. Every caller asks it the same question (is the
//! connection gone, will a retry heal this, or is it permanent?) and gets the same answer: the
//! pool drops dead connections on [`Class::Lost`], the HTTP edge answers 503 for lost and
//! transient trouble and 500 for permanent, and background migrations retry all but permanent.

/// What kind of failure a database error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// The server connection itself is gone: closed, reset, refused, or the server shutting
    /// down or restarting. Other connections opened before it are most likely gone too.
    Lost,
    /// The connection is fine but this attempt failed for a passing reason (no free connection
    /// in time, a statement or lock timeout, too many connections, a serialization conflict):
    /// the next attempt may succeed.
    Transient,
    /// Retrying will not help (a missing table, a permission denied, a bad statement).
    Permanent,
}

/// A classified database error and a short description of it, safe to show a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trouble {
    pub class: Class,
    pub detail: &'static str,
}

impl Trouble {
    /// Classifies `err` by its kind and, for server errors, its SQLSTATE.
    pub(crate) fn of(err: &sqlx::Error) -> Self {
        let (class, detail) = match err {
            sqlx::Error::PoolTimedOut => (
                Class::Transient,
                "timed out waiting for a database connection",
            ),
            sqlx::Error::PoolClosed => (Class::Transient, "the database pool is closed"),
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => {
                (Class::Lost, "the database connection failed")
            }
            sqlx::Error::Database(db) => match db.code().as_deref() {
                Some("57014") => (
                    Class::Transient,
                    "the lookup exceeded the statement timeout",
                ),
                // Connection exceptions (08…), and the server shutting down, restarting or not
                // accepting connections yet (57P…).
                Some(code) if code.starts_with("08") || code.starts_with("57P") => {
                    (Class::Lost, "the database is temporarily unavailable")
                }
                // Too many connections, lock not available, serialization failure, deadlock.
                Some("53300" | "55P03" | "40001" | "40P01") => {
                    (Class::Transient, "the database is temporarily unavailable")
                }
                _ => (Class::Permanent, "the database refused the statement"),
            },
            _ => (Class::Permanent, "the database call failed"),
        };
        Self { class, detail }
    }

    /// SQLSTATE 26000 (invalid_sql_statement_name): a Bind named a statement the server
    /// connection does not hold, so nothing was executed.
    pub(crate) fn is_missing_statement(err: &sqlx::Error) -> bool {
        err.as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| code == "26000")
    }

    /// Lost or transient: worth another attempt.
    pub(crate) fn is_retryable(self) -> bool {
        self.class != Class::Permanent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_io_errors_are_classified_by_kind() {
        assert_eq!(
            Trouble::of(&sqlx::Error::PoolTimedOut).class,
            Class::Transient
        );
        assert_eq!(
            Trouble::of(&sqlx::Error::PoolClosed).class,
            Class::Transient
        );
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(Trouble::of(&sqlx::Error::Io(reset)).class, Class::Lost);
        assert_eq!(
            Trouble::of(&sqlx::Error::Protocol("garbled".into())).class,
            Class::Lost
        );
        assert_eq!(
            Trouble::of(&sqlx::Error::RowNotFound).class,
            Class::Permanent
        );
        assert!(!Trouble::of(&sqlx::Error::RowNotFound).is_retryable());
        assert!(Trouble::of(&sqlx::Error::PoolTimedOut).is_retryable());
    }
}
