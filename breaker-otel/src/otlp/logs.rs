//! The OTLP log exporter: a borrowed `LogBatch` encoded in place into one owned
//! `ExportLogsServiceRequest` (bounded work, no I/O), which the shared [`Client`] then
//! sends on the exporter's runtime.

use std::fmt;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::logs::tonic::group_logs_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};

use super::{Client, ExportReport, OtlpExporterConfig, OtlpExporterError};
use crate::pipeline::Protocol;

/// An OTLP log exporter (gRPC or HTTP/protobuf) whose [`send`](Self::send) reports what
/// the backend said; as a plain [`LogExporter`] it maps that report to the SDK's result.
///
/// Built for the way the SDK drives log exports: `BatchLogProcessor` polls each export
/// with `futures_executor::block_on` on a thread of its own, outside any Tokio runtime,
/// and [`CircuitBreakerLogExporter`](crate::CircuitBreakerLogExporter) polls it in place
/// there. So the batch is encoded at once on that thread, and the request then runs as a
/// task on the runtime the exporter was built on, which the export awaits: a backend that
/// never answers leaves the export `Pending` (never blocking the thread), the breaker's
/// deadline cuts it off, and dropping the export cancels the request.
///
/// Like [`OtlpSpanExporter`](crate::OtlpSpanExporter) it never retries, connects lazily
/// and must be built inside a Tokio runtime. An empty batch is still sent: it is how the
/// breaker probes a backend without traffic.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use breaker_otel::{CircuitBreakerLogExporter, ExporterConfig, OtlpExporterConfig, OtlpLogExporter, Protocol};
/// use opentelemetry_sdk::logs::SdkLoggerProvider;
///
/// let otlp = OtlpLogExporter::new(OtlpExporterConfig::new(Protocol::Grpc, "http://localhost:4317"))?;
/// let exporter = CircuitBreakerLogExporter::reporting(otlp, ExporterConfig::DEFAULT)?;
/// let provider = SdkLoggerProvider::builder().with_batch_exporter(exporter).build();
/// # drop(provider); Ok(()) }
/// ```
pub struct OtlpLogExporter {
    client: Client,
    resource: ResourceAttributesWithSchema,
}

impl fmt::Debug for OtlpLogExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpLogExporter")
            .field("protocol", &self.protocol())
            .field("endpoint", &self.client.endpoint)
            .field("timeout", &self.client.timeout)
            .field("shut_down", &self.client.is_shut_down())
            .finish_non_exhaustive()
    }
}

impl OtlpLogExporter {
    /// Builds the exporter; nothing is sent or connected yet. Over HTTP the endpoint is
    /// the whole logs URL (`http://host:4318/v1/logs`).
    ///
    /// # Errors
    ///
    /// As [`OtlpSpanExporter::new`](crate::OtlpSpanExporter::new): an endpoint that is not
    /// an `http://` URL with a host, an HTTP client that cannot be built, or no Tokio runtime.
    pub fn new(config: OtlpExporterConfig) -> Result<Self, OtlpExporterError> {
        Ok(Self {
            client: Client::new(config)?,
            resource: ResourceAttributesWithSchema::default(),
        })
    }

    /// The transport in use.
    #[must_use]
    pub fn protocol(&self) -> Protocol {
        self.client.protocol()
    }

    /// Sends `batch` as one OTLP request and reports the answer; a partial success reports
    /// the log records rejected.
    ///
    /// The records are encoded before anything is awaited, so the future holds the owned
    /// request, not the batch. Failures are as for
    /// [`OtlpSpanExporter::send`](crate::OtlpSpanExporter::send).
    pub fn send(&self, batch: LogBatch<'_>) -> impl Future<Output = ExportReport> + Send + '_ {
        let request = (!self.client.is_shut_down()).then(|| ExportLogsServiceRequest {
            resource_logs: group_logs_by_resource_and_scope(&batch, &self.resource),
        });
        async move {
            match request {
                Some(request) => self.client.send(request).await,
                None => Client::shut_down_report(),
            }
        }
    }
}

impl LogExporter for OtlpLogExporter {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
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
        self.resource = resource.into();
    }
}

impl crate::ReportingLogExporter for OtlpLogExporter {
    fn report(&self, batch: LogBatch<'_>) -> impl Future<Output = ExportReport> + Send {
        self.send(batch)
    }
}
