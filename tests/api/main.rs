//! The API test suite: one binary, a real PostgreSQL (DATABASE_URL, or a private cluster
//! started once per run), one fresh database per test.

mod helpers;

mod aws;
mod contract;
mod count;
mod embedded;
#[cfg(feature = "legacy")]
mod legacy;
mod load;
mod metrics;
mod rules;
mod scenarios;
mod sqlx_data;
