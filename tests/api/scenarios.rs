//! Coder's own scenarios (`docs/coder-contract.md` §6) and the extra cases it implies, against the AWS route.

use chrono::{Duration, Utc};

use crate::helpers::seed::AgentSpec;
use crate::helpers::spawn_app;

const AMBIGUOUS: &str =
    "Multiple agents found with instance ID \"i-amb\". Set CODER_AGENT_NAME to one of: alpha, beta";

#[tokio::test]
async fn single_agent_beside_its_template_import_twin() {
    let app = spawn_app().await;
    let (_, agents) = app.seed().coder_workspace("i-single", &["dev"]).await;
    assert_eq!(app.aws("i-single", None).await.token(), agents[0].token());
}

#[tokio::test]
async fn multiple_agents_without_a_name_are_ambiguous() {
    let app = spawn_app().await;
    app.seed()
        .coder_workspace("i-amb", &["beta", "alpha"])
        .await;
    for name in [None, Some(""), Some("   "), Some("\t\n\u{a0}")] {
        app.aws("i-amb", name).await.assert_error(409, AMBIGUOUS);
    }
}

#[tokio::test]
async fn a_name_selects_among_multiple_agents() {
    let app = spawn_app().await;
    let (_, agents) = app
        .seed()
        .coder_workspace("i-amb", &["alpha", "beta"])
        .await;
    assert_eq!(
        app.aws("i-amb", Some("alpha")).await.token(),
        agents[0].token()
    );
    assert_eq!(
        app.aws("i-amb", Some("beta")).await.token(),
        agents[1].token()
    );
    // Surrounding white space is trimmed; case is not folded.
    assert_eq!(
        app.aws("i-amb", Some("  alpha\n")).await.token(),
        agents[0].token()
    );
    app.aws("i-amb", Some("Alpha")).await.assert_error(
        404,
        r#"No agent found with instance ID "i-amb" and name "Alpha"."#,
    );
}

#[tokio::test]
async fn an_unknown_name_is_404() {
    let app = spawn_app().await;
    app.seed()
        .coder_workspace("i-amb", &["alpha", "beta"])
        .await;
    app.aws("i-amb", Some("nonexistent")).await.assert_error(
        404,
        r#"No agent found with instance ID "i-amb" and name "nonexistent"."#,
    );
}

