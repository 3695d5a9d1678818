//! Snapshots of what operators and scrapers see: the health JSON (times
//! redacted) and the full `/metrics` text of a fresh instance. CI runs with
//! `INSTA_UPDATE=no`; review changes with `cargo insta review`.

use actix_web::{App, test};
use breaker_otel::BreakerHandle;
use telemetry_http::{ManualClock, TelemetryHttp, TelemetryHttpConfig};

use crate::support::{Backend, Breaker, get_from, send, telemetry};

/// With the host's `service.instance.id` and a backend breaker, which the
/// open snapshot below is without.
#[actix_web::test]
async fn health_telemetry_json_while_closed() {
    let breaker = Breaker::new();
    breaker.export(3).await.unwrap();
    let backend = Backend::new();
    backend.log(2).await.unwrap();
    backend.metrics(5).await.unwrap();
    let config = TelemetryHttpConfig {
        service_instance_id: Some("replica-7".to_owned()),
        ..TelemetryHttpConfig::default()
    };
    let telemetry = TelemetryHttp::with_manual_clock(breaker.handle(), config, ManualClock::new())
        .unwrap()
        .with_backends([backend.handle()]);
    assert_eq!(telemetry.service_instance_id(), Some("replica-7"));
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    let reply = send(
        &app,
        get_from("/health/telemetry", "192.0.2.1").to_request(),
    )
    .await;
    insta::assert_json_snapshot!(reply.json(), {
        ".timestamp" => "[timestamp]",
        ".since" => "[since]",
        ".checks.*[].time" => "[timestamp]",
        ".backends[].since" => "[since]",
    });
}

#[actix_web::test]
async fn health_telemetry_json_while_open() {
    let breaker = Breaker::new();
    breaker.export(4).await.unwrap();
    breaker.open().await;
    // The first attempt after opening probes and fails; the next is dropped.
    assert!(breaker.export(1).await.is_err());
    assert!(breaker.export(5).await.is_err());
    let telemetry = telemetry(breaker.handle());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    let reply = send(
        &app,
        get_from("/health/telemetry", "192.0.2.1").to_request(),
    )
    .await;
    // `output` repeats `since` and the last failure's time, so those parts
    // are redacted too (the failure first: both may be the same second).
    let mut body = reply.json();
    let since = body["since"].as_str().unwrap().to_owned();
    let failed_at = body["last_failure"]["time"].as_str().unwrap().to_owned();
    let output = body["output"]
        .as_str()
        .unwrap()
        .replace(
            &format!("last failure {failed_at}"),
            "last failure [failed_at]",
        )
        .replace(&since, "[since]");
    body["output"] = output.into();
    insta::assert_json_snapshot!(body, {
        ".timestamp" => "[timestamp]",
        ".since" => "[since]",
        ".last_failure.time" => "[failed_at]",
        ".checks.*[].time" => "[timestamp]",
    });
}

#[actix_web::test]
async fn liveness_json() {
    let telemetry = telemetry(BreakerHandle::disabled());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    let reply = send(&app, get_from("/health", "192.0.2.1").to_request()).await;
    insta::assert_snapshot!(reply.body, @r#"{"status":"pass"}"#);
}

/// The whole exposition of a fresh instance whose host registered one route
/// of its own (the telemetry routes register themselves), before any request
/// but this scrape.
#[actix_web::test]
async fn metrics_text_of_a_fresh_registry() {
    let telemetry = telemetry(BreakerHandle::disabled());
    let http_metrics = telemetry.http_metrics();
    http_metrics.register_route("GET", "/tasks/{id}");
    let app = test::init_service(
        App::new()
            .wrap(http_metrics.clone())
            .configure(|cfg| telemetry.configure(cfg)),
    )
    .await;
    let reply = send(&app, get_from("/metrics", "192.0.2.1").to_request()).await;
    insta::assert_snapshot!(reply.body);
}

/// `otel.component.name`'s instance counter is the process's, so it depends
/// on which tests ran first: `otlp_grpc_log_exporter/[n]`.
fn without_instance_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("_exporter/") {
        let (head, tail) = rest.split_at(at + "_exporter/".len());
        out.push_str(head);
        let digits = tail.len() - tail.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        out.push_str(if digits > 0 { "[n]" } else { "" });
        rest = &tail[digits..];
    }
    out.push_str(rest);
    out
}

/// The series a backend breaker (every signal over gRPC) adds to a fresh
/// instance's exposition, before any export: only additions, the seed's
/// series are the snapshot above's.
#[actix_web::test]
async fn metrics_text_of_a_fresh_backend() {
    let backend = Backend::new();
    let _spans = backend
        .breaker
        .reporting_span_exporter(breaker_otel::test_util::ScriptedExporter::default());
    let telemetry = telemetry(BreakerHandle::disabled()).with_backends([backend.handle()]);
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    let reply = send(&app, get_from("/metrics", "192.0.2.1").to_request()).await;
    let added: String = reply
        .body
        .lines()
        .filter(|line| line.contains("backend_circuit") || line.contains("otel_sdk_exporter"))
        .map(|line| format!("{line}\n"))
        .collect();
    insta::assert_snapshot!(without_instance_numbers(&added));
}
