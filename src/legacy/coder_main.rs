//! Coder main (#25031 + #25207, `docs/coder-contract.md` §4.4): the joined query (rules 1-7), then the chosen
//! agent's workspace (W) and latest build (L): 3 statements for any number of candidates.
//!
//! Replay order: AB, one L per distinct workspace before selection (so stale agents drop out
//! as in instauth; Coder relies on #25207's soft delete for that and compares after), then W
//! for the chosen agent. Candidates of one workspace cost 3 statements, as §4.4 counts them.

use crate::agents::{self, Candidate};

use super::replay::Replay;

pub(super) async fn find(
    replay: &mut Replay<'_, '_>,
    instance_id: &str,
    agent_name: Option<&str>,
) -> Result<Vec<Candidate>, sqlx::Error> {
    let rows = replay.build_agents(instance_id).await?;
    let candidates = replay.latest_only(rows).await?;
    if let Ok(decision) = agents::decide(&candidates, agent_name) {
        replay.workspace(decision.chosen.workspace_id).await?;
    }
    Ok(candidates)
}
