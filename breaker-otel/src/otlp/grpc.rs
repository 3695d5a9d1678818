//! OTLP over gRPC: the generated service clients (traces, logs, metrics) on one lazily
//! connected tonic channel. A failed call's whole `tonic::Status` (details included) is
//! classified, not a string.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};

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
        match S::grpc_export(self.channel.clone(), self.gzip, request).await {
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
