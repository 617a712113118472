//! Not the product: the tools around it. They use the product's parts; the product never uses
//! them.
//!
//! - [`database`]: where a command's database is (a URL, or the [`embedded_pg`] cluster);
//! - [`demo`]: the service on the embedded cluster with demo rows and curl commands;
//! - [`seed`]: a load-test shape of rows, a [`test_key`] (AWS), [`test_azure`] or
//!   [`test_google`] signer, and a [`corpus`] of requests;
//! - [`loadtest`]: replays a corpus against a running server and reads its metrics;
//! - [`explain`]: the request path's plans, for DBAs;
//! - [`delay_proxy`]: a TCP forwarder that adds a round trip's worth of distance, for benchmarks;
//! - [`private_file`]: files only their owner may read.

pub mod corpus;
pub mod database;
pub mod delay_proxy;
pub mod demo;
pub mod embedded_pg;
pub mod explain;
pub mod loadtest;
pub(crate) mod private_file;
pub mod seed;
pub mod test_azure;
pub mod test_google;
pub mod test_key;
