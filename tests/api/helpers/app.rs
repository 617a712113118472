//! A running instauth on port 0 over its own database, with typed request helpers.

use std::time::Duration;

use instauth::auth::admission::AdmissionSettings;
use instauth::auth::lookup::Lookup;
use instauth::client::TrustedProxies;
use instauth::config::Settings;
use instauth::db::DatabaseSettings;
use instauth::http::Application;
use instauth::identity::IdentitySettings;
use instauth::identity::google::{GoogleSettings, JwksSource};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::{PgPoolOptions, PgSslMode};

use super::pg::{TestDatabase, admin_options};
use super::pgproxy::PgProxy;
use super::seed::Seed;
use super::{google, signing};

pub const AWS_PATH: &str = "/api/v2/workspaceagents/aws-instance-identity";
pub const AZURE_PATH: &str = "/api/v2/workspaceagents/azure-instance-identity";
pub const GOOGLE_PATH: &str = "/api/v2/workspaceagents/google-instance-identity";

/// The detail of a validation failure for a missing or empty field, as Coder words it.
pub const REQUIRED: &str = r#"Validation failed for tag "required" with value: """#;

pub struct TestApp {
    pub address: String,
    /// `http://127.0.0.1:PORT` of the `/metrics` listener, when `metrics_bind` asked for one.
    pub metrics_address: Option<String>,
    /// A direct pool to the test database, for seeding and checks (not the app's pool).
    pub pool: PgPool,
    pub client: reqwest::Client,
    /// Dropped with the app: the database goes away after the test.
    pub database: TestDatabase,
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

