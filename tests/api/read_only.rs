//! `serve --no-migrate` on a database whose schema instauth does not own, as a role that may
//! only read the five tables (created by the docs' own statements): it authenticates, and the
//! role really cannot do more.

use sqlx::{Connection as _, PgConnection};

use crate::helpers::app::spawn_app_on;
use crate::helpers::pg::TestDatabase;
use crate::helpers::roles::ReadOnlyRole;
use crate::helpers::seed::Seed;

#[tokio::test]
async fn serve_no_migrate_authenticates_as_a_select_only_role() {
    let database = TestDatabase::create_migrated().await;
    let role = ReadOnlyRole::create(&database).await;
    let as_role = role.connect(&database.options);
    let app = spawn_app_on(database, |options| {
        options.migrate = false;
        options.database.connect = as_role.clone();
    })
    .await;
    let seed = Seed::new(&app.pool);
    let (_, agents) = seed
        .coder_workspace("i-read-only", &["alpha", "beta"])
        .await;

    let response = app.aws("i-read-only", Some("beta")).await;
    assert_eq!(response.token(), agents[1].token());
    app.aws("i-read-only", None)
        .await
        .assert_error(409, "Multiple agents found with instance ID \"i-read-only\". Set CODER_AGENT_NAME to one of: alpha, beta");
    assert_eq!(app.get("/readyz").await.status, 200);

    // What the role cannot do: write (refused by the grants, and by the read-only default
    // even before that), or read anything beyond the five tables.
    let mut conn = PgConnection::connect_with(&as_role)
        .await
        .expect("the role logs in");
    let read_only: String = sqlx::query_scalar("SHOW transaction_read_only")
        .fetch_one(&mut conn)
        .await
        .expect("show");
    assert_eq!(read_only, "on");
    let write = sqlx::query("UPDATE workspaces SET deleted = true")
        .execute(&mut conn)
        .await
        .expect_err("the role cannot write");
    assert!(
        write.to_string().contains("read-only transaction"),
        "{write}"
    );
    let outside = sqlx::query("SELECT count(*) FROM _sqlx_migrations")
        .execute(&mut conn)
        .await
        .expect_err("the role reads only the five tables");
    assert!(
        outside.to_string().contains("permission denied"),
        "{outside}"
    );
    let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&mut conn)
        .await
        .expect("show");
    assert_eq!(
        timeout, "2s",
        "the role's own bound, for when instauth sends none"
    );
    conn.close().await.ok();
    // The database goes first, taking the role's privileges with it; then the role.
    drop(app);
    drop(role);
}

#[test]
fn the_dba_docs_show_the_statements_the_tests_run() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let sql = std::fs::read_to_string(root.join("docs/read-only-role.sql")).expect("sql");
    let docs = std::fs::read_to_string(root.join("docs/dba.md")).expect("docs/dba.md");
    assert!(
        docs.contains(sql.trim_end()),
        "docs/dba.md must show docs/read-only-role.sql verbatim"
    );
}
