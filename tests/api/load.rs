//! `instauth seed` and `instauth loadtest` end to end: the seeded shape, a corpus every request
//! of which succeeds, and a report whose server figures come from `/metrics`.

use std::path::Path;

use clap::Parser as _;
use instauth::auth::lookup::Lookup;
use instauth::cli::{Cli, Command};
use instauth::tools::loadtest::{self, LoadtestArgs, Report};
use instauth::tools::seed::{self, Material, SeedArgs};

use crate::helpers::app::{AppOptions, TestApp, spawn_app_with};

pub fn seed_args(out: &Path, shape: &[&str]) -> SeedArgs {
    let mut argv = vec![
        "instauth",
        "seed",
        "--out",
        out.to_str().expect("utf-8 path"),
    ];
    argv.extend_from_slice(shape);
    match Cli::try_parse_from(argv)
        .expect("seed arguments parse")
        .command
    {
        Command::Seed(args) => args,
        other => panic!("parsed as {other:?}"),
    }
}

fn loadtest_args(extra: &[&str]) -> LoadtestArgs {
    let mut argv = vec!["instauth", "loadtest"];
    argv.extend_from_slice(extra);
    match Cli::try_parse_from(argv)
        .expect("loadtest arguments parse")
        .command
    {
        Command::Loadtest(args) => args,
        other => panic!("parsed as {other:?}"),
    }
}

fn scratch() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("instauth-seed-{}", uuid::Uuid::new_v4().simple()))
}

/// Writes the seed material, starts an app trusting its key with `lookup` and at most
/// `batch_max` instance ids per statement (1: coalescing off), and seeds the rows.
pub async fn seeded_app(
    shape: &[&str],
    lookup: Lookup,
    batch_max: usize,
) -> (TestApp, SeedArgs, Material) {
    let args = seed_args(&scratch(), shape);
    let material = seed::write_material(&args).expect("seed material");
    let certificate = std::fs::read(&material.certificate_path).expect("certificate");
    let app = spawn_app_with(|options| {
        options.identity.aws_certificates_pem = Some(certificate);
        options.lookup = lookup;
        options.database.batch_max = batch_max;
    })
    .await;
    seed::insert_rows(&app.pool, &args)
        .await
        .expect("seed rows");
    (app, args, material)
}

/// A short, small closed-loop run against `app`.
pub async fn short_run(app: &TestApp, material: &Material, extra: &[&str]) -> Report {
    let corpus = material.corpus_path.to_str().expect("utf-8 path");
    let mut argv = vec!["--target", &app.address, "--corpus", corpus];
    argv.extend_from_slice(extra);
    loadtest::execute(&loadtest_args(&argv))
        .await
        .expect("load test runs")
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn seed_builds_the_requested_shape_and_a_corpus_that_succeeds() {
    let shape = [
        "--prefix",
        "shape",
        "--workspaces",
        "12",
        "--agents-per-instance",
        "2",
        "--builds",
        "3",
        "--template-import-twins",
        "--sub-agents",
        "1",
    ];
    // Coalescing off: every request costs exactly one statement.
    let (app, _, material) = seeded_app(&shape, Lookup::Single, 1).await;
    assert_eq!(count(&app, "SELECT count(*) FROM workspaces").await, 12);
    assert_eq!(
        count(&app, "SELECT count(*) FROM workspace_builds").await,
        36
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM provisioner_jobs WHERE type = 'template_version_import'"
        )
        .await,
        12
    );
    // Per instance: 2 agents × (3 builds + 1 twin) + 2 sub-agents.
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM workspace_agents WHERE auth_instance_id = 'shape-7'"
        )
        .await,
        10
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM workspace_agents WHERE parent_id IS NOT NULL"
        )
        .await,
        24
    );
    let flags = std::fs::read_to_string(material.corpus_path.with_file_name("serve.flags"))
        .expect("serve.flags");
    assert!(flags.starts_with("--aws-certificates /"), "{flags}");
    let key = std::fs::metadata(&material.key_path).expect("key file");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );

    // Every corpus line, sent once, gets its expected answer (12 lines, 12 clients, open loop
    // at 12/s for one second).
    let report = short_run(
        &app,
        &material,
        &["--rate", "12", "--duration", "1s", "--concurrency", "12"],
    )
    .await;
    assert_eq!(report.mode, "open");
    assert_eq!(report.requests, 12, "{report:#?}");
    assert_eq!(report.unexpected, 0, "{report:#?}");
    assert_eq!(report.statuses.get(&200), Some(&12));
    let server = report.server.expect("server figures");
    assert_eq!(server.auth_requests, 12.0);
    assert_eq!(server.sql_per_request, Some(1.0));
}

