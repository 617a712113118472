//! Many requests at once, each must get exactly its own agent's token (no cross-talk between
//! concurrent lookups on shared pooled connections).

use std::time::Duration;

use futures_util::future::join_all;

use crate::helpers::app::spawn_app_with;

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// 2 000 sockets (client and server side) live in this process at once.
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_each_get_their_own_token() {
    raise_open_file_limit();
    let app = spawn_app_with(|o| {
        // Correctness, not speed: no request may time out on a slow machine.
        o.database.acquire_timeout = Duration::from_secs(60);
        o.database.statement_timeout = Duration::from_secs(60);
    })
    .await;
    // 40 instances with four named agents each, and 40 with a single agent.
    let mut expected = Vec::new();
    for i in 0..40 {
        let multi = format!("i-multi-{i}");
        let (_, agents) = app.seed().live_agents(&multi, &NAMES).await;
        for (name, agent) in NAMES.into_iter().zip(agents) {
            expected.push((multi.clone(), Some(name), agent.token()));
        }
        let single = format!("i-single-{i}");
        let agent = app.seed().live_agent("dev", &single).await;
        expected.push((single, None, agent.token()));
    }
    let requests: Vec<_> = (0..1000)
        .map(|k| &expected[(k * 7) % expected.len()])
        .collect();
    let responses = join_all(
        requests
            .iter()
            .map(|(instance, name, _)| app.aws(instance, *name)),
    )
    .await;
    let mut wrong = Vec::new();
    for ((instance, name, token), response) in requests.iter().zip(&responses) {
        if response.status != 200 || response.json()["session_token"] != token.as_str() {
            wrong.push(format!(
                "{instance} {name:?}: {} {}",
                response.status, response.text
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 1000 wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
}
