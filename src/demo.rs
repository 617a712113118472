//! `instauth demo`: the service on the embedded database with one seeded workspace and a
//! throwaway AWS signing key, plus curl commands that exercise it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::x509::{X509, X509NameBuilder};
use serde_json::json;
use uuid::Uuid;

use crate::admission::AdmissionSettings;
use crate::cli::DemoArgs;
use crate::config::{DatabaseSettings, Settings};
use crate::db;
use crate::embedded_pg::EmbeddedPostgres;
use crate::identity::IdentitySettings;
use crate::startup::Application;

/// A key and self-signed certificate that exist only in this process.
#[derive(Debug)]
pub struct DemoKey {
    key: PKey<Private>,
    certificate_pem: Vec<u8>,
}

impl DemoKey {
    pub fn generate() -> anyhow::Result<Self> {
        Self::with_key(
            PKey::from_rsa(Rsa::generate(2048)?)?,
            "instauth demo (not AWS)",
        )
    }

    /// A key of the size AWS signs instance identity documents with (RSA-1024), so a load
    /// test pays what production verification costs.
    pub fn generate_aws_sized() -> anyhow::Result<Self> {
        Self::with_key(
            PKey::from_rsa(Rsa::generate(1024)?)?,
            "instauth test key (not AWS)",
        )
    }

    /// An existing private key (PEM), with a fresh self-signed certificate for it.
    pub fn from_private_key_pem(pem: &[u8]) -> anyhow::Result<Self> {
        Self::with_key(
            PKey::private_key_from_pem(pem)?,
            "instauth test key (not AWS)",
        )
    }

    fn with_key(key: PKey<Private>, common_name: &str) -> anyhow::Result<Self> {
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_text("CN", common_name)?;
        let name = name.build();
        let mut cert = X509::builder()?;
        cert.set_version(2)?;
        cert.set_subject_name(&name)?;
        cert.set_issuer_name(&name)?;
        cert.set_pubkey(&key)?;
        cert.set_not_before(Asn1Time::days_from_now(0)?.as_ref())?;
        cert.set_not_after(Asn1Time::days_from_now(1)?.as_ref())?;
        cert.sign(&key, MessageDigest::sha256())?;
        Ok(Self {
            certificate_pem: cert.build().to_pem()?,
            key,
        })
    }

    /// The self-signed certificate that `serve --aws-certificates` trusts.
    pub fn certificate_pem(&self) -> &[u8] {
        &self.certificate_pem
    }

    /// The private key (PKCS#8 PEM), so other tools can sign more documents.
    pub fn private_key_pem(&self) -> anyhow::Result<Vec<u8>> {
        Ok(self.key.private_key_to_pem_pkcs8()?)
    }

    /// A document for `instance_id` and its signature, as IMDS would serve them.
    pub fn sign_document(&self, instance_id: &str) -> anyhow::Result<(String, String)> {
        let document = serde_json::to_string_pretty(&json!({
            "instanceId": instance_id,
            "region": "us-east-1",
            "accountId": "000000000000",
        }))?;
        let mut signer = Signer::new(MessageDigest::sha256(), &self.key)?;
        let signature = STANDARD.encode(signer.sign_oneshot_to_vec(document.as_bytes())?);
        Ok((document, signature))
    }
}

/// Seeds one workspace with agents `alpha` and `beta` on `instance_id`.
pub async fn seed(pool: &db::Pool, instance_id: &str) -> anyhow::Result<Vec<String>> {
    let names = vec!["alpha".to_owned(), "beta".to_owned()];
    let mut conn = pool.get().await?;
    let rows = sqlx::query_file_scalar!(
        "queries/demo_seed.sql",
        instance_id,
        &names,
        Uuid::new_v4(),
        format!(
            "demo-{}",
            &instance_id[instance_id.len().saturating_sub(8)..]
        ),
    )
    .fetch_all(conn.start())
    .await
    .context("seeding the demo workspace")?;
    conn.settle();
    Ok(rows)
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let key = DemoKey::generate()?;
    let cluster = EmbeddedPostgres::start(&args.data_dir, true)?;
    let settings = Settings {
        bind: args.bind.clone(),
        database: DatabaseSettings::new(cluster.connect_options()),
        identity: IdentitySettings {
            aws_certificates_pem: Some(key.certificate_pem.clone()),
            ..IdentitySettings::default()
        },
        admission: AdmissionSettings::default(),
        migrate: true,
        shutdown_timeout: std::time::Duration::from_secs(5),
        lookup: crate::strategy::Strategy::Single,
    };
    let result = async {
        let app = Application::build(settings).await?;
        let instance_id = format!("i-demo{}", &Uuid::new_v4().simple().to_string()[..12]);
        seed(app.pool(), &instance_id).await?;
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
    key: &DemoKey,
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
