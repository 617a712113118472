//! HTTP in and out: the actix-web application, built on a bound listener, its routes and
//! handlers. The handlers are thin: authentication is [`crate::auth`]'s.

mod auth;
mod connections;
mod health;
mod metrics;
mod routes;
mod span;

use std::net::TcpListener;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::dev::Server;
use actix_web::{App, HttpServer, middleware, web};
use anyhow::Context as _;
use sqlx::migrate::MigrateError;
use tokio::task::JoinHandle;
use tracing_actix_web::TracingLogger;

use crate::api::error::Outcome;
use crate::auth::Authenticator;
use crate::auth::admission::{Admission, BODY_DEADLINE, connections_per_worker};
use crate::auth::lookup::Finder;
use crate::client::TrustedProxies;
use crate::config::Settings;
use crate::db;
use crate::identity::Verifiers;
use crate::identity::google::RefreshTask;
use crate::metrics::Metrics;
use connections::Connections;
use health::Readiness;
use span::RequestSpan;

/// Connections the kernel queues before they are accepted (capped by `net.core.somaxconn`).
const LISTEN_BACKLOG: i32 = 4096;

/// actix's largest worker count (it panics above).
const MAX_WORKERS: NonZeroUsize = NonZeroUsize::MIN.saturating_add(511);

