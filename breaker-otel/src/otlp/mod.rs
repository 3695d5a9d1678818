//! Our own thin OTLP span exporter, over gRPC or HTTP/protobuf, that reports what the
//! backend said instead of a string: [`OtlpSpanExporter::send`] gives an [`ExportReport`]
//! with the failure's cause, whether the specification lets it be retried, the backend's
//! requested delay (`RetryInfo`, `Retry-After`) and partial successes.
//!
//! Why not `opentelemetry-otlp`'s exporter, and what is reused from the OpenTelemetry
//! crates instead, is in `docs/otlp-exporter.md`. In short: the encoding
//! (`opentelemetry-proto`), the gRPC stack (`tonic`), the HTTP client (`opentelemetry-http`
//! over reqwest) are theirs; only the few lines that send one request and read its answer
//! are ours.

mod grpc;
mod http;
mod report;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ::http::{HeaderName, HeaderValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use tokio::runtime::Handle;

use crate::otel_env::mask_endpoint;
use crate::pipeline::Protocol;

pub use report::{ExportFailure, ExportReport, FailureCause, classify_http, classify_status};

/// What our exporters call themselves (the specification asks exporters to say who they are).
const USER_AGENT: &str = concat!(
    "OTel-OTLP-Exporter-Rust breaker-otel/",
    env!("CARGO_PKG_VERSION")
);

/// Where and how [`OtlpSpanExporter`] sends spans.
///
/// ```
/// use std::time::Duration;
/// use breaker_otel::{OtlpExporterConfig, Protocol};
///
/// let config = OtlpExporterConfig::new(Protocol::HttpProtobuf, "http://localhost:4318/v1/traces")
///     .header("x-api-key".parse().unwrap(), "secret".parse().unwrap())
///     .timeout(Duration::from_secs(5))
///     .gzip(true);
/// assert!(!format!("{config:?}").contains("secret"));
/// ```
#[derive(Clone)]
#[must_use]
pub struct OtlpExporterConfig {
    protocol: Protocol,
    endpoint: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    gzip: bool,
}

impl OtlpExporterConfig {
    /// The specification's default export timeout (`OTEL_EXPORTER_OTLP_TIMEOUT`).
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

    /// Sends to `endpoint` as is: a gRPC server (`http://host:4317`), or for HTTP the whole
    /// URL, path included (`http://host:4318/v1/traces`). No headers, the default timeout,
    /// no compression.
    pub fn new(protocol: Protocol, endpoint: impl Into<String>) -> Self {
        Self {
            protocol,
            endpoint: endpoint.into(),
            headers: Vec::new(),
            timeout: Self::DEFAULT_TIMEOUT,
            gzip: false,
        }
    }

    /// Adds a header (gRPC metadata) to every request; a later one of the same name wins.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// How long one export may take, connecting included (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether request bodies are gzip-compressed (default off).
    pub fn gzip(mut self, gzip: bool) -> Self {
        self.gzip = gzip;
        self
    }
}

impl fmt::Debug for OtlpExporterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values and endpoint userinfo are credentials.
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("OtlpExporterConfig")
            .field("protocol", &self.protocol)
            .field("endpoint", &mask_endpoint(&self.endpoint))
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .field("gzip", &self.gzip)
            .finish()
    }
}

/// Why an [`OtlpSpanExporter`] could not be built. Endpoints in it are masked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OtlpExporterError {
    /// The endpoint is not a URL the transport can use.
    #[error("invalid endpoint '{endpoint}': {reason}")]
    InvalidEndpoint {
        /// The endpoint, userinfo masked.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `https://` endpoint, and this build has no TLS.
    #[error(
        "endpoint '{endpoint}' uses HTTPS but this build has no TLS support; \
         use an http:// endpoint (e.g. a local collector that forwards over TLS)"
    )]
    TlsUnavailable {
        /// The endpoint, userinfo masked.
        endpoint: String,
    },
    /// The HTTP client could not be built.
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
    /// Built outside a Tokio runtime, which the transports run on.
    #[error("the OTLP exporter must be built inside a Tokio runtime")]
    NoRuntime,
}

#[derive(Debug)]
enum Transport {
    Grpc(grpc::GrpcTransport),
    Http(http::HttpTransport),
}

