//! `instauth seed`: fills a database with a chosen shape of Coder rows for load tests, and
//! writes what a load generator needs: a throwaway AWS test key and certificate (or, with
//! `--provider azure`, an Azure-shaped signer and its root; with `--provider google`, a token
//! signer and its JWKS), the `serve` flags that trust it, and a request corpus.
//!
//! The rows are made by five set-based statements (`queries/seed_*.sql`, shaped by
//! `generate_series` over the parameters) in one transaction, so a large shape takes seconds.
//! Ids are derived from the run prefix, so the statements need nothing read back.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use openssl::hash::MessageDigest;
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::db;

use super::corpus::{self, CorpusLine};
use super::database::DatabaseArgs;
use super::private_file;
use super::test_azure::TestAzureSigner;
use super::test_google::TestGoogleSigner;
use super::test_key::TestKey;

pub const AWS_PATH: &str = "/api/v2/workspaceagents/aws-instance-identity";
pub const AZURE_PATH: &str = "/api/v2/workspaceagents/azure-instance-identity";
pub const GOOGLE_PATH: &str = "/api/v2/workspaceagents/google-instance-identity";

/// Whose identity the corpus proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeedProvider {
    /// Instance identity documents signed with an RSA-1024 key, as AWS signs them.
    Aws,
    /// Attested data: PKCS#7 signed by a `metadata.azure.com` leaf under a test root.
    Azure,
    /// Identity tokens: RS256 JWTs under a test JWKS.
    Google,
}

/// What signs the corpus.
#[derive(Debug)]
enum Signer {
    Aws(TestKey),
    Azure(TestAzureSigner),
    Google(TestGoogleSigner),
}

#[derive(Debug, Clone, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Run prefix: instance ids are `<prefix>-<n>`, workspaces are named the same. Seeding the
    /// same prefix twice into one database fails (the ids would collide).
    #[arg(long, default_value = "seed", value_parser = parse_prefix)]
    pub prefix: String,
    /// Workspaces, one cloud instance each.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i32).range(1..=10_000_000))]
    pub workspaces: i32,
    /// Agents per instance in the latest build (candidates per request).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=64))]
    pub agents_per_instance: i32,
    /// Builds per workspace, the last one live: earlier builds' agents stay behind as stale
    /// rows with the same instance id (e.g. 5 gives 1 live + 4 stale agents per name).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub builds: i32,
    /// Also store each instance's template-import twin: agents of the same names and instance
    /// id on a template_version_import job, as Coder does.
    #[arg(long)]
    pub template_import_twins: bool,
    /// Sub-agents (devcontainer children) per live agent, carrying its instance id.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=64))]
    pub sub_agents: i32,
    /// Whose identity the corpus proves: `azure` makes a fresh test root and signer on every
    /// seed, trusted with `serve --azure-roots` (which replaces Azure's real roots); `google`
    /// a fresh key, trusted with `serve --google-jwks`.
    #[arg(long, value_enum, default_value_t = SeedProvider::Aws)]
    pub provider: SeedProvider,
    /// Sign with this private key (PEM, e.g. an earlier seed's aws-key.pem) instead of a new
    /// one, so several seeded shapes are trusted through one certificate.
    #[arg(long)]
    pub aws_key: Option<PathBuf>,
    /// Where the key, certificate, serve flags and corpus are written.
    #[arg(long, default_value = ".instauth/seed")]
    pub out: PathBuf,
    /// Do not apply migrations first.
    #[arg(long)]
    pub no_migrate: bool,
}

fn parse_prefix(value: &str) -> Result<String, String> {
    let valid = (1..=40).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(value.to_owned())
    } else {
        Err("1 to 40 characters of a-z, 0-9 and '-'".to_owned())
    }
}

