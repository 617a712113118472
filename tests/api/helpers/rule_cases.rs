//! Every shape the candidate rules distinguish, seeded at once, with the requests that tell
//! them apart: for comparing two ways of answering (a replay and the single statement,
//! coalesced lookups and lone ones).

use super::app::TestApp;
use super::seed::AgentSpec;

/// Seeds every shape the candidate rules distinguish; returns the requests to compare.
pub async fn seed_rule_cases(app: &TestApp) -> Vec<(&'static str, Option<&'static str>)> {
    let seed = app.seed();
    seed.coder_workspace("i-single", &["dev"]).await;
    seed.coder_workspace("i-pair", &["alpha", "beta"]).await;
    // Stale agents of an earlier build share the id with the latest build's agent.
    let first = seed.first_build().await;
    seed.agent(first.resource_id, "dev", "i-stale").await;
    let second = seed.build(first.workspace_id, 2).await;
    seed.agent(second.resource_id, "dev", "i-stale").await;
    // A recycled instance: only an earlier build carries it.
    let first = seed.first_build().await;
    seed.agent(first.resource_id, "dev", "i-recycled").await;
    let second = seed.build(first.workspace_id, 2).await;
    seed.agent(second.resource_id, "dev", "i-elsewhere").await;
    // A deleted workspace, a deleted agent, a sub-agent, a template import alone.
    let (build, _) = seed.coder_workspace("i-deleted-ws", &["dev"]).await;
    seed.delete_workspace(build.workspace_id).await;
    let build = seed.first_build().await;
    let deleted = AgentSpec {
        deleted: true,
        ..AgentSpec::default()
    };
    seed.agent_with(build.resource_id, "dev", "i-deleted-agent", deleted)
        .await;
    let parent = seed.agent(build.resource_id, "root", "i-sub").await;
    let child = AgentSpec {
        parent_id: Some(parent.id),
        ..AgentSpec::default()
    };
    seed.agent_with(build.resource_id, "sub", "i-sub", child)
        .await;
    seed.template_import("i-import", &["dev"]).await;
    // The same name in two workspaces.
    seed.coder_workspace("i-shared", &["main"]).await;
    seed.coder_workspace("i-shared", &["main"]).await;

    let mut requests = Vec::new();
    for instance in [
        "i-single",
        "i-pair",
        "i-stale",
        "i-recycled",
        "i-deleted-ws",
        "i-deleted-agent",
        "i-sub",
        "i-import",
        "i-shared",
        "i-none",
    ] {
        for name in [None, Some("dev"), Some("beta"), Some("main"), Some("sub")] {
            requests.push((instance, name));
        }
    }
    requests
}
