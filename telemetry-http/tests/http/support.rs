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
use breaker_otel::{BreakerHandle, BreakerSettings, CircuitBreakerSpanExporter, CircuitState};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::SpanExporter;
use telemetry_http::{ManualClock, TelemetryHttp, TelemetryHttpConfig};

/// The routes with the default settings over `handle`, on a clock that only
/// the test moves.
pub(crate) fn telemetry(handle: BreakerHandle) -> TelemetryHttp {
    TelemetryHttp::with_manual_clock(handle, TelemetryHttpConfig::default(), ManualClock::new())
        .unwrap()
}

/// A real circuit-breaking exporter (default settings: opens after 3
/// consecutive failures) around a [`ScriptedExporter`]. Build it inside the
/// test's runtime.
#[derive(Debug, Clone)]
pub(crate) struct Breaker {
    pub(crate) exporter: Arc<CircuitBreakerSpanExporter<ScriptedExporter>>,
    pub(crate) backend: ScriptedExporter,
}

impl Breaker {
    pub(crate) fn new() -> Self {
        let backend = ScriptedExporter::default();
        let exporter =
            CircuitBreakerSpanExporter::new(backend.clone(), BreakerSettings::default()).unwrap();
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
