//! An actix-web service adopting `breaker-otel` and `telemetry-http`: its
//! spans go through a circuit-breaking exporter, `/health`,
//! `/health/telemetry` and `/metrics` are mounted next to its own routes, it
//! reads the breaker's state, and an admin route drives the breaker by hand.
//!
//! Run it with no collector: the circuit opens after three failed exports
//! and the service answers as before. `docs/reuse.md` quotes this file; a
//! test keeps the two identical.
//!
//! ```text
//! cargo run -p telemetry-http --example actix_service          # 127.0.0.1:8081
//! cargo run -p telemetry-http --example actix_service -- 9000  # or PORT=9000
//! curl -s localhost:8081/hello
//! curl -s localhost:8081/health/telemetry
//! curl -s localhost:8081/metrics
//! curl -s -X POST localhost:8081/admin/breaker/force-open     # or force-closed, reset
//! ```

#![allow(clippy::print_stdout)]

use std::error::Error;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use breaker_otel::{
    BreakerConfig, BreakerControl, BreakerHandle, CircuitBreakerSpanExporter, ExporterConfig,
};
use opentelemetry::trace::Tracer as _;
use opentelemetry_otlp::{RetryPolicy, WithTonicConfig as _};
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter};
use telemetry_http::{TelemetryHttp, TelemetryHttpConfig};
use tracing_subscriber::filter::LevelFilter;

/// Where the example listens unless an argument or `PORT` says otherwise.
const DEFAULT_PORT: u16 = 8081;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // The breaker logs one line per state transition through `tracing`.
    tracing_subscriber::fmt()
        .with_max_level(LevelFilter::INFO)
        .init();
    let port = port()?;

    // Any span exporter will do; this one is OTLP/gRPC to OTEL_EXPORTER_OTLP_ENDPOINT.
    let otlp = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        // The breaker is the resilience mechanism: retries would hide failures from it.
        .with_retry_policy(RetryPolicy::disabled())
        .build()?;
    let (provider, handle, control) = with_breaker(otlp)?;
    opentelemetry::global::set_tracer_provider(provider.clone());

    let telemetry = TelemetryHttp::new(handle.clone(), TelemetryHttpConfig::default())?;
    let http_metrics = telemetry.http_metrics();
    // Series for these routes exist, at 0, from the first scrape (those of
    // /health, /health/telemetry and /metrics exist already).
    http_metrics.register_route("GET", "/hello");
    http_metrics.register_route("POST", "/admin/breaker/{action}");
    let state = web::Data::new(handle.clone());
    let admin = web::Data::new(control);
    // Every worker gets a clone of the same `TelemetryHttp`: one registry and
    // one `/metrics` rate limiter, so the limit is per client, not per worker.
    HttpServer::new(move || {
        App::new()
            .wrap(http_metrics.clone())
            .configure(|cfg| telemetry.configure(cfg))
            .app_data(state.clone())
            .app_data(admin.clone())
            .route("/hello", web::get().to(hello))
            .route("/admin/breaker/{action}", web::post().to(breaker_action))
    })
    .bind(("127.0.0.1", port))?
    .run()
    .await?;

    shutdown(provider, &handle).await;
    Ok(())
}

/// Puts a circuit breaker in front of any span exporter and builds the
/// tracer provider around it. Must run inside a Tokio runtime: the exports
/// run there.
fn with_breaker<E: SpanExporter + 'static>(
    inner: E,
) -> Result<(SdkTracerProvider, BreakerHandle, BreakerControl), Box<dyn Error>> {
    let settings = ExporterConfig::DEFAULT
        .breaker(BreakerConfig::DEFAULT.probe_after(Duration::from_secs(30)))
        .export_timeout(Duration::from_secs(2));
    let exporter = CircuitBreakerSpanExporter::new(inner, settings)?;
    let handle = exporter.handle(); // read-only: health checks, metrics
    let control = exporter.control(); // force open, force closed, reset
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    Ok((provider, handle, control))
}

/// The service's own work, traced; it never waits for the tracing backend.
async fn hello(breaker: web::Data<BreakerHandle>) -> HttpResponse {
    let tracer = opentelemetry::global::tracer("actix-service");
    tracer.in_span("hello", |_| {
        // `state()` is one atomic load: cheap enough for every request.
        let circuit = breaker.state();
        HttpResponse::Ok().body(format!("hello (telemetry circuit: {circuit})\n"))
    })
}

/// Manual control of the breaker. Keep routes like this one away from
/// untrusted clients: this example listens on loopback only.
async fn breaker_action(
    control: web::Data<BreakerControl>,
    action: web::Path<String>,
) -> HttpResponse {
    match action.as_str() {
        "force-open" => control.force_open(),
        "force-closed" => control.force_closed(),
        "reset" => control.reset(),
        _ => {
            return HttpResponse::NotFound()
                .body("expected /admin/breaker/force-open, force-closed or reset\n");
        }
    }
    HttpResponse::NoContent().finish()
}

/// Flushes and stops tracing within a deadline, then reports what became of
/// the spans. The SDK's shutdown blocks while the last exports run on this
/// runtime, so it runs on the blocking pool.
async fn shutdown(provider: SdkTracerProvider, handle: &BreakerHandle) {
    let flushed =
        tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(Duration::from_secs(5)))
            .await;
    if !matches!(flushed, Ok(Ok(()))) {
        println!("tracing did not shut down cleanly: {flushed:?}");
    }
    let snapshot = handle.snapshot();
    println!(
        "circuit {} (failures in a row: {}); spans exported {}, dropped {}, failed {}",
        snapshot.state,
        snapshot.consecutive_failures,
        snapshot.spans.exported,
        snapshot.spans.dropped,
        snapshot.spans.failed,
    );
    for (from, to, count) in snapshot.transitions.iter().filter(|t| t.2 > 0) {
        println!("  {from} -> {to}: {count}");
    }
}

/// The port from the first argument, else `PORT`, else 8081.
fn port() -> Result<u16, Box<dyn Error>> {
    match std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
    {
        Some(text) => Ok(text
            .parse()
            .map_err(|err| format!("port {text:?}: {err}"))?),
        None => Ok(DEFAULT_PORT),
    }
}
