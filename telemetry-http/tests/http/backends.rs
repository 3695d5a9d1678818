//! Backend breakers given with `with_backends`: `/metrics` shows each one's
//! state by endpoint and signals and the semantic conventions' exporter
//! series of each signal; `/health/telemetry` lists them in `backends`. The
//! span path's handle still alone decides the seed's series and the status.

use actix_web::http::StatusCode;
use actix_web::{App, test};
use breaker_otel::test_util::Step;
use breaker_otel::{BreakerHandle, Signal};
use telemetry_http::TelemetryHttp;
use telemetry_http::test_util::{families, sample};

use crate::support::{Backend, Breaker, COLLECTOR, get_from, send, telemetry};

/// `/metrics` of `telemetry`, scraped once.
async fn scrape(telemetry: &TelemetryHttp) -> String {
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    let reply = send(&app, get_from("/metrics", "192.0.2.1").to_request()).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.body
}

const BREAKER: &str = r#"endpoint="http://collector:4317",signals="logs,metrics""#;

#[actix_web::test]
async fn an_open_backend_is_shown_by_endpoint_and_signals_and_the_seed_series_stay_the_span_paths()
{
    let spans = Breaker::new();
    spans.export(2).await.unwrap();
    let backend = Backend::new();
    backend.open().await;
    // The first attempt after opening probes and fails; the next is dropped.
    assert!(backend.log(1).await.is_err());
    assert!(
        backend.metrics(4).await.is_err(),
        "dropped: the circuit is shared"
    );
    let text = scrape(&telemetry(spans.handle()).with_backends([backend.handle()])).await;

    assert_eq!(
        sample(&text, &format!("backend_circuit_state{{{BREAKER}}}")),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"backend_circuit_transitions_total{endpoint="http://collector:4317",from="closed",signals="logs,metrics",to="open"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "circuit_state"),
        Some(0.0),
        "the span path is closed"
    );
    assert_eq!(
        sample(&text, r#"spans_processed_total{outcome="exported"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, r#"spans_processed_total{outcome="dropped"}"#),
        Some(0.0),
        "the backend's drops are not the span path's"
    );
}

#[actix_web::test]
async fn exporter_series_count_each_signals_items_by_error_type() {
    let backend = Backend::new();
    backend.log(2).await.unwrap();
    backend.logs_backend.set(Step::PartialSuccess(1));
    backend.log(3).await.unwrap();
    backend.logs_backend.set(Step::Unauthenticated);
    assert!(backend.log(4).await.is_err());
    backend.metrics(5).await.unwrap();
    backend.open().await;
    assert!(backend.log(1).await.is_err(), "the probe fails");
    assert!(backend.metrics(6).await.is_err(), "dropped");
    let text =
        scrape(&telemetry(BreakerHandle::disabled()).with_backends([backend.handle()])).await;

    let logs = |error_type| {
        let series = format!(
            "otel_sdk_exporter_log_exported_total{}",
            backend.exporter_labels(Signal::Logs, error_type)
        );
        sample(&text, &series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(logs(None), 2.0 + 2.0);
    assert_eq!(logs(Some("rejected")), 1.0);
    assert_eq!(logs(Some("unauthenticated")), 4.0);
    assert_eq!(
        logs(Some("internal")),
        7.0,
        "the three failures that opened it, and the probe"
    );
    assert_eq!(
        logs(Some("circuit_open")),
        0.0,
        "every error type from the start"
    );
    let metrics = |error_type| {
        sample(
            &text,
            &format!(
                "otel_sdk_exporter_metric_data_point_exported_total{}",
                backend.exporter_labels(Signal::Metrics, error_type)
            ),
        )
    };
    assert_eq!(metrics(None), Some(5.0));
    assert_eq!(metrics(Some("circuit_open")), Some(6.0));
    assert_eq!(
        sample(
            &text,
            &format!(
                "otel_sdk_exporter_log_inflight{}",
                backend.exporter_labels(Signal::Logs, None)
            )
        ),
        Some(0.0)
    );
    assert!(
        !text.contains("otel_sdk_exporter_span_exported_total"),
        "traces are not served"
    );

    // One duration observation per export sent: a full success of logs (and
    // one of metrics), a partial success, five failures; the dropped export
    // is not timed.
    let count = |signal, error_type| {
        let labels = backend.exporter_labels(signal, error_type);
        sample(
            &text,
            &format!("otel_sdk_exporter_operation_duration_seconds_count{labels}"),
        )
    };
    assert_eq!(count(Signal::Logs, None), Some(1.0));
    assert_eq!(count(Signal::Logs, Some("rejected")), Some(1.0));
    assert_eq!(count(Signal::Logs, Some("unauthenticated")), Some(1.0));
    assert_eq!(count(Signal::Logs, Some("internal")), Some(4.0));
    assert_eq!(count(Signal::Metrics, None), Some(1.0));
    assert_eq!(
        count(Signal::Logs, Some("timeout")),
        None,
        "an error type is shown once it happened"
    );
    let labels = backend.exporter_labels(Signal::Logs, None);
    let inner = labels.trim_start_matches('{').trim_end_matches('}');
    assert_eq!(
        sample(
            &text,
            &format!(r#"otel_sdk_exporter_operation_duration_seconds_bucket{{{inner},le="+Inf"}}"#)
        ),
        Some(1.0)
    );
    let kinds = families(&text);
    for (name, kind) in [
        ("otel_sdk_exporter_log_exported_total", "counter"),
        ("otel_sdk_exporter_log_inflight", "gauge"),
        ("otel_sdk_exporter_operation_duration_seconds", "histogram"),
        ("backend_circuit_state", "gauge"),
    ] {
        assert!(
            kinds.contains(&(name.to_owned(), kind.to_owned())),
            "{name} {kind} in {kinds:?}"
        );
    }
}

#[actix_web::test]
async fn without_backends_no_backend_series_is_shown() {
    let text = scrape(&telemetry(BreakerHandle::disabled())).await;
    assert!(!text.contains("backend_circuit"), "{text}");
    assert!(!text.contains("otel_sdk_exporter"), "{text}");
}

#[actix_web::test]
async fn health_lists_each_backend_and_its_status_stays_the_span_paths() {
    let spans = Breaker::new();
    let backend = Backend::new();
    backend.metrics(3).await.unwrap();
    backend.open().await;
    let telemetry = telemetry(spans.handle()).with_backends([backend.handle()]);
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    let reply = send(
        &app,
        get_from("/health/telemetry", "192.0.2.1").to_request(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "the span path is closed");
    let body = reply.json();
    assert_eq!(body["circuit_state"], "closed");
    let backends = body["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 1);
    let one = &backends[0];
    assert_eq!(one["endpoint"], COLLECTOR);
    assert_eq!(one["signals"], serde_json::json!(["logs", "metrics"]));
    assert_eq!(one["state"], "open");
    assert_eq!(one["last_failure"]["cause"], "internal");
    assert_eq!(
        one["counts"]["logs"],
        serde_json::json!({"exported": 0, "rejected": 0, "dropped": 0, "failed": 6, "inflight": 0})
    );
    assert_eq!(one["counts"]["metrics"]["exported"], 3);

    spans.open().await;
    let reply = send(
        &app,
        get_from("/health/telemetry", "192.0.2.1").to_request(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
}
