//! Checks and displays the standard `OTEL_*` variables the exporter pipeline reads.
//!
//! The OpenTelemetry SDK ignores a malformed value silently and falls back to its default,
//! which sends telemetry somewhere the operator did not intend. We reject such values at
//! start-up instead, naming the variable. Header values are secrets: they never appear in an
//! error or in `--print-config`.

use actix_web::http::Uri;

use super::{ConfigError, Env};

/// Where the exporter sends spans when `OTEL_EXPORTER_OTLP_ENDPOINT` is unset (gRPC).
pub(super) const DEFAULT_ENDPOINT: &str = "http://localhost:4317";
/// The protocol used when `OTEL_EXPORTER_OTLP_PROTOCOL` is unset.
pub(super) const DEFAULT_PROTOCOL: &str = "grpc";

const ENDPOINT_VARS: &[&str] = &[
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
];
const PROTOCOL_VARS: &[&str] = &[
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
];
const HEADER_VARS: &[&str] = &[
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
];
/// Milliseconds or counts; the SDK parses them as unsigned integers.
const INTEGER_VARS: &[&str] = &[
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    "OTEL_BSP_MAX_CONCURRENT_EXPORTS",
];

/// The value of `var`, treating empty as unset as the OpenTelemetry specification says.
fn get<'a>(env: &'a Env, var: &str) -> Option<&'a str> {
    env.get(var)
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
}

pub(super) fn validate(env: &Env) -> Result<(), ConfigError> {
    let invalid = |var: &str, value: &str, reason: &str| ConfigError::InvalidEnv {
        var: var.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    };
    for &var in ENDPOINT_VARS {
        if let Some(value) = get(env, var) {
            check_endpoint(value).map_err(|reason| invalid(var, &mask_endpoint(value), reason))?;
        }
    }
    for &var in PROTOCOL_VARS {
        if let Some(value) = get(env, var)
            && !matches!(value.trim(), "grpc" | "http/protobuf")
        {
            return Err(invalid(
                var,
                value,
                "expected \"grpc\" or \"http/protobuf\"",
            ));
        }
    }
    for &var in INTEGER_VARS {
        if let Some(value) = get(env, var)
            && value.trim().parse::<u64>().is_err()
        {
            return Err(invalid(var, value, "expected a whole number"));
        }
    }
    for &var in HEADER_VARS {
        if let Some(value) = get(env, var)
            && let Some(position) = value
                .split(',')
                .filter(|entry| !entry.trim().is_empty())
                .position(|entry| {
                    entry
                        .split_once('=')
                        .is_none_or(|(k, _)| k.trim().is_empty())
                })
        {
            let reason = format!("entry {} is not key=value", position + 1);
            return Err(invalid(var, &mask_headers(value), &reason));
        }
    }
    Ok(())
}

fn check_endpoint(value: &str) -> Result<(), &'static str> {
    const EXPECTED: &str = "expected an http:// or https:// URL such as http://localhost:4317";
    let uri: Uri = value.trim().parse().map_err(|_| EXPECTED)?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let host_ok = uri.host().is_some_and(|h| !h.is_empty());
    if scheme_ok && host_ok {
        Ok(())
    } else {
        Err(EXPECTED)
    }
}

/// `key=value,...` with every value replaced, so the keys (which say *what* is configured)
/// stay visible.
pub(super) fn mask_headers(value: &str) -> String {
    value
        .split(',')
        .map(|entry| match entry.split_once('=') {
            Some((key, _)) => format!("{key}=***"),
            None if entry.trim().is_empty() => entry.to_owned(),
            None => "***".to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Hides `user:password@` in an endpoint URL.
pub(super) fn mask_endpoint(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => value.to_owned(),
    }
}

/// `OTEL_*` variables as TOML comments for `--print-config`, secrets masked. They are comments
/// because they are not keys of the configuration file.
pub(super) fn describe(env: &Env) -> String {
    let mut out = String::from(
        "\n# OpenTelemetry exporter: standard OTEL_* environment variables (not file keys).\n",
    );
    for (var, default) in [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", DEFAULT_ENDPOINT),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", DEFAULT_PROTOCOL),
    ] {
        if get(env, var).is_none() {
            out.push_str(&format!("# {var} = {default:?} (default)\n"));
        }
    }
    for (var, value) in env.iter().filter(|(var, _)| var.starts_with("OTEL_")) {
        let shown = if var.ends_with("_HEADERS") {
            mask_headers(value)
        } else if var.ends_with("_ENDPOINT") {
            mask_endpoint(value)
        } else {
            value.clone()
        };
        out.push_str(&format!("# {var} = {shown:?}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn accepts_valid_and_empty_values() {
        let ok = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4317"),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://collector.example:443/otlp",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://[::1]:4318/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "500"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=secret,tenant=a"),
        ];
        for (var, value) in ok {
            assert!(validate(&env(&[(var, value)])).is_ok(), "{var}={value:?}");
        }
    }

    #[test]
    fn rejects_bad_values_naming_the_variable_and_hiding_secrets() {
        let cases = [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "not a url",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"not a url\": expected an http:// or https:// URL",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "localhost:4317",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"localhost:4317\": expected an http://",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "ftp://collector:21",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"ftp://collector:21\": expected",
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = \"http://\": expected",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://user:hunter2@collector:4317 x",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"http://***@collector:4317 x\": expected",
            ),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "http/json",
                "OTEL_EXPORTER_OTLP_PROTOCOL = \"http/json\": expected \"grpc\" or \"http/protobuf\"",
            ),
            (
                "OTEL_BSP_SCHEDULE_DELAY",
                "5s",
                "OTEL_BSP_SCHEDULE_DELAY = \"5s\": expected a whole number",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=hunter2,oops",
                "OTEL_EXPORTER_OTLP_HEADERS = \"api-key=***,***\": entry 2 is not key=value",
            ),
        ];
        for (var, value, expected) in cases {
            let err = validate(&env(&[(var, value)])).unwrap_err().to_string();
            assert!(err.starts_with(expected), "{var}={value:?}: got {err:?}");
            assert!(!err.contains("hunter2"), "secret leaked: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn masking() {
        assert_eq!(mask_headers("a=1,b=2"), "a=***,b=***");
        assert_eq!(
            mask_headers("Authorization=Bearer x=y"),
            "Authorization=***"
        );
        assert_eq!(
            mask_endpoint("https://u:p@host:4317/x@y"),
            "https://***@host:4317/x@y"
        );
        assert_eq!(mask_endpoint("http://host:4317"), "http://host:4317");
    }

    #[test]
    fn description_lists_defaults_and_masks_headers() {
        let text = describe(&env(&[
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=hunter2"),
            ("OTEL_SERVICE_NAME", "tasks"),
            ("PATH", "/usr/bin"),
        ]));
        assert!(
            text.contains("# OTEL_EXPORTER_OTLP_ENDPOINT = \"http://localhost:4317\" (default)")
        );
        assert!(text.contains("# OTEL_EXPORTER_OTLP_HEADERS = \"api-key=***\""));
        assert!(text.contains("# OTEL_SERVICE_NAME = \"tasks\""));
        assert!(!text.contains("hunter2"));
        assert!(!text.contains("PATH"));
    }
}
