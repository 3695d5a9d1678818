//! The real OTLP pipeline against backends that refuse or hang, on
//! loopback: the circuit opens, exports stay bounded and shutdown returns.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use breaker_otel::{CircuitState, ExporterConfig, PipelineError, Protocol, TracingPipeline};
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

/// An HTTP server answering every request `503 Service Unavailable` (which
/// the OTLP exporter retries), counting the requests.
fn unavailable_http() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let counted = Arc::clone(&counted);
            std::thread::spawn(move || answer_unavailable(stream, &counted));
        }
    });
    (addr, requests)
}

fn answer_unavailable(stream: std::net::TcpStream, requests: &AtomicUsize) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut content_length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).unwrap();
        requests.fetch_add(1, Ordering::SeqCst);
        let answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}

/// The default settings with `export_timeout`, and without the time floor
/// between probes: these tests flush batches back to back on real time,
/// where the floor would make which batch probes a matter of timing.
fn settings(export_timeout: Duration) -> ExporterConfig {
    let breaker = ExporterConfig::DEFAULT
        .breaker
        .min_probe_interval(Duration::ZERO);
    ExporterConfig::DEFAULT
        .export_timeout(export_timeout)
        .breaker(breaker)
}

/// The pipeline over gRPC (the default protocol) to a backend that refuses every
/// connection, with a 5 s export timeout.
fn refused_grpc_pipeline() -> TracingPipeline {
    TracingPipeline::builder()
        .with_vars([("UNRELATED", "1")])
        .endpoint(format!("http://{}", refused()))
        .breaker(settings(Duration::from_secs(5)))
        .build()
        .unwrap()
}

