//! `instauth demo`: the service on the embedded database with one seeded workspace and a
//! throwaway AWS signing key, plus curl commands that exercise it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use serde_json::json;
use uuid::Uuid;

use crate::auth::admission::AdmissionSettings;
use crate::auth::lookup::Lookup;
use crate::client::TrustedProxies;
use crate::config::Settings;
use crate::db::{self, DatabaseSettings};
use crate::http::Application;
use crate::identity::IdentitySettings;

use super::embedded_pg::EmbeddedPostgres;
use super::test_key::TestKey;

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Address to listen on.
    #[arg(long, env = "INSTAUTH_BIND", default_value = "127.0.0.1:3000")]
    pub bind: String,
    /// Directory of the demo's own embedded cluster. The demo never uses DATABASE_URL: it
    /// writes demo rows, which have no place in a real database.
    #[arg(long, env = "INSTAUTH_DATA_DIR", default_value = ".instauth")]
    pub data_dir: PathBuf,
}

/// Seeds one workspace with agents `alpha` and `beta` on `instance_id`.
async fn seed(database: &db::Database, instance_id: &str) -> anyhow::Result<Vec<String>> {
    let names = vec!["alpha".to_owned(), "beta".to_owned()];
    let workspace = format!(
        "demo-{}",
        &instance_id[instance_id.len().saturating_sub(8)..]
    );
    let instance_id = instance_id.to_owned();
    database
        .exchange(Box::new(move |conn| {
            Box::pin(async move {
                sqlx::query_file_scalar!(
                    "queries/demo_seed.sql",
                    instance_id,
                    &names,
                    Uuid::new_v4(),
                    workspace,
                )
                .fetch_all(conn)
                .await
            })
        }))
        .await
        .result
        .context("seeding the demo workspace")
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let key = TestKey::generate()?;
    let cluster = EmbeddedPostgres::start(&args.data_dir, true)?;
    let settings = Settings {
        bind: args.bind.clone(),
        metrics_bind: None,
        trusted_proxies: TrustedProxies::default(),
        database: DatabaseSettings::new(cluster.connect_options()),
        identity: IdentitySettings {
            aws_certificates_pem: Some(key.certificate_pem().to_vec()),
            ..IdentitySettings::default()
        },
        admission: AdmissionSettings::default(),
        migrate: true,
        shutdown_timeout: std::time::Duration::from_secs(5),
        lookup: Lookup::Single,
    };
    let result = async {
        let app = Application::build(settings).await?;
        let instance_id = format!("i-demo{}", &Uuid::new_v4().simple().to_string()[..12]);
        seed(app.database(), &instance_id).await?;
        let dir = args.data_dir.join("demo");
        let instructions = write_requests(&key, &instance_id, &dir, app.port())?;
        println!("{instructions}");
        app.run_until_stopped().await?;
        anyhow::Ok(())
    }
    .await;
    cluster.stop();
    result
}

fn write_requests(
    key: &TestKey,
    instance_id: &str,
    dir: &Path,
    port: u16,
) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (document, signature) = key.sign_document(instance_id)?;
    let named = dir.join("aws-alpha.json");
    let ambiguous = dir.join("aws-no-name.json");
    std::fs::write(
        &named,
        serde_json::to_vec_pretty(
            &json!({"signature": signature, "document": document, "agent_name": "alpha"}),
        )?,
    )?;
    std::fs::write(
        &ambiguous,
        serde_json::to_vec_pretty(&json!({"signature": signature, "document": document}))?,
    )?;
    let url = format!("http://127.0.0.1:{port}/api/v2/workspaceagents/aws-instance-identity");
    let mut out = String::new();
    writeln!(
        out,
        "instauth demo is serving on 127.0.0.1:{port} (Ctrl-C stops it)."
    )?;
    writeln!(
        out,
        "Seeded instance {instance_id} with agents alpha and beta; a throwaway AWS key signed its document."
    )?;
    writeln!(out)?;
    writeln!(out, "Authenticate as agent alpha (200, its session token):")?;
    writeln!(
        out,
        "  curl -sS -X POST {url} -H 'Content-Type: application/json' --data @{}",
        named.display()
    )?;
    writeln!(out)?;
    writeln!(out, "Without a name both agents match (409, names listed):")?;
    writeln!(
        out,
        "  curl -sS -X POST {url} -H 'Content-Type: application/json' --data @{}",
        ambiguous.display()
    )?;
    Ok(out)
}
