//! The crate's one error type.

/// Why [`TelemetryHttp::new`](crate::TelemetryHttp::new) failed. The settings
/// cannot be wrong (their types admit only valid values), so what is left is
/// the instance's own Prometheus registry refusing a metric.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A metric could not be registered in the instance's registry.
    #[error("registering the telemetry metrics failed: {0}")]
    MetricRegistration(#[from] prometheus::Error),
}
