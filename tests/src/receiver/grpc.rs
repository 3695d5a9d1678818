//! The OTLP/gRPC side of the receiver: `opentelemetry-proto`'s generated
//! tonic `TraceService`, `LogsService` and `MetricsService` on one server,
//! answering each [`Mode`] with the status code (and `google.rpc.RetryInfo`
//! detail) a real collector sends, the same for every signal.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::codec::CompressionEncoding::Gzip;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

use super::signals::Export;
use super::{Mode, Outcome, Shared, hang};

/// Serves OTLP/gRPC on `listener` until `stopped` completes, then closes the
/// listener and waits for the connections to close.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mode: watch::Receiver<Mode>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let sink = Sink { shared, mode };
    // Gzip requests are accepted, as a collector accepts them; answers stay plain.
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink.clone()).accept_compressed(Gzip))
        .add_service(LogsServiceServer::new(sink.clone()).accept_compressed(Gzip))
        .add_service(MetricsServiceServer::new(sink).accept_compressed(Gzip))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped)
        .await
}

/// The gRPC services: answer according to the current mode.
#[derive(Debug, Clone)]
struct Sink {
    shared: Arc<Shared>,
    mode: watch::Receiver<Mode>,
}

impl Sink {
    /// One export of any signal: recorded, then answered by the mode.
    async fn export<R: Export>(
        &self,
        request: Request<R>,
    ) -> Result<Response<R::Response>, Status> {
        let mut mode_changes = self.mode.clone();
        let mode = *mode_changes.borrow_and_update();
        let in_flight = self.shared.begin_in(mode, request.get_ref());
        let answer = match in_flight.outcome {
            Outcome::Hung => {
                hang(&mut mode_changes).await;
                Err(Status::unavailable(
                    "test receiver: released a hung request",
                ))
            }
            _ => answer::<R>(mode, in_flight.rejected),
        };
        in_flight.answer(answer)
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        Sink::export(self, request).await
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        Sink::export(self, request).await
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        Sink::export(self, request).await
    }
}

/// The answer to a request that arrived in `mode` (not [`Mode::Hang`]).
fn answer<R: Export>(mode: Mode, rejected: usize) -> Result<Response<R::Response>, Status> {
    match mode {
        Mode::Accept => Ok(Response::new(R::response(None))),
        Mode::PartialSuccess { .. } => Ok(Response::new(R::response(Some(rejected)))),
        Mode::Unavailable | Mode::Stopped | Mode::Hang => {
            Err(Status::unavailable("test receiver: unavailable"))
        }
        Mode::UnavailableRetryAfter(_) => Err(with_retry_info(
            Code::Unavailable,
            "test receiver: unavailable, retry later",
            mode.retry_after(),
        )),
        Mode::ResourceExhausted => Err(Status::resource_exhausted(
            "test receiver: resource exhausted",
        )),
        Mode::Throttled { .. } | Mode::ThrottledUntil(_) => Err(with_retry_info(
            Code::ResourceExhausted,
            "test receiver: throttled, retry later",
            mode.retry_after(),
        )),
        Mode::Unauthenticated => Err(Status::unauthenticated("test receiver: unauthenticated")),
        Mode::PermissionDenied => Err(Status::permission_denied(
            "test receiver: permission denied",
        )),
        Mode::InvalidArgument => Err(Status::invalid_argument("test receiver: invalid argument")),
        // What a gRPC server answers for a message over its size limit.
        Mode::TooLarge => Err(Status::resource_exhausted(
            "test receiver: request too large",
        )),
    }
}

fn with_retry_info(code: Code, message: &str, delay: Option<Duration>) -> Status {
    Status::with_error_details(code, message, ErrorDetails::with_retry_info(delay))
}
