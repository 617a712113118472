//! Plans proven at scale: 100 000 workspaces of Coder-shaped history (bench/pgbench/seed.sql,
//! the data the pgbench comparison runs on), then the lookup's plan for instances of every
//! shape: every one of the five tables is read through an index, never scanned, and the
//! buffers read stay within a fixed budget per agent row sharing the instance id.

use std::time::Instant;

use serde_json::Value;
use sqlx::{Connection as _, PgConnection, Row as _};

use crate::helpers::pg::TestDatabase;

const WORKSPACES: i64 = 100_000;
const SEED: &str = include_str!("../../bench/pgbench/seed.sql");
/// The lookup statement, header comments included, as the service sends it.
const LOOKUP: &str = include_str!("../../queries/agents_by_instance_id.sql");
/// The coalesced lookup, likewise.
const BATCH: &str = include_str!("../../queries/agents_by_instance_ids.sql");

/// Buffers the root of the plan may touch: `BASE + PER_ROW` for every agent row the instance-id
/// index returns (each joined through four more indexes and the latest-build check), whatever
/// the size of the tables. Measured at 100k workspaces: about 30 for one row, 94 for six.
const BASE_BUFFERS: u64 = 8;
const BUFFERS_PER_ROW: u64 = 32;

const TABLES: [&str; 5] = [
    "workspace_agents",
    "workspace_resources",
    "workspace_builds",
    "provisioner_jobs",
    "workspaces",
];

/// The instance id seed.sql gives workspace `i`.
fn instance_id(i: i64) -> String {
    (3_000_000_000_000_000_000 + (i * 2_654_435_761) % 1_000_000_000_000).to_string()
}

/// Candidates seed.sql leaves for a workspace of `class` (i % 20).
fn expected_candidates(class: i64) -> u64 {
    match class {
        12 | 13 | 19 => 2,
        16..=18 => 0,
        _ => 1,
    }
}

/// What the test reads from one plan.
#[derive(Debug, Default)]
struct PlanFacts {
    /// (node type, relation) of every scan of a table.
    scans: Vec<(String, String)>,
    /// Rows the instance-id index returned, including those a filter then dropped.
    index_rows: u64,
    buffers: u64,
    candidates: u64,
}

fn number(node: &Value, key: &str) -> u64 {
    node[key].as_f64().map_or(0, |n| n as u64)
}

fn walk(node: &Value, facts: &mut PlanFacts) {
    let node_type = node["Node Type"].as_str().unwrap_or_default().to_owned();
    // A bitmap index scan (the planner's choice for a batch of ids) names no relation; its
    // rows are every match, before the heap scan above it filters.
    if node_type == "Bitmap Index Scan"
        && node["Index Name"] == "workspace_agents_auth_instance_id_deleted_idx"
    {
        facts.index_rows += number(node, "Actual Rows") * number(node, "Actual Loops");
    }
    if let Some(relation) = node["Relation Name"].as_str() {
        facts.scans.push((node_type.clone(), relation.to_owned()));
        if node["Index Name"] == "workspace_agents_auth_instance_id_deleted_idx" {
            facts.index_rows += number(node, "Actual Rows") * number(node, "Actual Loops")
                + number(node, "Rows Removed by Filter");
        }
    }
    for child in node["Plans"].as_array().into_iter().flatten() {
        walk(child, facts);
    }
}

fn facts(explain_json: &str) -> PlanFacts {
    let plans: Value = serde_json::from_str(explain_json).expect("EXPLAIN JSON");
    let root = &plans[0]["Plan"];
    let mut facts = PlanFacts {
        buffers: number(root, "Shared Hit Blocks") + number(root, "Shared Read Blocks"),
        candidates: number(root, "Actual Rows"),
        ..PlanFacts::default()
    };
    walk(root, &mut facts);
    facts
}

fn check(label: &str, facts: &PlanFacts, expected_candidates: u64) {
    for (node, relation) in &facts.scans {
        assert!(
            matches!(
                node.as_str(),
                "Index Scan" | "Index Only Scan" | "Bitmap Heap Scan"
            ),
            "{label}: {relation} read by {node}: {facts:?}"
        );
    }
    for table in TABLES {
        assert!(
            facts.scans.iter().any(|(_, relation)| relation == table),
            "{label}: {table} missing from the plan: {facts:?}"
        );
    }
    assert_eq!(facts.candidates, expected_candidates, "{label}: {facts:?}");
    let budget = BASE_BUFFERS + BUFFERS_PER_ROW * facts.index_rows.max(1);
    assert!(
        facts.buffers <= budget,
        "{label}: {} buffers for {} index rows, budget {budget}: {facts:?}",
        facts.buffers,
        facts.index_rows
    );
}

