//! A running instauth on port 0 over its own database, with typed request helpers.

use std::time::Duration;

use instauth::config::{DatabaseSettings, Settings};
use instauth::identity::IdentitySettings;
use instauth::startup::Application;
use instauth::strategy::Strategy;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgPoolOptions, PgSslMode};

use super::pg::{TestDatabase, admin_options};
use super::pgproxy::PgProxy;
use super::seed::Seed;
use super::signing;

pub const AWS_PATH: &str = "/api/v2/workspaceagents/aws-instance-identity";

pub struct TestApp {
    pub address: String,
    /// A direct pool to the test database, for seeding and checks (not the app's pool).
    pub pool: PgPool,
    pub client: reqwest::Client,
    /// Dropped with the app: the database goes away after the test.
    _database: TestDatabase,
}

/// What a test sees of a response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|err| panic!("body is not JSON ({err}): {:?}", self.text))
    }

    pub fn message(&self) -> String {
        self.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub fn token(&self) -> String {
        assert_eq!(self.status, 200, "expected a token, got {self:?}");
        self.json()["session_token"]
            .as_str()
            .expect("session_token is a string")
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts Coder's error shape exactly: status, message, and the set of keys.
    pub fn assert_error(&self, status: u16, message: &str) {
        assert_eq!(self.status, status, "status of {self:?}");
        assert_eq!(self.message(), message, "message of {self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        assert!(
            self.text.ends_with('\n'),
            "Go's encoder ends bodies with a newline"
        );
    }
}

/// Settings a test may change before the app is built.
pub struct AppOptions {
    pub database: DatabaseSettings,
    pub identity: IdentitySettings,
    pub lookup: Strategy,
}

/// The lookup strategy tests run with: `single`, or the one named by `INSTAUTH_TEST_LOOKUP`
/// (e.g. `coder-rc3` in a `--features legacy` build), so the whole correctness suite can be
/// pointed at a replay. Tests about the single statement's cost pin `single` themselves.
fn lookup_under_test() -> Strategy {
    match std::env::var("INSTAUTH_TEST_LOOKUP") {
        Ok(name) if !name.is_empty() => <Strategy as clap::ValueEnum>::from_str(&name, false)
            .unwrap_or_else(|err| panic!("INSTAUTH_TEST_LOOKUP: {err}")),
        _ => Strategy::Single,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns the app on port 0 over a fresh database; `configure` may adjust its settings
/// (e.g. point the pool at a proxy).
pub async fn spawn_app_with(configure: impl FnOnce(&mut AppOptions)) -> TestApp {
    let database = TestDatabase::create().await;
    let mut options = AppOptions {
        database: DatabaseSettings::new(database.options.clone()),
        identity: IdentitySettings {
            aws_certificates_pem: Some(signing::aws_key().certificate_pem()),
        },
        lookup: lookup_under_test(),
    };
    configure(&mut options);
    let settings = Settings {
        bind: "127.0.0.1:0".to_owned(),
        database: options.database,
        identity: options.identity,
        migrate: true,
        shutdown_timeout: Duration::from_secs(1),
        lookup: options.lookup,
    };
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(database.options.clone())
        .await
        .expect("seed pool");
    TestApp {
        address,
        pool,
        client: reqwest::Client::new(),
        _database: database,
    }
}

/// Spawns the app (single statement lookup) with its pool going through a statement-counting
/// wire proxy.
pub async fn spawn_app_behind_proxy() -> (TestApp, PgProxy) {
    spawn_app_behind_proxy_with(|options| options.lookup = Strategy::Single).await
}

/// [`spawn_app_behind_proxy`] with further settings (e.g. the lookup strategy).
pub async fn spawn_app_behind_proxy_with(
    configure: impl FnOnce(&mut AppOptions),
) -> (TestApp, PgProxy) {
    let admin = admin_options();
    let upstream = tokio::net::lookup_host((admin.get_host(), admin.get_port()))
        .await
        .expect("resolve database host")
        .next()
        .expect("an address");
    let proxy = PgProxy::start(upstream).await;
    let app = spawn_app_with(|options| {
        options.database.connect = options
            .database
            .connect
            .clone()
            .host("127.0.0.1")
            .port(proxy.port)
            .ssl_mode(PgSslMode::Disable);
        configure(options);
    })
    .await;
    (app, proxy)
}

impl TestApp {
    pub fn seed(&self) -> Seed<'_> {
        Seed::new(&self.pool)
    }

    /// POSTs raw bytes to `path`.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> Response {
        let response = self
            .client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent");
        Self::read(response).await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.post_raw(path, body.to_string()).await
    }

    pub async fn get(&self, path: &str) -> Response {
        let response = self
            .client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent");
        Self::read(response).await
    }

    async fn read(response: reqwest::Response) -> Response {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body read");
        Response {
            status,
            headers,
            text,
        }
    }

    /// An AWS request signed by the test key for `instance_id`, with an optional name.
    pub async fn aws(&self, instance_id: &str, agent_name: Option<&str>) -> Response {
        let (signature, document) = signing::aws_document(instance_id);
        let mut body = json!({ "signature": signature, "document": document });
        if let Some(name) = agent_name {
            body["agent_name"] = json!(name);
        }
        self.post_json(AWS_PATH, &body).await
    }
}
