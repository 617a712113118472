//! Building and running the HTTP application.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use actix_web::dev::{Server, Service as _};
use actix_web::{App, HttpResponse, HttpServer, middleware, web};
use anyhow::Context as _;
use futures_util::FutureExt as _;
use sqlx::migrate::MigrateError;
use tokio::task::JoinHandle;
use tracing_actix_web::TracingLogger;

use crate::admission::{self, Admission};
use crate::config::{DatabaseSettings, Settings};
use crate::db;
use crate::error::ApiError;
use crate::identity::Verifiers;
use crate::identity::google_refresh::RefreshTask;
use crate::metrics::{Metrics, UNMATCHED_ROUTE};
use crate::routes::{auth, health, metrics};
use crate::strategy::Strategy;

/// Shared by every request.
#[derive(Debug)]
pub struct AppState {
    pub pool: db::Pool,
    /// Whether the lookup is sent as a cached named statement or unnamed (PgBouncer).
    pub statements: db::StatementMode,
    pub verifiers: Verifiers,
    /// False until the migrations have been applied (always true with `--no-migrate`).
    schema_ready: Arc<AtomicBool>,
    /// Longest a request waits on the database in all: acquiring a connection, then the
    /// statement, plus a margin. The server-side `statement_timeout` cannot fire when the
    /// database host stops answering altogether (a frozen VM, a partition); this bound does.
    pub db_deadline: Duration,
    pub metrics: Metrics,
    pub lookup: Strategy,
}

impl AppState {
    pub fn schema_ready(&self) -> bool {
        self.schema_ready.load(Ordering::Acquire)
    }
}

/// Slack on top of the acquire and statement timeouts before a request stops waiting on the
/// database: room for the server-side timeout to fire first and report its own error.
const DB_DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    pool: db::Pool,
    server: Server,
    /// Migrations still being retried in the background, if the database was down at start.
    migrations: Option<JoinHandle<Result<(), MigrateError>>>,
    /// Keeps Google's keys fresh while the server runs (URL mode only).
    jwks_refresh: Option<RefreshTask>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Parses trust material, prepares the pool (applying migrations when asked), binds the
    /// listener and builds the server. Binding here lets tests ask for port 0.
    ///
    /// An unreachable database does not stop the start: the server comes up unready and the
    /// migrations are retried in the background, so an orchestrator sees a live process that
    /// turns ready on its own once the database is back.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let verifiers = Verifiers::new(&settings.identity)?;
        let jwks_refresh = verifiers.google.start_refresh().await?;
        let pool = db::Pool::new(&settings.database);
        let schema_ready = Arc::new(AtomicBool::new(!settings.migrate));
        let mut migrations = None;
        if settings.migrate {
            match db::migrate(&settings.database).await {
                Ok(()) => schema_ready.store(true, Ordering::Release),
                Err(err) if db::is_retryable(&err) => {
                    tracing::warn!(error = %err, "database unreachable at start; serving unready and retrying");
                    migrations = Some(tokio::spawn(db::keep_migrating(
                        settings.database.clone(),
                        schema_ready.clone(),
                    )));
                }
                Err(err) => return Err(err).context("applying migrations"),
            }
        }
        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("binding {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let metrics = Metrics::new(settings.lookup.queries()).context("declaring metrics")?;
        tracing::info!(lookup = %settings.lookup, "lookup strategy");
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            statements: db::StatementMode::for_settings(&settings.database),
            verifiers,
            schema_ready,
            // With no statement_timeout sent (0: the role's applies), bound the wait as if the
            // default were in force.
            db_deadline: settings.database.acquire_timeout
                + if settings.database.statement_timeout.is_zero() {
                    DatabaseSettings::DEFAULT_STATEMENT_TIMEOUT
                } else {
                    settings.database.statement_timeout
                }
                + DB_DEADLINE_MARGIN,
            metrics: metrics.clone(),
            lookup: settings.lookup,
        });
        let admission = web::Data::from(Admission::new(settings.admission));
        let server = HttpServer::new(move || {
            let metrics = metrics.clone();
            App::new()
                .wrap(TracingLogger::default())
                // Outermost, so the latency covers the whole request, logging included.
                .wrap_fn(move |request, service| {
                    let started = Instant::now();
                    let metrics = metrics.clone();
                    // Resolved before the call: an answer given by middleware as an error
                    // (shed, rate-limited, too large) has no response to read it from.
                    let route = request
                        .match_pattern()
                        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
                    service.call(request).map(move |result| {
                        let status = match &result {
                            Ok(response) => response.status(),
                            Err(err) => err.as_response_error().status_code(),
                        };
                        metrics.observe_http(&route, status.as_u16(), started.elapsed());
                        result
                    })
                })
                .app_data(state.clone())
                .app_data(admission.clone())
                .configure(configure)
                .default_service(web::to(not_found))
        })
        .listen(listener)?
        // actix counts whole seconds; round up so a sub-second setting still drains.
        .shutdown_timeout(settings.shutdown_timeout.as_secs_f64().ceil() as u64)
        .run();
        Ok(Self {
            port,
            pool,
            server,
            migrations,
            jwks_refresh,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pool(&self) -> &db::Pool {
        &self.pool
    }

    /// Serves until SIGINT/SIGTERM, then drains in-flight requests. Also stops, with the
    /// error, if background migrations fail in a way retrying cannot fix.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        // Held until the server stops; dropping it ends the key refresh.
        let _jwks_refresh = self.jwks_refresh;
        let result = serve(self.server, self.migrations).await;
        // Every request has been answered (or the drain timed out): hang up politely.
        self.pool.close().await;
        result
    }
}

async fn serve(
    mut server: Server,
    migrations: Option<JoinHandle<Result<(), MigrateError>>>,
) -> anyhow::Result<()> {
    let handle = server.handle();
    let Some(migrations) = migrations else {
        return Ok(server.await?);
    };
    tokio::select! {
        served = &mut server => Ok(served?),
        migrated = migrations => match migrated {
            Ok(Ok(())) => Ok(server.await?),
            Ok(Err(err)) => {
                handle.stop(true).await;
                server.await?;
                Err(err).context("applying migrations")
            }
            Err(join) => Err(join).context("migration task"),
        },
    }
}

/// The routes. Unknown methods on a known path get a JSON 405, unknown paths a JSON 404.
fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/v2/workspaceagents")
            .wrap(middleware::from_fn(admission::admit))
            .service(post_only("/aws-instance-identity", auth::aws))
            .service(post_only("/azure-instance-identity", auth::azure))
            .service(post_only("/google-instance-identity", auth::google)),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(health::healthz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(health::readyz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(metrics::metrics))
            .default_service(web::to(method_not_allowed)),
    );
}

/// A route that answers POST with `handler` and any other method with a JSON 405.
fn post_only<F, Args>(path: &str, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    web::resource(path)
        .route(web::post().to(handler))
        .default_service(web::to(method_not_allowed))
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}
