//! `instauth explain`: the plan PostgreSQL uses for every request-path query, with actual rows,
//! timings and buffers, for one instance id, and how long PostgreSQL takes to plan it: behind
//! PgBouncer before 1.21 (unnamed statements) every request pays that planning. Read-only by
//! construction, so it is safe on a production primary or a replica:
//!
//! - its one connection asks for `default_transaction_read_only=on` at startup, and explain
//!   refuses to run anything else unless the server confirms the session is read-only (a pooler
//!   that drops startup parameters would otherwise silently lift it);
//! - every statement it runs is a checked-in `SELECT` or `EXPLAIN` of one (`queries/explain_*`,
//!   `queries/sample_instance_ids.sql`).

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::Args;
use sqlx::{Connection as _, PgConnection};

use crate::db::{self, DatabaseSettings, describe_target};

use super::database::DatabaseArgs;

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Instance id to explain the lookup for; without it, the smallest one that has a
    /// candidate agent is picked.
    #[arg(long, env = "INSTAUTH_INSTANCE_ID")]
    pub instance_id: Option<String>,
}

/// `instauth explain`: prints the report for the database the flags name.
pub async fn run(args: ExplainArgs) -> anyhow::Result<()> {
    let database = args.database.open()?;
    let result = report(&database.settings, args.instance_id.as_deref()).await;
    database.stop();
    print!("{}", result?.render());
    Ok(())
}

/// The batch sizes the coalesced lookup is explained for.
const BATCHES: [i64; 3] = [1, 16, 64];

/// Times each statement is explained in the session. The first run also fills the session's
/// catalog caches, so its planning time is far above what a long-lived pooled connection
/// pays; the median of the runs is the figure that matters.
const RUNS: usize = 5;

/// What the session is connected to (`queries/explain_session.sql`).
#[derive(Debug)]
struct Session {
    read_only: bool,
    in_recovery: bool,
    server_version: String,
}

/// The request-path queries and their plans for one instance id.
#[derive(Debug)]
pub struct Report {
    pub target: String,
    pub server_version: String,
    pub in_recovery: bool,
    pub instance_id: String,
    /// Whether the instance id was picked by `queries/sample_instance_ids.sql`.
    pub sampled: bool,
    /// Each request-path query: the single lookup, then the coalesced lookup for batches of
    /// [`BATCHES`] sampled instance ids.
    pub plans: Vec<Plan>,
}

/// One request-path query explained [`RUNS`] times in the same session.
#[derive(Debug)]
pub struct Plan {
    /// What was explained.
    pub what: String,
    /// The last run's plan, one line each.
    pub lines: Vec<String>,
    /// `Planning Time` of every run, in milliseconds, in order.
    pub planning_ms: Vec<f64>,
    /// `Execution Time` of every run, in milliseconds, in order.
    pub execution_ms: Vec<f64>,
}

impl Plan {
    fn from_runs(what: String, runs: Vec<Vec<String>>) -> Self {
        let timing = |lines: &[String], label: &str| {
            lines.iter().find_map(|line| {
                line.trim()
                    .strip_prefix(label)?
                    .strip_suffix(" ms")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
        };
        let planning_ms = runs
            .iter()
            .filter_map(|lines| timing(lines, "Planning Time:"))
            .collect();
        let execution_ms = runs
            .iter()
            .filter_map(|lines| timing(lines, "Execution Time:"))
            .collect();
        Self {
            what,
            lines: runs.into_iter().next_back().unwrap_or_default(),
            planning_ms,
            execution_ms,
        }
    }

    /// The median of the planning times, in milliseconds.
    pub fn planning_median_ms(&self) -> Option<f64> {
        median(&self.planning_ms)
    }
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(
        "the session is not read-only although explain asked for default_transaction_read_only=on \
         at connection start (a connection pooler may have dropped the startup parameter): connect \
         explain straight to PostgreSQL or a replica"
    )]
    NotReadOnly,
    #[error(
        "no instance id has a candidate agent in this database, so there is nothing to sample: \
         pass --instance-id"
    )]
    NothingToSample,
}

/// Connects read-only and explains every request-path query for `instance_id`, or for a
/// sampled instance id that has a candidate.
pub async fn report(
    settings: &DatabaseSettings,
    instance_id: Option<&str>,
) -> anyhow::Result<Report> {
    let connect = db::connect_options(settings).options([("default_transaction_read_only", "on")]);
    let target = describe_target(&connect);
    let mut conn = PgConnection::connect_with(&connect)
        .await
        .with_context(|| format!("connecting to {target}"))?;
    let result = explain(&mut conn, target, instance_id).await;
    conn.close().await.ok();
    result
}

