//! Shared test machinery.

pub mod app;
pub mod azure;
pub mod der;
pub mod google;
pub mod http_stub;
pub mod pg;
pub mod pgproxy;
pub mod seed;
pub mod signing;

pub use app::{spawn_app, spawn_app_with};
