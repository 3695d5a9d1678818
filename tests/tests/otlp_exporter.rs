//! `breaker_otel::OtlpSpanExporter::send` against the real test receiver, over gRPC and
//! OTLP/HTTP: for each way a backend answers, the report says what the backend said
//! (cause, whether the specification lets the batch be retried, the requested delay,
//! rejected spans), and the spans that were accepted arrived under our resource.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime};

use breaker_otel::test_util::spans;
use breaker_otel::{
    ExportFailure, ExportReport, FailureCause, OtlpExporterConfig, OtlpSpanExporter,
    Protocol as ExporterProtocol,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SpanExporter as _;
use tests::receiver::{Mode, Protocol, Receiver};

/// Generous: only reached when something is broken.
const WAIT: Duration = Duration::from_secs(10);
const SERVICE: &str = "otlp-exporter-test";

async fn receiver(protocol: Protocol) -> Receiver {
    match protocol {
        Protocol::Grpc => Receiver::start().await.unwrap(),
        Protocol::Http => Receiver::start_http().await.unwrap(),
    }
}

fn exporter(
    receiver: &Receiver,
    configure: impl FnOnce(OtlpExporterConfig) -> OtlpExporterConfig,
) -> OtlpSpanExporter {
    let protocol = match receiver.protocol() {
        Protocol::Grpc => ExporterProtocol::Grpc,
        Protocol::Http => ExporterProtocol::HttpProtobuf,
    };
    let config = configure(OtlpExporterConfig::new(protocol, receiver.endpoint()).timeout(WAIT));
    let mut exporter = OtlpSpanExporter::new(config).unwrap();
    exporter.set_resource(&Resource::builder().with_service_name(SERVICE).build());
    exporter
}

fn failed(report: ExportReport) -> ExportFailure {
    match report {
        ExportReport::Failed(failure) => failure,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// What one mode must come to: (cause, retryable, retry_after) over gRPC and over HTTP.
type Expected = (FailureCause, bool, Option<Duration>);

fn failure_table() -> Vec<(Mode, Expected, Expected)> {
    use FailureCause::*;
    let secs = Duration::from_secs;
    vec![
        (
            Mode::Unavailable,
            (Unavailable, true, None),
            (Unavailable, true, None),
        ),
        (
            Mode::UnavailableRetryAfter(secs(3)),
            (Unavailable, true, Some(secs(3))),
            (Unavailable, true, Some(secs(3))),
        ),
        // Without RetryInfo the gRPC backend cannot recover (the specification); HTTP
        // 429 is retryable whatever its headers.
        (
            Mode::ResourceExhausted,
            (Throttled, false, None),
            (Throttled, true, None),
        ),
        (
            Mode::Throttled {
                retry_after: secs(2),
            },
            (Throttled, true, Some(secs(2))),
            (Throttled, true, Some(secs(2))),
        ),
        (
            Mode::Unauthenticated,
            (Unauthenticated, false, None),
            (Unauthenticated, false, None),
        ),
        (
            Mode::PermissionDenied,
            (PermissionDenied, false, None),
            (PermissionDenied, false, None),
        ),
        (
            Mode::InvalidArgument,
            (Invalid, false, None),
            (Invalid, false, None),
        ),
        // gRPC servers answer an oversized message RESOURCE_EXHAUSTED without RetryInfo.
        (
            Mode::TooLarge,
            (Throttled, false, None),
            (TooLarge, false, None),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_is_reported_as_the_backend_said_it() {
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let receiver = receiver(protocol).await;
        let exporter = exporter(&receiver, |c| c);
        for (mode, grpc, http) in failure_table() {
            receiver.set_mode(mode).await.unwrap();
            let (cause, retryable, retry_after) = match protocol {
                Protocol::Grpc => grpc,
                Protocol::Http => http,
            };
            let failure = failed(exporter.send(spans(2)).await);
            assert_eq!(failure.cause, cause, "{protocol} {mode}: {failure:?}");
            assert_eq!(
                failure.retryable, retryable,
                "{protocol} {mode}: {failure:?}"
            );
            assert_eq!(
                failure.retry_after, retry_after,
                "{protocol} {mode}: {failure:?}"
            );
            assert!(!failure.message.is_empty(), "{protocol} {mode}");
        }
        assert_eq!(
            receiver.snapshot().spans,
            0,
            "{protocol}: nothing was accepted"
        );
        receiver.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_and_partially_accepted_batches_report_the_rejected_count() {
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let receiver = receiver(protocol).await;
        let exporter = exporter(&receiver, |c| c);
        assert_eq!(
            exporter.send(spans(5)).await,
            ExportReport::Exported {
                rejected: 0,
                message: None
            },
            "{protocol}"
        );
        receiver
            .set_mode(Mode::PartialSuccess { rejected: 2 })
            .await
            .unwrap();
        let ExportReport::Exported { rejected, message } = exporter.send(spans(5)).await else {
            panic!("{protocol}: a partial success is a success");
        };
        assert_eq!(rejected, 2, "{protocol}");
        assert!(message.is_some_and(|m| !m.is_empty()), "{protocol}");

        let snapshot = receiver.snapshot();
        assert_eq!(snapshot.spans, 5 + 3, "{protocol}");
        assert_eq!(snapshot.rejected_spans, 2, "{protocol}");
        // set_resource reached the request: the spans carry our service name.
        assert_eq!(snapshot.spans_from(SERVICE), 8, "{protocol}");
        receiver.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_throttle_gives_the_time_left_and_zero_once_past() {
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let receiver = receiver(protocol).await;
        let exporter = exporter(&receiver, |c| c);
        receiver
            .set_mode(Mode::ThrottledUntil(
                SystemTime::now() + Duration::from_secs(120),
            ))
            .await
            .unwrap();
        let failure = failed(exporter.send(spans(1)).await);
        assert_eq!(failure.cause, FailureCause::Throttled, "{protocol}");
        assert!(failure.retryable, "{protocol}");
        // An HTTP-date has whole seconds, and the request takes a moment: the delay is
        // "about two minutes", never more than asked.
        let left = failure.retry_after.unwrap();
        assert!(
            left > Duration::from_secs(60) && left <= Duration::from_secs(120),
            "{protocol}: {left:?}"
        );

        receiver
            .set_mode(Mode::ThrottledUntil(
                SystemTime::now() - Duration::from_secs(60),
            ))
            .await
            .unwrap();
        let failure = failed(exporter.send(spans(1)).await);
        assert_eq!(failure.retry_after, Some(Duration::ZERO), "{protocol}");
        receiver.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_backend_is_unavailable_and_a_hanging_one_times_out() {
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let receiver = receiver(protocol).await;
        receiver.set_mode(Mode::Stopped).await.unwrap();
        let exporter = exporter(&receiver, |c| c);
        let failure = failed(exporter.send(spans(1)).await);
        assert_eq!(
            failure.cause,
            FailureCause::Unavailable,
            "{protocol}: {failure:?}"
        );
        assert!(failure.retryable, "{protocol}");

        receiver.set_mode(Mode::Hang).await.unwrap();
        let timeout = Duration::from_millis(300);
        let exporter = self::exporter(&receiver, |c| c.timeout(timeout));
        let failure = failed(exporter.send(spans(1)).await);
        assert_eq!(
            failure.cause,
            FailureCause::Timeout,
            "{protocol}: {failure:?}"
        );
        assert!(failure.retryable, "{protocol}");
        receiver.stop().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_reach_the_http_receiver_whole() {
    let receiver = receiver(Protocol::Http).await;
    let exporter = exporter(&receiver, |c| c.gzip(true));
    assert_eq!(
        exporter.send(spans(4)).await,
        ExportReport::Exported {
            rejected: 0,
            message: None
        }
    );
    receiver.wait_for_spans(4, WAIT).await.unwrap();
    assert_eq!(receiver.snapshot().spans_from(SERVICE), 4);
    receiver.stop().await.unwrap();
}

/// As a plain SDK exporter behind the SDK's own batch processor (which exports from its
/// own thread, outside any runtime), spans still arrive, under the provider's resource.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_plain_sdk_exporter_spans_arrive_from_the_batch_thread() {
    use opentelemetry::trace::{Tracer as _, TracerProvider as _};
    use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};

    for protocol in [Protocol::Grpc, Protocol::Http] {
        let receiver = receiver(protocol).await;
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter(&receiver, |c| c)).build())
            .with_resource(Resource::builder().with_service_name("plain-sdk").build())
            .build();
        let flushed = tokio::task::spawn_blocking(move || {
            let tracer = provider.tracer("otlp-exporter-test");
            for _ in 0..3 {
                tracer.in_span("plain", |_| {});
            }
            let flushed = provider.force_flush();
            let _ = provider.shutdown();
            flushed
        })
        .await
        .unwrap();
        assert!(flushed.is_ok(), "{protocol}: {flushed:?}");
        receiver.wait_for_spans(3, WAIT).await.unwrap();
        assert_eq!(receiver.snapshot().spans_from("plain-sdk"), 3, "{protocol}");
        receiver.stop().await.unwrap();
    }
}