#[tokio::test]
async fn an_unknown_instance_is_404_with_or_without_a_name() {
    let app = spawn_app().await;
    app.aws("i-nowhere", None)
        .await
        .assert_error(404, r#"Instance with id "i-nowhere" not found."#);
    app.aws("i-nowhere", Some("dev"))
        .await
        .assert_error(404, r#"Instance with id "i-nowhere" not found."#);
}

#[tokio::test]
async fn a_sub_agent_sharing_the_instance_is_excluded() {
    let app = spawn_app().await;
    let (build, agents) = app.seed().coder_workspace("i-sub", &["dev"]).await;
    let spec = AgentSpec {
        parent_id: Some(agents[0].id),
        ..AgentSpec::default()
    };
    app.seed()
        .agent_with(build.resource_id, "sub", "i-sub", spec)
        .await;
    assert_eq!(app.aws("i-sub", None).await.token(), agents[0].token());
    app.aws("i-sub", Some("sub")).await.assert_error(
        404,
        r#"No agent found with instance ID "i-sub" and name "sub"."#,
    );
}

#[tokio::test]
async fn agents_of_prior_builds_are_excluded() {
    let app = spawn_app().await;
    let (first, _) = app.seed().coder_workspace("i-hist", &["dev"]).await;
    // A stop build, then a start build with a fresh agent on the same instance.
    let stop = app.seed().job("workspace_build").await;
    let stop_build = app
        .seed()
        .build_on_job(first.workspace_id, 2, stop, "stop")
        .await;
    let _ = stop_build;
    let start = app.seed().build(first.workspace_id, 3).await;
    let fresh = app.seed().agent(start.resource_id, "dev", "i-hist").await;
    assert_eq!(app.aws("i-hist", None).await.token(), fresh.token());
}

#[tokio::test]
async fn a_recycled_instance_id_is_404() {
    let app = spawn_app().await;
    let (first, _) = app.seed().coder_workspace("i-old", &["dev"]).await;
    // The next build's agent runs on another instance.
    let next = app.seed().build(first.workspace_id, 2).await;
    app.seed().agent(next.resource_id, "dev", "i-new").await;
    app.aws("i-old", None)
        .await
        .assert_error(404, r#"Instance with id "i-old" not found."#);
}

#[tokio::test]
async fn a_deleted_workspace_is_404() {
    let app = spawn_app().await;
    let (build, _) = app.seed().coder_workspace("i-gone", &["dev"]).await;
    app.seed().delete_workspace(build.workspace_id).await;
    app.aws("i-gone", None)
        .await
        .assert_error(404, r#"Instance with id "i-gone" not found."#);
}

#[tokio::test]
async fn a_deleted_agent_is_404() {
    let app = spawn_app().await;
    let spec = AgentSpec {
        deleted: true,
        ..AgentSpec::default()
    };
    app.seed().live_agent_with("dev", "i-del", spec).await;
    app.aws("i-del", None)
        .await
        .assert_error(404, r#"Instance with id "i-del" not found."#);
}

#[tokio::test]
async fn a_template_import_agent_alone_is_404() {
    let app = spawn_app().await;
    app.seed().template_import("i-tpl", &["dev"]).await;
    app.aws("i-tpl", None)
        .await
        .assert_error(404, r#"Instance with id "i-tpl" not found."#);
}

/// Issue 12, item 1: whoever can put an instance id into a template must not take over another
/// workspace's VM, pin it in a 409 loop, or learn its agents' names.
#[tokio::test]
async fn an_instance_claimed_by_two_workspaces_is_refused_without_agent_names() {
    let app = spawn_app().await;
    let now = Utc::now();
    let mut agents = Vec::new();
    // The victim's agent, then a newer claim by another workspace with the same name and one
    // more agent.
    for (age, names) in [
        (Duration::hours(2), &["dev"][..]),
        (Duration::hours(1), &["dev", "intruder"]),
    ] {
        let workspace = app.seed().workspace().await;
        let build = app.seed().build(workspace, 1).await;
        for name in names {
            let spec = AgentSpec {
                created_at: Some(now - age),
                ..AgentSpec::default()
            };
            agents.push(
                app.seed()
                    .agent_with(build.resource_id, name, "i-twice", spec)
                    .await,
            );
        }
    }
    const CLAIMED: &str = r#"Instance with id "i-twice" is claimed by more than one workspace."#;
    for name in [None, Some("dev"), Some(" dev ")] {
        let response = app.aws("i-twice", name).await;
        response.assert_error(409, CLAIMED);
        assert!(response.json().get("detail").is_none(), "{response:?}");
        assert!(
            !response.text.contains("intruder") && !response.text.contains("CODER_AGENT_NAME"),
            "no agent names: {response:?}"
        );
    }
    // A name only one workspace has still authenticates (the other claim is logged).
    assert_eq!(
        app.aws("i-twice", Some("intruder")).await.token(),
        agents[2].token()
    );
    // A name nobody has is still Coder's 404.
    app.aws("i-twice", Some("nope")).await.assert_error(
        404,
        r#"No agent found with instance ID "i-twice" and name "nope"."#,
    );
    // Counted as its own outcome.
    let metrics = app.get("/metrics").await.text;
    let series = r#"instauth_auth_outcomes_total{outcome="claimed_by_many_workspaces",provider="aws",target="primary"} 3"#;
    assert!(metrics.lines().any(|line| line == series), "{metrics}");
}

#[tokio::test]
async fn equal_creation_times_break_ties_by_agent_id() {
    let app = spawn_app().await;
    let at = Utc::now();
    // Inserted in ascending id order, so storage order alone would put the smallest id first.
    let mut ids: Vec<uuid::Uuid> = (0..4).map(|_| uuid::Uuid::new_v4()).collect();
    ids.sort();
    let workspace = app.seed().workspace().await;
    let build = app.seed().build(workspace, 1).await;
    let mut agents = Vec::new();
    for id in &ids {
        let spec = AgentSpec {
            id: Some(*id),
            created_at: Some(at),
            ..AgentSpec::default()
        };
        agents.push(
            app.seed()
                .agent_with(build.resource_id, "dev", "i-tie", spec)
                .await,
        );
    }
    let highest_id = agents.last().expect("agents").token();
    for _ in 0..3 {
        assert_eq!(app.aws("i-tie", Some("dev")).await.token(), highest_id);
    }
}

#[tokio::test]
async fn ambiguity_lists_names_byte_sorted_with_duplicates() {
    let app = spawn_app().await;
    let workspace = app.seed().workspace().await;
    let build = app.seed().build(workspace, 1).await;
    for name in ["main", "Zeta", "main", "main", "b-1"] {
        app.seed().agent(build.resource_id, name, "i-many").await;
    }
    app.aws("i-many", None).await.assert_error(
        409,
        "Multiple agents found with instance ID \"i-many\". Set CODER_AGENT_NAME to one of: Zeta, b-1, main, main, main",
    );
}
