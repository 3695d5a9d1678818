//! What the tests share: a real `CircuitBreakerSpanExporter` around
//! breaker-otel's scripted exporter, the routes under test, request builders
//! and a reader of responses.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::test::{self, TestRequest};
use breaker_otel::test_util::{self, ScriptedExporter, Step};
use breaker_otel::{
    BackendBreaker, BackendHandle, BreakerHandle, CircuitBreakerLogExporter,
    CircuitBreakerMetricExporter, CircuitBreakerSpanExporter, CircuitState, ExporterConfig,
    Protocol, Signal, Unclassified,
};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::SpanExporter;
use telemetry_http::{ManualClock, TelemetryHttp, TelemetryHttpConfig};

/// The routes with the default settings over `handle`, on a clock that only
/// the test moves.
pub(crate) fn telemetry(handle: BreakerHandle) -> TelemetryHttp {
    TelemetryHttp::with_manual_clock(handle, TelemetryHttpConfig::default(), ManualClock::new())
        .unwrap()
}

/// A real circuit-breaking exporter (default settings: opens after 3
/// consecutive failures; but no time floor between probes, since these tests
/// run on real time and expect attempt 0 after opening to probe at once)
/// around a [`ScriptedExporter`]. Build it inside the test's runtime.
#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    pub(crate) exporter: Arc<CircuitBreakerSpanExporter<Unclassified<ScriptedExporter>>>,
    pub(crate) backend: ScriptedExporter,
}

impl Breaker {
    pub(crate) fn new() -> Self {
        let backend = ScriptedExporter::default();
        let exporter = CircuitBreakerSpanExporter::new(backend.clone(), unpaced()).unwrap();
        Self {
            exporter: Arc::new(exporter),
            backend,
        }
    }

    pub(crate) fn handle(&self) -> BreakerHandle {
        self.exporter.handle()
    }

    pub(crate) async fn export(&self, spans: usize) -> OTelSdkResult {
        self.exporter.export(test_util::spans(spans)).await
    }

    /// Takes the backend down and exports failing batches until the circuit opens.
    pub(crate) async fn open(&self) {
        self.backend.set(Step::Fail);
        for _ in 0..3 {
            assert!(self.export(2).await.is_err());
        }
        assert_eq!(self.handle().state(), CircuitState::Open);
    }
}

/// The endpoint [`Backend`] is named after.
pub(crate) const COLLECTOR: &str = "http://collector:4317";

/// One backend breaker (OTLP/gRPC to [`COLLECTOR`], settings as
/// [`Breaker`]'s) serving logs and metrics, each signal's exporter around a
/// [`ScriptedExporter`] of its own. Build it inside the test's runtime.
pub(crate) struct Backend {
    pub(crate) breaker: BackendBreaker,
    pub(crate) logs_backend: ScriptedExporter,
    logs: CircuitBreakerLogExporter<ScriptedExporter>,
    metrics: CircuitBreakerMetricExporter<ScriptedExporter>,
}

impl Backend {
    pub(crate) fn new() -> Self {
        let breaker = BackendBreaker::builder(unpaced())
            .endpoint(COLLECTOR)
            .protocol(Protocol::Grpc)
            .build()
            .unwrap();
        let logs_backend = ScriptedExporter::default();
        Self {
            logs: breaker.reporting_log_exporter(logs_backend.clone()),
            metrics: breaker.reporting_metric_exporter(ScriptedExporter::default()),
            logs_backend,
            breaker,
        }
    }

    pub(crate) fn handle(&self) -> BackendHandle {
        self.breaker.handle()
    }

    /// Exports `n` log records.
    pub(crate) async fn log(&self, n: usize) -> OTelSdkResult {
        let records = test_util::log_records(n);
        self.logs.export(LogBatch::new(&records.batch())).await
    }

    /// Exports `n` metric data points.
    pub(crate) async fn metrics(&self, n: usize) -> OTelSdkResult {
        self.metrics.export(&test_util::metric_points(n)).await
    }

    /// Makes the log backend fail until the shared circuit opens.
    pub(crate) async fn open(&self) {
        self.logs_backend.set(Step::Fail);
        for _ in 0..3 {
            assert!(self.log(2).await.is_err());
        }
        assert_eq!(self.handle().state(), CircuitState::Open);
    }

    /// The labels of `signal`'s exporter series, in rendering order, after
    /// `error_type` if given: `{error_type="…",otel_component_name=…}`.
    pub(crate) fn exporter_labels(&self, signal: Signal, error_type: Option<&str>) -> String {
        let snapshot = self.handle().snapshot();
        let of = snapshot.signal(signal).unwrap();
        let error_type = error_type.map_or(String::new(), |t| format!(r#"error_type="{t}","#));
        format!(
            r#"{{{error_type}otel_component_name="{}",otel_component_type="{}",server_address="collector",server_port="4317"}}"#,
            of.component_name, of.component_type
        )
    }
}

fn unpaced() -> ExporterConfig {
    let breaker = ExporterConfig::DEFAULT
        .breaker
        .min_probe_interval(std::time::Duration::ZERO);
    ExporterConfig::DEFAULT.breaker(breaker)
}

pub(crate) fn peer(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), 40_000)
}

/// `GET path` from TCP peer `ip`.
pub(crate) fn get_from(path: &str, ip: &str) -> TestRequest {
    TestRequest::get().uri(path).peer_addr(peer(ip))
}

/// `GET /metrics` from TCP peer `ip` carrying `X-Forwarded-For: xff`.
pub(crate) fn metrics_via(ip: &str, xff: &str) -> TestRequest {
    get_from("/metrics", ip).insert_header(("x-forwarded-for", xff))
}

/// What a test reads from one response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

pub(crate) async fn send<S, R, B>(app: &S, req: R) -> Reply
where
    S: Service<R, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, req).await;
    let status = res.status();
    let headers = res.headers().clone();
    let body = test::read_body(res).await;
    Reply {
        status,
        headers,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

/// The telemetry routes served over a real socket on `127.0.0.1:0`, for what
/// only the wire shows (a `HEAD` answer's missing body).
pub(crate) struct Served {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

/// One HTTP/1.1 exchange as the client saw it.
#[derive(Debug)]
pub(crate) struct Wire {
    pub(crate) status_line: String,
    /// Lowercased names, in the order received.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Served {
    /// Serves `telemetry`'s routes on one worker. Call inside an actix runtime.
    pub(crate) fn start(telemetry: TelemetryHttp) -> Self {
        let server = actix_web::HttpServer::new(move || {
            let telemetry = telemetry.clone();
            actix_web::App::new().configure(move |cfg| telemetry.configure(cfg))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self { addr, handle }
    }

    /// Sends `method path` with `Connection: close` and reads until the
    /// server closes, so every byte it sent is seen.
    pub(crate) async fn exchange(&self, method: &str, path: &str) -> Wire {
        let addr = self.addr;
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        actix_web::rt::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            // A bound on a hang, not on speed: a healthy answer takes microseconds.
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(60)))
                .unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).unwrap();
            parse_wire(&raw)
        })
        .await
        .unwrap()
    }

    pub(crate) async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn parse_wire(raw: &[u8]) -> Wire {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete header section");
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_owned();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    Wire {
        status_line,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

impl Wire {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The headers but `date`, sorted: what two answers to the same request share.
    pub(crate) fn stable_headers(&self) -> Vec<(String, String)> {
        let mut headers: Vec<_> = self
            .headers
            .iter()
            .filter(|(name, _)| name != "date")
            .cloned()
            .collect();
        headers.sort();
        headers
    }
}
