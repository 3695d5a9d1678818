//! Who the `/metrics` limit counts: a client cannot escape it by writing
//! `X-Forwarded-For`, a trusted proxy's clients are limited one by one, and
//! the limiter forgets idle clients so its memory stays bounded.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{App, test};
use breaker_otel::BreakerHandle;
use telemetry_http::{ManualClock, TelemetryHttp, TelemetryHttpConfig};

use crate::support::{get_from, metrics_via, send};

fn behind_proxies(clock: &ManualClock) -> TelemetryHttp {
    TelemetryHttp::with_manual_clock(
        BreakerHandle::disabled(),
        TelemetryHttpConfig {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            ..TelemetryHttpConfig::default()
        },
        clock.clone(),
    )
    .unwrap()
}

#[actix_web::test]
async fn rotating_forwarded_for_from_an_untrusted_peer_does_not_escape_the_limit() {
    let telemetry = behind_proxies(&ManualClock::new());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    for n in 0..10 {
        let xff = format!("198.51.100.{n}");
        let reply = send(&app, metrics_via("203.0.113.9", &xff).to_request()).await;
        assert_eq!(reply.status, StatusCode::OK, "request {n}");
    }
    for n in 10..20 {
        // Not even a header naming a trusted proxy helps.
        let xff = format!("198.51.100.{n}, 10.0.0.{n}");
        let reply = send(&app, metrics_via("203.0.113.9", &xff).to_request()).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "request {n}");
    }
}

#[actix_web::test]
async fn behind_a_trusted_proxy_each_forwarded_client_is_limited_on_its_own() {
    let telemetry = behind_proxies(&ManualClock::new());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    for _ in 0..10 {
        let reply = send(&app, metrics_via("10.0.0.1", "203.0.113.5").to_request()).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let limited = send(&app, metrics_via("10.0.0.1", "203.0.113.5").to_request()).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);

    // Another client through the same proxy, or through a second hop of
    // trusted proxies, has its own budget.
    let other = send(&app, metrics_via("10.0.0.1", "203.0.113.6").to_request()).await;
    assert_eq!(other.status, StatusCode::OK);
    let two_hops = send(
        &app,
        metrics_via("10.0.0.1", "203.0.113.7, 10.2.3.4").to_request(),
    )
    .await;
    assert_eq!(two_hops.status, StatusCode::OK);
    let ipv6 = send(&app, metrics_via("fd00::1", "2001:db8::5").to_request()).await;
    assert_eq!(ipv6.status, StatusCode::OK);

    // The same client reaching a second trusted proxy is still the same client.
    let via_other_proxy = send(&app, metrics_via("10.9.9.9", "203.0.113.5").to_request()).await;
    assert_eq!(via_other_proxy.status, StatusCode::TOO_MANY_REQUESTS);
}

#[actix_web::test]
async fn a_spoofed_extra_left_hop_does_not_help_behind_a_trusted_proxy() {
    let telemetry = behind_proxies(&ManualClock::new());
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    for n in 0..10 {
        let xff = format!("192.0.2.{n}, 203.0.113.5");
        let reply = send(&app, metrics_via("10.0.0.1", &xff).to_request()).await;
        assert_eq!(reply.status, StatusCode::OK, "request {n}");
    }
    for n in 10..15 {
        let xff = format!("192.0.2.{n}, 203.0.113.5");
        let reply = send(&app, metrics_via("10.0.0.1", &xff).to_request()).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "request {n}");
    }
}

#[actix_web::test]
async fn without_trusted_proxies_forwarded_for_is_ignored_even_from_private_addresses() {
    let telemetry = TelemetryHttp::with_manual_clock(
        BreakerHandle::disabled(),
        TelemetryHttpConfig::default(),
        ManualClock::new(),
    )
    .unwrap();
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    for n in 0..10 {
        let xff = format!("198.51.100.{n}");
        let reply = send(&app, metrics_via("10.0.0.1", &xff).to_request()).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let reply = send(&app, metrics_via("10.0.0.1", "198.51.100.200").to_request()).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
}

#[actix_web::test]
async fn ipv6_clients_cannot_escape_by_rotating_addresses_within_their_64() {
    let telemetry = TelemetryHttp::with_manual_clock(
        BreakerHandle::disabled(),
        TelemetryHttpConfig::default(),
        ManualClock::new(),
    )
    .unwrap();
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    for n in 0..10 {
        let ip = format!("2001:db8:0:1::{n:x}");
        let reply = send(&app, get_from("/metrics", &ip).to_request()).await;
        assert_eq!(reply.status, StatusCode::OK);
    }
    let reply = send(&app, get_from("/metrics", "2001:db8:0:1::ff").to_request()).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    let next_net = send(&app, get_from("/metrics", "2001:db8:0:2::1").to_request()).await;
    assert_eq!(next_net.status, StatusCode::OK);
}

#[actix_web::test]
async fn the_limiter_forgets_idle_clients_so_memory_stays_bounded() {
    let clock = ManualClock::new();
    let telemetry = behind_proxies(&clock);
    let app = test::init_service(App::new().configure(|cfg| telemetry.configure(cfg))).await;
    let mut most = 0;
    for n in 0..4_000_u32 {
        clock.advance(Duration::from_millis(20));
        let client = std::net::Ipv4Addr::from(0xC633_0000 + n).to_string();
        let reply = send(&app, metrics_via("10.0.0.1", &client).to_request()).await;
        assert_eq!(reply.status, StatusCode::OK);
        most = most.max(telemetry.tracked_clients());
    }
    // A one-shot client is forgettable 12 s after its request (600 steps of
    // 20 ms); the inline purge runs every 1024 requests.
    assert!(most <= 600 + 1024, "{most} clients tracked at once");
    assert!(most < 4_000);

    clock.advance(Duration::from_secs(120));
    telemetry.purge_idle_clients();
    assert_eq!(telemetry.tracked_clients(), 0);
}