impl SeedArgs {
    /// The corpus: one request per instance, expected to succeed. With one agent per instance
    /// it sends no name (what Coder's agent does by default); with several, it names one of the
    /// live agents, cycling through them across instances.
    fn corpus(&self, signer: &Signer) -> anyhow::Result<Vec<CorpusLine>> {
        let mut lines = Vec::new();
        for w in 1..=self.workspaces {
            let instance_id = format!("{}-{w}", self.prefix);
            let (path, mut body) = match signer {
                Signer::Aws(key) => {
                    let (document, signature) = key.sign_document(&instance_id)?;
                    (
                        AWS_PATH,
                        json!({ "signature": signature, "document": document }),
                    )
                }
                Signer::Azure(signer) => (
                    AZURE_PATH,
                    json!({
                        "signature": signer.sign_attested_data(&instance_id)?,
                        "encoding": "pkcs7",
                    }),
                ),
                Signer::Google(signer) => (
                    GOOGLE_PATH,
                    json!({ "json_web_token": signer.sign_token(&instance_id)? }),
                ),
            };
            let agent = (w - 1) % self.agents_per_instance + 1;
            if self.agents_per_instance > 1 {
                body["agent_name"] = json!(format!("agent-{agent}"));
            }
            lines.push(CorpusLine {
                path: path.to_owned(),
                expected_status: 200,
                expected_token: Some(self.token(w, agent)?),
                body,
            });
        }
        Ok(lines)
    }
}

impl SeedArgs {
    /// The token `queries/seed_agents.sql` gives agent `agent` of the latest build of workspace
    /// `w`: the MD5 of the same name, read as a UUID.
    fn token(&self, w: i32, agent: i32) -> anyhow::Result<String> {
        let name = format!("{}/token/{w}/{}/{agent}", self.prefix, self.builds);
        let digest = openssl::hash::hash(MessageDigest::md5(), name.as_bytes())?;
        let bytes: [u8; 16] = (*digest).try_into()?;
        Ok(Uuid::from_bytes(bytes).hyphenated().to_string())
    }
}

/// What `seed` wrote besides the rows.
#[derive(Debug, Clone)]
pub struct Material {
    /// The signing key: AWS's stand-in, the Azure-shaped leaf's, or Google's stand-in.
    pub key_path: PathBuf,
    /// What `serve` trusts: the AWS stand-in's certificate, the Azure test root, or the
    /// Google JWKS.
    pub certificate_path: PathBuf,
    /// The `serve` flags that trust the key.
    pub serve_flags: String,
    pub corpus_path: PathBuf,
}

pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    let database = args.database.open()?;
    let result = async {
        // One connection for the one seeding transaction, without the request path's
        // statement timeout: a large shape takes longer than a lookup ever should.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(
                database
                    .settings
                    .connect
                    .clone()
                    .application_name("instauth-seed"),
            );
        if !args.no_migrate {
            db::migrate(&database.settings)
                .await
                .context("applying migrations")?;
        }
        let started = Instant::now();
        insert_rows(&pool, &args).await?;
        sqlx::query_file!("queries/seed_vacuum.sql")
            .execute(&pool)
            .await
            .context("vacuuming and analysing the seeded tables")?;
        let seeded_in = started.elapsed();
        pool.close().await;
        let material = write_material(&args)?;
        summary(&args, &material, seeded_in)
    }
    .await;
    database.stop();
    println!("{}", result?);
    Ok(())
}

/// Writes a fresh test key and certificate, the serve flags and the corpus under `args.out`.
pub fn write_material(args: &SeedArgs) -> anyhow::Result<Material> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let signer = match (args.provider, &args.aws_key) {
        (SeedProvider::Aws, Some(path)) => Signer::Aws(
            TestKey::from_private_key_pem(
                &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("loading the key in {}", path.display()))?,
        ),
        (SeedProvider::Aws, None) => Signer::Aws(TestKey::generate_aws_sized()?),
        (SeedProvider::Azure, None) => Signer::Azure(TestAzureSigner::generate()?),
        (SeedProvider::Google, None) => Signer::Google(TestGoogleSigner::generate()?),
        (SeedProvider::Azure | SeedProvider::Google, Some(_)) => {
            anyhow::bail!(
                "--aws-key signs AWS documents only; other providers make their own signer"
            )
        }
    };
    let (key_name, trusted_name, flag, key_pem, trusted) = match &signer {
        Signer::Aws(key) => (
            "aws-key.pem",
            "aws-certificate.pem",
            "--aws-certificates",
            key.private_key_pem()?,
            key.certificate_pem().to_vec(),
        ),
        Signer::Azure(signer) => (
            "azure-signer-key.pem",
            "azure-root.pem",
            "--azure-roots",
            signer.private_key_pem()?,
            signer.root_pem().to_vec(),
        ),
        Signer::Google(signer) => (
            "google-key.pem",
            "google-jwks.json",
            "--google-jwks",
            signer.private_key_pem()?,
            signer.jwks()?,
        ),
    };
    let key_path = args.out.join(key_name);
    private_file::write(&key_path, &key_pem)
        .with_context(|| format!("writing {}", key_path.display()))?;
    let certificate_path = absolute(&args.out.join(trusted_name))?;
    std::fs::write(&certificate_path, trusted)
        .with_context(|| format!("writing {}", certificate_path.display()))?;
    let serve_flags = format!("{flag} {}", certificate_path.display());
    let flags_path = args.out.join("serve.flags");
    std::fs::write(&flags_path, format!("{serve_flags}\n"))
        .with_context(|| format!("writing {}", flags_path.display()))?;
    let corpus_path = args.out.join("corpus.jsonl");
    corpus::write(&corpus_path, &args.corpus(&signer)?)?;
    Ok(Material {
        key_path,
        certificate_path,
        serve_flags,
        corpus_path,
    })
}

