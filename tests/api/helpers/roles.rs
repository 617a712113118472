//! A database role made by running `docs/read-only-role.sql`, the statements the DBA docs give,
//! with only its name, password and database changed, so tests prove what the docs say.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, Executor as _, PgConnection};
use uuid::Uuid;

use super::pg::{TestDatabase, admin_options, block_on};

const DOCS_SQL: &str = include_str!("../../../docs/read-only-role.sql");

/// A login role that exists for one test; dropped with it.
#[derive(Debug)]
pub struct ReadOnlyRole {
    pub name: String,
    pub password: String,
    database: PgConnectOptions,
}

impl ReadOnlyRole {
    /// Runs the docs' statements in `database` (already migrated) for a uniquely named role.
    pub async fn create(database: &TestDatabase) -> Self {
        let name = format!(
            "instauth_test_ro_{}",
            &Uuid::new_v4().simple().to_string()[..12]
        );
        let password = Uuid::new_v4().simple().to_string();
        for placeholder in ["instauth_reader", "'change-me'", "DATABASE coder"] {
            assert!(
                DOCS_SQL.contains(placeholder),
                "docs/read-only-role.sql no longer says {placeholder}"
            );
        }
        let sql = DOCS_SQL
            .replace("instauth_reader", &name)
            .replace("'change-me'", &format!("'{password}'"))
            .replace(
                "DATABASE coder",
                &format!(r#"DATABASE "{}""#, database.name),
            );
        let mut conn = PgConnection::connect_with(&database.options)
            .await
            .expect("admin connection");
        sqlx::raw_sql(&sql)
            .execute(&mut conn)
            .await
            .expect("docs/read-only-role.sql runs");
        conn.close().await.ok();
        Self {
            name,
            password,
            database: database.options.clone(),
        }
    }

    /// `options` with this role's credentials.
    pub fn connect(&self, options: &PgConnectOptions) -> PgConnectOptions {
        options
            .clone()
            .username(&self.name)
            .password(&self.password)
    }
}

impl Drop for ReadOnlyRole {
    fn drop(&mut self) {
        let (name, database) = (self.name.clone(), self.database.clone());
        let _ = std::thread::spawn(move || {
            block_on(async move {
                // Its privileges live in the test database, if that still exists.
                if let Ok(mut conn) = PgConnection::connect_with(&database).await {
                    let _ = conn
                        .execute(format!(r#"DROP OWNED BY "{name}""#).as_str())
                        .await;
                }
                if let Ok(mut conn) = PgConnection::connect_with(&admin_options()).await {
                    let _ = conn
                        .execute(format!(r#"DROP ROLE IF EXISTS "{name}""#).as_str())
                        .await;
                }
            })
        })
        .join();
    }
}
