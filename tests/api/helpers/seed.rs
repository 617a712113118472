//! Seeding Coder-shaped rows: workspaces, jobs, builds, resources and agents.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// An agent row as a test needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agent {
    pub id: Uuid,
    pub token: Uuid,
}

impl Agent {
    pub fn token(&self) -> String {
        self.token.hyphenated().to_string()
    }
}

/// A build's workspace and its one resource.
#[derive(Debug, Clone, Copy)]
pub struct Build {
    pub workspace_id: Uuid,
    pub resource_id: Uuid,
}

/// Optional agent attributes.
#[derive(Debug, Clone, Default)]
pub struct AgentSpec {
    pub id: Option<Uuid>,
    pub parent_id: Option<Uuid>,
    pub deleted: bool,
    pub created_at: Option<DateTime<Utc>>,
}

pub struct Seed<'a> {
    pool: &'a PgPool,
}

impl<'a> Seed<'a> {
    pub fn new(pool: &'a PgPool) -> Self {
        Self { pool }
    }

    pub async fn workspace(&self) -> Uuid {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO workspaces (id, created_at, updated_at, owner_id, organization_id, \
             template_id, name) VALUES ($1, now(), now(), $2, $2, $2, $3)",
        )
        .bind(id)
        .bind(Uuid::new_v4())
        .bind(format!("ws-{}", &id.simple().to_string()[..8]))
        .execute(self.pool)
        .await
        .expect("insert workspace");
        id
    }

    pub async fn delete_workspace(&self, workspace_id: Uuid) {
        sqlx::query("UPDATE workspaces SET deleted = true WHERE id = $1")
            .bind(workspace_id)
            .execute(self.pool)
            .await
            .expect("delete workspace");
    }

    /// A provisioner job of `kind` (`workspace_build`, `template_version_import`,
    /// `template_version_dry_run`).
    pub async fn job(&self, kind: &str) -> Uuid {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO provisioner_jobs (id, created_at, updated_at, started_at, completed_at, \
             error, organization_id, initiator_id, provisioner, storage_method, type, input, file_id) \
             VALUES ($1, now(), now(), now(), now(), '', $2, $2, 'echo', 'file', \
             $3::provisioner_job_type, '{}'::jsonb, $2)",
        )
        .bind(id)
        .bind(Uuid::new_v4())
        .bind(kind)
        .execute(self.pool)
        .await
        .expect("insert job");
        id
    }

    pub async fn resource(&self, job_id: Uuid) -> Uuid {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO workspace_resources (id, created_at, job_id, transition, type, name) \
             VALUES ($1, now(), $2, 'start', 'instance', 'resource')",
        )
        .bind(id)
        .bind(job_id)
        .execute(self.pool)
        .await
        .expect("insert resource");
        id
    }

    /// Build `number` of `workspace_id` on a new `workspace_build` job, with one resource.
    pub async fn build(&self, workspace_id: Uuid, number: i32) -> Build {
        let job_id = self.job("workspace_build").await;
        self.build_on_job(workspace_id, number, job_id, "start")
            .await
    }

    /// A build on an existing job (any type), with one resource.
    pub async fn build_on_job(
        &self,
        workspace_id: Uuid,
        number: i32,
        job_id: Uuid,
        transition: &str,
    ) -> Build {
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO workspace_builds (id, created_at, updated_at, workspace_id, \
             template_version_id, build_number, transition, initiator_id, job_id) \
             VALUES ($1, now(), now(), $2, $3, $4, $5::workspace_transition, $3, $6)",
        )
        .bind(id)
        .bind(workspace_id)
        .bind(Uuid::new_v4())
        .bind(number)
        .bind(transition)
        .bind(job_id)
        .execute(self.pool)
        .await
        .expect("insert build");
        let resource_id = self.resource(job_id).await;
        Build {
            workspace_id,
            resource_id,
        }
    }

    pub async fn agent(&self, resource_id: Uuid, name: &str, instance_id: &str) -> Agent {
        self.agent_with(resource_id, name, instance_id, AgentSpec::default())
            .await
    }

    pub async fn agent_with(
        &self,
        resource_id: Uuid,
        name: &str,
        instance_id: &str,
        spec: AgentSpec,
    ) -> Agent {
        let agent = Agent {
            id: spec.id.unwrap_or_else(Uuid::new_v4),
            token: Uuid::new_v4(),
        };
        sqlx::query(
            "INSERT INTO workspace_agents (id, created_at, updated_at, name, resource_id, \
             auth_token, auth_instance_id, architecture, operating_system, parent_id, deleted) \
             VALUES ($1, coalesce($8, clock_timestamp()), now(), $2, $3, $4, $5, 'amd64', \
             'linux', $6, $7)",
        )
        .bind(agent.id)
        .bind(name)
        .bind(resource_id)
        .bind(agent.token)
        .bind(instance_id)
        .bind(spec.parent_id)
        .bind(spec.deleted)
        .bind(spec.created_at)
        .execute(self.pool)
        .await
        .expect("insert agent");
        agent
    }

    /// A new workspace and its first build (one resource, no agent yet).
    pub async fn first_build(&self) -> Build {
        let workspace_id = self.workspace().await;
        self.build(workspace_id, 1).await
    }

    /// The simplest live agent: a new workspace whose first build has this one agent.
    pub async fn live_agent(&self, name: &str, instance_id: &str) -> Agent {
        self.live_agent_with(name, instance_id, AgentSpec::default())
            .await
    }

    /// [`Seed::live_agent`] with the agent's attributes chosen.
    pub async fn live_agent_with(&self, name: &str, instance_id: &str, spec: AgentSpec) -> Agent {
        let build = self.first_build().await;
        self.agent_with(build.resource_id, name, instance_id, spec)
            .await
    }

    /// A new workspace whose first build has one agent per name, all on `instance_id`, created
    /// in the order given. Returns the build and its agents.
    pub async fn live_agents(&self, instance_id: &str, names: &[&str]) -> (Build, Vec<Agent>) {
        let build = self.first_build().await;
        let mut agents = Vec::new();
        for name in names {
            agents.push(self.agent(build.resource_id, name, instance_id).await);
        }
        (build, agents)
    }

    /// Agents on a resource of a template-import job (no build row), as Coder stores them
    /// when a template version is imported.
    pub async fn template_import(&self, instance_id: &str, names: &[&str]) -> Vec<Agent> {
        let job_id = self.job("template_version_import").await;
        let resource_id = self.resource(job_id).await;
        let mut agents = Vec::new();
        for name in names {
            agents.push(self.agent(resource_id, name, instance_id).await);
        }
        agents
    }

    /// Coder's test fixture: the template import's agents first, then a workspace whose first
    /// build has one agent per name, all on `instance_id`. Returns the build and its agents.
    pub async fn coder_workspace(&self, instance_id: &str, names: &[&str]) -> (Build, Vec<Agent>) {
        self.template_import(instance_id, names).await;
        self.live_agents(instance_id, names).await
    }
}
