//! What one span costs at each stage of the path from the request to the backend,
//! measured by criterion, per span:
//!
//! - `record/*`: starting and ending a span like taskman's, into a provider whose only
//!   processor drops what it gets, so that only the recording is measured.
//!   `record/server_span` has the HTTP server span's attributes (as
//!   `opentelemetry-instrumentation-actix-web` records them: ten, five of them owned
//!   strings); `record/storage_span_tracing` is the storage span as taskman records it,
//!   a `tracing` span bridged by `tracing-opentelemetry`; `record/storage_span_otel` the
//!   same span made directly with the OpenTelemetry API.
//! - `middleware/*`: one `GET /tasks/42` through an actix service in process, inside the
//!   HTTP metrics middleware as in taskman, bare
//!   (`none`), with `telemetry-http`'s `ServerSpans` (`server_spans`, what taskman uses)
//!   and with `opentelemetry-instrumentation-actix-web`'s `RequestTracing`
//!   (`request_tracing`, which it replaced), into a provider that drops every span.
//! - `handoff/*`: the same server span into a real batch processor instead, minus nothing:
//!   `handoff/sdk` is the SDK's `BatchSpanProcessor` with an exporter that drops batches;
//!   `handoff/pipeline` is `breaker-otel`'s pipeline, exporting to the OTLP receiver of
//!   this crate. Subtract `record/server_span` for the handoff alone.
//! - `encode/*`: turning a batch of 512 such spans into the OTLP request's protobuf bytes,
//!   per span: `transform` is `opentelemetry-proto`'s conversion to the request's messages
//!   alone, `transform_and_protobuf` those messages then `prost`'s encoding (what our
//!   exporter did before), `direct` what `OtlpSpanExporter` does now: the same bytes,
//!   written straight from the spans (`breaker-otel/src/otlp/encode.rs`), into a `Vec` of
//!   the right capacity.
//! - `send/*`: `OtlpSpanExporter` sending a batch of 512 spans to the receiver over gRPC
//!   (encoding included, the receiver's work on the other side included in the wall
//!   time), per span.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark: a failed setup should stop it"
)]

use std::hint::black_box;
use std::time::Duration;

use breaker_otel::test_util::otlp_trace_request;
use breaker_otel::{OtlpExporterConfig, OtlpSpanExporter, Protocol, TracingPipeline};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry::trace::{SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SdkTracerProvider, Span, SpanData, SpanExporter, SpanProcessor,
};
use prost::Message as _;
use tests::receiver::Receiver;
use tracing_subscriber::layer::SubscriberExt as _;

const BATCH: usize = 512;

/// Drops every span it is given.
#[derive(Debug)]
struct Discard;

impl SpanProcessor for Discard {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}
    fn on_end(&self, span: SpanData) {
        black_box(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Drops every batch it is given.
#[derive(Debug)]
struct DiscardExporter;

impl SpanExporter for DiscardExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

/// The server span's attributes, as the actix instrumentation builds them for
/// `GET /tasks/{id}` (owned strings where it allocates them).
fn server_attributes(id: u64) -> Vec<KeyValue> {
    vec![
        KeyValue::new("http.route", "/tasks/{id}".to_owned()),
        KeyValue::new("client.address", "127.0.0.1".to_owned()),
        KeyValue::new("server.address", "127.0.0.1".to_owned()),
        KeyValue::new("server.port", 8080_i64),
        KeyValue::new("url.path", format!("/tasks/{id}")),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("http.request.method", "GET"),
        KeyValue::new("network.protocol.version", "1.1"),
        KeyValue::new("user_agent.original", "load/1.0".to_owned()),
        KeyValue::new("http.response.status_code", 200_i64),
    ]
}

fn server_span(tracer: &opentelemetry_sdk::trace::Tracer, id: u64) {
    let span = tracer
        .span_builder("GET /tasks/{id}")
        .with_kind(SpanKind::Server)
        .with_attributes(server_attributes(id))
        .start(tracer);
    drop(span);
}

fn storage_span_otel(tracer: &opentelemetry_sdk::trace::Tracer) {
    let span = tracer
        .span_builder("SELECT tasks")
        .with_kind(SpanKind::Client)
        .with_attributes([
            KeyValue::new("db.system.name", "sqlite"),
            KeyValue::new("db.collection.name", "tasks"),
            KeyValue::new("db.operation.name", "SELECT"),
            KeyValue::new("db.query.summary", "SELECT tasks"),
        ])
        .start(tracer);
    drop(span);
}

fn storage_span_tracing() {
    let span = tracing::info_span!(
        "storage",
        otel.name = "SELECT tasks",
        otel.kind = "client",
        db.system.name = "sqlite",
        db.collection.name = "tasks",
        db.operation.name = "SELECT",
        db.query.summary = "SELECT tasks",
    );
    drop(span.enter());
    drop(span);
}

/// `n` ended spans like the server's, as the batch processor hands them over.
fn batch(n: usize) -> Vec<SpanData> {
    use std::sync::{Arc, Mutex};
    #[derive(Debug)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);
    impl SpanProcessor for Collect {
        fn on_start(&self, _span: &mut Span, _cx: &Context) {}
        fn on_end(&self, span: SpanData) {
            self.0.lock().unwrap().push(span);
        }
        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }
        fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
            Ok(())
        }
    }
    let spans = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Collect(Arc::clone(&spans)))
        .build();
    let tracer = provider.tracer("bench");
    for id in 0..n as u64 {
        server_span(&tracer, id);
    }
    std::mem::take(&mut *spans.lock().unwrap())
}

