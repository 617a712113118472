//! Shared test machinery.

pub mod app;
pub mod pg;
pub mod pgbouncer;
pub mod pgproxy;
pub mod roles;
pub mod seed;
pub mod signing;

pub use app::spawn_app;
