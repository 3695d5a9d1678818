//! The OTLP span exporter: a batch of `SpanData` encoded into one [`SpanBatch`], the bytes
//! of the `ExportTraceServiceRequest` of those spans without building it, and sent by the
//! shared [`Client`].

use std::fmt;
use std::time::Duration;

use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

use super::encode::SpanBatch;
use super::{Client, ExportReport, OtlpExporterConfig, OtlpExporterError};
use crate::pipeline::Protocol;

/// An OTLP span exporter (gRPC or HTTP/protobuf) whose [`send`](Self::send) reports what
/// the backend said; as a plain [`SpanExporter`] it maps that report to the SDK's result.
///
/// It never retries: whether and when to send again is the caller's decision (the
/// breaker's), made from the report. The gRPC channel connects lazily, so the exporter
/// builds with no collector running. It is built inside a Tokio runtime and its requests
/// run there, also when an export is driven from elsewhere (the SDK's batch thread).
pub struct OtlpSpanExporter {
    client: Client,
    /// Empty until the SDK sets it.
    resource: Resource,
}

impl fmt::Debug for OtlpSpanExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpSpanExporter")
            .field("protocol", &self.protocol())
            .field("endpoint", &self.client.endpoint)
            .field("timeout", &self.client.timeout)
            .field("shut_down", &self.client.is_shut_down())
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
        Ok(Self {
            client: Client::new(config)?,
            resource: Resource::builder_empty().build(),
        })
    }

    /// The transport in use.
    #[must_use]
    pub fn protocol(&self) -> Protocol {
        self.client.protocol()
    }

    /// Sends `batch` as one OTLP request and reports the answer. The spans are encoded
    /// straight from the batch, never copied, and freed before the request is sent.
    ///
    /// An export that takes longer than the configured timeout (connecting included) fails
    /// with [`FailureCause::Timeout`](crate::FailureCause::Timeout); after
    /// [`shutdown`](SpanExporter::shutdown) every send fails with
    /// [`FailureCause::Internal`](crate::FailureCause::Internal).
    pub async fn send(&self, batch: Vec<SpanData>) -> ExportReport {
        if self.client.is_shut_down() {
            return Client::shut_down_report();
        }
        let request = SpanBatch::new(&batch, &self.resource);
        // Freed here, while the encoding has left them in the cache: freeing them on the
        // threads that end spans took fewer instructions but more time
        // (`docs/pipeline.md`). Freeing is a good part of a span's export cost, so it
        // is paced as encoding is.
        for span in batch {
            drop(span);
            crate::pace::span_done();
        }
        self.client.send(request).await
    }
}

impl SpanExporter for OtlpSpanExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        if self.client.is_shut_down() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let report = self.send(batch).await;
        self.client.sdk_result(report)
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.client.shutdown()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

impl crate::ReportingSpanExporter for OtlpSpanExporter {
    async fn report(&self, batch: Vec<SpanData>) -> ExportReport {
        self.send(batch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FailureCause, OtlpLogExporter, OtlpMetricExporter};
    use opentelemetry_sdk::logs::{LogBatch, LogExporter as _};
    use opentelemetry_sdk::metrics::Temporality;
    use opentelemetry_sdk::metrics::data::ResourceMetrics;
    use opentelemetry_sdk::metrics::exporter::PushMetricExporter as _;

    /// Builds each of the three exporters from `config` and returns how each went.
    fn build_all(config: &OtlpExporterConfig) -> [Result<(), OtlpExporterError>; 3] {
        [
            OtlpSpanExporter::new(config.clone()).map(drop),
            OtlpLogExporter::new(config.clone()).map(drop),
            OtlpMetricExporter::new(config.clone(), Temporality::Cumulative).map(drop),
        ]
    }

    #[test]
    fn https_is_refused_without_tls_and_the_error_masks_userinfo() {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let config =
                OtlpExporterConfig::new(protocol, "https://user:hunter2@collector.invalid:4317");
            for built in build_all(&config) {
                let err = built.unwrap_err();
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
    }

    #[test]
    fn endpoints_must_be_http_urls_with_a_host() {
        for endpoint in ["collector:4317", "ftp://collector", "http://", "not a url"] {
            let config = OtlpExporterConfig::new(Protocol::HttpProtobuf, endpoint);
            for built in build_all(&config) {
                let err = built.unwrap_err();
                assert!(
                    matches!(err, OtlpExporterError::InvalidEndpoint { .. }),
                    "{endpoint}: {err:?}"
                );
            }
        }
    }

    #[test]
    fn building_outside_a_runtime_is_an_error_not_a_panic() {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let config = OtlpExporterConfig::new(protocol, "http://127.0.0.1:4317");
            for built in build_all(&config) {
                let err = built.unwrap_err();
                assert!(matches!(err, OtlpExporterError::NoRuntime), "{err:?}");
            }
        }
    }

    #[tokio::test]
    async fn builds_with_no_collector_and_shutdown_is_idempotent() {
        for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
            let config = OtlpExporterConfig::new(protocol, "http://127.0.0.1:9/v1/traces");
            let spans = OtlpSpanExporter::new(config.clone()).unwrap();
            assert_eq!(spans.protocol(), protocol);
            assert!(spans.shutdown().is_ok());
            assert!(matches!(
                spans.shutdown(),
                Err(OTelSdkError::AlreadyShutdown)
            ));
            assert!(matches!(
                spans.export(Vec::new()).await,
                Err(OTelSdkError::AlreadyShutdown)
            ));
            let ExportReport::Failed(failure) = spans.send(Vec::new()).await else {
                panic!("sent after shutdown");
            };
            assert!(!failure.retryable);

            let logs = OtlpLogExporter::new(config.clone()).unwrap();
            assert_eq!(logs.protocol(), protocol);
            assert!(logs.shutdown().is_ok());
            assert!(matches!(
                logs.shutdown(),
                Err(OTelSdkError::AlreadyShutdown)
            ));
            assert!(matches!(
                logs.export(LogBatch::new(&[])).await,
                Err(OTelSdkError::AlreadyShutdown)
            ));
            let ExportReport::Failed(failure) = logs.send(LogBatch::new(&[])).await else {
                panic!("sent after shutdown");
            };
            assert_eq!(failure.cause, FailureCause::Internal);

            let metrics = OtlpMetricExporter::new(config, Temporality::Delta).unwrap();
            assert_eq!(metrics.protocol(), protocol);
            assert_eq!(metrics.temporality(), Temporality::Delta);
            assert!(metrics.force_flush().is_ok());
            assert!(metrics.shutdown().is_ok());
            assert!(matches!(
                metrics.shutdown(),
                Err(OTelSdkError::AlreadyShutdown)
            ));
            assert!(matches!(
                metrics.force_flush(),
                Err(OTelSdkError::AlreadyShutdown)
            ));
            assert!(matches!(
                metrics.export(&ResourceMetrics::default()).await,
                Err(OTelSdkError::AlreadyShutdown)
            ));
        }
    }
}
