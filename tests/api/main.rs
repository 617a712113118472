//! The API test suite: one binary, a real PostgreSQL (DATABASE_URL, or a private cluster
//! started once per run), one fresh database per test.
#![expect(
    unreachable_pub,
    reason = "a test binary has no public face: its helpers are `pub` for the test modules"
)]

mod helpers;

mod aws;
mod azure;
mod bench_scripts;
mod client_address;
mod cloud_scenarios;
mod coalescing;
mod concurrency;
mod contract;
mod count;
mod deploy;
mod embedded;
mod explain;
mod faults;
mod google;
mod http_fuzz;
#[cfg(feature = "legacy")]
mod legacy;
mod load;
mod memory;
mod metrics;
mod migrations;
mod nginx;
mod operations;
mod pgbouncer;
mod pool;
mod process;
mod properties;
mod read_only;
mod replicas;
mod rules;
mod scale;
mod scenarios;
mod sqlx_data;
mod statement_mode;
