//! What one OTLP export came to, as the backend (or the transport) said it: exported, with
//! how many items (spans, log records, metric data points) the backend rejected, or failed, with a cause from a small fixed set,
//! whether the OTLP specification lets the batch be retried, and for how long the backend
//! asked us to wait.
//!
//! The mapping from gRPC statuses and HTTP responses lives here as pure functions
//! ([`classify_status`], [`classify_http`]), so that it is tested against the
//! specification's tables without a server.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tonic::Code;
use tonic_types::StatusExt as _;

use super::service::Service;

/// Longest backend message kept in a report, in bytes: enough for a diagnosis, never a
/// whole echoed request.
const MAX_MESSAGE_BYTES: usize = 512;

/// Why an export failed: a small fixed set, used as a metric label (`error.type`-like values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureCause {
    /// The backend could not be reached or said it is unavailable (gRPC `UNAVAILABLE`,
    /// connection refused or reset, HTTP 502, 503, 504).
    Unavailable,
    /// The export took too long: gRPC `DEADLINE_EXCEEDED` or the exporter's own deadline.
    Timeout,
    /// The backend asked us to slow down (gRPC `RESOURCE_EXHAUSTED`, HTTP 429).
    Throttled,
    /// The backend did not accept our credentials (gRPC `UNAUTHENTICATED`, HTTP 401).
    Unauthenticated,
    /// The credentials are not allowed to export (gRPC `PERMISSION_DENIED`, HTTP 403).
    PermissionDenied,
    /// The backend rejected the request as malformed (gRPC `INVALID_ARGUMENT`, HTTP 400).
    Invalid,
    /// The request was too large for the backend (HTTP 413).
    TooLarge,
    /// The export panicked (never produced by the OTLP exporters themselves).
    Panic,
    /// Anything else.
    Internal,
}

impl FailureCause {
    /// Every cause, in declaration order (e.g. to pre-register metric series).
    pub const ALL: [Self; 9] = [
        Self::Unavailable,
        Self::Timeout,
        Self::Throttled,
        Self::Unauthenticated,
        Self::PermissionDenied,
        Self::Invalid,
        Self::TooLarge,
        Self::Panic,
        Self::Internal,
    ];

    /// The cause as a metric label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Throttled => "throttled",
            Self::Unauthenticated => "unauthenticated",
            Self::PermissionDenied => "permission_denied",
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::Panic => "panic",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for FailureCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFailure {
    /// Why it failed.
    pub cause: FailureCause,
    /// Whether the OTLP specification allows sending the same batch again.
    pub retryable: bool,
    /// How long the backend asked us to wait (gRPC `RetryInfo`, HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
    /// What went wrong, for logs: the backend's own message when it sent one (cut to a few
    /// hundred bytes). Never holds configured header values or endpoint userinfo.
    pub message: String,
}

impl ExportFailure {
    /// A failure without a backend delay.
    pub(crate) fn new(cause: FailureCause, retryable: bool, message: impl Into<String>) -> Self {
        Self {
            cause,
            retryable,
            retry_after: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ExportFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.cause, self.message)
    }
}

/// What one export came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportReport {
    /// The backend accepted the request. It may still have rejected some items (OTLP
    /// partial success), which must not be retried.
    Exported {
        /// Items (spans, log records or data points) the backend said it rejected.
        rejected: u64,
        /// The backend's message with a partial success (or a warning), if any.
        message: Option<String>,
    },
    /// The request failed as a whole.
    Failed(ExportFailure),
}

impl ExportReport {
    /// Everything accepted, nothing said.
    pub(crate) const ACCEPTED: Self = Self::Exported {
        rejected: 0,
        message: None,
    };

    /// The report for a successful response's partial-success field, whichever the signal.
    pub(crate) fn from_response<S: Service>(response: &S::Response) -> Self {
        match S::partial_success(response) {
            None => Self::ACCEPTED,
            Some((rejected, message)) => Self::Exported {
                // A negative count is a backend bug; it rejected nothing we can count.
                rejected: u64::try_from(rejected).unwrap_or(0),
                message: (!message.is_empty()).then(|| bounded(message)),
            },
        }
    }
}

