//! The task service's HTTP API: routes, request validation and the JSON error shape.
//!
//! Only the `/tasks` routes live here. `/health*` and `/metrics` come from the
//! `telemetry-http` crate and are mounted next to these in [`crate::app`].

pub mod error;
pub mod tasks;

pub use error::ApiError;
