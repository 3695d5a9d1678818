//! The three OTLP export services (traces, logs, metrics) as one trait over
//! `opentelemetry-proto`'s generated request and response messages, so that the gRPC and
//! HTTP transports send any of them, and read any answer, with one code path.
//!
//! What differs per service is only which generated client makes the call, what its
//! response's partial-success field is called, and the names used in messages.

use std::future::Future;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

/// One OTLP export request type, with its service's call and its answer.
pub(crate) trait Service: prost::Message + Sized + Send + 'static {
    /// The service's answer.
    type Response: prost::Message + Default + Send + 'static;

    /// The response's message name, for the message when an HTTP body does not decode.
    const RESPONSE: &'static str;

    /// One gRPC `Export` call on `channel` with the generated client.
    fn grpc_export(
        channel: Channel,
        gzip: bool,
        request: tonic::Request<Self>,
    ) -> impl Future<Output = Result<Self::Response, tonic::Status>> + Send;

    /// The response's partial success: the items rejected and the backend's message.
    fn partial_success(response: &Self::Response) -> Option<(i64, &str)>;
}

/// Binds one request type to its generated client and its partial-success field.
macro_rules! service {
    ($request:ty, $response:ty, $client:ident, $rejected:ident) => {
        impl Service for $request {
            type Response = $response;

            const RESPONSE: &'static str = stringify!($response);

            async fn grpc_export(
                channel: Channel,
                gzip: bool,
                request: tonic::Request<Self>,
            ) -> Result<Self::Response, tonic::Status> {
                let mut client = $client::new(channel);
                if gzip {
                    client = client
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                client
                    .export(request)
                    .await
                    .map(tonic::Response::into_inner)
            }

            fn partial_success(response: &Self::Response) -> Option<(i64, &str)> {
                response
                    .partial_success
                    .as_ref()
                    .map(|partial| (partial.$rejected, partial.error_message.as_str()))
            }
        }
    };
}

service!(
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
    TraceServiceClient,
    rejected_spans
);
service!(
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
    LogsServiceClient,
    rejected_log_records
);
service!(
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
    MetricsServiceClient,
    rejected_data_points
);
