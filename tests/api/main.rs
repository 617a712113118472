//! The API test suite: one binary, a real PostgreSQL (DATABASE_URL, or a private cluster
//! started once per run), one fresh database per test.

mod helpers;

mod aws;
mod azure;
mod cloud_scenarios;
mod concurrency;
mod contract;
mod count;
mod embedded;
mod faults;
mod google;
mod http_fuzz;
mod process;
mod properties;
mod rules;
mod scenarios;
mod sqlx_data;
