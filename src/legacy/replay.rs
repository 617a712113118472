//! The replayed statements (`queries/legacy_*.sql`), one method each, every one counted where
//! it is sent. They read the columns the replays use; Coder read full rows of wider views, so
//! a replay understates each statement's cost (`docs/coder-contract.md` §4.7).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::agents::Candidate;
use crate::db::{StatementMode, Unnamed};
use crate::metrics::Metrics;

/// Every statement name, for metrics to show at zero.
pub(crate) const QUERIES: &[&str] = &[
    "legacy_agents_by_instance_id",
    "legacy_build_agents_by_instance_id",
    "legacy_workspace_by_agent_id",
    "legacy_resource_by_id",
    "legacy_job_by_id",
    "legacy_build_by_job_id",
    "legacy_build_by_id",
    "legacy_latest_build_by_workspace_id",
    "legacy_workspace_by_id",
];

/// An agent row of the instance lookup (A1/As).
#[derive(Debug, Clone)]
pub(super) struct AgentRow {
    pub id: Uuid,
    pub name: String,
    pub auth_token: Uuid,
    pub created_at: DateTime<Utc>,
    pub resource_id: Uuid,
}

impl AgentRow {
    pub(super) fn candidate(&self, build_id: Uuid, workspace_id: Uuid) -> Candidate {
        Candidate {
            agent_id: self.id,
            agent_name: self.name.clone(),
            auth_token: self.auth_token,
            agent_created_at: self.created_at,
            build_id,
            workspace_id,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct JobRow {
    pub id: Uuid,
    pub kind: String,
}

#[derive(Debug, Clone)]
pub(super) struct BuildRow {
    pub id: Uuid,
    pub workspace_id: Uuid,
}

#[derive(Debug, Clone)]
pub(super) struct WorkspaceRow {
    pub id: Uuid,
    pub deleted: bool,
}

/// One request's replay: statements go one after another on one pooled connection (Coder
/// took a connection per statement; holding one is the cheaper, conservative choice), sent
/// the way `--db-statement-cache-capacity` asks, as the single lookup's are.
#[derive(Debug)]
pub(super) struct Replay<'r, 'm> {
    conn: &'r mut PgConnection,
    mode: StatementMode,
    statements: &'r mut StatementCounter<'m>,
}

/// Sends a query built by a `query_file*!` macro on the replay's connection: cached by name,
/// or as the unnamed statement when the cache is off (the macro is expanded for both arms;
/// only one runs).
macro_rules! send {
    ($replay:ident, $fetch:ident, $query:expr) => {
        match $replay.mode {
            StatementMode::Cached => $query.$fetch(&mut *$replay.conn).await,
            StatementMode::Unnamed => $query.$fetch(Unnamed(&mut *$replay.conn)).await,
        }
    };
}

impl<'r, 'm> Replay<'r, 'm> {
    pub(super) fn new(
        conn: &'r mut PgConnection,
        mode: StatementMode,
        statements: &'r mut StatementCounter<'m>,
    ) -> Self {
        Self {
            conn,
            mode,
            statements,
        }
    }

    /// A1 / As.
    pub(super) async fn agents(&mut self, instance_id: &str) -> Result<Vec<AgentRow>, sqlx::Error> {
        self.statements.ran("legacy_agents_by_instance_id");
        send!(
            self,
            fetch_all,
            sqlx::query_file_as!(
                AgentRow,
                "queries/legacy_agents_by_instance_id.sql",
                instance_id
            )
        )
    }

    /// AB.
    pub(super) async fn build_agents(
        &mut self,
        instance_id: &str,
    ) -> Result<Vec<Candidate>, sqlx::Error> {
        self.statements.ran("legacy_build_agents_by_instance_id");
        send!(
            self,
            fetch_all,
            sqlx::query_file_as!(
                Candidate,
                "queries/legacy_build_agents_by_instance_id.sql",
                instance_id
            )
        )
    }

    /// WA.
    pub(super) async fn workspace_by_agent(
        &mut self,
        agent_id: Uuid,
    ) -> Result<Option<WorkspaceRow>, sqlx::Error> {
        self.statements.ran("legacy_workspace_by_agent_id");
        send!(
            self,
            fetch_optional,
            sqlx::query_file_as!(
                WorkspaceRow,
                "queries/legacy_workspace_by_agent_id.sql",
                agent_id
            )
        )
    }

    /// R: the resource's job id.
    pub(super) async fn resource_job(
        &mut self,
        resource_id: Uuid,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        self.statements.ran("legacy_resource_by_id");
        send!(
            self,
            fetch_optional,
            sqlx::query_file_scalar!("queries/legacy_resource_by_id.sql", resource_id)
        )
    }

    /// J.
    pub(super) async fn job(&mut self, job_id: Uuid) -> Result<Option<JobRow>, sqlx::Error> {
        self.statements.ran("legacy_job_by_id");
        send!(
            self,
            fetch_optional,
            sqlx::query_file_as!(JobRow, "queries/legacy_job_by_id.sql", job_id)
        )
    }

    /// BJ.
    pub(super) async fn build_by_job(
        &mut self,
        job_id: Uuid,
    ) -> Result<Option<BuildRow>, sqlx::Error> {
        self.statements.ran("legacy_build_by_job_id");
        send!(
            self,
            fetch_optional,
            sqlx::query_file_as!(BuildRow, "queries/legacy_build_by_job_id.sql", job_id)
        )
    }

    /// B.
    pub(super) async fn build(&mut self, build_id: Uuid) -> Result<Option<BuildRow>, sqlx::Error> {
        self.statements.ran("legacy_build_by_id");
        send!(
            self,
            fetch_optional,
            sqlx::query_file_as!(BuildRow, "queries/legacy_build_by_id.sql", build_id)
        )
    }

    /// L: the id of the workspace's newest build.
    pub(super) async fn latest_build(
        &mut self,
        workspace_id: Uuid,
    ) -> Result<Option<Uuid>, sqlx::Error> {
        self.statements.ran("legacy_latest_build_by_workspace_id");
        send!(
            self,
            fetch_optional,
            sqlx::query_file_scalar!(
                "queries/legacy_latest_build_by_workspace_id.sql",
                workspace_id
            )
        )
    }

    /// W.
    pub(super) async fn workspace(
        &mut self,
        workspace_id: Uuid,
    ) -> Result<Option<WorkspaceRow>, sqlx::Error> {
        self.statements.ran("legacy_workspace_by_id");
        send!(
            self,
            fetch_optional,
            sqlx::query_file_as!(
                WorkspaceRow,
                "queries/legacy_workspace_by_id.sql",
                workspace_id
            )
        )
    }

    /// Keeps the candidates whose build is the newest of their workspace (candidate rule 8),
    /// with one L per distinct workspace. Coder's versions checked this only for the chosen
    /// agent, after selection (400 when stale); the replays check before selection so a stale
    /// agent drops out and every strategy gives instauth's answers.
    pub(super) async fn latest_only(
        &mut self,
        candidates: Vec<Candidate>,
    ) -> Result<Vec<Candidate>, sqlx::Error> {
        let mut latest: Vec<(Uuid, Option<Uuid>)> = Vec::new();
        for candidate in &candidates {
            if !latest.iter().any(|(w, _)| *w == candidate.workspace_id) {
                let build = self.latest_build(candidate.workspace_id).await?;
                latest.push((candidate.workspace_id, build));
            }
        }
        Ok(candidates
            .into_iter()
            .filter(|c| {
                latest
                    .iter()
                    .any(|(w, build)| *w == c.workspace_id && *build == Some(c.build_id))
            })
            .collect())
    }
}

/// Counts the statements one request sends, for its `Server-Timing` header, while feeding
/// `instauth_sql_statements_total`.
#[derive(Debug)]
pub(crate) struct StatementCounter<'m> {
    metrics: &'m Metrics,
    count: u32,
}

impl<'m> StatementCounter<'m> {
    pub(crate) fn new(metrics: &'m Metrics) -> Self {
        Self { metrics, count: 0 }
    }

    /// Records that the statement of `queries/<query>.sql` is being sent.
    pub(crate) fn ran(&mut self, query: &str) {
        self.metrics.sql_statement(crate::db::PRIMARY, query);
        self.count += 1;
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }
}