/// Classifies a failed gRPC export by the specification's table
/// (opentelemetry-proto `docs/specification.md`, "Failures"): retryable are `CANCELLED`,
/// `DEADLINE_EXCEEDED`, `ABORTED`, `OUT_OF_RANGE`, `UNAVAILABLE`, `DATA_LOSS`, and
/// `RESOURCE_EXHAUSTED` only when the status carries `RetryInfo` (the backend can recover).
#[must_use]
pub fn classify_status(status: &tonic::Status) -> ExportFailure {
    let retry_after = status
        .get_details_retry_info()
        .map(|info| info.retry_delay.unwrap_or(Duration::ZERO));
    let (cause, retryable) = match status.code() {
        Code::Unavailable => (FailureCause::Unavailable, true),
        Code::DeadlineExceeded => (FailureCause::Timeout, true),
        Code::ResourceExhausted => (FailureCause::Throttled, retry_after.is_some()),
        Code::Unauthenticated => (FailureCause::Unauthenticated, false),
        Code::PermissionDenied => (FailureCause::PermissionDenied, false),
        Code::InvalidArgument => (FailureCause::Invalid, false),
        Code::Cancelled | Code::Aborted | Code::OutOfRange | Code::DataLoss => {
            (FailureCause::Internal, true)
        }
        Code::Ok
        | Code::Unknown
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::Unimplemented
        | Code::Internal => (FailureCause::Internal, false),
    };
    let message = if status.message().is_empty() {
        format!("gRPC status {:?}", status.code())
    } else {
        format!(
            "gRPC status {:?}: {}",
            status.code(),
            bounded(status.message())
        )
    };
    ExportFailure {
        cause,
        retryable,
        retry_after,
        message,
    }
}

