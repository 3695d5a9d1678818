//! `promtool check metrics` on the `/metrics` output after some traffic:
//! the contract requires no findings.
//!
//! promtool comes from Debian's `prometheus` package. Where it is missing
//! the test says so and passes without checking, unless
//! `TASKMAN_REQUIRE_PROMTOOL=1` (as `cargo xtask ci` sets), where it fails.
//! `PROMTOOL` may name the binary.

use std::io::{ErrorKind, Write};
use std::process::{Command, Stdio};

use actix_web::http::StatusCode;
use actix_web::{App, HttpResponse, test, web};
use telemetry_http::{ManualClock, TelemetryHttp, TelemetryHttpConfig};

use breaker_otel::test_util::Step;

use crate::support::{Backend, Breaker, get_from, send};

const INSTALL_HINT: &str = "promtool not found: install Debian's prometheus package \
     (apt-get install --no-install-recommends prometheus) or set PROMTOOL to its path";

#[actix_web::test]
async fn metrics_output_passes_promtool_check_metrics() {
    let breaker = Breaker::new();
    let backend = Backend::new();
    let telemetry = TelemetryHttp::with_manual_clock(
        breaker.handle(),
        TelemetryHttpConfig::default(),
        ManualClock::new(),
    )
    .unwrap()
    .with_backends([backend.handle()]);
    let http_metrics = telemetry.http_metrics();
    http_metrics.register_route("GET", "/tasks/{id}");
    http_metrics.register_route("POST", "/tasks");
    let app = test::init_service(
        App::new()
            .wrap(http_metrics.clone())
            .configure(|cfg| telemetry.configure(cfg))
            .route("/tasks/{id}", web::get().to(HttpResponse::Ok))
            .route("/tasks", web::post().to(HttpResponse::Created)),
    )
    .await;

    // Traffic of every kind: served, missing, limited; spans of every outcome.
    breaker.export(3).await.unwrap();
    breaker.open().await;
    assert!(breaker.export(1).await.is_err());
    assert!(breaker.export(2).await.is_err());
    // Log records and data points of every error type's kind, and timed exports.
    backend.log(2).await.unwrap();
    backend.logs_backend.set(Step::PartialSuccess(1));
    backend.log(2).await.unwrap();
    backend.metrics(3).await.unwrap();
    backend.open().await;
    assert!(backend.log(1).await.is_err());
    assert!(backend.metrics(1).await.is_err());
    send(&app, get_from("/tasks/1", "192.0.2.1").to_request()).await;
    send(&app, get_from("/nowhere", "192.0.2.1").to_request()).await;
    send(
        &app,
        get_from("/health/telemetry", "192.0.2.1").to_request(),
    )
    .await;
    for _ in 0..11 {
        send(&app, get_from("/metrics", "192.0.2.1").to_request()).await;
    }
    let reply = send(&app, get_from("/metrics", "192.0.2.2").to_request()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.body.contains(r#"status_class="4xx""#),
        "traffic was recorded"
    );

    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            assert!(
                std::env::var("TASKMAN_REQUIRE_PROMTOOL").as_deref() != Ok("1"),
                "{INSTALL_HINT}"
            );
            eprintln!("NOT CHECKED: {INSTALL_HINT}");
            return;
        }
        Err(err) => panic!("could not run {promtool}: {err}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(reply.body.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && findings.trim().is_empty(),
        "promtool check metrics ({}) found:\n{findings}\non:\n{}",
        output.status,
        reply.body
    );
}
