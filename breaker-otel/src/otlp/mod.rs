//! Our own thin OTLP exporters for the three signals, over gRPC or HTTP/protobuf, that
//! report what the backend said instead of a string: [`OtlpSpanExporter::send`],
//! [`OtlpLogExporter::send`] and [`OtlpMetricExporter::send`] give an [`ExportReport`]
//! with the failure's cause, whether the specification lets it be retried, the backend's
//! requested delay (`RetryInfo`, `Retry-After`) and partial successes.
//!
//! Why not `opentelemetry-otlp`'s exporters, and what is reused from the OpenTelemetry
//! crates instead, is in `docs/otlp-exporter.md`. In short: the messages and the log and
//! metric encoding (`opentelemetry-proto`), the gRPC stack (`tonic`), the HTTP client
//! (`opentelemetry-http` over reqwest) are theirs; ours are the few lines that send one
//! request and read its answer, written once for the three services ([`Client`],
//! `service.rs`), and the trace request's encoding (`encode.rs`), written straight from
//! the spans because building the messages first was most of the export's CPU
//! (`docs/pipeline.md`).

pub(crate) mod encode;
mod grpc;
mod http;
mod logs;
mod metrics;
mod report;
mod service;
mod spans;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use ::http::{HeaderName, HeaderValue};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use tokio::runtime::Handle;
use tokio::task::{JoinError, JoinHandle};

use crate::otel_env::mask_endpoint;
use crate::pipeline::Protocol;

pub use logs::OtlpLogExporter;
pub use metrics::OtlpMetricExporter;
pub use report::{ExportFailure, ExportReport, FailureCause, classify_http, classify_status};
use service::Service;
pub use spans::OtlpSpanExporter;

/// What our exporters call themselves (the specification asks exporters to say who they are).
const USER_AGENT: &str = concat!(
    "OTel-OTLP-Exporter-Rust breaker-otel/",
    env!("CARGO_PKG_VERSION")
);

/// Where and how [`OtlpSpanExporter`], [`OtlpLogExporter`] and [`OtlpMetricExporter`]
/// send their signal.
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
    /// URL, path included (`http://host:4318/v1/traces`, `/v1/logs`, `/v1/metrics`). No
    /// headers, the default timeout, no compression.
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

/// Why an OTLP exporter ([`OtlpSpanExporter`], [`OtlpLogExporter`], [`OtlpMetricExporter`])
/// could not be built. Endpoints in it are masked.
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

/// What the three exporters share: the transport, the runtime their requests run on, the
/// timeout, the shutdown flag and the secrets to scrub from messages. It sends any of the
/// three services' requests ([`Service`]) and reads any answer, with one code path.
struct Client {
    transport: Arc<Transport>,
    runtime: Handle,
    timeout: Duration,
    shut_down: AtomicBool,
    /// The endpoint's userinfo, scrubbed from every message (transport errors quote URLs).
    userinfo: Option<String>,
    /// For `Debug`, userinfo masked.
    endpoint: String,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("protocol", &self.protocol())
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("shut_down", &self.is_shut_down())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Checks the endpoint and builds the transport on the current Tokio runtime; nothing
    /// is sent or connected yet.
    fn new(config: OtlpExporterConfig) -> Result<Self, OtlpExporterError> {
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
            timeout: config.timeout,
            shut_down: AtomicBool::new(false),
            userinfo,
            endpoint: masked,
        })
    }

    fn protocol(&self) -> Protocol {
        match *self.transport {
            Transport::Grpc(_) => Protocol::Grpc,
            Transport::Http(_) => Protocol::HttpProtobuf,
        }
    }

    fn is_shut_down(&self) -> bool {
        self.shut_down.load(Ordering::Acquire)
    }

    /// Marks the exporter shut down; the second call is the SDK's `AlreadyShutdown`.
    fn shutdown(&self) -> OTelSdkResult {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            Err(OTelSdkError::AlreadyShutdown)
        } else {
            Ok(())
        }
    }

    /// What every send after shutdown reports.
    fn shut_down_report() -> ExportReport {
        ExportReport::Failed(ExportFailure::new(
            FailureCause::Internal,
            false,
            "the exporter is shut down",
        ))
    }

    /// Sends one owned request and reports the answer, bounded by the configured timeout.
    ///
    /// Inside a Tokio runtime the request is awaited in place. Outside one (the SDK's
    /// batch and reader threads poll exports with `futures_executor::block_on`) it runs
    /// as a task on the runtime the exporter was built on, which the returned future
    /// awaits: a backend that never answers is then a `Pending` that a caller's deadline
    /// can cut off, and dropping the future aborts the task, so the request is cancelled
    /// rather than left to run to its own timeout. A panic in the task is a failure.
    async fn send<S: Service>(&self, request: S) -> ExportReport {
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
            // The timer and the HTTP client need a runtime: the request runs on ours.
            match AbortOnDrop(self.runtime.spawn(sent)).await {
                Ok(report) => report,
                Err(err) => ExportReport::Failed(ExportFailure::new(
                    FailureCause::Internal,
                    false,
                    if err.is_panic() {
                        "the export task panicked"
                    } else {
                        "the export task was cancelled (its runtime is shutting down)"
                    },
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

    /// What the SDK is told of a report. A partial success is a success: the
    /// specification says it must not be retried, and the SDK's result has no room for
    /// the count, which is logged at debug instead.
    fn sdk_result(&self, report: ExportReport) -> OTelSdkResult {
        match report {
            ExportReport::Exported { rejected, message } => {
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
}

/// A task's `JoinHandle` that aborts the task when dropped: an export given up by its
/// caller (the breaker's deadline) must not go on sending.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        // A no-op once the task has finished.
        self.0.abort();
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
    fn scrub_hides_userinfo() {
        assert_eq!(
            scrub("to http://u:p@h failed".into(), Some("u:p")),
            "to http://***@h failed"
        );
        assert_eq!(scrub("plain".into(), None), "plain");
    }
}
