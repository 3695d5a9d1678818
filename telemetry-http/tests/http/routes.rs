//! The contract's endpoint behaviour, driven through actix's test service
//! with a real circuit-breaking exporter around a scripted backend.

use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use actix_web::http::{Method, StatusCode};
use actix_web::{App, test};
use breaker_otel::test_util::Step;
use breaker_otel::{BreakerHandle, CircuitState};
use telemetry_http::test_util::sample;
use telemetry_http::{ManualClock, TelemetryHttp, TelemetryHttpConfig};

use crate::support::{Breaker, Served, get_from, send, telemetry};

#[actix_web::test]
async fn health_telemetry_is_200_pass_while_the_circuit_is_closed() {
    let breaker = Breaker::new();
    breaker.export(4).await.unwrap();
    let telemetry = telemetry(breaker.handle());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;

    let reply = send(
        &app,
        get_from("/health/telemetry", "192.0.2.1").to_request(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let body = reply.json();
    assert_eq!(body["status"], "pass");
    assert_eq!(body["circuit_state"], "closed");
    assert_eq!(body["spans"]["exported"], 4);

    let live = send(&app, get_from("/health", "192.0.2.1").to_request()).await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.body, r#"{"status":"pass"}"#);
}

#[actix_web::test]
async fn health_telemetry_is_503_fail_while_open_and_liveness_stays_200() {
    let breaker = Breaker::new();
    let telemetry = telemetry(breaker.handle());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    breaker.open().await;

    let reply = send(
        &app,
        get_from("/health/telemetry", "192.0.2.1").to_request(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = reply.json();
    assert_eq!(body["status"], "fail");
    assert_eq!(body["circuit_state"], "open");
    assert_eq!(body["consecutive_failures"], 3);
    assert_eq!(body["spans"]["failed"], 6);
    // The scripted backend's errors are plain SDK errors: nothing more is known.
    assert_eq!(body["failed_batches"]["internal"], 3);
    assert_eq!(body["last_failure"]["cause"], "internal");
    assert!(
        body["output"].as_str().unwrap().contains("circuit open"),
        "{body}"
    );

    let live = send(&app, get_from("/health", "192.0.2.1").to_request()).await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.json()["status"], "pass");
}

#[actix_web::test]
async fn health_telemetry_is_503_while_a_probe_is_in_flight() {
    let breaker = Breaker::new();
    let telemetry = telemetry(breaker.handle());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    breaker.open().await;
    breaker.backend.hold();
    let probe = {
        let breaker = breaker.clone();
        actix_web::rt::spawn(async move { breaker.export(1).await })
    };
    wait_for_state(&breaker.handle(), CircuitState::HalfOpen).await;

    let reply = send(
        &app,
        get_from("/health/telemetry", "192.0.2.1").to_request(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["circuit_state"], "half_open");
    assert_eq!(reply.json()["status"], "fail");

    breaker.backend.set(Step::Succeed);
    breaker.backend.release();
    probe.await.unwrap().unwrap();
    let reply = send(
        &app,
        get_from("/health/telemetry", "192.0.2.1").to_request(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
}

/// Lets spawned tasks run until the breaker reaches `state`; bounded by a
/// number of scheduler turns, not by wall time.
async fn wait_for_state(handle: &BreakerHandle, state: CircuitState) {
    for _ in 0..10_000 {
        if handle.state() == state {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("breaker never reached {state}; it is {}", handle.state());
}

#[actix_web::test]
async fn health_responses_follow_the_health_check_draft() {
    let breaker = Breaker::new();
    let telemetry = telemetry(breaker.handle());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    let before = SystemTime::now() - Duration::from_secs(1);
    breaker.open().await;

    let reply = send(
        &app,
        get_from("/health/telemetry", "192.0.2.1").to_request(),
    )
    .await;
    assert_eq!(
        reply.header("content-type"),
        Some("application/health+json")
    );
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let body = reply.json();

    for field in ["timestamp", "since"] {
        let text = body[field].as_str().unwrap();
        assert!(text.ends_with('Z'), "{field} is not UTC: {text}");
        let parsed = humantime::parse_rfc3339(text).unwrap();
        assert!(parsed >= before, "{field} {text} is in the past");
        assert!(
            parsed <= SystemTime::now(),
            "{field} {text} is in the future"
        );
    }
    assert_eq!(body["consecutive_failures"], 3);
    for outcome in ["exported", "rejected", "dropped", "failed"] {
        assert!(body["spans"][outcome].is_u64(), "spans.{outcome} missing");
    }
    let last = humantime::parse_rfc3339(body["last_failure"]["time"].as_str().unwrap()).unwrap();
    assert!(last >= before && last <= SystemTime::now(), "{body}");

    let checks = body["checks"].as_object().unwrap();
    let state = &checks["span_exporter:circuit_state"][0];
    assert_eq!(state["observedValue"], "open");
    assert_eq!(state["status"], "fail");
    assert_eq!(state["componentType"], "component");
    assert_eq!(state["time"], body["timestamp"]);
    let spans: Vec<_> = checks["span_exporter:spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["componentId"].as_str().unwrap(),
                c["observedValue"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        spans,
        [
            ("exported", 0),
            ("rejected", 0),
            ("dropped", 0),
            ("failed", 6)
        ]
    );
    let last_failure = &checks["span_exporter:last_failure"][0];
    assert_eq!(last_failure["observedValue"], body["last_failure"]["cause"]);
    assert_eq!(last_failure["time"], body["last_failure"]["time"]);

    let live = send(&app, get_from("/health", "192.0.2.1").to_request()).await;
    assert_eq!(live.header("content-type"), Some("application/health+json"));
    assert_eq!(live.header("cache-control"), Some("no-store"));
}

#[actix_web::test]
async fn metrics_are_prometheus_text_with_every_series_from_the_first_scrape() {
    let telemetry = telemetry(BreakerHandle::disabled());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;

    let reply = send(&app, get_from("/metrics", "192.0.2.1").to_request()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.header("content-type"),
        Some(prometheus::Encoder::format_type(
            &prometheus::TextEncoder::new()
        ))
    );
    assert_eq!(
        reply.header("content-type"),
        Some("text/plain; version=0.0.4")
    );
    let text = &reply.body;
    assert!(text.contains("# TYPE circuit_state gauge\n"), "{text}");
    assert!(
        text.contains("# TYPE spans_processed_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE circuit_transitions_total counter\n"),
        "{text}"
    );
    assert_eq!(sample(text, "circuit_state"), Some(0.0));
    for outcome in ["exported", "dropped", "failed"] {
        let series = format!(r#"spans_processed_total{{outcome="{outcome}"}}"#);
        assert_eq!(sample(text, &series), Some(0.0), "{series}");
    }
    for (from, to) in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
        ("half_open", "open"),
        ("open", "closed"),
    ] {
        let series = format!(r#"circuit_transitions_total{{from="{from}",to="{to}"}}"#);
        assert_eq!(sample(text, &series), Some(0.0), "{series}");
    }
}

#[actix_web::test]
async fn metrics_follow_the_spans_the_breaker_counts() {
    let breaker = Breaker::new();
    let telemetry = telemetry(breaker.handle());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    breaker.export(5).await.unwrap();
    breaker.open().await;
    // Attempt 0 after opening is a probe; it fails too. Attempt 1 is dropped.
    assert!(breaker.export(1).await.is_err());
    assert!(breaker.export(7).await.is_err());

    let text = send(&app, get_from("/metrics", "192.0.2.1").to_request())
        .await
        .body;
    assert_eq!(
        sample(&text, r#"spans_processed_total{outcome="exported"}"#),
        Some(5.0)
    );
    assert_eq!(
        sample(&text, r#"spans_processed_total{outcome="failed"}"#),
        Some(7.0)
    );
    assert_eq!(
        sample(&text, r#"spans_processed_total{outcome="dropped"}"#),
        Some(7.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"circuit_transitions_total{from="closed",to="open"}"#
        ),
        Some(1.0)
    );
}

#[actix_web::test]
async fn metrics_allow_ten_requests_then_answer_429_with_retry_after() {
    let telemetry = telemetry(BreakerHandle::disabled());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;

    for n in 1..=10 {
        let reply = send(&app, get_from("/metrics", "192.0.2.1").to_request()).await;
        assert_eq!(reply.status, StatusCode::OK, "request {n}");
    }
    let limited = send(&app, get_from("/metrics", "192.0.2.1").to_request()).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert_eq!(retry_after, 6, "one request is earned back every 6 s");
    assert_eq!(limited.header("content-type"), Some("application/json"));
    let body = limited.json();
    assert_eq!(body["error"], "rate_limited");
    assert!(body["detail"].as_str().unwrap().contains("10"), "{body}");

    // Another client has its own budget; health is never limited.
    let other = send(&app, get_from("/metrics", "192.0.2.2").to_request()).await;
    assert_eq!(other.status, StatusCode::OK);
    for path in ["/health", "/health/telemetry"] {
        for _ in 0..20 {
            let reply = send(&app, get_from(path, "192.0.2.1").to_request()).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}");
        }
    }
}

#[actix_web::test]
async fn the_limiter_refills_one_request_every_six_seconds_of_fake_time() {
    let clock = ManualClock::new();
    let telemetry = TelemetryHttp::with_manual_clock(
        BreakerHandle::disabled(),
        TelemetryHttpConfig::default(),
        clock.clone(),
    )
    .unwrap();
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    let scrape = || send(&app, get_from("/metrics", "192.0.2.1").to_request());

    for _ in 0..10 {
        assert_eq!(scrape().await.status, StatusCode::OK);
    }
    assert_eq!(scrape().await.header("retry-after"), Some("6"));
    clock.advance(Duration::from_millis(500));
    assert_eq!(
        scrape().await.header("retry-after"),
        Some("6"),
        "5.5 s rounds up"
    );
    clock.advance(Duration::from_millis(5_400));
    let almost = scrape().await;
    assert_eq!(almost.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(almost.header("retry-after"), Some("1"), "0.1 s rounds up");
    clock.advance(Duration::from_millis(100));
    assert_eq!(scrape().await.status, StatusCode::OK);
    assert_eq!(scrape().await.status, StatusCode::TOO_MANY_REQUESTS);

    // Idle time earns the whole burst back, and no more.
    clock.advance(Duration::from_secs(120));
    for _ in 0..10 {
        assert_eq!(scrape().await.status, StatusCode::OK);
    }
    assert_eq!(scrape().await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[actix_web::test]
async fn the_limit_is_configurable() {
    let config = TelemetryHttpConfig {
        requests_per_minute: NonZeroU32::new(2).unwrap(),
        burst: NonZeroU32::new(3).unwrap(),
        ..TelemetryHttpConfig::default()
    };
    let telemetry =
        TelemetryHttp::with_manual_clock(BreakerHandle::disabled(), config, ManualClock::new())
            .unwrap();
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    for _ in 0..3 {
        let reply = send(&app, get_from("/metrics", "192.0.2.1").to_request()).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let limited = send(&app, get_from("/metrics", "192.0.2.1").to_request()).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), Some("30"));
}

#[actix_web::test]
async fn requests_without_a_peer_address_share_one_budget_and_never_get_500() {
    let telemetry = telemetry(BreakerHandle::disabled());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    for _ in 0..10 {
        let reply = send(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let reply = send(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let health = send(&app, test::TestRequest::get().uri("/health").to_request()).await;
    assert_eq!(health.status, StatusCode::OK);
}

#[actix_web::test]
async fn the_circuit_state_gauge_follows_the_breaker() {
    let breaker = Breaker::new();
    let telemetry = TelemetryHttp::with_manual_clock(
        breaker.handle(),
        TelemetryHttpConfig {
            requests_per_minute: NonZeroU32::new(60_000).unwrap(),
            burst: NonZeroU32::new(100).unwrap(),
            ..TelemetryHttpConfig::default()
        },
        ManualClock::new(),
    )
    .unwrap();
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    let gauge = || async {
        let text = send(&app, get_from("/metrics", "192.0.2.1").to_request())
            .await
            .body;
        sample(&text, "circuit_state")
    };

    assert_eq!(gauge().await, Some(0.0), "closed");
    breaker.open().await;
    assert_eq!(gauge().await, Some(2.0), "open");

    breaker.backend.set(Step::Succeed);
    breaker.backend.hold();
    let probe = {
        let breaker = breaker.clone();
        actix_web::rt::spawn(async move { breaker.export(1).await })
    };
    wait_for_state(&breaker.handle(), CircuitState::HalfOpen).await;
    assert_eq!(
        gauge().await,
        Some(1.0),
        "half-open while the probe is in flight"
    );

    breaker.backend.release();
    probe.await.unwrap().unwrap();
    assert_eq!(gauge().await, Some(0.0), "closed after the probe succeeded");

    let text = send(&app, get_from("/metrics", "192.0.2.1").to_request())
        .await
        .body;
    for (from, to) in [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ] {
        let series = format!(r#"circuit_transitions_total{{from="{from}",to="{to}"}}"#);
        assert_eq!(sample(&text, &series), Some(1.0), "{series}");
    }
}

#[actix_web::test]
async fn other_methods_on_the_routes_are_not_served() {
    let telemetry = telemetry(BreakerHandle::disabled());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    for path in TelemetryHttp::ROUTES {
        let req = test::TestRequest::post()
            .uri(path)
            .peer_addr(crate::support::peer("192.0.2.1"));
        let reply = send(&app, req.to_request()).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{path}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"), "{path}");
    }
}

#[actix_web::test]
async fn head_answers_every_route_like_get_with_no_body_on_the_wire() {
    let breaker = Breaker::new();
    breaker.open().await;
    let server = Served::start(telemetry(breaker.handle()));
    for path in TelemetryHttp::ROUTES {
        let get = server.exchange("GET", path).await;
        let head = server.exchange("HEAD", path).await;
        assert_eq!(head.status_line, get.status_line, "{path}");
        assert!(!get.body.is_empty(), "{path}: GET has a body");
        assert!(
            head.body.is_empty(),
            "{path}: HEAD sent {:?}",
            String::from_utf8_lossy(&head.body)
        );
        // Content-Length included: it is the size a GET would have sent.
        assert_eq!(head.stable_headers(), get.stable_headers(), "{path}");
        assert!(head.header("content-length").is_some(), "{path}");
    }
    let head = server.exchange("HEAD", "/health").await;
    assert_eq!(head.status_line, "HTTP/1.1 200 OK");
    assert_eq!(head.header("content-type"), Some("application/health+json"));
    let head = server.exchange("HEAD", "/health/telemetry").await;
    assert_eq!(head.status_line, "HTTP/1.1 503 Service Unavailable");
    server.stop().await;
}

#[actix_web::test]
async fn head_on_metrics_spends_the_same_rate_budget_as_get() {
    let telemetry = telemetry(BreakerHandle::disabled());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    let head = || {
        test::TestRequest::default()
            .method(Method::HEAD)
            .uri("/metrics")
            .peer_addr(crate::support::peer("192.0.2.1"))
            .to_request()
    };
    for n in 0..5 {
        assert_eq!(send(&app, head()).await.status, StatusCode::OK, "HEAD {n}");
        let get = send(&app, get_from("/metrics", "192.0.2.1").to_request()).await;
        assert_eq!(get.status, StatusCode::OK, "GET {n}");
    }
    let limited = send(&app, head()).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), Some("6"));
    let limited = send(&app, get_from("/metrics", "192.0.2.1").to_request()).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
}
