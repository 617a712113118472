//! HTTP handlers: the three instance-identity routes, the health probes and the metrics.

pub mod auth;
pub mod body;
pub mod health;
pub mod metrics;
