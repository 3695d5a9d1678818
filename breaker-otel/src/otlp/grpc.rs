//! OTLP over gRPC: one unary `Export` call, made as the generated service clients make
//! theirs, for any of the three services, on one lazily connected tonic channel. A failed
//! call's whole `tonic::Status` (details included) is classified, not a string.

use std::time::Duration;

use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use super::USER_AGENT;
use super::report::{ExportFailure, ExportReport, FailureCause, classify_status};
use super::service::Service;

/// One channel per exporter; each export clones it (a handle on the same connection).
#[derive(Debug)]
pub(super) struct GrpcTransport {
    channel: Channel,
    gzip: bool,
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
        let mut map = HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            map.insert(name.clone(), value.clone());
        }
        Ok(Self {
            channel,
            gzip,
            metadata: MetadataMap::from_headers(map),
        })
    }

    /// One `Export` call. `timeout` goes to the server as `grpc-timeout`; the caller
    /// enforces it here.
    pub(super) async fn send<S: Service>(&self, request: S, timeout: Duration) -> ExportReport {
        let mut request = tonic::Request::new(request);
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(timeout);
        let started = tokio::time::Instant::now();
        match export(self.channel.clone(), self.gzip, request).await {
            Ok(response) => ExportReport::from_response::<S>(&response),
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

/// One `Export` call on `channel`, step by step as the generated clients' `export` does it
/// (wait until ready, then `unary` with prost's codec on the method's path). Ours because
/// the generated clients take only their own request type, and the trace service is sent a
/// [`SpanBatch`](super::encode::SpanBatch), which encodes itself.
async fn export<S: Service>(
    channel: Channel,
    gzip: bool,
    mut request: tonic::Request<S>,
) -> Result<S::Response, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    if gzip {
        grpc = grpc
            .send_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Gzip);
    }
    grpc.ready()
        .await
        .map_err(|err| tonic::Status::unknown(format!("Service was not ready: {err}")))?;
    request
        .extensions_mut()
        .insert(tonic::GrpcMethod::new(S::GRPC_SERVICE, "Export"));
    grpc.unary(
        request,
        PathAndQuery::from_static(S::GRPC_PATH),
        ProstCodec::<S, S::Response>::default(),
    )
    .await
    .map(tonic::Response::into_inner)
}
