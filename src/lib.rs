//! instauth: a cloud VM proves who it is (an AWS instance identity document, Azure attested
//! data or a Google identity token) and gets its Coder workspace agent's session token back,
//! through Coder's three `POST /api/v2/workspaceagents/{aws,azure,google}-instance-identity`
//! endpoints, with exactly one SQL statement per request.
//!
//! # Layout
//!
//! A request flows one way: HTTP in → verify identity → one query → decide → respond.
//!
//! - [`admission`]: sheds authentication requests beyond the in-flight bound (503) and, when
//!   configured, beyond a per-source-IP rate (429), before any work is done.
//! - [`routes`]: HTTP handlers; [`routes::body`] reads and validates request bodies,
//!   [`routes::auth`] runs the pipeline, [`routes::health`] answers the probes.
//! - [`identity`]: turns cloud material into a proven instance id ([`identity::aws`],
//!   [`identity::azure`], [`identity::google`]), as of an injectable [`identity::clock`];
//!   `docs/identity.md` says what each proves.
//! - [`lookup`]: the one statement, `queries/agents_by_instance_id.sql`; [`strategy`] picks it
//!   (`serve --lookup`) or, with the `legacy` feature, a replay of Coder's sequences
//!   (`legacy`, benchmarks only).
//! - [`selection`]: Coder's rules for choosing an agent among the candidates.
//! - [`error`]: the error enum with Coder's statuses and messages; [`response`] writes JSON as
//!   Go does; [`quote`] is Go's `%q` for messages.
//! - [`startup`]: builds the actix-web application on a bound listener; [`config`] holds its
//!   typed settings; [`db`] the pool, its timed acquire and migrations.
//! - [`metrics`]: the Prometheus metrics behind `GET /metrics` ([`routes::metrics`]);
//!   [`timing`]: the `Server-Timing` header of auth answers.
//! - [`embedded_pg`]: the private PostgreSQL cluster used when no database URL is given.
//! - [`cli`]: `serve`, `migrate`, `explain`, `demo`, `seed`, `loadtest`; [`explain`] prints the
//!   plans of the request-path queries for DBAs; [`demo`] seeds data and signs demo requests;
//!   [`seed`] fills a database with a load-test shape and writes a [`corpus`]; [`loadtest`]
//!   replays it against a running server; [`telemetry`] sets up logging.

pub mod admission;
pub mod cli;
pub mod config;
pub mod corpus;
pub mod db;
pub mod demo;
pub mod embedded_pg;
pub mod error;
pub mod explain;
pub mod identity;
#[cfg(feature = "legacy")]
pub mod legacy;
pub mod loadtest;
pub mod lookup;
pub mod metrics;
pub mod quote;
pub mod response;
pub mod routes;
pub mod seed;
pub mod selection;
pub mod startup;
pub mod strategy;
pub mod telemetry;
pub mod timing;
