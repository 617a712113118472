//! instauth: a cloud VM proves who it is (an AWS instance identity document, Azure attested
//! data or a Google identity token) and gets its Coder workspace agent's session token back,
//! through Coder's three `POST /api/v2/workspaceagents/{aws,azure,google}-instance-identity`
//! endpoints, with one SQL statement per request at most: requests that wait for the database
//! together share one.
//!
//! # Layout
//!
//! A request flows one way: HTTP in → admit → verify identity → look up candidates → decide →
//! respond. The product is the first group of folders; the tools around it come last and only
//! use it.
//!
//! ```text
//! src/main.rs              thin entry: parse the command line, run it
//! src/config.rs            Settings: each part's settings, gathered for `serve`
//! src/client.rs            who is asking: the peer, or behind trusted proxies the client it
//!                          forwards (one decision for the span, the auth line, the limiter)
//! src/http/                HTTP in and out
//!   mod.rs                 Application::build / run_until_stopped on a bound listener
//!   routes.rs              the route tables (public, metrics), 404/405, per-route metrics
//!   span.rs                the request span: route, status, client and peer addresses
//!   auth.rs                the three thin auth handlers, one line each into auth::
//!   connections.rs         the open-connection count behind --max-connections
//!   health.rs, metrics.rs  /healthz and /readyz, /metrics
//! src/auth/                one authentication, start to end
//!   mod.rs                 the pipeline: admit → decode → verify → look up → decide → respond
//!   admission.rs           body size, per-source rate, body deadline, in-flight bound,
//!                          lookup queue, body byte budget
//!   requests.rs            the three request bodies: required fields, how each is verified
//!   lookup.rs              the look-up step: the one statement (or a legacy replay), on a
//!                          replica first when there is one, the primary before any 404
//!   record.rs              the answer: token or error, Server-Timing, outcome metric, log line
//! src/identity/            cloud material → proven instance id, no I/O on the request path
//!   aws.rs, azure/{mod,envelope,trust,vouched,fetch}.rs, google/{mod,jwks,refresh}.rs, clock.rs
//! src/agents/              who may authenticate
//!   candidate.rs           Candidate: one row of the lookup
//!   query.rs               the one statement, queries/agents_by_instance_id{,s}.sql
//!   coalesce.rs            lookups that wait together go out as one statement
//!   decide.rs              the pure choice: candidates + name → the agent (one workspace) or
//!                          a Refusal
//! src/db/                  PostgreSQL
//!   database.rs            the runtime every round trip runs on, apart from the HTTP loops
//!   pool.rs                the request path's pool
//!   replica.rs             read replicas: their pools, health, and background lag check
//!   exchange.rs            one bounded, timed exchange on a pooled connection
//!   statement_mode.rs      cached or unnamed statements (PgBouncer)
//!   trouble.rs             the one classifier of database errors: lost / transient / permanent
//!   migrate.rs             the embedded migrations, retried in the background
//! src/api/                 Coder's wire contract
//!   error.rs               ApiError and its one table: status, outcome, message
//!   body.rs, json.rs       reading and writing JSON as Go does
//!   quote.rs, timing.rs    Go's %q; the Server-Timing header
//! src/metrics.rs           the Prometheus registry behind /metrics
//! src/telemetry.rs         logging
//! src/legacy/              (feature `legacy`) replays of Coder's statement sequences, for benchmarks
//! src/cli/                 the command line: mod.rs dispatch, serve.rs serve's flags → Settings
//! src/tools/               not the product: database, demo, seed, test_key, corpus, loadtest/
//!                          (steady load and --storm), delay_proxy, explain, embedded_pg,
//!                          private_file
//! ```
//!
//! `docs/coder-contract.md` holds the facts of Coder's contract the code relies on.

mod agents;
mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod db;
pub mod http;
pub mod identity;
#[cfg(feature = "legacy")]
pub mod legacy;
mod metrics;
mod telemetry;
pub mod tools;