#[tokio::test]
async fn loadtest_reports_client_and_server_figures() {
    let (app, _, material) = seeded_app(
        &["--prefix", "run", "--workspaces", "20"],
        Lookup::Single,
        1,
    )
    .await;
    let report = short_run(&app, &material, &["--duration", "1s", "--concurrency", "8"]).await;
    assert_eq!(report.mode, "closed");
    assert!(report.requests > 0);
    assert_eq!(report.unexpected, 0, "{report:#?}");
    assert_eq!(report.transport_errors, 0);
    assert_eq!(report.statuses.values().sum::<u64>(), report.requests);
    let l = report.latency_ms;
    assert!(l.p50 <= l.p90 && l.p90 <= l.p99 && l.p99 <= l.p99_9 && l.p99_9 <= l.max);
    let server = report.server.clone().expect("server figures");
    assert_eq!(server.auth_requests, report.requests as f64);
    assert_eq!(server.sql_per_request, Some(1.0));
    assert_eq!(server.pool_acquire_timeouts, 0.0);
    assert_eq!(server.pool_acquisitions, report.requests as f64);
    assert!(server.pool_acquire_p99_ms.is_some());
    assert!(server.peak_in_use_connections.is_some());
    assert_eq!(server.pool_max_connections, Some(10.0));
    let table = report.table();
    assert!(table.contains("SQL statements per request 1.00"), "{table}");
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["server"]["sql_per_request"], 1.0);
}

#[tokio::test]
async fn loadtest_refuses_targets_off_loopback() {
    let dir = scratch();
    std::fs::create_dir_all(&dir).expect("dir");
    let corpus = dir.join("corpus.jsonl");
    std::fs::write(
        &corpus,
        "{\"path\":\"/\",\"expected_status\":200,\"body\":{}}\n",
    )
    .expect("corpus");
    let corpus = corpus.to_str().expect("utf-8 path");
    // TEST-NET-1: refused before any packet is sent.
    let err = loadtest::execute(&loadtest_args(&[
        "--target",
        "http://192.0.2.1:3000",
        "--corpus",
        corpus,
    ]))
    .await
    .expect_err("refused");
    assert!(err.to_string().contains("not a loopback"), "{err}");
    assert!(
        Cli::try_parse_from(["instauth", "loadtest", "--duration", "2h"]).is_err(),
        "runs are bounded"
    );
}

#[test]
fn seed_signs_like_aws_and_can_reuse_a_key_across_shapes() {
    let first = seed::write_material(&seed_args(&scratch(), &["--workspaces", "1"]))
        .expect("first material");
    let key = first.key_path.to_str().expect("utf-8 path");
    let second = seed::write_material(&seed_args(
        &scratch(),
        &["--workspaces", "1", "--prefix", "other", "--aws-key", key],
    ))
    .expect("second material");
    let certificate = std::fs::read(&first.certificate_path).expect("certificate");
    let verifier = instauth::identity::aws::AwsVerifier::new(
        Some(&certificate),
        &instauth::identity::aws::AwsPolicy::default(),
    )
    .expect("trust");
    let line = &instauth::tools::corpus::read(&second.corpus_path).expect("corpus")[0];
    let signature = line.body["signature"].as_str().expect("signature");
    // RSA-1024, as AWS signs: 128 bytes, 172 base64 characters.
    assert_eq!(signature.len(), 172);
    let identity = verifier
        .verify(
            signature,
            line.body["document"].as_str().expect("document"),
            chrono::Utc::now(),
        )
        .expect("the first certificate trusts the second shape's corpus");
    assert_eq!(identity.instance_id, "other-1");
    assert_eq!(identity.key_label, "configured-1");
}