async fn flush_batches(pipeline: &TracingPipeline, batches: usize) {
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
    let pipeline = refused_grpc_pipeline();
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
    let pipeline = TracingPipeline::builder()
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
    let pipeline = TracingPipeline::builder()
        .with_vars([("UNRELATED", "1")])
        .endpoint(format!("http://{addr}"))
        .breaker(settings(export_timeout))
        .build()
        .unwrap();
    flush_batches(&pipeline, 3).await;
    let snapshot = pipeline.handle().snapshot();
    assert_eq!(snapshot.state, CircuitState::Open);
    assert_eq!(
        snapshot
            .failures
            .get(breaker_otel::FailureCause::Timeout)
            .batches,
        3
    );

    // A span still queued when we shut down meets the hanging backend too.
    pipeline
        .tracer_provider()
        .tracer("pipeline-test")
        .in_span("late", |_| {});
    let shutdown_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let _ = pipeline.shutdown(shutdown_timeout).await;
    // Unbounded, shutdown would wait on the black hole forever; the slack is
    // for a loaded machine, not for the pipeline.
    assert!(
        started.elapsed() < shutdown_timeout + Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[cfg(feature = "bench")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_breaker_each_failed_batch_is_retried_three_times_over_http() {
    let (addr, requests) = unavailable_http();
    let pipeline = TracingPipeline::builder()
        .with_vars([("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])
        .endpoint(format!("http://{addr}/v1/traces"))
        .breaker_enabled(false)
        .build()
        .unwrap();
    assert_eq!(pipeline.protocol(), Some(Protocol::HttpProtobuf));
    assert!(pipeline.control().is_none());
    flush_batches(&pipeline, 5).await;

    // The stock exporter's default policy: one request and three retries per batch, and
    // no circuit to stop it: every batch goes to the backend.
    assert_eq!(requests.load(Ordering::SeqCst), 5 * 4);
    let snapshot = pipeline.handle().snapshot();
    assert_eq!(snapshot.state, CircuitState::Closed);
    assert_eq!(snapshot.spans_ended, 5);
    assert_eq!(
        snapshot.spans.total(),
        0,
        "nothing is counted without a breaker"
    );
    assert_eq!(snapshot.probes, 0);
    pipeline.shutdown(Duration::from_secs(5)).await.ok();
}

#[cfg(feature = "bench")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_breaker_a_refused_grpc_backend_is_retried_from_the_sdk_thread() {
    let pipeline = TracingPipeline::builder()
        .with_vars([("UNRELATED", "1")])
        .endpoint(format!("http://{}", refused()))
        .breaker_enabled(false)
        .build()
        .unwrap();
    assert_eq!(pipeline.protocol(), Some(Protocol::Grpc));
    let started = Instant::now();
    flush_batches(&pipeline, 2).await;
    // Each failed batch waits out the retry backoff (100 + 200 + 400 ms at least)
    // before the batch processor gives up on it.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2 * 700), "took {took:?}");
    let snapshot = pipeline.handle().snapshot();
    assert_eq!(snapshot.state, CircuitState::Closed);
    assert_eq!(snapshot.spans_ended, 2);
    assert_eq!(snapshot.spans.total(), 0);
    pipeline.shutdown(Duration::from_secs(5)).await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_breaker_the_otlp_retries_stay_off() {
    let (addr, requests) = unavailable_http();
    let pipeline = TracingPipeline::builder()
        .with_vars([("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")])
        .endpoint(format!("http://{addr}/v1/traces"))
        .breaker(settings(Duration::from_secs(5)))
        .build()
        .unwrap();
    flush_batches(&pipeline, 5).await;
    // Three failures open the circuit, attempt 0 probes, the last batch is dropped.
    assert_eq!(requests.load(Ordering::SeqCst), 4);
    assert_eq!(pipeline.handle().state(), CircuitState::Open);
    pipeline.shutdown(Duration::from_secs(5)).await.ok();
}

#[tokio::test]
async fn sdk_disabled_gives_a_working_no_op_provider() {
    let pipeline = TracingPipeline::builder()
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
fn the_pipeline_needs_no_runtime_of_the_caller() {
    // Its exports run on its own runtime: a plain thread can build it, end spans and shut
    // it down.
    for protocol in [Protocol::HttpProtobuf, Protocol::Grpc] {
        let pipeline = TracingPipeline::builder()
            .with_vars([("UNRELATED", "1")])
            .protocol(protocol)
            .endpoint(format!("http://{}", refused()))
            .build()
            .unwrap_or_else(|err| panic!("{protocol}: {err}"));
        let tracer = pipeline.tracer_provider().tracer("test");
        drop(tracer.start("span"));
        // Its last export is refused, which shutdown reports; it is counted all the same.
        assert!(pipeline.tracer_provider().shutdown().is_err(), "{protocol}");
        let snapshot = pipeline.handle().snapshot();
        assert_eq!(snapshot.spans_ended, 1, "{protocol}");
        assert_eq!(snapshot.spans.total(), 1, "{protocol}: {snapshot:?}");
    }
    #[cfg(feature = "bench")]
    {
        let err = TracingPipeline::builder()
            .with_vars([("UNRELATED", "1")])
            .endpoint(format!("http://{}", refused()))
            .breaker_enabled(false)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("Tokio runtime"), "stock: {err}");
    }
}

/// A span where, from the variables, the pipeline must send it: to `receiver`, over HTTP.
async fn sent_to(vars: &[(&str, &str)]) -> (TracingPipeline, CircuitState) {
    let pipeline = TracingPipeline::builder()
        .with_vars(vars.iter().copied())
        .breaker(settings(Duration::from_secs(5)))
        .build()
        .unwrap();
    flush_batches(&pipeline, 1).await;
    let state = pipeline.handle().state();
    (pipeline, state)
}

/// The variables choose the transport and the endpoint with one precedence, both ways
/// round: the batch reaches the backend the signal-specific variables name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signal_specific_variables_win_both_ways_round() {
    let (http, requests) = unavailable_http();
    let http_url = format!("http://{http}/v1/traces");
    let grpc_url = format!("http://{}", refused());
    for (traces_protocol, generic_protocol, traces_endpoint, generic_endpoint, expected) in [
        (
            "http/protobuf",
            "grpc",
            &http_url,
            &grpc_url,
            Protocol::HttpProtobuf,
        ),
        (
            "grpc",
            "http/protobuf",
            &grpc_url,
            &http_url,
            Protocol::Grpc,
        ),
    ] {
        let before = requests.load(Ordering::SeqCst);
        let (pipeline, _) = sent_to(&[
            ("OTEL_EXPORTER_OTLP_PROTOCOL", generic_protocol),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", traces_protocol),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", generic_endpoint),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", traces_endpoint),
        ])
        .await;
        assert_eq!(pipeline.protocol(), Some(expected));
        let reached_http = requests.load(Ordering::SeqCst) - before;
        assert_eq!(
            reached_http,
            usize::from(expected == Protocol::HttpProtobuf),
            "{expected}"
        );
        pipeline.shutdown(Duration::from_secs(5)).await.ok();
    }
}

/// Headers from the variables reach the backend, percent-decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_from_the_variables_reach_the_backend() {
    let (addr, seen) = recording_http();
    let (pipeline, _) = sent_to(&[
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &format!("http://{addr}")),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-api-key=a%20b%3Dc,x-tenant=t1",
        ),
    ])
    .await;
    let request = seen.lock().unwrap().clone();
    assert!(request.starts_with("POST /v1/traces "), "{request}");
    assert!(request.contains("x-api-key: a b=c\r\n"), "{request}");
    assert!(request.contains("x-tenant: t1\r\n"), "{request}");
    pipeline.shutdown(Duration::from_secs(5)).await.ok();
}

/// An HTTP server that keeps the head of the last request and answers 503.
fn recording_http() -> (SocketAddr, Arc<std::sync::Mutex<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(String::new()));
    let kept = Arc::clone(&seen);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut content_length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    content_length = value.trim().parse().unwrap();
                }
                head.push_str(&line);
            }
            let mut body = vec![0; content_length];
            let _ = reader.read_exact(&mut body);
            *kept.lock().unwrap() = head;
            let _ =
                writer.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        }
    });
    (addr, seen)
}