/// The OTLP receiver of this crate, on a one-thread runtime of its own; it keeps counts, not
/// spans.
fn receiver() -> (tokio::runtime::Runtime, Receiver) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let receiver = runtime.block_on(Receiver::start()).unwrap();
    receiver.forget_spans();
    (runtime, receiver)
}

fn record(c: &mut Criterion) {
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Discard)
        .build();
    let tracer = provider.tracer("bench");
    let mut group = c.benchmark_group("record");
    group.throughput(Throughput::Elements(1));
    let mut id = 0;
    group.bench_function("server_span", |b| {
        b.iter(|| {
            id += 1;
            server_span(&tracer, id);
        });
    });
    group.bench_function("storage_span_otel", |b| {
        b.iter(|| storage_span_otel(&tracer))
    });
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("taskman-server")));
    tracing::subscriber::with_default(subscriber, || {
        group.bench_function("storage_span_tracing", |b| b.iter(storage_span_tracing));
    });
    group.finish();
}

/// The same request through the same actix service three times: bare, with
/// `telemetry-http`'s `ServerSpans`, and with `opentelemetry-instrumentation-actix-web`'s
/// `RequestTracing`, into a provider that drops every span. Subtract `middleware/none`
/// for the middleware alone (its span's recording included).
fn middleware(c: &mut Criterion) {
    use actix_web::test::{TestRequest, call_service, init_service};
    use actix_web::{App, HttpResponse, web};

    let provider = SdkTracerProvider::builder()
        .with_span_processor(Discard)
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    let system = actix_web::rt::System::new();
    let request = || {
        TestRequest::get()
            .uri("/tasks/42")
            .insert_header(("host", "127.0.0.1:8080"))
            .insert_header(("user-agent", "load/1.0"))
            .peer_addr("127.0.0.1:50000".parse().unwrap())
            .to_request()
    };
    let scope = || web::scope("/tasks").route("/{id}", web::get().to(HttpResponse::Ok));
    // Inside the HTTP metrics middleware, as in taskman: it looks the route up first.
    let metrics = telemetry_http::TelemetryHttp::new(
        breaker_otel::BreakerHandle::disabled(),
        telemetry_http::TelemetryHttpConfig::default(),
    )
    .unwrap()
    .http_metrics();
    let mut group = c.benchmark_group("middleware");
    group.throughput(Throughput::Elements(1));

    let bare = system.block_on(init_service(
        App::new().wrap(metrics.clone()).service(scope()),
    ));
    group.bench_function("none", |b| {
        b.iter(|| system.block_on(call_service(&bare, request())));
    });
    let ours = system.block_on(init_service(
        App::new()
            .wrap(metrics.clone())
            .service(scope().wrap(telemetry_http::ServerSpans::new())),
    ));
    group.bench_function("server_spans", |b| {
        b.iter(|| system.block_on(call_service(&ours, request())));
    });
    let stock = system.block_on(init_service(App::new().wrap(metrics).service(
        scope().wrap(opentelemetry_instrumentation_actix_web::RequestTracing::new()),
    )));
    group.bench_function("request_tracing", |b| {
        b.iter(|| system.block_on(call_service(&stock, request())));
    });
    group.finish();
    let _ = provider.shutdown();
}

fn handoff(c: &mut Criterion) {
    let (runtime, receiver) = receiver();
    let mut group = c.benchmark_group("handoff");
    group.throughput(Throughput::Elements(1));

    let sdk = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(DiscardExporter).build())
        .build();
    let tracer = sdk.tracer("bench");
    let mut id = 0;
    group.bench_function("sdk", |b| {
        b.iter(|| {
            id += 1;
            server_span(&tracer, id);
        });
    });
    drop(tracer);
    let _ = sdk.shutdown();

    let pipeline = {
        let _entered = runtime.enter();
        TracingPipeline::builder()
            .with_vars([("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint())])
            .build()
            .unwrap()
    };
    let tracer = pipeline.tracer_provider().tracer("bench");
    group.bench_function("pipeline", |b| {
        b.iter(|| {
            id += 1;
            server_span(&tracer, id);
        });
    });
    group.finish();
    let _ = runtime.block_on(pipeline.shutdown(Duration::from_secs(5)));
}

fn encode(c: &mut Criterion) {
    let sdk_resource = Resource::builder().with_service_name("taskman").build();
    let resource = ResourceAttributesWithSchema::from(&sdk_resource);
    // `direct` measures the same bytes: checked on the measured spans too.
    let spans = batch(BATCH);
    let request = ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(spans.clone(), &resource),
    };
    assert_eq!(
        otlp_trace_request(spans, &sdk_resource),
        request.encode_to_vec()
    );
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("transform", |b| {
        b.iter_batched(
            || batch(BATCH),
            |spans| black_box(group_spans_by_resource_and_scope(spans, &resource)),
            BatchSize::LargeInput,
        );
    });
    group.bench_function("transform_and_protobuf", |b| {
        b.iter_batched(
            || batch(BATCH),
            |spans| {
                let request = ExportTraceServiceRequest {
                    resource_spans: group_spans_by_resource_and_scope(spans, &resource),
                };
                black_box(request.encode_to_vec())
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("direct", |b| {
        b.iter_batched(
            || batch(BATCH),
            |spans| black_box(otlp_trace_request(spans, &sdk_resource)),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn send(c: &mut Criterion) {
    let (runtime, receiver) = receiver();
    let exporter = {
        let _entered = runtime.enter();
        OtlpSpanExporter::new(OtlpExporterConfig::new(Protocol::Grpc, receiver.endpoint())).unwrap()
    };
    let mut group = c.benchmark_group("send");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("grpc", |b| {
        b.iter_batched(
            || batch(BATCH),
            |spans| black_box(runtime.block_on(exporter.send(spans))),
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, record, middleware, handoff, encode, send);
criterion_main!(benches);
