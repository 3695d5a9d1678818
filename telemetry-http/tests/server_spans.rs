//! `ServerSpans`: the server span a request gets, as an exporter receives it. One tracer
//! provider for the whole binary (the middleware reads the global one), with a synchronous
//! exporter into memory; each test picks its own spans out by their `url.path`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex, OnceLock};

use actix_web::http::{Method, StatusCode, header};
use actix_web::test::{self, TestRequest};
use actix_web::{App, HttpResponse, web};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use telemetry_http::ServerSpans;

#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collected {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// The binary's one provider, installed globally with W3C propagation.
fn collected() -> &'static Collected {
    static COLLECTED: OnceLock<Collected> = OnceLock::new();
    COLLECTED.get_or_init(|| {
        let collected = Collected::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(collected.clone())
            .build();
        opentelemetry::global::set_tracer_provider(provider);
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        collected
    })
}

/// The spans of requests for `path`, taken out of the collection.
fn take(path: &str) -> Vec<SpanData> {
    let mut all = collected().0.lock().unwrap();
    let (mine, others) = std::mem::take(&mut *all).into_iter().partition(|span| {
        attribute(span, "url.path") == [path] || attribute(span, "child.of") == [path]
    });
    *all = others;
    mine
}

/// The one server span of `path`.
fn server_span(path: &str) -> SpanData {
    let spans: Vec<_> = take(path)
        .into_iter()
        .filter(|span| span.span_kind == SpanKind::Server)
        .collect();
    let [span] = &spans[..] else {
        panic!("one server span for {path}: {spans:?}")
    };
    span.clone()
}

/// Every value of attribute `key`: a key set twice shows twice.
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

/// A handler that starts a span of its own, tagged with the request's path.
async fn with_child(req: actix_web::HttpRequest) -> HttpResponse {
    let tracer = opentelemetry::global::tracer("handler");
    let path = req.path().to_owned();
    let span = tracer
        .span_builder("child")
        .with_attributes([opentelemetry::KeyValue::new("child.of", path)])
        .start(&tracer);
    drop(span);
    HttpResponse::Ok().finish()
}

async fn status(path: web::Path<u16>) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(path.into_inner()).unwrap()).finish()
}

async fn failing() -> Result<HttpResponse, actix_web::Error> {
    Err(actix_web::error::ErrorBadGateway("upstream"))
}

macro_rules! service {
    ($spans:expr) => {
        test::init_service(
            App::new()
                .service(
                    web::scope("/items")
                        .wrap($spans)
                        .route("/{id}", web::get().to(with_child))
                        .route("/status/{code}", web::get().to(status))
                        .route("/failing/now", web::get().to(failing)),
                )
                .default_service(web::to(HttpResponse::NotFound)),
        )
        .await
    };
}

#[actix_web::test]
async fn a_request_gets_the_conventions_attributes_and_its_parent_and_children() {
    collected();
    let svc = service!(ServerSpans::new());
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let req = TestRequest::get()
        .uri("/items/42?full=true")
        .insert_header((header::HOST, "tasks.example:8443"))
        .insert_header((header::USER_AGENT, "probe/1.0"))
        .insert_header(("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01")))
        .insert_header(("tracestate", "vendor=opaque"))
        .peer_addr("203.0.113.9:50000".parse().unwrap())
        .to_request();
    assert_eq!(test::call_service(&svc, req).await.status(), StatusCode::OK);

    let spans = take("/items/42");
    let (servers, children): (Vec<_>, Vec<_>) = spans
        .into_iter()
        .partition(|span| span.span_kind == SpanKind::Server);
    let ([span], [child]) = (&servers[..], &children[..]) else {
        panic!("one server span and its child: {servers:?} {children:?}")
    };
    assert_eq!(span.name, "GET /items/{id}");
    assert_eq!(span.span_context.trace_id().to_string(), trace_id);
    assert_eq!(span.parent_span_id.to_string(), "00f067aa0ba902b7");
    assert!(span.parent_span_is_remote);
    // The caller's trace state goes on with its trace.
    assert_eq!(span.span_context.trace_state().header(), "vendor=opaque");
    assert_eq!(child.parent_span_id, span.span_context.span_id());
    assert_eq!(span.status, Status::Unset);
    for (key, value) in [
        ("http.request.method", "GET"),
        ("http.route", "/items/{id}"),
        ("url.path", "/items/42"),
        ("url.query", "full=true"),
        ("url.scheme", "http"),
        ("network.protocol.version", "1.1"),
        ("server.address", "tasks.example"),
        ("server.port", "8443"),
        ("client.address", "203.0.113.9"),
        ("user_agent.original", "probe/1.0"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(attribute(span, key), [value], "{key}: {span:?}");
    }
    for absent in [
        "error.type",
        "http.request.method_original",
        "network.peer.address",
    ] {
        assert!(attribute(span, absent).is_empty(), "{absent}: {span:?}");
    }
    assert_eq!(span.attributes.len(), 11, "{:?}", span.attributes);
}

