//! The HTTP server metrics middleware: bounded labels, pre-registered
//! series, and one registry per instance.

use std::num::NonZeroU32;

use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpResponse, error, test, web};
use breaker_otel::BreakerHandle;
use telemetry_http::test_util::sample;
use telemetry_http::{ManualClock, TelemetryHttp, TelemetryHttpConfig};

use crate::support::{get_from, send};

fn telemetry() -> TelemetryHttp {
    TelemetryHttp::with_manual_clock(
        BreakerHandle::disabled(),
        TelemetryHttpConfig {
            requests_per_minute: NonZeroU32::new(60_000).unwrap(),
            burst: NonZeroU32::new(1_000).unwrap(),
            ..TelemetryHttpConfig::default()
        },
        ManualClock::new(),
    )
    .unwrap()
}

async fn failing() -> Result<HttpResponse, error::Error> {
    Err(error::ErrorInternalServerError("storage is gone"))
}

fn requests(method: &str, route: &str, class: &str) -> String {
    format!(
        r#"http_server_requests_total{{method="{method}",route="{route}",status_class="{class}"}}"#
    )
}

fn durations(method: &str, route: &str) -> String {
    format!(r#"http_server_request_duration_seconds_count{{method="{method}",route="{route}"}}"#)
}

#[actix_web::test]
async fn registered_routes_have_every_series_at_zero_before_any_request() {
    let telemetry = telemetry();
    let metrics = telemetry.http_metrics();
    metrics.register_route("get", "/tasks/{id}");
    let app = test::init_service(
        App::new()
            .wrap(metrics.clone())
            .configure(|cfg| telemetry.configure(cfg)),
    )
    .await;

    let text = send(&app, get_from("/metrics", "192.0.2.1").to_request())
        .await
        .body;
    for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
        assert_eq!(
            sample(&text, &requests("GET", "/tasks/{id}", class)),
            Some(0.0),
            "{class}"
        );
    }
    assert_eq!(sample(&text, &durations("GET", "/tasks/{id}")), Some(0.0));
    let inf_bucket = r#"http_server_request_duration_seconds_bucket{method="GET",route="/tasks/{id}",le="+Inf"}"#;
    assert_eq!(sample(&text, inf_bucket), Some(0.0));
}

#[actix_web::test]
async fn the_telemetry_routes_have_their_series_before_the_host_registers_anything() {
    let telemetry = telemetry();
    let app = test::init_service(
        App::new()
            .wrap(telemetry.http_metrics())
            .configure(|cfg| telemetry.configure(cfg)),
    )
    .await;

    let text = send(&app, get_from("/metrics", "192.0.2.1").to_request())
        .await
        .body;
    for route in TelemetryHttp::ROUTES {
        for class in ["1xx", "2xx", "3xx", "4xx", "5xx"] {
            // This scrape is counted once answered, after its text was rendered.
            assert_eq!(
                sample(&text, &requests("GET", route, class)),
                Some(0.0),
                "{route} {class}"
            );
        }
        assert_eq!(
            sample(&text, &durations("GET", route)),
            Some(0.0),
            "{route}"
        );
    }
}

#[actix_web::test]
async fn requests_are_counted_by_method_route_pattern_and_status_class() {
    let telemetry = telemetry();
    let app = test::init_service(
        App::new()
            .wrap(telemetry.http_metrics())
            .configure(|cfg| telemetry.configure(cfg))
            .route("/tasks/{id}", web::get().to(HttpResponse::Ok))
            .route("/tasks/{id}", web::delete().to(HttpResponse::NoContent))
            .route("/broken", web::get().to(failing)),
    )
    .await;

    for id in ["1", "2", "three"] {
        let path = format!("/tasks/{id}");
        send(&app, get_from(&path, "192.0.2.1").to_request()).await;
    }
    let delete = test::TestRequest::delete().uri("/tasks/9").to_request();
    assert_eq!(send(&app, delete).await.status, StatusCode::NO_CONTENT);
    let broken = send(&app, get_from("/broken", "192.0.2.1").to_request()).await;
    assert_eq!(broken.status, StatusCode::INTERNAL_SERVER_ERROR);
    for path in ["/nope", "/tasks", "/a/b/c?x=1"] {
        let missing = send(&app, get_from(path, "192.0.2.1").to_request()).await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
    }
    let odd_method = test::TestRequest::default()
        .method(Method::from_bytes(b"PROPFIND").unwrap())
        .uri("/tasks/1")
        .to_request();
    send(&app, odd_method).await;

    let text = send(&app, get_from("/metrics", "192.0.2.1").to_request())
        .await
        .body;
    assert_eq!(
        sample(&text, &requests("GET", "/tasks/{id}", "2xx")),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, &requests("DELETE", "/tasks/{id}", "2xx")),
        Some(1.0)
    );
    assert_eq!(sample(&text, &requests("GET", "/broken", "5xx")), Some(1.0));
    assert_eq!(
        sample(&text, &requests("GET", "unmatched", "4xx")),
        Some(3.0)
    );
    assert_eq!(
        sample(&text, &requests("_OTHER", "/tasks/{id}", "4xx")),
        Some(1.0),
        "an unknown method is _OTHER; the resource answers 405"
    );
    assert_eq!(sample(&text, &durations("GET", "/tasks/{id}")), Some(3.0));
    assert_eq!(sample(&text, &durations("GET", "unmatched")), Some(3.0));
    assert!(!text.contains("three"), "no raw path in any label");
    assert!(!text.contains("PROPFIND"), "no raw method in any label");

    // The scrape above is counted once it has been answered.
    let text = send(&app, get_from("/metrics", "192.0.2.1").to_request())
        .await
        .body;
    assert_eq!(
        sample(&text, &requests("GET", "/metrics", "2xx")),
        Some(1.0)
    );
}

#[actix_web::test]
async fn each_instance_has_its_own_registry() {
    let first = telemetry();
    let second = telemetry();
    first.http_metrics().register_route("GET", "/only-first");
    let app = test::init_service(
        App::new()
            .wrap(second.http_metrics())
            .configure(|cfg| second.configure(cfg)),
    )
    .await;
    send(&app, get_from("/health", "192.0.2.1").to_request()).await;

    let text = send(&app, get_from("/metrics", "192.0.2.1").to_request())
        .await
        .body;
    assert!(!text.contains("/only-first"), "{text}");
    assert_eq!(sample(&text, &requests("GET", "/health", "2xx")), Some(1.0));
    let first_text = first.registry().gather();
    let first_requests = first_text
        .iter()
        .find(|family| family.name() == "http_server_requests_total")
        .unwrap();
    assert_eq!(
        first_requests.get_metric().len(),
        5 * (1 + TelemetryHttp::ROUTES.len()),
        "only /only-first's series and the telemetry routes' own"
    );
}
