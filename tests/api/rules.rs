//! One test per candidate rule of the lookup query (`docs/coder-contract.md` §2): each fails if its rule is
//! removed from `queries/agents_by_instance_id.sql`, on data that fails that rule and no other
//! (rule 4 is a join: its test's agent fails nothing, and removing it multiplies the agent).
//!
//! Rules tested through Coder's own scenarios live in `scenarios.rs`:
//! rule 3 (sub-agents) `a_sub_agent_sharing_the_instance_is_excluded`; rule 7 (deleted
//! workspaces) `a_deleted_workspace_is_404`; rule 8 (latest build)
//! `agents_of_prior_builds_are_excluded` and `a_recycled_instance_id_is_404`; ordering
//! `equal_creation_times_break_ties_by_agent_id`; one workspace per instance
//! `an_instance_claimed_by_two_workspaces_is_refused_without_agent_names`.

use crate::helpers::seed::AgentSpec;
use crate::helpers::spawn_app;

#[tokio::test]
async fn rule_1_only_agents_of_the_requested_instance() {
    let app = spawn_app().await;
    let build = app.seed().first_build().await;
    let mine = app.seed().agent(build.resource_id, "dev", "i-mine").await;
    app.seed()
        .agent(build.resource_id, "other", "i-other")
        .await;
    assert_eq!(app.aws("i-mine", None).await.token(), mine.token());
}

#[tokio::test]
async fn rule_2_deleted_agents_are_not_candidates() {
    let app = spawn_app().await;
    let build = app.seed().first_build().await;
    let deleted = AgentSpec {
        deleted: true,
        ..AgentSpec::default()
    };
    app.seed()
        .agent_with(build.resource_id, "old", "i-x", deleted)
        .await;
    let live = app.seed().agent(build.resource_id, "dev", "i-x").await;
    assert_eq!(app.aws("i-x", None).await.token(), live.token());
}

/// The agent's own resource, not any resource: with `wr.id = wa.resource_id` gone, a live
/// agent would pair with every resource of every latest build and show up once per workspace
/// (a 409 listing it twice), though nothing about it fails another rule.
#[tokio::test]
async fn rule_4_an_agent_is_joined_through_its_own_resource_only() {
    let app = spawn_app().await;
    let mine = app.seed().live_agent("dev", "i-x").await;
    // Another workspace's latest build, with its own resource and agent.
    app.seed().live_agent("dev", "i-other").await;
    assert_eq!(app.aws("i-x", None).await.token(), mine.token());
    assert_eq!(app.aws("i-x", Some("dev")).await.token(), mine.token());
}

/// An agent whose resource's job has no build row. The job is a `workspace_build` job, so the
/// agent passes rule 6 whatever the join order: only the build join (rule 5) excludes it.
/// Without rule 5 it would pair with another workspace's latest build and, being newer, win.
#[tokio::test]
async fn rule_5_agents_of_jobs_without_a_build_are_not_candidates() {
    let app = spawn_app().await;
    let live = app.seed().live_agent("dev", "i-x").await;
    // Created after the build agent, so it would even win a name match.
    let orphan_job = app.seed().job("workspace_build").await;
    let resource = app.seed().resource(orphan_job).await;
    app.seed().agent(resource, "dev", "i-x").await;
    // Coder's own case: template imports and dry runs have no build row either.
    app.seed().template_import("i-x", &["dev"]).await;
    let dry_run = app.seed().job("template_version_dry_run").await;
    let resource = app.seed().resource(dry_run).await;
    app.seed().agent(resource, "dev", "i-x").await;
    assert_eq!(app.aws("i-x", None).await.token(), live.token());
    assert_eq!(app.aws("i-x", Some("dev")).await.token(), live.token());
    // Alone, the orphan is no candidate at all.
    let orphan_job = app.seed().job("workspace_build").await;
    let resource = app.seed().resource(orphan_job).await;
    app.seed().agent(resource, "dev", "i-orphan").await;
    app.aws("i-orphan", None)
        .await
        .assert_error(404, r#"Instance with id "i-orphan" not found."#);
}

#[tokio::test]
async fn rule_6_only_builds_whose_job_is_a_workspace_build() {
    let app = spawn_app().await;
    // Inconsistent data: a build row pointing at a dry-run job.
    let workspace = app.seed().workspace().await;
    let job = app.seed().job("template_version_dry_run").await;
    let build = app.seed().build_on_job(workspace, 1, job, "start").await;
    app.seed().agent(build.resource_id, "dev", "i-x").await;
    app.aws("i-x", None)
        .await
        .assert_error(404, r#"Instance with id "i-x" not found."#);
}

#[tokio::test]
async fn rule_8_the_latest_build_is_per_workspace() {
    let app = spawn_app().await;
    // Two workspaces on the same instance: each one's latest build counts on its own, even
    // though their build numbers differ.
    let alpha = app.seed().live_agent("alpha", "i-x").await;
    let b1 = app.seed().first_build().await;
    let b7 = app.seed().build(b1.workspace_id, 7).await;
    let beta = app.seed().agent(b7.resource_id, "beta", "i-x").await;
    assert_eq!(app.aws("i-x", Some("alpha")).await.token(), alpha.token());
    assert_eq!(app.aws("i-x", Some("beta")).await.token(), beta.token());
}
