//! Log output: `tracing` events to stderr, human-readable or JSON lines, filtered by
//! `RUST_LOG` (default `info`). Stdout is left to `--print-config`.
//!
//! Nothing here becomes an OpenTelemetry span: the server's spans are made with the
//! OpenTelemetry API (the HTTP middleware's, and `storage::StorageSpan`), so no other
//! crate's `tracing` spans (tonic's, hyper's) can ever feed the exporter its own traffic.

use std::io::IsTerminal as _;

use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{EnvFilter, LevelFilter};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::{SubscriberInitExt as _, TryInitError};

use crate::config::{ConfigError, LogFormat};

/// The filter for `RUST_LOG`'s value; unset or empty means `info`. A value that does not
/// parse is a configuration error rather than silently ignored.
pub fn filter(rust_log: Option<&str>) -> Result<EnvFilter, ConfigError> {
    let directives = rust_log.unwrap_or_default();
    EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .parse(directives)
        .map_err(|err| ConfigError::InvalidEnv {
            var: "RUST_LOG".to_owned(),
            value: directives.to_owned(),
            reason: err.to_string(),
        })
}

/// Installs the global subscriber: the log to stderr filtered by `filter`. Fails only if one
/// is already installed.
pub fn init(format: LogFormat, filter: EnvFilter) -> Result<(), TryInitError> {
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry();
    match format {
        LogFormat::Text => registry
            .with(
                layer
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(layer.json().flatten_event(true).with_filter(filter))
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
}
