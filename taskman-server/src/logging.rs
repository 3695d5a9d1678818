//! Log output: `tracing` events to stderr, human-readable or JSON lines, filtered by
//! `RUST_LOG` (default `info`), and, when log records are exported
//! (`OTEL_LOGS_EXPORTER`, default `otlp`), the same events as OTLP log records through
//! the pipeline's log breaker, by the OpenTelemetry project's `tracing` bridge. Stdout is
//! left to `--print-config`.
//!
//! Events about the telemetry pipeline itself (its breaker's outage lines, the SDK's and
//! the OTLP transport's own logs) go to stderr only: [`is_pipeline_target`]. Exported, they
//! would feed the pipeline its own failures, a loop that grows with the outage it reports.
//!
//! Nothing here becomes an OpenTelemetry span: the server's spans are made with the
//! OpenTelemetry API (the HTTP middleware's, and `storage::StorageSpan`), so no other
//! crate's `tracing` spans (tonic's, hyper's) can ever feed the exporter its own traffic.

use std::io::IsTerminal as _;

use opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::{SubscriberInitExt as _, TryInitError};

use crate::config::{ConfigError, LogFormat};

/// `RUST_LOG`'s directives, checked: each layer gets its own [`EnvFilter`] built from them
/// ([`LogFilter::env_filter`]).
#[derive(Debug, Clone)]
pub struct LogFilter {
    directives: String,
}

impl LogFilter {
    /// A fresh filter of these directives, `info` for anything they do not name.
    #[must_use]
    pub fn env_filter(&self) -> EnvFilter {
        EnvFilter::builder()
            .with_default_directive(LevelFilter::INFO.into())
            // Parsed once already by `filter`: nothing is lost.
            .parse_lossy(&self.directives)
    }
}

/// The filter for `RUST_LOG`'s value; unset or empty means `info`. A value that does not
/// parse is a configuration error rather than silently ignored.
pub fn filter(rust_log: Option<&str>) -> Result<LogFilter, ConfigError> {
    let directives = rust_log.unwrap_or_default();
    EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse(directives)
        .map_err(|err| ConfigError::InvalidEnv {
            var: "RUST_LOG".to_owned(),
            value: directives.to_owned(),
            reason: err.to_string(),
        })?;
    Ok(LogFilter {
        directives: directives.to_owned(),
    })
}

/// The crates whose events are about the telemetry pipeline or the transport it sends
/// with, by target prefix: they are never exported as log records.
const PIPELINE_TARGETS: &[&str] = &[
    "breaker_otel",
    "opentelemetry",
    "tonic",
    "h2",
    "hyper",
    "reqwest",
    "tower",
];

/// Whether an event of `target` is about the pipeline (or its transport) and must not be
/// exported through it.
#[must_use]
pub fn is_pipeline_target(target: &str) -> bool {
    PIPELINE_TARGETS.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
    })
}

/// Installs the global subscriber: the log to stderr, and to `logs` when given (minus the
/// pipeline's own events), both filtered by `filter`. Fails only if one is already
/// installed.
///
/// Every layer has a filter of its own, and each decides from an event's callsite alone,
/// so `tracing` caches the verdict per callsite: a disabled event (h2's and actix's
/// `trace!` lines, dozens per request) costs one load, not a walk of the filters. A global
/// `EnvFilter` beside a per-layer filter would make every callsite "sometimes" enabled,
/// and every such event would run both filters, in the request path and the export path.
pub fn init(
    format: LogFormat,
    filter: &LogFilter,
    logs: Option<&SdkLoggerProvider>,
) -> Result<(), TryInitError> {
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let exported = logs.map(|provider| {
        OpenTelemetryTracingBridge::new(provider).with_filter(
            filter
                .env_filter()
                .and(filter_fn(|meta| !is_pipeline_target(meta.target()))),
        )
    });
    let registry = tracing_subscriber::registry().with(exported);
    match format {
        LogFormat::Text => registry
            .with(
                layer
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter.env_filter()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_filter(filter.env_filter()),
            )
            .try_init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_is_checked() {
        assert!(filter(None).is_ok());
        assert!(filter(Some("")).is_ok());
        assert!(filter(Some("warn,taskman_server=debug")).is_ok());
        let err = filter(Some("taskman_server=loud")).unwrap_err().to_string();
        assert!(
            err.starts_with("RUST_LOG = \"taskman_server=loud\": "),
            "{err}"
        );
    }

    #[test]
    fn the_pipelines_own_events_are_told_apart() {
        for target in [
            "breaker_otel",
            "breaker_otel::backend",
            "opentelemetry_sdk",
            "opentelemetry_otlp::exporter",
            "opentelemetry",
            "h2::proto::connection",
            "hyper_util::client",
            "tonic::transport",
            "reqwest::connect",
            "tower::buffer",
        ] {
            assert!(is_pipeline_target(target), "{target}");
        }
        for target in [
            "taskman_server",
            "taskman_server::api",
            "telemetry_http",
            "actix_server::builder",
            "h2o",
            "towering",
        ] {
            assert!(!is_pipeline_target(target), "{target}");
        }
    }
}