#[actix_web::test]
async fn server_errors_fail_the_span_and_client_errors_do_not() {
    collected();
    let svc = service!(ServerSpans::new());
    for (code, error) in [(503, Some("503")), (404, None), (429, None), (200, None)] {
        let path = format!("/items/status/{code}");
        let req = TestRequest::get().uri(&path).to_request();
        assert_eq!(test::call_service(&svc, req).await.status().as_u16(), code);
        let span = server_span(&path);
        assert_eq!(span.name, "GET /items/status/{code}");
        assert_eq!(
            attribute(&span, "http.response.status_code"),
            [code.to_string()]
        );
        match error {
            Some(error) => {
                assert_eq!(attribute(&span, "error.type"), [error]);
                assert!(matches!(span.status, Status::Error { .. }), "{span:?}");
            }
            None => {
                assert!(attribute(&span, "error.type").is_empty(), "{span:?}");
                assert_eq!(span.status, Status::Unset);
            }
        }
    }

    // An error the handler returns is recorded as the response actix makes of it.
    let req = TestRequest::get().uri("/items/failing/now").to_request();
    assert_eq!(
        test::call_service(&svc, req).await.status(),
        StatusCode::BAD_GATEWAY
    );
    let span = server_span("/items/failing/now");
    assert_eq!(attribute(&span, "http.response.status_code"), ["502"]);
    assert_eq!(attribute(&span, "error.type"), ["502"]);
}

#[actix_web::test]
async fn unknown_methods_and_unmatched_paths_keep_names_bounded() {
    collected();
    let svc = service!(ServerSpans::new());
    // Methods are case-sensitive: `get` is not GET.
    for (method, path) in [("PROPFIND", "/items/7"), ("get", "/items/8")] {
        let req = TestRequest::default()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path)
            .to_request();
        test::call_service(&svc, req).await;
        let span = server_span(path);
        assert_eq!(span.name, "HTTP /items/{id}", "{method}");
        assert_eq!(attribute(&span, "http.request.method"), ["_OTHER"]);
        assert_eq!(attribute(&span, "http.request.method_original"), [method]);
        assert_eq!(attribute(&span, "http.route"), ["/items/{id}"]);
    }

    // Under the traced scope but matching no route: no route to name it by.
    let req = TestRequest::get().uri("/items/a/b/c").to_request();
    assert_eq!(
        test::call_service(&svc, req).await.status(),
        StatusCode::NOT_FOUND
    );
    let span = server_span("/items/a/b/c");
    assert_eq!(span.name, "GET");
    assert!(attribute(&span, "http.route").is_empty(), "{span:?}");
    assert_eq!(attribute(&span, "http.response.status_code"), ["404"]);

    // Outside the wrapped scope nothing is traced.
    let req = TestRequest::get().uri("/elsewhere").to_request();
    test::call_service(&svc, req).await;
    assert!(take("/elsewhere").is_empty());
    assert!(!Context::current().has_active_span());
}

#[actix_web::test]
async fn client_address_believes_only_trusted_proxies() {
    collected();
    let spans = ServerSpans::new().trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
    let svc = service!(spans);
    for (peer, path, client, via) in [
        (
            "10.0.0.5:4000",
            "/items/1",
            "198.51.100.7",
            Some("10.0.0.5"),
        ),
        ("192.0.2.1:4000", "/items/2", "192.0.2.1", None),
    ] {
        let req = TestRequest::get()
            .uri(path)
            .insert_header(("x-forwarded-for", "198.51.100.7"))
            .insert_header((header::HOST, "[::1]:8080"))
            .peer_addr(peer.parse().unwrap())
            .to_request();
        test::call_service(&svc, req).await;
        let span = server_span(path);
        assert_eq!(attribute(&span, "client.address"), [client], "{peer}");
        let expected: Vec<&str> = via.into_iter().collect();
        assert_eq!(attribute(&span, "network.peer.address"), expected, "{peer}");
        // An IPv6 literal loses its brackets.
        assert_eq!(attribute(&span, "server.address"), ["::1"]);
        assert_eq!(attribute(&span, "server.port"), ["8080"]);
    }
}