fn summary(args: &SeedArgs, material: &Material, seeded_in: Duration) -> anyhow::Result<String> {
    let agents = i64::from(args.workspaces)
        * i64::from(args.agents_per_instance)
        * (i64::from(args.builds)
            + i64::from(args.template_import_twins)
            + i64::from(args.sub_agents));
    let mut out = String::new();
    writeln!(
        out,
        "Seeded {} workspaces ({} builds each, {} agent(s) per instance, template-import twins: {}, sub-agents per agent: {}): {agents} agent rows in {:.1?}.",
        args.workspaces,
        args.builds,
        args.agents_per_instance,
        if args.template_import_twins {
            "yes"
        } else {
            "no"
        },
        args.sub_agents,
        seeded_in,
    )?;
    let (key, trusted) = match args.provider {
        SeedProvider::Aws => ("AWS test key:    ", "AWS certificate: "),
        SeedProvider::Azure => ("Azure signer key:", "Azure test root: "),
        SeedProvider::Google => ("Google test key: ", "Google JWKS:     "),
    };
    writeln!(out, "{key} {}", material.key_path.display())?;
    writeln!(out, "{trusted} {}", material.certificate_path.display())?;
    writeln!(
        out,
        "Corpus:           {} ({} requests)",
        material.corpus_path.display(),
        args.workspaces
    )?;
    // Point serve at the same database: the embedded cluster's directory when it was not the
    // default (a URL is left out: it may hold a password).
    let database = match &args.database.database_url {
        None if args.database.data_dir != Path::new(".instauth") => {
            format!(" --data-dir {}", args.database.data_dir.display())
        }
        _ => String::new(),
    };
    writeln!(out)?;
    writeln!(
        out,
        "Serve with:  instauth serve{database} {}",
        material.serve_flags
    )?;
    write!(
        out,
        "Load with:   instauth loadtest --corpus {} --duration 10s --concurrency 64",
        material.corpus_path.display()
    )?;
    Ok(out)
}

/// The seed statements, in one transaction so a failed seed leaves nothing behind.
pub async fn insert_rows(pool: &sqlx::PgPool, args: &SeedArgs) -> anyhow::Result<()> {
    let owner = Uuid::new_v4();
    let mut tx = pool
        .begin()
        .await
        .context("starting the seed transaction")?;
    sqlx::query_file!(
        "queries/seed_workspaces.sql",
        args.prefix,
        args.workspaces,
        owner
    )
    .execute(&mut *tx)
    .await
    .context("inserting workspaces (was this prefix seeded before? use another --prefix)")?;
    sqlx::query_file!(
        "queries/seed_builds.sql",
        args.prefix,
        args.workspaces,
        args.builds,
        owner
    )
    .execute(&mut *tx)
    .await
    .context("inserting jobs, builds and resources")?;
    sqlx::query_file!(
        "queries/seed_agents.sql",
        args.prefix,
        args.workspaces,
        args.builds,
        args.agents_per_instance
    )
    .execute(&mut *tx)
    .await
    .context("inserting agents")?;
    if args.template_import_twins {
        sqlx::query_file!(
            "queries/seed_template_imports.sql",
            args.prefix,
            args.workspaces,
            args.agents_per_instance,
            owner
        )
        .execute(&mut *tx)
        .await
        .context("inserting template-import twins")?;
    }
    if args.sub_agents > 0 {
        sqlx::query_file!(
            "queries/seed_sub_agents.sql",
            args.prefix,
            args.workspaces,
            args.builds,
            args.agents_per_instance,
            args.sub_agents
        )
        .execute(&mut *tx)
        .await
        .context("inserting sub-agents")?;
    }
    tx.commit().await.context("committing the seed")?;
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}
