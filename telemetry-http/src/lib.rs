//! Actix-web routes for liveness, telemetry health and rate-limited
//! Prometheus metrics. Binds no port: the host service mounts the routes.
//!
//! [`TelemetryHttp`] reads a [`BreakerHandle`] (from `breaker-otel`) and
//! mounts three routes with [`configure`](TelemetryHttp::configure):
//!
//! | route | answer |
//! |---|---|
//! | `GET /health` | `200 {"status":"pass"}` while the process serves |
//! | `GET /health/telemetry` | `200` when the circuit is closed, `503` when open or half-open; `application/health+json` |
//! | `GET /metrics` | Prometheus text format, rate limited per client IP (`429` + `Retry-After`) |
//!
//! `/metrics` exposes `circuit_state`, `spans_processed_total{outcome}` and
//! `circuit_transitions_total{from,to}`, read from the handle at scrape time,
//! and the HTTP server metrics recorded by the [`HttpMetrics`] middleware the
//! host wraps around its `App`. Each instance owns its own
//! [`prometheus::Registry`]; nothing is global.
//!
//! The client of a `/metrics` request is the TCP peer; `X-Forwarded-For` is
//! believed only from `trusted_proxies`, and then only its rightmost hop that
//! is not itself a trusted proxy, so a client cannot choose its own key.
//! The limiter is `governor` itself: `actix-governor` is GPL-3.0-or-later and
//! this crate is `MIT OR Apache-2.0`.
//!
//! This crate deliberately does not bind sockets, start tasks, read
//! configuration files, or know how the server is assembled.
//!
//! ```
//! use actix_web::{App, HttpResponse, HttpServer, web};
//! use breaker_otel::BreakerHandle;
//! use telemetry_http::{TelemetryHttp, TelemetryHttpConfig};
//!
//! fn serve(handle: BreakerHandle) -> Result<(), Box<dyn std::error::Error>> {
//!     let telemetry = TelemetryHttp::new(
//!         handle,
//!         TelemetryHttpConfig {
//!             trusted_proxies: vec!["10.0.0.0/8".to_owned()],
//!             ..TelemetryHttpConfig::default()
//!         },
//!     )?;
//!     let http_metrics = telemetry.http_metrics();
//!     // Series for these exist, at 0, from the first scrape.
//!     http_metrics.register_route("GET", "/tasks/{id}");
//!     for route in TelemetryHttp::ROUTES {
//!         http_metrics.register_route("GET", route);
//!     }
//!
//!     let server = HttpServer::new(move || {
//!         App::new()
//!             .wrap(http_metrics.clone())
//!             .configure(|cfg| telemetry.configure(cfg))
//!             .route("/tasks/{id}", web::get().to(HttpResponse::Ok))
//!     });
//!     let _server = server.bind(("127.0.0.1", 0))?;
//!     Ok(())
//! }
//! ```

use std::sync::Arc;
use std::time::Instant;

use actix_web::web;
use breaker_otel::BreakerHandle;
use prometheus::Registry;

mod breaker_metrics;
mod client_ip;
mod config;
mod health;
mod http_metrics;
mod rate_limit;
mod routes;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use config::{ConfigError, TelemetryHttpConfig, TrustedProxy, TrustedProxyError};
pub use http_metrics::{
    HttpMetrics, HttpMetricsService, KNOWN_METHODS, OTHER_METHOD, UNMATCHED_ROUTE,
};
pub use rate_limit::ManualClock;

use crate::breaker_metrics::BreakerCollector;
use crate::config::TrustedProxies;
use crate::rate_limit::{LimiterClock, MetricsRateLimiter};

/// Health and metrics routes for one breaker, with their own registry and
/// `/metrics` rate limiter. Clones share all of it.
#[derive(Clone, Debug)]
pub struct TelemetryHttp {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) handle: BreakerHandle,
    pub(crate) config: TelemetryHttpConfig,
    pub(crate) registry: Registry,
    pub(crate) http_metrics: HttpMetrics,
    pub(crate) limiter: MetricsRateLimiter,
    pub(crate) trusted_proxies: TrustedProxies,
}

impl TelemetryHttp {
    /// The paths [`configure`](Self::configure) mounts, all `GET`.
    pub const ROUTES: [&'static str; 3] = ["/health", "/health/telemetry", "/metrics"];

    /// Validates `config` and registers the breaker metrics in a new registry.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the setting when `requests_per_minute` or
    /// `burst` is 0 or a `trusted_proxies` entry is not an IP address or CIDR
    /// block.
    pub fn new(handle: BreakerHandle, config: TelemetryHttpConfig) -> Result<Self, ConfigError> {
        Self::build(
            handle,
            config,
            LimiterClock::Monotonic {
                origin: Instant::now(),
            },
        )
    }

    /// Like [`new`](Self::new), but the `/metrics` limiter refills only as
    /// `clock` is advanced: tests check refills without waiting.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    pub fn with_manual_clock(
        handle: BreakerHandle,
        config: TelemetryHttpConfig,
        clock: ManualClock,
    ) -> Result<Self, ConfigError> {
        Self::build(handle, config, LimiterClock::Manual(clock))
    }

    fn build(
        handle: BreakerHandle,
        config: TelemetryHttpConfig,
        clock: LimiterClock,
    ) -> Result<Self, ConfigError> {
        let quota = config.quota()?;
        let trusted_proxies = config.trusted_proxies()?;
        let registry = Registry::new();
        registry.register(Box::new(BreakerCollector::new(handle.clone())?))?;
        let http_metrics = HttpMetrics::new(&registry)?;
        Ok(Self {
            shared: Arc::new(Shared {
                handle,
                config,
                registry,
                http_metrics,
                limiter: MetricsRateLimiter::new(quota, clock),
                trusted_proxies,
            }),
        })
    }

    /// Mounts `GET /health`, `GET /health/telemetry` and `GET /metrics`:
    /// `App::new().configure(|cfg| telemetry.configure(cfg))`.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        let data = web::Data::from(Arc::clone(&self.shared));
        cfg.service(web::resource("/health").route(web::get().to(routes::liveness)))
            .service(
                web::resource("/health/telemetry")
                    .app_data(data.clone())
                    .route(web::get().to(routes::telemetry_health)),
            )
            .service(
                web::resource("/metrics")
                    .app_data(data)
                    .route(web::get().to(routes::metrics)),
            );
    }

    /// The middleware recording HTTP server metrics into this instance's
    /// registry; wrap it around the host's `App`.
    #[must_use]
    pub fn http_metrics(&self) -> HttpMetrics {
        self.shared.http_metrics.clone()
    }

    /// This instance's registry, which `/metrics` renders. The host may
    /// register its own collectors in it.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Forgets `/metrics` clients whose rate budget has fully refilled.
    /// This also happens inline every 1024 requests to `/metrics`; a host
    /// may call it from a timer as well, but need not.
    pub fn purge_idle_clients(&self) {
        self.shared.limiter.purge_idle();
    }

    /// How many clients the `/metrics` limiter currently remembers.
    #[must_use]
    pub fn tracked_clients(&self) -> usize {
        self.shared.limiter.tracked_clients()
    }
}
