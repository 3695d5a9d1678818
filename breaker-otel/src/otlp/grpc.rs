//! OTLP over gRPC: the generated `TraceService` client on a lazily connected tonic channel.
//! A failed call's whole `tonic::Status` (details included) is classified, not a string.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

use super::USER_AGENT;
use super::report::{ExportFailure, ExportReport, FailureCause, classify_status};

/// One client per exporter; each export clones it (a handle on the same channel).
#[derive(Debug)]
pub(super) struct GrpcTransport {
    client: TraceServiceClient<Channel>,
    metadata: MetadataMap,
}

impl GrpcTransport {
    /// Must run inside a Tokio runtime (the channel's worker is spawned at once); connects
    /// on the first export, so no collector needs to be up.
    pub(super) fn new(
        endpoint: Uri,
        headers: &[(HeaderName, HeaderValue)],
        gzip: bool,
    ) -> Result<Self, String> {
        let channel = Endpoint::from(endpoint)
            .user_agent(USER_AGENT)
            .map_err(|err| err.to_string())?
            .connect_lazy();
        let mut client = TraceServiceClient::new(channel);
        if gzip {
            client = client
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        let mut map = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            map.insert(name.clone(), value.clone());
        }
        Ok(Self {
            client,
            metadata: MetadataMap::from_headers(map),
        })
    }

    /// One `Export` call. `timeout` goes to the server as `grpc-timeout`; the caller
    /// enforces it here.
    pub(super) async fn send(
        &self,
        request: ExportTraceServiceRequest,
        timeout: Duration,
    ) -> ExportReport {
        let mut client = self.client.clone();
        let mut request = tonic::Request::new(request);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(timeout);
        let started = tokio::time::Instant::now();
        match client.export(request).await {
            Ok(response) => ExportReport::from_response(response.get_ref()),
            // tonic enforces `grpc-timeout` on the client too, and reports its own
            // expiry as `CANCELLED`; that race with the caller's deadline is our
            // timeout, not a cancellation by the backend.
            Err(status)
                if status.code() == tonic::Code::Cancelled && started.elapsed() >= timeout =>
            {
                ExportReport::Failed(ExportFailure {
                    cause: FailureCause::Timeout,
                    retryable: true,
                    retry_after: None,
                    message: format!("no answer within the export timeout of {timeout:?}"),
                })
            }
            Err(status) => ExportReport::Failed(classify_status(&status)),
        }
    }
}
