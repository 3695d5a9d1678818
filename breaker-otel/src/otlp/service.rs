//! The three OTLP export services (traces, logs, metrics) as one trait over their request
//! and response messages, so that the gRPC and HTTP transports send any of them, and read
//! any answer, with one code path.
//!
//! What differs per service is only the gRPC service's name and method path, what its
//! response's partial-success field is called, and the names used in messages. The gRPC
//! call itself is one generic function (`grpc.rs`), not the generated clients, which take
//! only their own request type.

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use super::encode::SpanBatch;

/// One OTLP export request type, with its service's names and its answer. The trace
/// service has two: the [`SpanBatch`] the span exporter sends, and the generated
/// `ExportTraceServiceRequest` (whose answer `classify_http` reads).
pub(crate) trait Service: prost::Message + Sized + Send + 'static {
    /// The service's answer.
    type Response: prost::Message + Default + Send + 'static;

    /// The response's message name, for the message when an HTTP body does not decode.
    const RESPONSE: &'static str;

    /// The gRPC service's full name, from the generated code
    /// (`opentelemetry.proto.collector.trace.v1.TraceService`).
    const GRPC_SERVICE: &'static str;

    /// The path of its `Export` method: `/{GRPC_SERVICE}/Export`.
    const GRPC_PATH: &'static str;

    /// The response's partial success: the items rejected and the backend's message.
    fn partial_success(response: &Self::Response) -> Option<(i64, &str)>;
}

/// Binds request types to their service's names and their response's partial-success field.
macro_rules! service {
    ([$($request:ty),+], $response:ty, $server:ident, $path:literal, $rejected:ident) => {
        $(
            impl Service for $request {
                type Response = $response;

                const RESPONSE: &'static str = stringify!($response);

                const GRPC_SERVICE: &'static str = $server::SERVICE_NAME;

                const GRPC_PATH: &'static str = $path;

                fn partial_success(response: &Self::Response) -> Option<(i64, &str)> {
                    response
                        .partial_success
                        .as_ref()
                        .map(|partial| (partial.$rejected, partial.error_message.as_str()))
                }
            }
        )+
    };
}

service!(
    [SpanBatch, ExportTraceServiceRequest],
    ExportTraceServiceResponse,
    trace_service_server,
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    rejected_spans
);
service!(
    [ExportLogsServiceRequest],
    ExportLogsServiceResponse,
    logs_service_server,
    "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    rejected_log_records
);
service!(
    [ExportMetricsServiceRequest],
    ExportMetricsServiceResponse,
    metrics_service_server,
    "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    rejected_data_points
);

#[cfg(test)]
mod tests {
    use super::*;

    fn check<S: Service>() {
        assert_eq!(S::GRPC_PATH, format!("/{}/Export", S::GRPC_SERVICE));
    }

    /// The paths are literals (`from_static` needs one); the names come from the generated
    /// servers, which the test receiver serves.
    #[test]
    fn grpc_paths_are_the_generated_services_export_methods() {
        check::<SpanBatch>();
        check::<ExportTraceServiceRequest>();
        check::<ExportLogsServiceRequest>();
        check::<ExportMetricsServiceRequest>();
    }
}
