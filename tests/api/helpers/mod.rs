//! Shared test machinery.

pub mod app;
pub mod child;
pub mod pg;
pub mod pgproxy;
pub mod seed;
pub mod signing;

pub use app::spawn_app;