/// Classifies an OTLP/HTTP response by the specification's table
/// (opentelemetry-proto `docs/specification.md`, "OTLP/HTTP Response"): a 2xx is a success
/// whose body may report a partial success; retryable are 429, 502, 503 and 504, with the
/// delay from `Retry-After` (seconds or an HTTP-date, read against `now`; a date in the
/// past is zero). A failure's message is the `google.rpc.Status` message in the body when
/// there is one.
///
/// This reads a traces response (`ExportTraceServiceResponse`); the log and metric clients
/// read their own response types the same way.
#[must_use]
pub fn classify_http(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> ExportReport {
    classify_http_for::<ExportTraceServiceRequest>(status, headers, body, now)
}

/// [`classify_http`] for the response of service `S`.
pub(crate) fn classify_http_for<S: Service>(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> ExportReport {
    if status.is_success() {
        if body.is_empty() {
            return ExportReport::ACCEPTED;
        }
        return match S::Response::decode(body) {
            Ok(response) => ExportReport::from_response::<S>(&response),
            // The backend took the request; a body we cannot read changes nothing about
            // that, but is worth a word in the logs.
            Err(_) => ExportReport::Exported {
                rejected: 0,
                message: Some(format!(
                    "HTTP {status}: the response body is not an OTLP {}",
                    S::RESPONSE
                )),
            },
        };
    }
    let (cause, retryable) = match status.as_u16() {
        400 => (FailureCause::Invalid, false),
        401 => (FailureCause::Unauthenticated, false),
        403 => (FailureCause::PermissionDenied, false),
        413 => (FailureCause::TooLarge, false),
        429 => (FailureCause::Throttled, true),
        502..=504 => (FailureCause::Unavailable, true),
        _ => (FailureCause::Internal, false),
    };
    let retry_after = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, now));
    let backend = tonic_types::Status::decode(body)
        .ok()
        .map(|status| status.message)
        .filter(|message| !message.is_empty());
    let message = match backend {
        Some(message) => format!("HTTP {status}: {}", bounded(&message)),
        None => format!("HTTP {status}"),
    };
    ExportReport::Failed(ExportFailure {
        cause,
        retryable,
        retry_after,
        message,
    })
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110, section 10.2.3); `None` when
/// it is neither.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `message` cut to [`MAX_MESSAGE_BYTES`] on a character boundary.
pub(crate) fn bounded(message: &str) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    use tonic_types::ErrorDetails;

    /// Every gRPC code, with the specification's verdict and our cause.
    const GRPC_TABLE: [(Code, FailureCause, bool); 17] = [
        (Code::Ok, FailureCause::Internal, false),
        (Code::Cancelled, FailureCause::Internal, true),
        (Code::Unknown, FailureCause::Internal, false),
        (Code::InvalidArgument, FailureCause::Invalid, false),
        (Code::DeadlineExceeded, FailureCause::Timeout, true),
        (Code::NotFound, FailureCause::Internal, false),
        (Code::AlreadyExists, FailureCause::Internal, false),
        (
            Code::PermissionDenied,
            FailureCause::PermissionDenied,
            false,
        ),
        // Without RetryInfo the backend cannot recover: not retryable.
        (Code::ResourceExhausted, FailureCause::Throttled, false),
        (Code::FailedPrecondition, FailureCause::Internal, false),
        (Code::Aborted, FailureCause::Internal, true),
        (Code::OutOfRange, FailureCause::Internal, true),
        (Code::Unimplemented, FailureCause::Internal, false),
        (Code::Internal, FailureCause::Internal, false),
        (Code::Unavailable, FailureCause::Unavailable, true),
        (Code::DataLoss, FailureCause::Internal, true),
        (Code::Unauthenticated, FailureCause::Unauthenticated, false),
    ];

    #[test]
    fn every_grpc_code_follows_the_specification_table() {
        for (code, cause, retryable) in GRPC_TABLE {
            let failure = classify_status(&tonic::Status::new(code, "said the backend"));
            assert_eq!(failure.cause, cause, "{code:?}");
            assert_eq!(failure.retryable, retryable, "{code:?}");
            assert_eq!(failure.retry_after, None, "{code:?}");
            assert!(
                failure.message.ends_with(": said the backend"),
                "{failure:?}"
            );
        }
    }

    #[test]
    fn resource_exhausted_with_retry_info_is_retryable_after_the_delay() {
        let status = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_millis(1500))),
        );
        let failure = classify_status(&status);
        assert_eq!(failure.cause, FailureCause::Throttled);
        assert!(failure.retryable);
        assert_eq!(failure.retry_after, Some(Duration::from_millis(1500)));

        // RetryInfo without a delay still says "retry": at once.
        let status = tonic::Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(None),
        );
        let failure = classify_status(&status);
        assert!(failure.retryable);
        assert_eq!(failure.retry_after, Some(Duration::ZERO));
    }

    #[test]
    fn retry_info_on_unavailable_gives_the_delay_too() {
        let status = tonic::Status::with_error_details(
            Code::Unavailable,
            "restarting",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(3))),
        );
        let failure = classify_status(&status);
        assert_eq!(failure.cause, FailureCause::Unavailable);
        assert_eq!(failure.retry_after, Some(Duration::from_secs(3)));
    }

    fn http(status: u16, headers: &[(&str, &str)], body: &[u8]) -> ExportReport {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        classify_http(
            StatusCode::from_u16(status).unwrap(),
            &map,
            body,
            httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap(),
        )
    }

    fn failure(report: ExportReport) -> ExportFailure {
        match report {
            ExportReport::Failed(failure) => failure,
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn every_http_error_status_follows_the_specification_table() {
        for status in 300..=599_u16 {
            if StatusCode::from_u16(status).is_err() {
                continue;
            }
            let (cause, retryable) = match status {
                400 => (FailureCause::Invalid, false),
                401 => (FailureCause::Unauthenticated, false),
                403 => (FailureCause::PermissionDenied, false),
                413 => (FailureCause::TooLarge, false),
                429 => (FailureCause::Throttled, true),
                502..=504 => (FailureCause::Unavailable, true),
                _ => (FailureCause::Internal, false),
            };
            let failure = failure(http(status, &[], b""));
            assert_eq!(failure.cause, cause, "{status}");
            assert_eq!(failure.retryable, retryable, "{status}");
            assert_eq!(failure.retry_after, None, "{status}");
            assert!(
                failure.message.starts_with(&format!("HTTP {status}")),
                "{failure:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_an_http_date() {
        for (value, expected) in [
            ("120", Some(Duration::from_secs(120))),
            (" 0 ", Some(Duration::ZERO)),
            // Now is 08:49:37 in these tests.
            (
                "Sun, 06 Nov 1994 08:50:07 GMT",
                Some(Duration::from_secs(30)),
            ),
            ("Sun, 06 Nov 1994 08:00:00 GMT", Some(Duration::ZERO)),
            ("soon", None),
            ("-5", None),
        ] {
            for status in [429, 503] {
                let failure = failure(http(status, &[("retry-after", value)], b""));
                assert_eq!(failure.retry_after, expected, "{status} {value:?}");
            }
        }
    }

    #[test]
    fn a_success_reports_the_partial_success() {
        assert_eq!(http(200, &[], b""), ExportReport::ACCEPTED);
        let empty = ExportTraceServiceResponse::default().encode_to_vec();
        assert_eq!(http(200, &[], &empty), ExportReport::ACCEPTED);
        let partial = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "3 spans without a name".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            http(200, &[], &partial),
            ExportReport::Exported {
                rejected: 3,
                message: Some("3 spans without a name".into()),
            }
        );
        let ExportReport::Exported { rejected, message } = http(202, &[], b"\xff\xff") else {
            panic!("a 2xx is a success");
        };
        assert_eq!(rejected, 0);
        assert!(message.unwrap().contains("not an OTLP"));
    }

    #[test]
    fn log_and_metric_answers_report_their_own_rejected_counts() {
        use opentelemetry_proto::tonic::collector::logs::v1::{
            ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
        };
        use opentelemetry_proto::tonic::collector::metrics::v1::{
            ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        };
        let logs = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 4,
                error_message: "4 records too old".into(),
            }),
        }
        .encode_to_vec();
        let metrics = ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: 7,
                error_message: String::new(),
            }),
        }
        .encode_to_vec();
        let now = SystemTime::UNIX_EPOCH;
        let ok = StatusCode::OK;
        assert_eq!(
            classify_http_for::<ExportLogsServiceRequest>(ok, &HeaderMap::new(), &logs, now),
            ExportReport::Exported {
                rejected: 4,
                message: Some("4 records too old".into()),
            }
        );
        assert_eq!(
            classify_http_for::<ExportMetricsServiceRequest>(ok, &HeaderMap::new(), &metrics, now),
            ExportReport::Exported {
                rejected: 7,
                message: None,
            }
        );
        let ExportReport::Exported { message, .. } = classify_http_for::<ExportMetricsServiceRequest>(
            ok,
            &HeaderMap::new(),
            b"\xff\xff",
            now,
        ) else {
            panic!("a 2xx is a success");
        };
        assert!(
            message.unwrap().contains("ExportMetricsServiceResponse"),
            "the message names the signal's response"
        );
    }

    #[test]
    fn a_failure_quotes_the_backends_status_message_bounded() {
        let body = tonic_types::Status {
            code: 3,
            message: "span 7 has no trace id".into(),
            details: Vec::new(),
        }
        .encode_to_vec();
        let short = failure(http(400, &[], &body));
        assert_eq!(
            short.message,
            "HTTP 400 Bad Request: span 7 has no trace id"
        );

        let long = tonic_types::Status {
            code: 8,
            message: "x".repeat(10_000),
            details: Vec::new(),
        }
        .encode_to_vec();
        let cut = failure(http(429, &[], &long));
        assert!(
            cut.message.len() < MAX_MESSAGE_BYTES + 64,
            "{}",
            cut.message.len()
        );
    }

    #[test]
    fn causes_have_fixed_labels() {
        let labels: Vec<_> = FailureCause::ALL.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            labels,
            [
                "unavailable",
                "timeout",
                "throttled",
                "unauthenticated",
                "permission_denied",
                "invalid",
                "too_large",
                "panic",
                "internal"
            ]
        );
    }
}
