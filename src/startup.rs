//! Building and running the HTTP application.

use std::net::TcpListener;
use std::time::Instant;

use actix_web::dev::{Server, Service as _};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use futures_util::FutureExt as _;
use sqlx::PgPool;
use tracing_actix_web::TracingLogger;

use crate::config::Settings;
use crate::db;
use crate::error::ApiError;
use crate::identity::Verifiers;
use crate::metrics::{Metrics, UNMATCHED_ROUTE};
use crate::routes::{auth, health, metrics};
use crate::strategy::Strategy;

/// Shared by every request.
#[derive(Debug)]
pub struct AppState {
    pub pool: PgPool,
    pub verifiers: Verifiers,
    pub metrics: Metrics,
    pub lookup: Strategy,
}

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    pool: PgPool,
    server: Server,
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
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let verifiers = Verifiers::new(&settings.identity)?;
        let pool = db::pool(&settings.database);
        if settings.migrate {
            db::migrate(&pool).await.context("applying migrations")?;
        }
        let listener = TcpListener::bind(&settings.bind)
            .with_context(|| format!("binding {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let metrics = Metrics::new(settings.lookup.queries()).context("declaring metrics")?;
        tracing::info!(lookup = %settings.lookup, "lookup strategy");
        let state = web::Data::new(AppState {
            pool: pool.clone(),
            verifiers,
            metrics: metrics.clone(),
            lookup: settings.lookup,
        });
        let server = HttpServer::new(move || {
            let metrics = metrics.clone();
            App::new()
                .wrap(TracingLogger::default())
                // Outermost, so the latency covers the whole request, logging included.
                .wrap_fn(move |request, service| {
                    let started = Instant::now();
                    let metrics = metrics.clone();
                    service.call(request).map(move |result| {
                        if let Ok(response) = &result {
                            let route = response
                                .request()
                                .match_pattern()
                                .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
                            metrics.observe_http(
                                &route,
                                response.status().as_u16(),
                                started.elapsed(),
                            );
                        }
                        result
                    })
                })
                .app_data(state.clone())
                .configure(configure)
                .default_service(web::to(not_found))
        })
        .listen(listener)?
        .shutdown_timeout(settings.shutdown_timeout.as_secs())
        .run();
        Ok(Self { port, pool, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until SIGINT/SIGTERM, then drains in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// The routes. Unknown methods on a known path get a JSON 405, unknown paths a JSON 404.
fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/api/v2/workspaceagents/aws-instance-identity")
            .route(web::post().to(auth::aws))
            .default_service(web::to(method_not_allowed)),
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

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::RouteNotFound)
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}