/// `--provider azure`: attested data signed by an Azure-shaped leaf under a fresh test root,
/// which `serve --azure-roots` trusts; every line gets its own seeded token.
#[tokio::test]
async fn seed_makes_an_azure_corpus_trusted_through_its_test_root() {
    let args = seed_args(
        &scratch(),
        &[
            "--prefix",
            "az",
            "--workspaces",
            "6",
            "--agents-per-instance",
            "2",
            "--provider",
            "azure",
        ],
    );
    let material = seed::write_material(&args).expect("seed material");
    let flags = std::fs::read_to_string(material.corpus_path.with_file_name("serve.flags"))
        .expect("serve.flags");
    assert!(flags.starts_with("--azure-roots /"), "{flags}");
    assert!(flags.trim_end().ends_with("azure-root.pem"), "{flags}");
    let key = std::fs::metadata(&material.key_path).expect("key file");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
    let root = std::fs::read(&material.certificate_path).expect("root");
    let verifier =
        instauth::identity::azure::AzureVerifier::new(&instauth::identity::azure::AzureSettings {
            roots_pem: Some(root.clone()),
            ..Default::default()
        })
        .expect("trust");
    let lines = instauth::tools::corpus::read(&material.corpus_path).expect("corpus");
    assert_eq!(lines.len(), 6);
    let now = chrono::Utc::now();
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(line.path, seed::AZURE_PATH);
        assert_eq!(line.body["encoding"], "pkcs7");
        let signature = line.body["signature"].as_str().expect("signature");
        let identity = verifier.verify(signature, now).expect("verifies");
        assert_eq!(identity.vm_id, format!("az-{}", n + 1));
        assert_eq!(identity.signer, "metadata.azure.com");
        let expires_on = identity.expires_on.expect("expiresOn");
        assert!(
            expires_on > now + chrono::TimeDelta::days(29),
            "{expires_on}"
        );
        // The embedded roots do not trust the test root.
        assert!(
            instauth::identity::azure::AzureVerifier::new(&Default::default())
                .expect("embedded trust")
                .verify(signature, now)
                .is_err()
        );
    }
    every_line_once(&args, &material, lines.len(), |options| {
        options.identity.azure.roots_pem = Some(root);
    })
    .await;
    refuses_an_aws_key("azure");
}

/// `--provider google`: identity tokens under a fresh key whose JWKS `serve --google-jwks`
/// reads; every line gets its own seeded token.
#[tokio::test]
async fn seed_makes_a_google_corpus_trusted_through_its_jwks() {
    let args = seed_args(
        &scratch(),
        &[
            "--prefix",
            "gc",
            "--workspaces",
            "5",
            "--provider",
            "google",
        ],
    );
    let material = seed::write_material(&args).expect("seed material");
    let flags = std::fs::read_to_string(material.corpus_path.with_file_name("serve.flags"))
        .expect("serve.flags");
    assert!(flags.starts_with("--google-jwks /"), "{flags}");
    assert!(flags.trim_end().ends_with("google-jwks.json"), "{flags}");
    let key = std::fs::metadata(&material.key_path).expect("key file");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
        0o600
    );
    let jwks = std::fs::read(&material.certificate_path).expect("jwks");
    let settings = |jwks: Vec<u8>| instauth::identity::google::GoogleSettings {
        jwks: instauth::identity::google::JwksSource::Document(jwks),
        ..Default::default()
    };
    let verifier =
        instauth::identity::google::GoogleVerifier::new(&settings(jwks.clone())).expect("trust");
    let lines = instauth::tools::corpus::read(&material.corpus_path).expect("corpus");
    assert_eq!(lines.len(), 5);
    let now = chrono::Utc::now();
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(line.path, seed::GOOGLE_PATH);
        assert!(line.body.get("agent_name").is_none(), "one agent: no name");
        let token = line.body["json_web_token"].as_str().expect("token");
        assert_eq!(
            verifier.verify(token, now).expect("verifies"),
            format!("gc-{}", n + 1)
        );
        // Thirty days on, it has expired.
        assert!(
            verifier
                .verify(token, now + chrono::TimeDelta::days(31))
                .is_err()
        );
    }
    every_line_once(&args, &material, lines.len(), |options| {
        options.identity.google = settings(jwks);
    })
    .await;
    refuses_an_aws_key("google");
}

