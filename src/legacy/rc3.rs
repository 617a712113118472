//! Coder v2.33.0-rc.3 (#24325, `docs/coder-contract.md` §4.3): the instance lookup; per candidate the resource
//! read with its job authorization cascade (R, J, BJ, W) and the job read with its own (J, BJ,
//! W); selection; then the chosen agent's reads again.
//!
//! Replay order: 1 + 7N, then one L per distinct workspace (rule 8, moved ahead of selection so
//! stale agents drop out as in instauth instead of answering 409/400), then the chosen agent's
//! R, J, BJ, W, J, BJ, W, B, W, W, reusing that L: 19 statements for one agent, 26 for two,
//! as §4.3 counts them. A template-import or dry-run candidate costs R, J, J (Coder also read
//! the template version and template, which the schema subset lacks).

use uuid::Uuid;

use crate::agents::{self, Candidate};

use super::replay::{AgentRow, Replay};

pub(super) async fn find(
    replay: &mut Replay<'_, '_>,
    instance_id: &str,
    agent_name: Option<&str>,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let rows = replay.agents(instance_id).await?;
    let mut walked = Vec::new();
    for agent in &rows {
        if let Some(candidate) = walk(replay, agent).await? {
            walked.push(candidate);
        }
    }
    let candidates = replay.latest_only(walked).await?;
    if let Ok(decision) = agents::decide(&candidates, agent_name)
        && let Some(agent) = rows.iter().find(|a| a.id == decision.chosen.agent_id)
    {
        refetch(replay, agent.resource_id, decision.chosen.build_id).await?;
    }
    Ok(candidates)
}

/// The per-candidate reads: 7 statements for a build agent.
async fn walk(
    replay: &mut Replay<'_, '_>,
    agent: &AgentRow,
) -> Result<Option<Candidate>, sqlx::Error> {
    let Some(job_id) = replay.resource_job(agent.resource_id).await? else {
        return Ok(None);
    };
    let Some(job) = replay.job(job_id).await? else {
        return Ok(None);
    };
    if job.kind != "workspace_build" {
        replay.job(job.id).await?;
        return Ok(None);
    }
    let Some(build) = replay.build_by_job(job.id).await? else {
        return Ok(None);
    };
    let workspace = replay.workspace(build.workspace_id).await?;
    replay.job(job.id).await?;
    replay.build_by_job(job.id).await?;
    replay.workspace(build.workspace_id).await?;
    Ok(match workspace {
        Some(workspace) if !workspace.deleted => Some(agent.candidate(build.id, workspace.id)),
        _ => None,
    })
}

/// The chosen agent's reads after selection (10 statements; the latest build is already known).
async fn refetch(
    replay: &mut Replay<'_, '_>,
    resource_id: Uuid,
    build_id: Uuid,
) -> Result<(), sqlx::Error> {
    let Some(job_id) = replay.resource_job(resource_id).await? else {
        return Ok(());
    };
    replay.job(job_id).await?;
    let build = replay.build_by_job(job_id).await?;
    let workspace_id = build.map(|b| b.workspace_id);
    if let Some(id) = workspace_id {
        replay.workspace(id).await?;
    }
    replay.job(job_id).await?;
    replay.build_by_job(job_id).await?;
    if let Some(id) = workspace_id {
        replay.workspace(id).await?;
    }
    if let Some(build) = replay.build(build_id).await? {
        replay.workspace(build.workspace_id).await?;
        replay.workspace(build.workspace_id).await?;
    }
    Ok(())
}
