//! The real OTLP pipeline against backends that refuse or hang, on
//! loopback: the circuit opens, exports stay bounded and shutdown returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use breaker_otel::{BreakerSettings, CircuitState, OtlpPipeline, Protocol};
use opentelemetry::trace::{Tracer, TracerProvider};

/// An address where nothing listens: bound, then released.
fn refused() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Accepts connections and never answers; kept alive by the returned guard.
fn black_hole() -> (SocketAddr, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(64) {
            match stream {
                Ok(s) => held.push(s),
                Err(_) => break,
            }
        }
    });
    (addr, thread)
}

fn settings(export_timeout: Duration) -> BreakerSettings {
    BreakerSettings {
        export_timeout,
        ..BreakerSettings::default()
    }
}

async fn flush_batches(pipeline: &breaker_otel::TracingPipeline, batches: usize) {
    let provider = pipeline.tracer_provider().clone();
    tokio::task::spawn_blocking(move || {
        let tracer = provider.tracer("pipeline-test");
        for _ in 0..batches {
            tracer.in_span("request", |_| {});
            let _ = provider.force_flush();
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_backend_opens_the_circuit_over_grpc() {
    let pipeline = OtlpPipeline::from_env()
        .with_vars([("UNRELATED", "1")])
        .endpoint(format!("http://{}", refused()))
        .breaker(settings(Duration::from_secs(5)))
        .build()
        .unwrap();
    assert_eq!(pipeline.protocol(), Some(Protocol::Grpc));
    flush_batches(&pipeline, 5).await;
    let snapshot = pipeline.handle().snapshot();
    assert_eq!(snapshot.state, CircuitState::Open);
    assert_eq!(snapshot.spans_ended, 5);
    assert_eq!(snapshot.spans.failed, 4, "3 failures and the failed probe");
    assert_eq!(snapshot.spans.dropped, 1);
    pipeline.shutdown(Duration::from_secs(5)).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_backend_opens_the_circuit_over_http() {
    let pipeline = OtlpPipeline::from_env()
        .with_vars([("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])
        .endpoint(format!("http://{}/v1/traces", refused()))
        .breaker(settings(Duration::from_secs(5)))
        .build()
        .unwrap();
    assert_eq!(pipeline.protocol(), Some(Protocol::HttpProtobuf));
    flush_batches(&pipeline, 3).await;
    assert_eq!(pipeline.handle().state(), CircuitState::Open);
    pipeline.shutdown(Duration::from_secs(5)).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_backend_is_bounded_and_shutdown_returns() {
    let (addr, _guard) = black_hole();
    let export_timeout = Duration::from_millis(300);
    let pipeline = OtlpPipeline::from_env()
        .with_vars([("UNRELATED", "1")])
        .endpoint(format!("http://{addr}"))
        .breaker(settings(export_timeout))
        .build()
        .unwrap();
    flush_batches(&pipeline, 3).await;
    let snapshot = pipeline.handle().snapshot();
    assert_eq!(snapshot.state, CircuitState::Open);
    assert_eq!(snapshot.failed_batches.timeout, 3);

    // A span still queued when we shut down meets the hanging backend too.
    pipeline
        .tracer_provider()
        .tracer("pipeline-test")
        .in_span("late", |_| {});
    let shutdown_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let _ = pipeline.shutdown(shutdown_timeout).await;
    assert!(
        started.elapsed() < shutdown_timeout + Duration::from_secs(1),
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sdk_disabled_gives_a_working_no_op_provider() {
    let pipeline = OtlpPipeline::from_env()
        .with_vars([("OTEL_SDK_DISABLED", "true")])
        .build()
        .unwrap();
    assert_eq!(pipeline.protocol(), None);
    let tracer = pipeline.tracer_provider().tracer("disabled");
    tracer.in_span("nothing", |cx| {
        use opentelemetry::trace::TraceContextExt;
        assert!(!cx.span().is_recording());
    });
    assert_eq!(pipeline.handle().state(), CircuitState::Closed);
    pipeline.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[test]
fn building_outside_a_runtime_is_an_error_not_a_panic() {
    let err = OtlpPipeline::from_env()
        .with_vars([("UNRELATED", "1")])
        .protocol(Protocol::HttpProtobuf)
        .endpoint(format!("http://{}/v1/traces", refused()))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("Tokio runtime"), "{err}");
}