/// The exporter quotes the endpoint it rejects; the error shows it masked.
#[tokio::test]
async fn an_exporter_error_masks_the_endpoint_userinfo() {
    // gRPC over https needs a TLS feature this build does not have.
    let err = TracingPipeline::builder()
        .with_vars([(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://user:hunter2@collector.invalid:4317",
        )])
        .build()
        .unwrap_err();
    let PipelineError::Exporter {
        endpoint_variable,
        endpoint,
        reason,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(*endpoint_variable, Some("OTEL_EXPORTER_OTLP_ENDPOINT"));
    assert_eq!(endpoint, "https://***@collector.invalid:4317");
    assert!(
        reason.contains("https://***@collector.invalid:4317"),
        "{reason}"
    );
    assert!(!format!("{err} {err:?}").contains("hunter2"), "{err:?}");
}

/// Every bad value fails the build, naming the variable; nothing is silently ignored.
#[tokio::test]
async fn bad_values_fail_the_build_naming_the_variable() {
    for (name, value) in [
        ("OTEL_BSP_SCHEDULE_DELAY", "0"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "0"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "0"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "0"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:70000"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4317"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "bad key=v"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
        ("OTEL_BSP_MAX_QUEUE_SIZE", "lots"),
    ] {
        let err = TracingPipeline::builder()
            .with_vars([(name, value)])
            .build()
            .unwrap_err();
        assert!(
            matches!(err, PipelineError::Env(_)),
            "{name}={value}: {err:?}"
        );
        assert!(err.to_string().starts_with(&format!("{name} = ")), "{err}");
    }
}

/// A span's memory is given back once its batch has been sent, whatever the backend
/// answered: the export holds nothing of it afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exported_span_is_freed_once_its_batch_is_sent() {
    use opentelemetry::trace::Span as _;
    use opentelemetry::{KeyValue, StringValue, Value};

    let pipeline = refused_grpc_pipeline();
    let provider = pipeline.tracer_provider().clone();
    let marker: Arc<str> = Arc::from("marker");
    let held = Arc::clone(&marker);
    let counts = tokio::task::spawn_blocking(move || {
        let tracer = provider.tracer("pipeline-test");
        let mut span = tracer.start("request");
        span.set_attribute(KeyValue::new(
            "marker",
            Value::String(StringValue::from(held)),
        ));
        span.end();
        drop(span);
        let queued = Arc::strong_count(&marker);
        // Encoded and sent (refused).
        let _ = provider.force_flush();
        (queued, Arc::strong_count(&marker))
    })
    .await
    .unwrap();
    assert_eq!(counts, (2, 1), "(while queued, after the export)");
    assert_eq!(pipeline.handle().snapshot().spans.failed, 1);
    pipeline.shutdown(Duration::from_secs(5)).await.ok();
}
