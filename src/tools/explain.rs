//! `instauth explain`: the plan PostgreSQL uses for every request-path query, with actual rows,
//! timings and buffers, for one instance id. Read-only by construction, so it is safe on a
//! production primary or a replica:
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
    /// (what was explained, plan lines) for each request-path query: the single lookup, then
    /// the coalesced lookup for batches of [`BATCHES`] sampled instance ids.
    pub plans: Vec<(String, Vec<String>)>,
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
    let lookup = sqlx::query_file_scalar!(
        "queries/explain_agents_by_instance_id.sql",
        instance_id.as_str()
    )
    .fetch_all(&mut *conn)
    .await
    .context("explaining agents_by_instance_id.sql")?
    .into_iter()
    // sqlx cannot infer that EXPLAIN never returns a NULL line.
    .map(Option::unwrap_or_default)
    .collect();
    let mut plans = vec![("queries/agents_by_instance_id.sql".to_owned(), lookup)];
    for size in BATCHES {
        let Some(batch) = ids.get(..usize::try_from(size).unwrap_or(usize::MAX)) else {
            // Fewer ids have candidates than this batch would hold.
            continue;
        };
        let lines = sqlx::query_file_scalar!("queries/explain_agents_by_instance_ids.sql", batch)
            .fetch_all(&mut *conn)
            .await
            .context("explaining agents_by_instance_ids.sql")?
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
        plans.push((
            format!("queries/agents_by_instance_ids.sql, a batch of {size} sampled instance ids"),
            lines,
        ));
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
        for (file, lines) in &self.plans {
            let _ = writeln!(out, "\n-- {file}: EXPLAIN (ANALYZE, BUFFERS)");
            for line in lines {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}