#[tokio::test]
async fn every_table_is_read_by_index_with_bounded_buffers_at_100k_workspaces() {
    let started = Instant::now();
    let database = TestDatabase::create_migrated().await;
    let mut conn = PgConnection::connect_with(&database.options)
        .await
        .expect("connect");
    sqlx::raw_sql(&format!(
        "SET instauth.seed_workspaces = {WORKSPACES};\n{SEED}"
    ))
    .execute(&mut conn)
    .await
    .expect("seed.sql loads");
    let seeded = started.elapsed();

    let counts: Vec<i64> = sqlx::query_scalar(
        "SELECT count(*) FROM workspaces UNION ALL SELECT count(*) FROM workspace_builds \
         UNION ALL SELECT count(*) FROM workspace_agents",
    )
    .fetch_all(&mut conn)
    .await
    .expect("counts");
    assert_eq!(counts[0], WORKSPACES);
    assert!(
        counts[1] >= 3 * WORKSPACES,
        "several builds each: {counts:?}"
    );
    // The load skipped foreign-key triggers: prove every reference holds anyway.
    let dangling: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM workspace_agents wa \
                 WHERE NOT EXISTS (SELECT FROM workspace_resources wr WHERE wr.id = wa.resource_id)) \
              + (SELECT count(*) FROM workspace_agents wa WHERE wa.parent_id IS NOT NULL \
                 AND NOT EXISTS (SELECT FROM workspace_agents p WHERE p.id = wa.parent_id)) \
              + (SELECT count(*) FROM workspace_resources wr \
                 WHERE NOT EXISTS (SELECT FROM provisioner_jobs pj WHERE pj.id = wr.job_id)) \
              + (SELECT count(*) FROM workspace_builds wb \
                 WHERE NOT EXISTS (SELECT FROM provisioner_jobs pj WHERE pj.id = wb.job_id) \
                    OR NOT EXISTS (SELECT FROM workspaces w WHERE w.id = wb.workspace_id))",
    )
    .fetch_one(&mut conn)
    .await
    .expect("reference check");
    assert_eq!(dangling, 0, "seed.sql left dangling references");

    // Custom plans, as a prepared statement gets for its first executions: every class of
    // workspace, at a few places across the data, plus an id nobody has.
    let explain = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}", LOOKUP);
    let mut worst = (0, 0);
    for class in 0..20 {
        for k in [0, 1234, 2500, 4999] {
            let i = 20 * k + class;
            let row = sqlx::query(&explain)
                .bind(instance_id(i))
                .fetch_one(&mut conn)
                .await
                .expect("explain");
            // The json column is decoded as its text; sqlx has no json support enabled here.
            let plan = facts(&row.try_get_unchecked::<String, _>(0).expect("plan text"));
            check(
                &format!("workspace {i} (class {class})"),
                &plan,
                expected_candidates(class),
            );
            worst = worst.max((plan.buffers, plan.index_rows));
        }
    }
    let row = sqlx::query(&explain)
        .bind("i-nobody")
        .fetch_one(&mut conn)
        .await
        .expect("explain");
    let unknown = facts(&row.try_get_unchecked::<String, _>(0).expect("plan text"));
    check("unknown instance", &unknown, 0);

    // The generic plan, which a prepared statement may switch to after five executions.
    sqlx::raw_sql(&format!(
        "SET plan_cache_mode = force_generic_plan; PREPARE lookup(varchar) AS {}",
        LOOKUP
    ))
    .execute(&mut conn)
    .await
    .expect("prepare");
    for i in [7, 12, 19, 15] {
        let row = sqlx::raw_sql(&format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE lookup('{}')",
            instance_id(i)
        ))
        .fetch_one(&mut conn)
        .await
        .expect("explain execute");
        let plan = facts(&row.try_get_unchecked::<String, _>(0).expect("plan text"));
        check(
            &format!("generic plan, workspace {i}"),
            &plan,
            expected_candidates(i % 20),
        );
    }
    // The coalesced lookup for batches of 1, 16 and 64 distinct instances of every class:
    // the same index access, the same budget per agent row the first index returns.
    let batch = format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}", BATCH);
    for size in [1_i64, 16, 64] {
        let workspaces: Vec<i64> = (0..size).map(|k| 20 * (k * 37 % 5000) + k % 20).collect();
        let ids: Vec<String> = workspaces.iter().map(|i| instance_id(*i)).collect();
        let expected: u64 = workspaces.iter().map(|i| expected_candidates(i % 20)).sum();
        let row = sqlx::query(&batch)
            .bind(&ids)
            .fetch_one(&mut conn)
            .await
            .expect("explain batch");
        let plan = facts(&row.try_get_unchecked::<String, _>(0).expect("plan text"));
        check(&format!("batch of {size}"), &plan, expected);
        eprintln!(
            "scale: batch of {size}: {} buffers for {} index rows",
            plan.buffers, plan.index_rows
        );
    }
    conn.close().await.ok();
    eprintln!(
        "scale: seeded {WORKSPACES} workspaces ({} builds, {} agents) in {:.1?}; \
         worst plan {} buffers for {} index rows; total {:.1?}",
        counts[1],
        counts[2],
        seeded,
        worst.0,
        worst.1,
        started.elapsed()
    );
}
