//! What the telemetry routes cost per request, measured by criterion
//! through the actix service stack (`actix_web::test::call_service`), and
//! what rendering `/metrics` costs alone.
//!
//! Rows:
//! - `routes/baseline`: an empty handler in the same `App`, so that the
//!   framework's share (building the test request, routing, the response)
//!   can be told from the handlers' own.
//! - `routes/health`, `routes/health_telemetry`, `routes/metrics`: one
//!   request each. The `/metrics` limiter allows every request (its check is
//!   still made); the registry holds the breaker's series and the HTTP
//!   metrics of the routes this bench's own app serves (the three telemetry
//!   routes and `/baseline`), registered as a host registers its routes.
//! - `render/metrics_text`: gathering the registry and encoding the text
//!   exposition, without HTTP.
//!
//! The breaker behind the handle has opened and closed again, so the
//! transition counters are not all zero.

use std::hint::black_box;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use actix_web::test::{self, TestRequest};
use actix_web::{App, HttpResponse, web};
use breaker_otel::test_util::{ScriptedExporter, Step};
use breaker_otel::{CircuitBreakerSpanExporter, ExporterConfig, Unclassified};
use criterion::{Criterion, criterion_group, criterion_main};
use opentelemetry_sdk::trace::SpanExporter;
use prometheus::{Encoder, TextEncoder};
use telemetry_http::{TelemetryHttp, TelemetryHttpConfig};

/// A breaker that exported, failed, opened, rejected and closed again.
async fn used_breaker() -> CircuitBreakerSpanExporter<Unclassified<ScriptedExporter>> {
    let backend = ScriptedExporter::default();
    // No time floor between probes: the first attempt after opening probes at
    // once, so that the loop below closes the circuit again without waiting.
    let breaker = ExporterConfig::DEFAULT
        .breaker
        .min_probe_interval(std::time::Duration::ZERO);
    let exporter =
        CircuitBreakerSpanExporter::new(backend.clone(), ExporterConfig::DEFAULT.breaker(breaker))
            .expect("built inside a runtime with a non-zero timeout");
    let _ = exporter.export(Vec::new()).await;
    backend.set(Step::Fail);
    for _ in 0..5 {
        let _ = exporter.export(Vec::new()).await;
    }
    backend.set(Step::Succeed);
    for _ in 0..10 {
        let _ = exporter.export(Vec::new()).await;
    }
    exporter
}

fn handlers(c: &mut Criterion) {
    let system = actix_web::rt::System::new();
    let exporter = system.block_on(used_breaker());
    let telemetry = TelemetryHttp::new(
        exporter.handle(),
        TelemetryHttpConfig {
            requests_per_minute: NonZeroU32::MAX,
            burst: NonZeroU32::MAX,
            trusted_proxies: Vec::new(),
            // As the server has it: the health answer names the process.
            service_instance_id: Some("0b6a7c1e-4f7d-4e55-9a3b-2f1c8d9e0a47".to_owned()),
        },
    )
    .expect("a valid configuration");
    let http_metrics = telemetry.http_metrics();
    for route in TelemetryHttp::ROUTES.into_iter().chain(["/baseline"]) {
        http_metrics.register_route("GET", route);
    }
    let app = {
        let telemetry = telemetry.clone();
        system.block_on(test::init_service(
            App::new()
                .configure(|cfg| telemetry.configure(cfg))
                .route("/baseline", web::get().to(HttpResponse::Ok)),
        ))
    };
    let peer: SocketAddr = ([127, 0, 0, 1], 40_000).into();

    let mut group = c.benchmark_group("routes");
    for (name, path, status) in [
        ("baseline", "/baseline", 200),
        ("health", "/health", 200),
        ("health_telemetry", "/health/telemetry", 200),
        ("metrics", "/metrics", 200),
    ] {
        let request = || TestRequest::get().uri(path).peer_addr(peer).to_request();
        let first = system.block_on(test::call_service(&app, request()));
        assert_eq!(first.status().as_u16(), status, "{path}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                system.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let response = test::call_service(&app, request()).await;
                        black_box(response.into_body());
                    }
                    started.elapsed()
                })
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("render");
    let encoder = TextEncoder::new();
    let mut text = Vec::with_capacity(16 * 1024);
    group.bench_function("metrics_text", |b| {
        b.iter(|| {
            text.clear();
            encoder
                .encode(&telemetry.registry().gather(), &mut text)
                .expect("the registry encodes");
            black_box(text.len())
        });
    });
    group.finish();
}

criterion_group! {
    name = telemetry_routes;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(30);
    targets = handlers
}
criterion_main!(telemetry_routes);
