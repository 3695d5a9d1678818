//! The OTLP metric exporter: borrowed `ResourceMetrics` encoded in place into one owned
//! `ExportMetricsServiceRequest` (bounded work, no I/O), which the shared [`Client`] then
//! sends on the exporter's runtime.

use std::fmt;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;

use super::{Client, ExportReport, OtlpExporterConfig, OtlpExporterError};
use crate::pipeline::Protocol;

/// An OTLP metric exporter (gRPC or HTTP/protobuf) whose [`send`](Self::send) reports
/// what the backend said; as a plain [`PushMetricExporter`] it maps that report to the
/// SDK's result.
///
/// Built for the way the SDK drives metric exports: `PeriodicReader` polls each export
/// with `futures_executor::block_on` on a thread of its own, outside any Tokio runtime,
/// and [`CircuitBreakerMetricExporter`](crate::CircuitBreakerMetricExporter) polls it in
/// place there. As with [`OtlpLogExporter`](crate::OtlpLogExporter), the metrics are
/// encoded at once and the request runs as a task on the exporter's runtime: a backend
/// that never answers is a `Pending` the breaker's deadline cuts off, so the reader goes
/// on exporting. The resource travels with the metrics (`ResourceMetrics` carries it).
///
/// It never retries, connects lazily and must be built inside a Tokio runtime. Empty
/// metrics (`ResourceMetrics::default()`, the breaker's probe) are still sent.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use breaker_otel::{CircuitBreakerMetricExporter, ExporterConfig, OtlpExporterConfig, OtlpMetricExporter, Protocol};
/// use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
///
/// let config = OtlpExporterConfig::new(Protocol::HttpProtobuf, "http://localhost:4318/v1/metrics");
/// let otlp = OtlpMetricExporter::new(config, Temporality::Cumulative)?;
/// let exporter = CircuitBreakerMetricExporter::reporting(otlp, ExporterConfig::DEFAULT)?;
/// let provider = SdkMeterProvider::builder()
///     .with_reader(PeriodicReader::builder(exporter).build())
///     .build();
/// # drop(provider); Ok(()) }
/// ```
pub struct OtlpMetricExporter {
    client: Client,
    temporality: Temporality,
}

impl fmt::Debug for OtlpMetricExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpMetricExporter")
            .field("protocol", &self.protocol())
            .field("endpoint", &self.client.endpoint)
            .field("timeout", &self.client.timeout)
            .field("temporality", &self.temporality)
            .field("shut_down", &self.client.is_shut_down())
            .finish_non_exhaustive()
    }
}

impl OtlpMetricExporter {
    /// Builds the exporter, which asks the SDK for `temporality`; nothing is sent or
    /// connected yet. Over HTTP the endpoint is the whole metrics URL
    /// (`http://host:4318/v1/metrics`).
    ///
    /// # Errors
    ///
    /// As [`OtlpSpanExporter::new`](crate::OtlpSpanExporter::new): an endpoint that is not
    /// an `http://` URL with a host, an HTTP client that cannot be built, or no Tokio runtime.
    pub fn new(
        config: OtlpExporterConfig,
        temporality: Temporality,
    ) -> Result<Self, OtlpExporterError> {
        Ok(Self {
            client: Client::new(config)?,
            temporality,
        })
    }

    /// The transport in use.
    #[must_use]
    pub fn protocol(&self) -> Protocol {
        self.client.protocol()
    }

    /// Sends `metrics` as one OTLP request and reports the answer; a partial success
    /// reports the data points rejected.
    ///
    /// The metrics are encoded before anything is awaited, so the future holds the owned
    /// request, not the borrow. Failures are as for
    /// [`OtlpSpanExporter::send`](crate::OtlpSpanExporter::send).
    pub fn send(
        &self,
        metrics: &ResourceMetrics,
    ) -> impl Future<Output = ExportReport> + Send + '_ {
        let request =
            (!self.client.is_shut_down()).then(|| ExportMetricsServiceRequest::from(metrics));
        async move {
            match request {
                Some(request) => self.client.send(request).await,
                None => Client::shut_down_report(),
            }
        }
    }
}

impl PushMetricExporter for OtlpMetricExporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        if self.client.is_shut_down() {
            return Err(OTelSdkError::AlreadyShutdown);
        }
        let report = self.send(metrics).await;
        self.client.sdk_result(report)
    }

    fn force_flush(&self) -> OTelSdkResult {
        // Nothing is buffered here: every export is sent when it is made.
        if self.client.is_shut_down() {
            Err(OTelSdkError::AlreadyShutdown)
        } else {
            Ok(())
        }
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.client.shutdown()
    }

    fn temporality(&self) -> Temporality {
        self.temporality
    }
}

impl crate::ReportingMetricExporter for OtlpMetricExporter {
    fn report(&self, metrics: &ResourceMetrics) -> impl Future<Output = ExportReport> + Send {
        self.send(metrics)
    }
}
