//! Coder v2.33.0-rc.2 (`docs/coder-contract.md` §4.2): the instance lookup, then for the agent: WA, R, J, BJ,
//! W, J, BJ, W, B, W, W, L: 13 statements for one agent.
//!
//! rc.2 read only the newest row and had no ambiguity answer; the replay walks every candidate
//! with the same 12 statements (so one agent costs rc.2's 13) and then applies instauth's
//! selection. Candidates of template-import or dry-run jobs stop after WA, R, J (rc.2 answered
//! 400 there); the build is fetched by id from BJ's row (rc.2 read it from the job's input).

use crate::agents::Candidate;

use super::replay::{AgentRow, Replay};

pub(super) async fn find(
    replay: &mut Replay<'_, '_>,
    instance_id: &str,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let agents = replay.agents(instance_id).await?;
    let mut candidates = Vec::new();
    for agent in &agents {
        if let Some(candidate) = walk(replay, agent).await? {
            candidates.push(candidate);
        }
    }
    Ok(candidates)
}

/// rc.2's walk for one agent; `None` when the agent may not authenticate.
async fn walk(
    replay: &mut Replay<'_, '_>,
    agent: &AgentRow,
) -> Result<Option<Candidate>, sqlx::Error> {
    // The agent read's authorization loads its workspace.
    replay.workspace_by_agent(agent.id).await?;
    // The resource read, with the nested authorization of its job.
    let Some(job_id) = replay.resource_job(agent.resource_id).await? else {
        return Ok(None);
    };
    let Some(job) = replay.job(job_id).await? else {
        return Ok(None);
    };
    if job.kind != "workspace_build" {
        return Ok(None);
    }
    let Some(build) = replay.build_by_job(job.id).await? else {
        return Ok(None);
    };
    replay.workspace(build.workspace_id).await?;
    // The job read and its authorization (build by job, workspace).
    replay.job(job.id).await?;
    replay.build_by_job(job.id).await?;
    replay.workspace(build.workspace_id).await?;
    // The build read and its authorization.
    let Some(build) = replay.build(build.id).await? else {
        return Ok(None);
    };
    let workspace = replay.workspace(build.workspace_id).await?;
    // The latest build read, authorized on its workspace first.
    replay.workspace(build.workspace_id).await?;
    let latest = replay.latest_build(build.workspace_id).await?;
    Ok(match workspace {
        Some(workspace) if !workspace.deleted && latest == Some(build.id) => {
            Some(agent.candidate(build.id, workspace.id))
        }
        _ => None,
    })
}