async fn explain(
    conn: &mut PgConnection,
    target: String,
    instance_id: Option<&str>,
) -> anyhow::Result<Report> {
    let session = sqlx::query_file_as!(Session, "queries/explain_session.sql")
        .fetch_one(&mut *conn)
        .await
        .context("reading the session settings")?;
    if !session.read_only {
        return Err(ExplainError::NotReadOnly.into());
    }
    let largest = BATCHES.iter().copied().max().unwrap_or(1);
    let ids = sqlx::query_file_scalar!("queries/sample_instance_ids.sql", largest)
        .fetch_all(&mut *conn)
        .await
        .context("sampling instance ids")?;
    let (instance_id, sampled) = match instance_id {
        Some(id) => (id.to_owned(), false),
        None => (
            ids.first().cloned().ok_or(ExplainError::NothingToSample)?,
            true,
        ),
    };
    let mut plans = vec![
        explain_runs(
            conn,
            "queries/agents_by_instance_id.sql".to_owned(),
            Explained::Single(&instance_id),
        )
        .await?,
    ];
    for size in BATCHES {
        let Some(batch) = ids.get(..usize::try_from(size).unwrap_or(usize::MAX)) else {
            // Fewer ids have candidates than this batch would hold.
            continue;
        };
        plans.push(
            explain_runs(
                conn,
                format!(
                    "queries/agents_by_instance_ids.sql, a batch of {size} sampled instance ids"
                ),
                Explained::Batch(batch),
            )
            .await?,
        );
    }
    Ok(Report {
        target,
        server_version: session.server_version,
        in_recovery: session.in_recovery,
        instance_id,
        sampled,
        plans,
    })
}

/// A request-path statement with the parameter it is explained for.
#[derive(Clone, Copy)]
enum Explained<'a> {
    /// `agents_by_instance_id.sql` for one instance id.
    Single(&'a str),
    /// `agents_by_instance_ids.sql` for a batch.
    Batch(&'a [String]),
}

/// `statement` explained [`RUNS`] times in the session.
async fn explain_runs(
    conn: &mut PgConnection,
    what: String,
    statement: Explained<'_>,
) -> anyhow::Result<Plan> {
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let lines = match statement {
            Explained::Single(instance_id) => {
                sqlx::query_file_scalar!("queries/explain_agents_by_instance_id.sql", instance_id)
                    .fetch_all(&mut *conn)
                    .await
                    .context("explaining agents_by_instance_id.sql")?
            }
            Explained::Batch(batch) => {
                sqlx::query_file_scalar!("queries/explain_agents_by_instance_ids.sql", batch)
                    .fetch_all(&mut *conn)
                    .await
                    .context("explaining agents_by_instance_ids.sql")?
            }
        };
        // sqlx cannot infer that EXPLAIN never returns a NULL line.
        runs.push(lines.into_iter().map(Option::unwrap_or_default).collect());
    }
    Ok(Plan::from_runs(what, runs))
}

impl Report {
    /// The text `instauth explain` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let role = if self.in_recovery {
            "standby"
        } else {
            "primary"
        };
        let picked = if self.sampled {
            " (sampled: it has a candidate)"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "-- {} (PostgreSQL {}, {role}), read-only session",
            self.target, self.server_version
        );
        let _ = writeln!(out, "-- instance id {:?}{picked}", self.instance_id);
        for plan in &self.plans {
            let _ = writeln!(
                out,
                "\n-- {}: EXPLAIN (ANALYZE, BUFFERS), the last of {RUNS} runs",
                plan.what
            );
            for line in &plan.lines {
                let _ = writeln!(out, "{line}");
            }
            let list = |values: &[f64]| {
                values
                    .iter()
                    .map(|ms| format!("{ms:.3}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let _ = writeln!(
                out,
                "-- planning: median {:.3} ms over {RUNS} runs in this session ({} ms; the first \
                 also fills the catalog caches); execution: median {:.3} ms ({} ms). Unnamed \
                 statements (PgBouncer before 1.21) pay the planning on every request.",
                plan.planning_median_ms().unwrap_or(f64::NAN),
                list(&plan.planning_ms),
                median(&plan.execution_ms).unwrap_or(f64::NAN),
                list(&plan.execution_ms),
            );
        }
        out
    }
}