/// An OTLP span exporter (gRPC or HTTP/protobuf) whose [`send`](Self::send) reports what
/// the backend said; as a plain [`SpanExporter`] it maps that report to the SDK's result.
///
/// It never retries: whether and when to send again is the caller's decision (the
/// breaker's), made from the report. The gRPC channel connects lazily, so the exporter
/// builds with no collector running. It is built inside a Tokio runtime and its requests
/// run there, also when an export is driven from elsewhere (the SDK's batch thread).
pub struct OtlpSpanExporter {
    transport: Arc<Transport>,
    runtime: Handle,
    resource: ResourceAttributesWithSchema,
    timeout: Duration,
    shut_down: AtomicBool,
    /// The endpoint's userinfo, scrubbed from every message (transport errors quote URLs).
    userinfo: Option<String>,
    /// For `Debug`, userinfo masked.
    endpoint: String,
}

impl fmt::Debug for OtlpSpanExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpSpanExporter")
            .field("protocol", &self.protocol())
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("shut_down", &self.shut_down.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl OtlpSpanExporter {
    /// Builds the exporter; nothing is sent or connected yet.
    ///
    /// # Errors
    ///
    /// An endpoint that is not an `http://` URL with a host (`https://` needs TLS, which
    /// this build does not have), an HTTP client that cannot be built, or no Tokio runtime.
    pub fn new(config: OtlpExporterConfig) -> Result<Self, OtlpExporterError> {
        let masked = mask_endpoint(&config.endpoint);
        let invalid = |reason: String| OtlpExporterError::InvalidEndpoint {
            endpoint: masked.clone(),
            reason,
        };
        let uri: ::http::Uri = config
            .endpoint
            .trim()
            .parse()
            .map_err(|err: ::http::uri::InvalidUri| invalid(err.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(OtlpExporterError::TlsUnavailable { endpoint: masked });
            }
            _ => return Err(invalid("expected an http:// URL".to_owned())),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("expected a host".to_owned()));
        }
        let userinfo = uri
            .authority()
            .and_then(|authority| authority.as_str().rsplit_once('@'))
            .map(|(userinfo, _)| userinfo.to_owned());
        // The gRPC channel's worker is spawned at once, and every request runs on it.
        let runtime = Handle::try_current().map_err(|_| OtlpExporterError::NoRuntime)?;
        let transport = match config.protocol {
            Protocol::Grpc => Transport::Grpc(
                grpc::GrpcTransport::new(uri, &config.headers, config.gzip)
                    .map_err(|err| invalid(scrub(err, userinfo.as_deref())))?,
            ),
            Protocol::HttpProtobuf => Transport::Http(
                http::HttpTransport::new(uri, &config.headers, config.gzip, config.timeout)
                    .map_err(|err| OtlpExporterError::Client(scrub(err, userinfo.as_deref())))?,
            ),
        };
        Ok(Self {
            transport: Arc::new(transport),
            runtime,
            resource: ResourceAttributesWithSchema::default(),
            timeout: config.timeout,
            shut_down: AtomicBool::new(false),
            userinfo,
            endpoint: masked,
        })
    }

    /// The transport in use.
    #[must_use]
    pub fn protocol(&self) -> Protocol {
        match *self.transport {
            Transport::Grpc(_) => Protocol::Grpc,
            Transport::Http(_) => Protocol::HttpProtobuf,
        }
    }

    /// Sends `batch` as one OTLP request and reports the answer. The batch is consumed:
    /// its spans are moved, not copied, into the request.
    ///
    /// An export that takes longer than the configured timeout (connecting included) fails
    /// with [`FailureCause::Timeout`]; after [`shutdown`](SpanExporter::shutdown) every
    /// send fails with [`FailureCause::Internal`].
    pub async fn send(&self, batch: Vec<SpanData>) -> ExportReport {
        if self.shut_down.load(Ordering::Acquire) {
            return ExportReport::Failed(ExportFailure::new(
                FailureCause::Internal,
                false,
                "the exporter is shut down",
            ));
        }
        let request = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        };
        let transport = Arc::clone(&self.transport);
        let timeout = self.timeout;
        let sent = async move {
            let sent = async {
                match &*transport {
                    Transport::Grpc(grpc) => grpc.send(request, timeout).await,
                    Transport::Http(http) => http.send(request).await,
                }
            };
            match tokio::time::timeout(timeout, sent).await {
                Ok(report) => report,
                Err(_) => ExportReport::Failed(ExportFailure::new(
                    FailureCause::Timeout,
                    true,
                    format!("no answer within the export timeout of {timeout:?}"),
                )),
            }
        };
        let report = if Handle::try_current().is_ok() {
            sent.await
        } else {
            // Outside a runtime (the SDK's own batch thread): the timer and the HTTP
            // client need one, so the request runs as a task on ours.
            match self.runtime.spawn(sent).await {
                Ok(report) => report,
                Err(_) => ExportReport::Failed(ExportFailure::new(
                    FailureCause::Internal,
                    false,
                    "the export task panicked or was cancelled",
                )),
            }
        };
        match report {
            ExportReport::Failed(mut failure) => {
                failure.message = scrub(failure.message, self.userinfo.as_deref());
                ExportReport::Failed(failure)
            }
            exported => exported,
        }
    }
}