    pub fn detail(&self) -> String {
        self.json()["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
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

    /// Asserts Coder's error shape exactly: status, message, content type, trailing newline,
    /// and no keys besides `message`, `detail` and `validations`.
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
        let body = self.json();
        let keys = body.as_object().expect("an object").keys();
        for key in keys {
            assert!(
                ["message", "detail", "validations"].contains(&key.as_str()),
                "unexpected key {key:?} in {self:?}"
            );
        }
    }

    /// Asserts a 400 `Validation failed.` listing exactly `fields`, in this order, each as
    /// missing.
    pub fn assert_missing_fields(&self, fields: &[&str]) {
        self.assert_error(400, "Validation failed.");
        let expected: Vec<Value> = fields
            .iter()
            .map(|field| json!({"field": field, "detail": REQUIRED}))
            .collect();
        assert_eq!(
            self.json()["validations"],
            Value::Array(expected),
            "validations of {self:?}"
        );
    }

    /// Asserts a 401 with `message` whose detail starts with `detail`.
    pub fn assert_rejected(&self, message: &str, detail: &str) {
        self.assert_error(401, message);
        assert!(
            self.detail().starts_with(detail),
            "detail {:?} should start with {detail:?}",
            self.detail()
        );
    }
}

/// Settings a test may change before the app is built.
pub struct AppOptions {
    pub database: DatabaseSettings,
    pub identity: IdentitySettings,
    pub admission: AdmissionSettings,
    /// Apply migrations at start (`serve` without `--no-migrate`).
    pub migrate: bool,
    pub lookup: Lookup,
    /// `--metrics-bind` (e.g. `127.0.0.1:0`).
    pub metrics_bind: Option<String>,
    pub trusted_proxies: TrustedProxies,
}

/// The lookup strategy tests run with: `single`, or the one named by `INSTAUTH_TEST_LOOKUP`
/// (e.g. `coder-rc3` in a `--features legacy` build), so the whole correctness suite can be
/// pointed at a replay. Tests about the single statement's cost pin `single` themselves.
fn lookup_under_test() -> Lookup {
    match std::env::var("INSTAUTH_TEST_LOOKUP") {
        Ok(name) if !name.is_empty() => <Lookup as clap::ValueEnum>::from_str(&name, false)
            .unwrap_or_else(|err| panic!("INSTAUTH_TEST_LOOKUP: {err}")),
        _ => Lookup::Single,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns the app on port 0 over a fresh database; `configure` may adjust its settings
/// (e.g. point the pool at a proxy). By default it trusts the test AWS key besides the
/// embedded ones, the embedded Azure trust, and the test Google key from an in-memory JWKS
/// (never the network), on the system clock.
pub async fn spawn_app_with(configure: impl FnOnce(&mut AppOptions)) -> TestApp {
    spawn_app_on(TestDatabase::create().await, configure).await
}

/// Spawns the app on port 0 over `database`, which may already be migrated and granted to a
/// role; `configure` may connect the pool as that role or through a pooler, and turn off
/// migrations (`serve --no-migrate`).
pub async fn spawn_app_on(
    database: TestDatabase,
    configure: impl FnOnce(&mut AppOptions),
) -> TestApp {
    let mut options = AppOptions {
        database: DatabaseSettings::new(database.options.clone()),
        identity: IdentitySettings {
            aws_certificates_pem: Some(signing::aws_key().certificate_pem()),
            google: GoogleSettings {
                jwks: JwksSource::Document(google::jwks(&[google::key()], true)),
                ..GoogleSettings::default()
            },
            ..IdentitySettings::default()
        },
        admission: AdmissionSettings::default(),
        migrate: true,
        lookup: lookup_under_test(),
        metrics_bind: None,
        trusted_proxies: TrustedProxies::default(),
    };
    configure(&mut options);
    let settings = Settings {
        bind: "127.0.0.1:0".to_owned(),
        metrics_bind: options.metrics_bind,
        trusted_proxies: options.trusted_proxies,
        database: options.database,
        identity: options.identity,
        admission: options.admission,
        migrate: options.migrate,
        shutdown_timeout: Duration::from_secs(1),
        lookup: options.lookup,
    };
    let app = Application::build(settings).await.expect("app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let metrics_address = app
        .metrics_port()
        .map(|port| format!("http://127.0.0.1:{port}"));
    tokio::spawn(app.run_until_stopped());
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(database.options.clone())
        .await
        .expect("seed pool");
    TestApp {
        address,
        metrics_address,
        pool,
        client: reqwest::Client::new(),
        database,
    }
}

/// Spawns the app (single statement lookup) with its pool going through a statement-counting
/// wire proxy.
pub async fn spawn_app_behind_proxy() -> (TestApp, PgProxy) {
    spawn_app_behind_proxy_with(|options| options.lookup = Lookup::Single).await
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
        configure(options);
        options.database.connect = options
            .database
            .connect
            .clone()
            .host("127.0.0.1")
            .port(proxy.port)
            .ssl_mode(PgSslMode::Disable);
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
        Self::send(self.post(path, body)).await
    }

    /// POSTs raw bytes to `path` with `User-Agent: user_agent`, a field of the request span,
    /// so a test can find its request's log lines by a value only it sends.
    pub async fn post_raw_as(
        &self,
        path: &str,
        user_agent: &str,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        Self::send(self.post(path, body).header("user-agent", user_agent)).await
    }

    fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}{path}", self.address))
            .header("content-type", "application/json")
            .body(body)
    }

    async fn send(request: reqwest::RequestBuilder) -> Response {
        Self::read(request.send().await.expect("request sent")).await
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

    /// An AWS request with exactly this `signature` and `document`.
    pub async fn aws_signed(&self, signature: &str, document: &str) -> Response {
        self.post_json(
            AWS_PATH,
            &json!({ "signature": signature, "document": document }),
        )
        .await
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

    /// An Azure request with `signature` (base64 PKCS#7), `encoding: pkcs7` and an optional
    /// name.
    pub async fn azure(&self, signature: &str, agent_name: Option<&str>) -> Response {
        let mut body = json!({ "signature": signature, "encoding": "pkcs7" });
        if let Some(name) = agent_name {
            body["agent_name"] = json!(name);
        }
        self.post_json(AZURE_PATH, &body).await
    }

    /// A Google request with `token` and an optional name.
    pub async fn google(&self, token: &str, agent_name: Option<&str>) -> Response {
        let mut body = json!({ "json_web_token": token });
        if let Some(name) = agent_name {
            body["agent_name"] = json!(name);
        }
        self.post_json(GOOGLE_PATH, &body).await
    }
}