/// A listening socket on the first address `bind` resolves to, with a backlog for a fleet
/// reconnecting at once: thousands of connects in one burst.
fn bind(bind: &str) -> std::io::Result<TcpListener> {
    use std::net::ToSocketAddrs as _;

    use socket2::{Domain, Socket, Type};

    let address = bind.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    })?;
    let socket = Socket::new(Domain::for_address(address), Type::STREAM, None)?;
    // As std's TcpListener::bind does: a restarted service can bind at once.
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// A bound, not yet running server.
pub struct Application {
    port: u16,
    /// The `--metrics-bind` listener's port, when `/metrics` has one of its own.
    metrics_port: Option<u16>,
    database: db::Database,
    server: Server,
    metrics_server: Option<Server>,
    /// Migrations still being retried in the background, if the database was down at start.
    migrations: Option<JoinHandle<Result<(), MigrateError>>>,
    /// Keeps Google's keys fresh while the server runs (URL mode only).
    jwks_refresh: Option<RefreshTask>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("port", &self.port)
            .field("metrics_port", &self.metrics_port)
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
        settings.admission.check()?;
        let verifiers = Verifiers::new(&settings.identity)?;
        let jwks_refresh = verifiers.google.start_refresh().await?;
        let database =
            db::Database::start(&settings.database).context("starting the database runtime")?;
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
        let listener =
            bind(&settings.bind).with_context(|| format!("binding {}", settings.bind))?;
        let port = listener.local_addr()?.port();
        let metrics_listener = settings
            .metrics_bind
            .as_deref()
            .map(|address| bind(address).with_context(|| format!("binding {address}")))
            .transpose()?;
        let metrics_port = metrics_listener
            .as_ref()
            .map(TcpListener::local_addr)
            .transpose()?
            .map(|address| address.port());
        let outcomes: Vec<&str> = Outcome::ALL.iter().map(|o| o.label()).collect();
        database.check_replicas(&settings.database).await;
        let replicas: Vec<&str> = database.replicas().iter().map(|r| &**r.name()).collect();
        let metrics = Metrics::new(settings.lookup.queries(), &outcomes, &replicas)
            .context("declaring metrics")?;
        tracing::info!(lookup = %settings.lookup, "lookup");
        tracing::info!(
            trusted_proxies = settings.trusted_proxies.describe(),
            "client addresses: X-Forwarded-For is honoured only from trusted proxies"
        );
        let auth = web::Data::new(Authenticator {
            admission: Admission::new(settings.admission),
            verifiers: Arc::new(verifiers),
            finder: Finder::new(
                settings.lookup,
                database.clone(),
                metrics.clone(),
                &settings.database,
            ),
            metrics: metrics.clone(),
        });
        let readiness = web::Data::new(Readiness {
            database: database.clone(),
            schema_ready,
        });
        // actix's default worker count, made explicit so the connection bound can be shared out.
        let (workers, per_worker) = connections_per_worker(
            settings.admission.max_connections,
            std::thread::available_parallelism()
                .unwrap_or(NonZeroUsize::MIN.saturating_add(1))
                .min(MAX_WORKERS),
        );
        let connections =
            Connections::new(metrics.open_connections(), workers.get() * per_worker.get());
        let metrics = web::Data::new(metrics);
        let shared_database = web::Data::new(database.clone());
        let trusted_proxies = web::Data::new(settings.trusted_proxies.clone());
        let metrics_apart = metrics_listener.is_some();
        let public = {
            let (auth, metrics, shared_database, trusted_proxies) = (
                auth.clone(),
                metrics.clone(),
                shared_database.clone(),
                trusted_proxies.clone(),
            );
            move || {
                App::new()
                    .wrap(TracingLogger::<RequestSpan>::new())
                    .wrap(middleware::from_fn(routes::measure))
                    .app_data(auth.clone())
                    .app_data(readiness.clone())
                    .app_data(metrics.clone())
                    .app_data(shared_database.clone())
                    .app_data(trusted_proxies.clone())
                    .configure(|cfg| routes::public(cfg, !metrics_apart))
            }
        };
        // actix counts whole seconds; round up so a sub-second setting still drains.
        let shutdown_timeout = settings.shutdown_timeout.as_secs_f64().ceil() as u64;
        let server = HttpServer::new(public)
            // Under such a burst a request head may wait its turn longer than actix's default of
            // 5 s; the head gets as long as the body (a 408 is an answer the agent only retries).
            .client_request_timeout(BODY_DEADLINE)
            // Beyond the bound a worker takes no new connection; when every worker is full, new
            // connections wait in the listen backlog (and beyond it, the kernel's SYN retries).
            .workers(workers.get())
            .max_connections(per_worker.get())
            .on_connect(move |_, data| connections.opened(data))
            // Signals are watched in `serve`, so SIGINT drains like SIGTERM.
            .disable_signals()
            .listen(listener)?
            .shutdown_timeout(shutdown_timeout)
            .run();
        let metrics_server = metrics_listener
            .map(|listener| {
                metrics_server(
                    listener,
                    (metrics, auth, shared_database, trusted_proxies),
                    shutdown_timeout,
                )
            })
            .transpose()?;
        Ok(Self {
            port,
            metrics_port,
            database,
            server,
            metrics_server,
            migrations,
            jwks_refresh,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port `/metrics` is served on when `--metrics-bind` gave it a listener of its own.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    /// The database side, for tools that put rows in before serving (the demo).
    pub(crate) fn database(&self) -> &db::Database {
        &self.database
    }

    /// Serves until SIGINT/SIGTERM, then drains in-flight requests. Also stops, with the
    /// error, if background migrations fail in a way retrying cannot fix.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        // Held until the server stops; dropping it ends the key refresh.
        let _jwks_refresh = self.jwks_refresh;
        let result = serve(self.server, self.metrics_server, self.migrations).await;
        // Every request has been answered (or the drain timed out): hang up politely.
        self.database.close().await;
        result
    }
}

/// What the `--metrics-bind` server's handlers read.
type MetricsData = (
    web::Data<Metrics>,
    web::Data<Authenticator>,
    web::Data<db::Database>,
    web::Data<TrustedProxies>,
);

/// Connections the `--metrics-bind` listener keeps open at once: a few scrapers, never a
/// fleet, so it stays outside the memory the public listener's cap bounds only by a little.
const METRICS_MAX_CONNECTIONS: usize = 16;

/// The `--metrics-bind` server: `/metrics` alone, measured and logged like the public routes.
/// Scrapes are quick, so it runs on one worker. It drains within the same `--shutdown-timeout`
/// as the public server (whole seconds), so a slow scraper cannot stretch a stop.
fn metrics_server(
    listener: TcpListener,
    (metrics, auth, shared_database, trusted_proxies): MetricsData,
    shutdown_timeout: u64,
) -> std::io::Result<Server> {
    Ok(HttpServer::new(move || {
        App::new()
            .wrap(TracingLogger::<RequestSpan>::new())
            .wrap(middleware::from_fn(routes::measure))
            .app_data(metrics.clone())
            // Only for the body budget gauge the scrape reads.
            .app_data(auth.clone())
            .app_data(shared_database.clone())
            .app_data(trusted_proxies.clone())
            .configure(routes::metrics_only)
    })
    .workers(1)
    .max_connections(METRICS_MAX_CONNECTIONS)
    .disable_signals()
    .listen(listener)?
    .shutdown_timeout(shutdown_timeout)
    .run())
}

async fn serve(
    mut server: Server,
    metrics_server: Option<Server>,
    migrations: Option<JoinHandle<Result<(), MigrateError>>>,
) -> anyhow::Result<()> {
    let handle = server.handle();
    let metrics = metrics_server.map(|server| (server.handle(), tokio::spawn(server)));
    // SIGINT and SIGTERM both drain in-flight requests (actix's own handling stops at once on
    // SIGINT, so it is turned off where the server is built). Both listeners drain at once, so
    // a stop takes one --shutdown-timeout at most, not one after the other.
    let signals = tokio::spawn({
        let handle = handle.clone();
        let metrics_handle = metrics.as_ref().map(|(handle, _)| handle.clone());
        async move {
            stop_signal().await;
            let metrics_stopped = async {
                if let Some(metrics_handle) = metrics_handle {
                    metrics_handle.stop(true).await;
                }
            };
            tokio::join!(handle.stop(true), metrics_stopped);
        }
    });
    let result = serve_until_done(&mut server, handle, migrations).await;
    signals.abort();
    // The public side has stopped (a signal, which stopped `/metrics` too, or migrations that
    // cannot apply): `/metrics` stops with it, after answering the scrapes it holds.
    let Some((handle, running)) = metrics else {
        return result;
    };
    handle.stop(true).await;
    let stopped = running.await.context("metrics server task")?;
    result.and(stopped.context("metrics server"))
}

/// Waits for SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};

    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot watch for SIGTERM; only SIGINT stops the service");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn serve_until_done(
    server: &mut Server,
    handle: actix_web::dev::ServerHandle,
    migrations: Option<JoinHandle<Result<(), MigrateError>>>,
) -> anyhow::Result<()> {
    let Some(migrations) = migrations else {
        return Ok(server.await?);
    };
    tokio::select! {
        served = &mut *server => Ok(served?),
        migrated = migrations => match migrated {
            Ok(Ok(())) => Ok(server.await?),
            Ok(Err(err)) => {
                handle.stop(true).await;
                server.await?;
                Err(err).context("applying migrations")
            }
            Err(join) => {
                // The task panicked or was cancelled: stop serving as for a failed migration.
                handle.stop(true).await;
                server.await?;
                Err(join).context("migration task")
            }
        },
    }
}