impl SpanExporter for OtlpSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.shut_down.load(Ordering::Acquire) {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        match self.send(batch).await {
            ExportReport::Exported { rejected, message } => {
                // The specification says a partial success must not be retried: the
                // batch is done, and the SDK's result has no room for the count.
                if rejected > 0 || message.is_some() {
                    tracing::debug!(
                        rejected,
                        message = message.as_deref().unwrap_or(""),
                        "OTLP partial success"
                    );
                }
                Ok(())
            }
            ExportReport::Failed(failure) if failure.cause == FailureCause::Timeout => {
                Err(OTelSdkError::Timeout(self.timeout))
            }
            ExportReport::Failed(failure) => {
                Err(OTelSdkError::InternalFailure(failure.to_string()))
            }
        }
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            Err(OTelSdkError::AlreadyShutdown)
        } else {
            Ok(())
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}

impl crate::ReportingSpanExporter for OtlpSpanExporter {
    async fn report(&self, batch: Vec<SpanData>) -> ExportReport {
        self.send(batch).await
    }
}

/// `message` with the endpoint's userinfo replaced by `***`.
fn scrub(message: String, userinfo: Option<&str>) -> String {
    match userinfo {
        Some(secret) if !secret.is_empty() && message.contains(secret) => {
            message.replace(secret, "***")
        }
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_refused_without_tls_and_the_error_masks_userinfo() {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let err = OtlpSpanExporter::new(OtlpExporterConfig::new(
                protocol,
                "https://user:hunter2@collector.invalid:4317",
            ))
            .unwrap_err();
            assert!(
                matches!(err, OtlpExporterError::TlsUnavailable { .. }),
                "{err:?}"
            );
            let shown = format!("{err} {err:?}");
            assert!(
                shown.contains("https://***@collector.invalid:4317"),
                "{shown}"
            );
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }

    #[test]
    fn endpoints_must_be_http_urls_with_a_host() {
        for endpoint in ["collector:4317", "ftp://collector", "http://", "not a url"] {
            let err =
                OtlpSpanExporter::new(OtlpExporterConfig::new(Protocol::HttpProtobuf, endpoint))
                    .unwrap_err();
            assert!(
                matches!(err, OtlpExporterError::InvalidEndpoint { .. }),
                "{endpoint}: {err:?}"
            );
        }
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let err =
                OtlpSpanExporter::new(OtlpExporterConfig::new(protocol, "http://127.0.0.1:4317"))
                    .unwrap_err();
            assert!(matches!(err, OtlpExporterError::NoRuntime), "{err:?}");
        }
    }

    #[tokio::test]
    async fn builds_with_no_collector_and_shutdown_is_idempotent() {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let exporter = OtlpSpanExporter::new(OtlpExporterConfig::new(
                protocol,
                "http://127.0.0.1:9/v1/traces",
            ))
            .unwrap();
            assert_eq!(exporter.protocol(), protocol);
            assert!(exporter.shutdown().is_ok());
            assert!(matches!(
                exporter.shutdown(),
                Err(OTelSdkError::AlreadyShutdown)
            ));
            assert!(matches!(
                exporter.export(Vec::new()).await,
                Err(OTelSdkError::AlreadyShutdown)
            ));
            let ExportReport::Failed(failure) = exporter.send(Vec::new()).await else {
                panic!("sent after shutdown");
            };
            assert!(!failure.retryable);
        }
    }

    #[test]
    fn scrub_hides_userinfo() {
        assert_eq!(
            scrub("to http://u:p@h failed".into(), Some("u:p")),
            "to http://***@h failed"
        );
        assert_eq!(scrub("plain".into(), None), "plain");
    }
}
