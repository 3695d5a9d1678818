//! The server span of a task request, as exported: named by method and route template, and
//! a method outside the known set never reaches the span name (`HTTP {route}`) or
//! `http.request.method` (`_OTHER`), so clients cannot make either unbounded.
//!
//! The app is built in-process over the global tracer provider, which this binary's one test
//! installs: a synchronous exporter into memory, so every span is there once its request has
//! been answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};

use actix_web::http::{Method, StatusCode, header};
use actix_web::test::{self, TestRequest};
use breaker_otel::BreakerHandle;
use opentelemetry::Value;
use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use taskman_server::app::{AppState, app};
use taskman_server::storage::{IN_MEMORY, Store};
use telemetry_http::{TelemetryHttp, TelemetryHttpConfig};

#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

impl Collected {
    fn take(&self) -> Vec<SpanData> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// The server spans taken, and the storage (client) spans apart.
    fn take_by_kind(&self) -> (Vec<SpanData>, Vec<SpanData>) {
        self.take()
            .into_iter()
            .partition(|span| span.span_kind == SpanKind::Server)
    }
}

/// The values of attribute `key` on `span`, all of them: a key set twice would show here.
fn attribute(span: &SpanData, key: &str) -> Vec<String> {
    span.attributes
        .iter()
        .filter(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.to_string(),
            other => other.to_string(),
        })
        .collect()
}

#[actix_web::test]
async fn unknown_methods_stay_out_of_span_names_and_method_attributes() {
    let spans = Collected::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let state = AppState {
        store: Store::open(Path::new(IN_MEMORY)).unwrap(),
        max_body_bytes: 2048,
        telemetry: TelemetryHttp::new(BreakerHandle::disabled(), TelemetryHttpConfig::default())
            .unwrap(),
    };
    let svc = test::init_service(app(state)).await;

    let get = test::call_service(&svc, TestRequest::get().uri("/tasks/1").to_request()).await;
    assert_eq!(get.status(), StatusCode::NOT_FOUND);
    let (server, storage) = spans.take_by_kind();
    let [span] = &server[..] else {
        panic!("one server span per request: {server:?}")
    };
    // The storage call is the server span's child, in its trace.
    let [select] = &storage[..] else {
        panic!("one storage span for the lookup: {storage:?}")
    };
    assert_eq!(select.name, "SELECT tasks");
    assert_eq!(select.span_kind, SpanKind::Client);
    assert_eq!(select.parent_span_id, span.span_context.span_id());
    assert_eq!(select.span_context.trace_id(), span.span_context.trace_id());
    assert_eq!(attribute(select, "db.system.name"), ["sqlite"]);
    assert_eq!(span.name, "GET /tasks/{id}");
    assert_eq!(attribute(span, "http.request.method"), ["GET"]);
    assert!(attribute(span, "http.request.method_original").is_empty());

    for (method, uri, route) in [
        ("X359508", "/tasks/1", "/tasks/{id}"),
        ("PROPFIND", "/tasks", "/tasks"),
        // Methods are case-sensitive: `get` is not GET.
        ("get", "/tasks/7", "/tasks/{id}"),
    ] {
        let req = TestRequest::default()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri)
            .to_request();
        let res = test::call_service(&svc, req).await;
        // The handlers still see the method sent: it is not one the route allows.
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert!(res.headers().contains_key(header::ALLOW), "{method}");
        let (server, _) = spans.take_by_kind();
        let [span] = &server[..] else {
            panic!("one server span per request: {server:?}")
        };
        assert_eq!(span.name, format!("HTTP {route}"), "{method}");
        assert!(!span.name.contains(method), "{}", span.name);
        assert_eq!(
            attribute(span, "http.request.method"),
            ["_OTHER"],
            "{method}"
        );
        assert_eq!(
            attribute(span, "http.request.method_original"),
            [method],
            "{method}"
        );
        assert_eq!(attribute(span, "http.route"), [route], "{method}");
    }
    provider.shutdown().unwrap();
}
