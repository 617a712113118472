//! Shared test machinery.

pub mod app;
pub mod azure;
pub mod child;
pub mod der;
pub mod google;
pub mod http_stub;
pub mod keys;
pub mod logs;
pub mod pg;
pub mod pgbouncer;
pub mod pgproxy;
pub mod raw;
pub mod roles;
pub mod rule_cases;
pub mod seed;
pub mod signing;
pub mod standby;

pub use app::{spawn_app, spawn_app_with};

/// A fresh, empty directory under the system temp dir (reachable by `postgres` when root).
pub fn scratch_dir(label: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "instauth-{label}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
