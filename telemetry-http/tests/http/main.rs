//! The telemetry routes driven through actix's test service: health and
//! metrics answers with a real circuit-breaking exporter around a scripted
//! backend, the `/metrics` limit and whom it counts, the HTTP server metrics,
//! snapshots of what operators see, and `promtool` on the metrics text.
//!
//! One test binary for the crate, one support module: fewer link steps, and
//! every helper in `support` is used by some test here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backends;
mod client_keys;
mod http_metrics;
mod promtool;
mod routes;
mod snapshots;
mod support;
