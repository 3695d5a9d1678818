//! taskman-server: a small persisted task API.
//!
//! The binary (`src/main.rs`) parses the command line and hands over to [`app::run`]. This
//! library holds everything else so integration tests can drive the real application with
//! `actix_web::test`. Telemetry (the OTLP pipeline, `/health*`, `/metrics`) lives in the
//! `breaker-otel` and `telemetry-http` crates, is assembled in [`telemetry`] and joins the
//! application in [`app`] only.

pub mod api;
pub mod app;
pub mod config;
pub mod logging;
pub mod storage;
pub mod task;
pub mod telemetry;
