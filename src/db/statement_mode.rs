//! How statements reach the server: prepared and cached by name, or as the unnamed statement
//! (what PgBouncer before 1.21 needs in transaction pooling mode).

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow, PgStatement, PgTypeInfo};
use sqlx::{Describe, Either, Execute, Executor, PgConnection, Postgres};

use super::DatabaseSettings;

/// How the request statement reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatementMode {
    /// Prepared once per connection under a name and kept in sqlx's statement cache: each
    /// request is then one Bind/Execute round trip.
    Cached,
    /// Parsed as the unnamed statement on every request (Parse/Describe, then Bind/Execute:
    /// two round trips, still one statement). No named statement is ever left on a server
    /// connection, which is what PgBouncer before 1.21 needs in transaction pooling mode.
    Unnamed,
}

impl StatementMode {
    pub(crate) fn for_settings(settings: &DatabaseSettings) -> Self {
        if settings.statement_cache_capacity == 0 {
            Self::Unnamed
        } else {
            Self::Cached
        }
    }
}

/// Runs queries on a connection as the unnamed statement.
///
/// Needed because sqlx 0.8 marks every macro-built query persistent: with the statement cache
/// disabled it still prepares a *named* statement per execution and never closes it, so the
/// names pile up on the server and collide once PgBouncer hands a server connection to another
/// client. This executor clears that flag and otherwise delegates to the connection.
#[derive(Debug)]
pub(crate) struct Unnamed<'c>(pub &'c mut PgConnection);

impl<'p> Executor<'p> for Unnamed<'p> {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, Result<Either<PgQueryResult, PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        self.0.fetch_many(NotPersistent(query))
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxFuture<'e, Result<Option<PgRow>, sqlx::Error>>
    where
        'p: 'e,
        E: 'q + Execute<'q, Postgres>,
    {
        self.0.fetch_optional(NotPersistent(query))
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [PgTypeInfo],
    ) -> BoxFuture<'e, Result<PgStatement<'q>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.0.prepare_with(sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
    where
        'p: 'e,
    {
        self.0.describe(sql)
    }
}

/// A query that asks to be sent as the unnamed statement.
struct NotPersistent<E>(E);

impl<'q, E: Execute<'q, Postgres>> Execute<'q, Postgres> for NotPersistent<E> {
    fn sql(&self) -> &'q str {
        self.0.sql()
    }

    fn statement(&self) -> Option<&PgStatement<'q>> {
        self.0.statement()
    }

    fn take_arguments(&mut self) -> Result<Option<PgArguments>, BoxDynError> {
        self.0.take_arguments()
    }

    fn persistent(&self) -> bool {
        false
    }
}