/// One worker serves one client after another: each span has its own request's host, user
/// agent and client, never the previous request's, and a request without them has none.
#[actix_web::test]
async fn successive_requests_each_record_their_own_host_agent_and_client() {
    collected();
    let svc = service!(ServerSpans::new());
    let requests = [
        (
            "/items/101",
            Some("a.example:80"),
            Some("one/1"),
            "192.0.2.10:1000",
        ),
        (
            "/items/102",
            Some("a.example:80"),
            Some("one/1"),
            "192.0.2.10:1001",
        ),
        (
            "/items/103",
            Some("b.example"),
            Some("two/2"),
            "192.0.2.11:1000",
        ),
        ("/items/104", None, None, "[2001:db8::1]:1000"),
        (
            "/items/105",
            Some("a.example:80"),
            Some("one/1"),
            "192.0.2.10:1002",
        ),
    ];
    for (path, host, agent, peer) in requests {
        let mut req = TestRequest::get()
            .uri(path)
            .peer_addr(peer.parse().unwrap());
        if let Some(host) = host {
            req = req.insert_header((header::HOST, host));
        }
        if let Some(agent) = agent {
            req = req.insert_header((header::USER_AGENT, agent));
        }
        test::call_service(&svc, req.to_request()).await;
    }
    for (path, host, agent, peer) in requests {
        let span = server_span(path);
        let (name, port) = match host.map(|host| host.split_once(':').unwrap_or((host, ""))) {
            Some((name, port)) => (
                vec![name],
                [port].into_iter().filter(|p| !p.is_empty()).collect(),
            ),
            None => (vec![], vec![]),
        };
        assert_eq!(attribute(&span, "server.address"), name, "{path}");
        assert_eq!(attribute(&span, "server.port"), port, "{path}");
        let agent: Vec<&str> = agent.into_iter().collect();
        assert_eq!(attribute(&span, "user_agent.original"), agent, "{path}");
        let client = peer
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .ip()
            .to_string();
        assert_eq!(attribute(&span, "client.address"), [client], "{path}");
    }
}

/// Inside the HTTP metrics middleware, which looks the route up first and leaves it in the
/// request: the span and the metric name the same route, unmatched paths included.
#[actix_web::test]
async fn inside_the_http_metrics_both_see_the_same_route() {
    collected();
    let telemetry = telemetry_http::TelemetryHttp::new(
        breaker_otel::BreakerHandle::disabled(),
        telemetry_http::TelemetryHttpConfig::default(),
    )
    .unwrap();
    let svc = test::init_service(
        App::new().wrap(telemetry.http_metrics()).service(
            web::scope("/items")
                .wrap(telemetry.server_spans())
                .route("/{id}", web::get().to(with_child)),
        ),
    )
    .await;
    for path in ["/items/77", "/items/77/deeper"] {
        test::call_service(&svc, TestRequest::get().uri(path).to_request()).await;
    }
    let span = server_span("/items/77");
    assert_eq!(span.name, "GET /items/{id}");
    assert_eq!(attribute(&span, "http.route"), ["/items/{id}"]);
    let unmatched = server_span("/items/77/deeper");
    assert_eq!(unmatched.name, "GET");
    assert!(attribute(&unmatched, "http.route").is_empty());

    let text = prometheus::TextEncoder::new()
        .encode_to_string(&telemetry.registry().gather())
        .unwrap();
    for route in ["/items/{id}", "unmatched"] {
        let series =
            format!("http_server_requests_total{{method=\"GET\",route=\"{route}\",status_class=\"");
        assert!(
            text.lines()
                .any(|line| line.starts_with(&series) && line.ends_with(" 1")),
            "{series} in\n{text}"
        );
    }
}
