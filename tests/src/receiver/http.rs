//! The OTLP/HTTP side of the receiver: `POST /v1/traces`, `/v1/logs` and
//! `/v1/metrics` with a binary protobuf export request (optionally
//! gzip-compressed), served by hyper, answering each [`Mode`] the same for
//! every signal, as the OTLP specification's "OTLP/HTTP Response" section
//! says: status code, `Retry-After`, and a protobuf export response or
//! `google.rpc.Status` body.
//!
//! Only protobuf bodies are understood; a JSON (or any other) body is
//! answered 415. HTTP parsing is hyper's.

use std::convert::Infallible;
use std::future::Future;
use std::io::Read as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::Code;

use super::signals::Export;
use super::{Mode, Outcome, Shared, hang};

/// The OTLP/HTTP traces path.
pub const TRACES_PATH: &str = "/v1/traces";

/// The OTLP/HTTP logs path.
pub const LOGS_PATH: &str = "/v1/logs";

/// The OTLP/HTTP metrics path.
pub const METRICS_PATH: &str = "/v1/metrics";

/// The content type of OTLP/HTTP protobuf requests and responses.
const PROTOBUF: &str = "application/x-protobuf";

/// The largest request body accepted, compressed or not (answered 413 above
/// it); generous, only there so a broken client cannot fill the memory.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// How long to back off after a failed `accept` (e.g. out of file
/// descriptors) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Serves OTLP/HTTP on `listener` until `stopped` completes, then closes the
/// listener, tells every connection to finish, and waits for them to close.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mode: watch::Receiver<Mode>,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let sink = Arc::new(Sink { shared, mode });
    let (closing, _) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, Arc::clone(&sink), closing.subscribe()));
                }
                Err(err) => {
                    tracing::warn!("the OTLP/HTTP receiver cannot accept a connection: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reaps finished connections so the set does not grow for ever.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    closing.send_replace(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection (HTTP/1.1 or h2c) until the client closes it or the
/// receiver stops; on stop, an idle connection closes at once and a busy one
/// after its current response.
async fn serve_connection(stream: TcpStream, sink: Arc<Sink>, mut closing: watch::Receiver<bool>) {
    let service = hyper::service::service_fn(move |request| {
        let sink = Arc::clone(&sink);
        async move { Ok::<_, Infallible>(sink.handle(request).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!("OTLP/HTTP connection ended: {err}");
            }
            return;
        }
        // An error means the receiver is gone: finish then too.
        _ = closing.wait_for(|closing| *closing) => {}
    }
    connection.as_mut().graceful_shutdown();
    if let Err(err) = connection.await {
        tracing::debug!("OTLP/HTTP connection ended while stopping: {err}");
    }
}

/// The HTTP export services: answer according to the current mode.
#[derive(Debug)]
struct Sink {
    shared: Arc<Shared>,
    mode: watch::Receiver<Mode>,
}

impl Sink {
    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        match request.uri().path() {
            TRACES_PATH => self.export::<ExportTraceServiceRequest>(request).await,
            LOGS_PATH => self.export::<ExportLogsServiceRequest>(request).await,
            METRICS_PATH => self.export::<ExportMetricsServiceRequest>(request).await,
            // Not an export request: not counted.
            _ => status_response(
                StatusCode::NOT_FOUND,
                Code::NotFound,
                "only /v1/traces, /v1/logs and /v1/metrics",
            ),
        }
    }

    /// One export of signal `R`: decoded, recorded, then answered by the mode.
    async fn export<R: Export>(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if request.method() != Method::POST {
            let mut response = status_response(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unimplemented,
                "export with POST",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        let export = match decode::<R>(request).await {
            Ok(export) => export,
            Err(refusal) => {
                let in_flight = self.shared.begin(&R::default(), refusal.outcome, 0);
                return in_flight.answer(status_response(
                    refusal.status,
                    refusal.code,
                    &refusal.message,
                ));
            }
        };

        let mut mode_changes = self.mode.clone();
        let mode = *mode_changes.borrow_and_update();
        let in_flight = self.shared.begin_in(mode, &export);
        let response = match in_flight.outcome {
            Outcome::Hung => {
                hang(&mut mode_changes).await;
                status_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Code::Unavailable,
                    "test receiver: released a hung request",
                )
            }
            _ => answer::<R>(mode, in_flight.rejected),
        };
        in_flight.answer(response)
    }
}

/// Why a request body was refused before the mode was consulted.
#[derive(Debug)]
struct Refusal {
    outcome: Outcome,
    status: StatusCode,
    code: Code,
    message: String,
}

impl Refusal {
    fn unsupported(message: String) -> Self {
        Self {
            outcome: Outcome::UnsupportedMediaType,
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code: Code::InvalidArgument,
            message,
        }
    }

    fn malformed(message: String) -> Self {
        Self {
            outcome: Outcome::Malformed,
            status: StatusCode::BAD_REQUEST,
            code: Code::InvalidArgument,
            message,
        }
    }

    fn too_large() -> Self {
        Self {
            outcome: Outcome::TooLarge,
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: Code::ResourceExhausted,
            message: format!("test receiver: request body over {MAX_BODY} bytes"),
        }
    }
}

/// Reads and decodes the body: protobuf only, identity or gzip encoded.
async fn decode<R: Export>(request: Request<Incoming>) -> Result<R, Refusal> {
    let headers = request.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case(PROTOBUF) {
        return Err(Refusal::unsupported(format!(
            "test receiver: only {PROTOBUF} bodies, not `{content_type}`"
        )));
    }
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(|value| value.to_str().map(str::trim))
    {
        None => false,
        Some(Ok(encoding)) if encoding.eq_ignore_ascii_case("identity") => false,
        Some(Ok(encoding)) if encoding.eq_ignore_ascii_case("gzip") => true,
        Some(other) => {
            return Err(Refusal::unsupported(format!(
                "test receiver: only gzip or no Content-Encoding, not {other:?}"
            )));
        }
    };
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => {
            return Err(Refusal::too_large());
        }
        Err(err) => {
            return Err(Refusal::malformed(format!(
                "test receiver: cannot read the body: {err}"
            )));
        }
    };
    let body = if gzip {
        let mut inflated = Vec::new();
        // `take` bounds a gzip bomb by the same limit as a plain body.
        let read = flate2::read::GzDecoder::new(body.as_ref())
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut inflated);
        match read {
            Ok(len) if len > MAX_BODY => return Err(Refusal::too_large()),
            Ok(_) => Bytes::from(inflated),
            Err(err) => {
                return Err(Refusal::malformed(format!(
                    "test receiver: the gzip body does not inflate: {err}"
                )));
            }
        }
    } else {
        body
    };
    R::decode(body).map_err(|err| {
        Refusal::malformed(format!(
            "test receiver: not an OTLP {} export request: {err}",
            R::SIGNAL
        ))
    })
}

/// The answer to a request that arrived in `mode` (not [`Mode::Hang`]).
fn answer<R: Export>(mode: Mode, rejected: usize) -> Response<Full<Bytes>> {
    match mode {
        Mode::Accept => export_response(&R::response(None)),
        Mode::PartialSuccess { .. } => export_response(&R::response(Some(rejected))),
        Mode::Unavailable | Mode::Stopped | Mode::Hang => status_response(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            "test receiver: unavailable",
        ),
        Mode::UnavailableRetryAfter(delay) => with_retry_after(
            status_response(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                "test receiver: unavailable, retry later",
            ),
            &delay_seconds(delay),
        ),
        Mode::ResourceExhausted => status_response(
            StatusCode::TOO_MANY_REQUESTS,
            Code::ResourceExhausted,
            "test receiver: resource exhausted",
        ),
        Mode::Throttled { retry_after } => {
            with_retry_after(throttled(), &delay_seconds(retry_after))
        }
        Mode::ThrottledUntil(until) => {
            with_retry_after(throttled(), &httpdate::fmt_http_date(until))
        }
        Mode::Unauthenticated => status_response(
            StatusCode::UNAUTHORIZED,
            Code::Unauthenticated,
            "test receiver: unauthenticated",
        ),
        Mode::PermissionDenied => status_response(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            "test receiver: permission denied",
        ),
        Mode::InvalidArgument => status_response(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            "test receiver: invalid argument",
        ),
        Mode::TooLarge => status_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::ResourceExhausted,
            "test receiver: request too large",
        ),
    }
}

fn throttled() -> Response<Full<Bytes>> {
    status_response(
        StatusCode::TOO_MANY_REQUESTS,
        Code::ResourceExhausted,
        "test receiver: throttled, retry later",
    )
}

/// `Retry-After` delay-seconds, rounded up so a client never retries early.
fn delay_seconds(delay: Duration) -> String {
    (delay.as_secs() + u64::from(delay.subsec_nanos() > 0)).to_string()
}

fn with_retry_after(mut response: Response<Full<Bytes>>, value: &str) -> Response<Full<Bytes>> {
    // Both forms (digits, IMF-fixdate) are visible ASCII, so this never fails.
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn export_response(body: &impl prost::Message) -> Response<Full<Bytes>> {
    protobuf_response(StatusCode::OK, body.encode_to_vec())
}

/// An error answer: the spec wants a protobuf `google.rpc.Status` body on
/// every 4xx and 5xx.
fn status_response(status: StatusCode, code: Code, message: &str) -> Response<Full<Bytes>> {
    let body = tonic_types::Status {
        code: code as i32,
        message: message.to_owned(),
        details: Vec::new(),
    };
    protobuf_response(status, body.encode_to_vec())
}

fn protobuf_response(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
    response
}
