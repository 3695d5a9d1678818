//! The task service's HTTP API: routes, request validation and the JSON error shape.
//!
//! The `/tasks` routes and `/health/ready` (which asks the task database) live here. The
//! other `/health*` routes and `/metrics` come from the `telemetry-http` crate and are
//! mounted next to these in [`crate::app`].

pub mod error;
pub mod ready;
pub mod tasks;

pub use error::ApiError;