/// Seeds `args`' rows into an app whose trust `trust` sets, and sends each of the corpus's
/// `lines` once (open loop, one second, coalescing off): each gets its own seeded token.
async fn every_line_once(
    args: &SeedArgs,
    material: &Material,
    lines: usize,
    trust: impl FnOnce(&mut AppOptions),
) {
    let app = spawn_app_with(|options| {
        trust(options);
        options.database.batch_max = 1;
    })
    .await;
    seed::insert_rows(&app.pool, args).await.expect("seed rows");
    let n = lines.to_string();
    let report = short_run(
        &app,
        material,
        &["--rate", &n, "--duration", "1s", "--concurrency", &n],
    )
    .await;
    assert_eq!(report.requests, lines as u64, "{report:#?}");
    assert_eq!(report.unexpected, 0, "{report:#?}");
    assert_eq!(report.wrong_tokens, 0, "{report:#?}");
    assert_eq!(report.statuses.get(&200), Some(&(lines as u64)));
}

/// An AWS key cannot sign another provider's material.
fn refuses_an_aws_key(provider: &str) {
    let err = seed::write_material(&seed_args(
        &scratch(),
        &["--provider", provider, "--aws-key", "/nonexistent.pem"],
    ))
    .expect_err("refused");
    assert_eq!(
        err.to_string(),
        "--aws-key signs AWS documents only; other providers make their own signer"
    );
}

/// A fleet of 1 200 distinct agents knocking at once, each retrying like Coder's agent: every
/// one ends up with exactly its own seeded token, answers are only 200 or 503, and coalescing
/// makes the database see fewer statements than agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_distinct_agents_each_gets_its_own_token_in_fewer_statements() {
    const AGENTS: usize = 1200;
    let workspaces = AGENTS.to_string();
    let (app, _, material) = seeded_app(
        &["--prefix", "storm", "--workspaces", &workspaces],
        Lookup::Single,
        64,
    )
    .await;
    let corpus = material.corpus_path.to_str().expect("utf-8 path");
    let report = loadtest::execute_storm(&loadtest_args(&[
        "--target",
        &app.address,
        "--corpus",
        corpus,
        "--storm",
        &workspaces,
        "--duration",
        "120s",
    ]))
    .await
    .expect("storm runs");
    assert_eq!(report.agents, AGENTS);
    assert_eq!(report.authenticated, AGENTS, "{report:#?}");
    assert_eq!(report.wrong_tokens, 0, "{report:#?}");
    assert!(report.makespan_s.is_some(), "{report:#?}");
    assert!(
        report
            .statuses
            .keys()
            .all(|status| [200, 503].contains(status)),
        "{report:#?}"
    );
    assert_eq!(report.statuses.get(&200), Some(&(AGENTS as u64)));
    let per_agent = report.statements_per_agent.expect("server figures");
    assert!(per_agent < 1.0, "statements per agent: {per_agent}");
}

/// A storm needs as many distinct agents as the corpus holds lines.
#[tokio::test]
async fn a_storm_larger_than_the_corpus_is_refused() {
    let (app, _, material) = seeded_app(
        &["--prefix", "small", "--workspaces", "3"],
        Lookup::Single,
        64,
    )
    .await;
    let corpus = material.corpus_path.to_str().expect("utf-8 path");
    let err = loadtest::execute_storm(&loadtest_args(&[
        "--target",
        &app.address,
        "--corpus",
        corpus,
        "--storm",
        "4",
    ]))
    .await
    .expect_err("refused");
    assert!(
        err.to_string()
            .contains("--storm 4 needs as many distinct agents"),
        "{err:#}"
    );
}
