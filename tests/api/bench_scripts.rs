//! The pgbench scripts of bench/pgbench stay runnable and faithful: instauth.pgbench runs the
//! checked-in statement, and every script, run by the real pgbench through the counting proxy
//! on seed.sql's data, sends exactly the statements per authentication `docs/coder-contract.md` §4 gives
//! (instauth 1, also in the joined form kept for the planning comparison; Coder rc.2 13, rc.3 19
//! and 26, main 3).

use std::path::PathBuf;

use sqlx::{Connection as _, PgConnection};

use crate::helpers::pg::TestDatabase;
use crate::helpers::pgproxy::PgProxy;
use crate::helpers::roles::ReadOnlyRole;

const WORKSPACES: u32 = 400;
const TRANSACTIONS: usize = 20;

fn bench_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/pgbench")
}

#[test]
fn instauth_pgbench_runs_the_checked_in_statement() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let query = std::fs::read_to_string(root.join("queries/agents_by_instance_id.sql"))
        .expect("query file");
    let body: Vec<&str> = query.lines().filter(|l| !l.starts_with("--")).collect();
    let expected = format!("{};", body.join("\n")).replace("$1", ":instance_id");
    let script = std::fs::read_to_string(bench_dir().join("instauth.pgbench")).expect("script");
    let statement: Vec<&str> = script
        .lines()
        .filter(|l| !l.starts_with("--") && !l.starts_with('\\'))
        .collect();
    assert_eq!(
        statement.join("\n"),
        expected,
        "bench/pgbench/instauth.pgbench drifted from queries/agents_by_instance_id.sql"
    );
}

#[tokio::test]
async fn every_script_sends_the_statements_it_replays() {
    let database = TestDatabase::create_migrated().await;
    let mut conn = PgConnection::connect_with(&database.options)
        .await
        .expect("connect");
    let seed = std::fs::read_to_string(bench_dir().join("seed.sql")).expect("seed.sql");
    sqlx::raw_sql(&format!(
        "SET instauth.seed_workspaces = {WORKSPACES};\n{seed}"
    ))
    .execute(&mut conn)
    .await
    .expect("seed.sql loads");
    conn.close().await.ok();
    // The scripts only read, so the docs' read-only role runs them (and has a known password).
    let role = ReadOnlyRole::create(&database).await;
    let upstream =
        tokio::net::lookup_host((database.options.get_host(), database.options.get_port()))
            .await
            .expect("resolve")
            .next()
            .expect("an address");
    let proxy = PgProxy::start(upstream).await;

    let cases: [(&str, &[&str], usize); 7] = [
        ("instauth.pgbench", &["class_from=0", "class_count=20"], 1),
        (
            "instauth_joined.pgbench",
            &["class_from=0", "class_count=20"],
            1,
        ),
        (
            "legacy_rc2.pgbench",
            &["class_from=0", "class_count=10"],
            13,
        ),
        (
            "legacy_rc3.pgbench",
            &["class_from=0", "class_count=10", "candidates=1"],
            19,
        ),
        (
            "legacy_rc3.pgbench",
            &["class_from=12", "class_count=2", "candidates=2"],
            26,
        ),
        (
            "legacy_main.pgbench",
            &["class_from=0", "class_count=10"],
            3,
        ),
        (
            "legacy_main.pgbench",
            &["class_from=12", "class_count=2"],
            3,
        ),
    ];
    for (script, defines, per_auth) in cases {
        let before = proxy.statements();
        let mut command = tokio::process::Command::new("pgbench");
        command
            .args(["-n", "-M", "prepared", "-c", "1", "-t"])
            .arg(TRANSACTIONS.to_string())
            .args(["-D", &format!("workspaces={WORKSPACES}")])
            .args(defines.iter().flat_map(|d| ["-D", d]))
            .arg("-f")
            .arg(bench_dir().join(script))
            .arg(&database.name)
            .env("PGHOST", "127.0.0.1")
            .env("PGPORT", proxy.port.to_string())
            .env("PGUSER", &role.name)
            .env("PGPASSWORD", &role.password)
            .env("PGSSLMODE", "disable")
            .env_remove("PGOPTIONS");
        let output = command.output().await.unwrap_or_else(|err| {
            panic!("running pgbench ({err}): it comes with the postgresql package")
        });
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("number of failed transactions: 0 "),
            "{script} {defines:?}:\n{stdout}\n{stderr}"
        );
        assert_eq!(
            proxy.statements() - before,
            per_auth * TRANSACTIONS,
            "{script} {defines:?} must send {per_auth} statements per authentication"
        );
    }
    drop(proxy);
    drop(database);
    drop(role);
}
