//! HTTP handlers: the three instance-identity routes and the health probes.

pub mod auth;
pub mod body;
pub mod health;
