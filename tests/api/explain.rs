//! `instauth explain`: it explains the very statement the service runs, read-only, as the
//! docs' SELECT-only role, and refuses a session that is not read-only.

use std::process::Command;

use instauth::db::DatabaseSettings;
use instauth::tools::explain::{self, ExplainError};
use sqlx::{Connection as _, Executor as _, PgConnection};
use uuid::Uuid;

use crate::helpers::pg::{TestDatabase, admin_options, block_on};
use crate::helpers::pgbouncer::{BouncerConfig, PgBouncer};
use crate::helpers::roles::ReadOnlyRole;
use crate::helpers::seed::Seed;

/// The statement of a query file: its text without the `--` header lines.
fn statement(file: &str) -> String {
    let path = format!("{}/queries/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("{path}: {err}"))
        .lines()
        .filter(|line| !line.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_explained_statement_is_the_lookup_itself() {
    let explained = statement("explain_agents_by_instance_id.sql");
    let body = explained
        .strip_prefix("EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT)\n")
        .expect("explain_agents_by_instance_id.sql starts with its EXPLAIN options");
    assert_eq!(
        body,
        statement("agents_by_instance_id.sql"),
        "explain_agents_by_instance_id.sql drifted from agents_by_instance_id.sql"
    );
}

#[test]
fn the_explained_batch_statement_is_the_coalesced_lookup_itself() {
    let explained = statement("explain_agents_by_instance_ids.sql");
    let body = explained
        .strip_prefix("EXPLAIN (ANALYZE, BUFFERS, FORMAT TEXT)\n")
        .expect("explain_agents_by_instance_ids.sql starts with its EXPLAIN options");
    assert_eq!(
        body,
        statement("agents_by_instance_ids.sql"),
        "explain_agents_by_instance_ids.sql drifted from agents_by_instance_ids.sql"
    );
}

#[tokio::test]
async fn explains_a_sampled_instance_as_the_select_only_role() {
    let database = TestDatabase::create_migrated().await;
    let role = ReadOnlyRole::create(&database).await;
    let pool = sqlx::PgPool::connect_with(database.options.clone())
        .await
        .expect("seed pool");
    let seed = Seed::new(&pool);
    // Only "i-b" has a candidate: "i-a" sorts first but belongs to a deleted workspace.
    let (deleted, _) = seed.coder_workspace("i-a", &["dev"]).await;
    seed.delete_workspace(deleted.workspace_id).await;
    seed.coder_workspace("i-b", &["dev"]).await;

    let settings = DatabaseSettings::new(role.connect(&database.options));
    let report = explain::report(&settings, None).await.expect("explains");
    assert!(report.sampled);
    assert_eq!(report.instance_id, "i-b");
    let text = report.render();
    assert!(text.contains("read-only session"), "{text}");
    assert!(text.contains("queries/agents_by_instance_id.sql"), "{text}");
    // One instance has a candidate: the batch of 1 is explained, the larger ones are not.
    assert!(
        text.contains("queries/agents_by_instance_ids.sql, a batch of 1 sampled"),
        "{text}"
    );
    assert!(!text.contains("a batch of 16"), "{text}");
    assert!(text.contains("Buffers: shared"), "{text}");
    // Every statement is explained five times in the session, and each run's planning and
    // execution times are read off its plan: the last plan ends with its execution time, and
    // the summary line after it gives the medians.
    assert_eq!(report.plans.len(), 2, "{text}");
    for plan in &report.plans {
        assert_eq!(plan.planning_ms.len(), 5, "{plan:?}");
        assert_eq!(plan.execution_ms.len(), 5, "{plan:?}");
        assert!(plan.planning_ms.iter().all(|ms| *ms > 0.0), "{plan:?}");
        assert!(
            plan.lines
                .last()
                .is_some_and(|line| line.starts_with("Execution Time: ")),
            "the plan ends with its execution time: {plan:?}"
        );
        let median = plan.planning_median_ms().expect("a median");
        assert!(
            text.contains(&format!("-- planning: median {median:.3} ms over 5 runs")),
            "{text}"
        );
    }

    let given = explain::report(&settings, Some("i-unknown"))
        .await
        .expect("explains an unknown id too");
    assert!(!given.sampled);
    assert_eq!(given.instance_id, "i-unknown");
    pool.close().await;
}

#[tokio::test]
async fn nothing_to_sample_asks_for_an_instance_id() {
    let database = TestDatabase::create_migrated().await;
    let settings = DatabaseSettings::new(database.options.clone());
    let err = explain::report(&settings, None)
        .await
        .expect_err("an empty database has no sample");
    assert!(
        matches!(err.downcast_ref(), Some(ExplainError::NothingToSample)),
        "{err:#}"
    );
    assert!(err.to_string().contains("--instance-id"), "{err}");
}

/// A login role with SELECT on the five tables but no read-only default of its own, dropped
/// with the test.
struct PlainReader {
    name: String,
}

impl PlainReader {
    async fn create(database: &TestDatabase, password: &str) -> Self {
        let name = format!(
            "instauth_test_rw_{}",
            &Uuid::new_v4().simple().to_string()[..12]
        );
        let mut conn = PgConnection::connect_with(&database.options)
            .await
            .expect("admin connection");
        sqlx::raw_sql(&format!(
            r#"CREATE ROLE "{name}" LOGIN PASSWORD '{password}';
               GRANT SELECT ON workspace_agents, workspace_resources, provisioner_jobs,
                   workspace_builds, workspaces TO "{name}";"#
        ))
        .execute(&mut conn)
        .await
        .expect("create role");
        conn.close().await.ok();
        Self { name }
    }
}

impl Drop for PlainReader {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            block_on(async move {
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

#[tokio::test]
async fn refuses_a_session_a_pooler_made_writable() {
    let database = TestDatabase::create_migrated().await;
    let password = Uuid::new_v4().simple().to_string();
    let reader = PlainReader::create(&database, &password).await;
    // A PgBouncer that silently drops the `options` startup parameter, which is where explain
    // asks for default_transaction_read_only=on.
    let bouncer = PgBouncer::start(
        &database.options,
        &[(&reader.name, &password)],
        &BouncerConfig {
            ignore_startup_parameters: "options".to_owned(),
            ..BouncerConfig::default()
        },
    );
    let settings = DatabaseSettings::new(bouncer.connect_options(&reader.name, &password));
    let err = explain::report(&settings, Some("i-any"))
        .await
        .expect_err("not read-only");
    assert!(
        matches!(err.downcast_ref(), Some(ExplainError::NotReadOnly)),
        "{err:#}"
    );
    drop(bouncer);
    drop(database);
}

#[test]
fn the_command_explains_the_embedded_database() {
    let dir = std::env::temp_dir().join(format!("instauth-explain-{}", Uuid::new_v4().simple()));
    let instauth = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_instauth"))
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .env_remove("DATABASE_URL")
            .env_remove("INSTAUTH_DATABASE_URL")
            .output()
            .expect("runs")
    };
    let help = instauth(&["explain", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--instance-id",
        "INSTAUTH_INSTANCE_ID",
        "--database-url",
        "--db-statement-timeout",
    ] {
        assert!(help.contains(flag), "explain --help lacks {flag}: {help}");
    }
    assert!(instauth(&["migrate"]).status.success());
    let explained = instauth(&["explain", "--instance-id", "i-none"]);
    let stdout = String::from_utf8_lossy(&explained.stdout);
    assert!(
        explained.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&explained.stderr)
    );
    assert!(stdout.contains("instance id \"i-none\""), "{stdout}");
    assert!(stdout.contains("Execution Time"), "{stdout}");
    let sampled = instauth(&["explain"]);
    assert!(!sampled.status.success());
    assert!(
        String::from_utf8_lossy(&sampled.stderr).contains("pass --instance-id"),
        "{sampled:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
