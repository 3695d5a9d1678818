//! Actix-web routes for liveness, telemetry health and rate-limited
//! Prometheus metrics. Binds no port: the host service mounts the routes.
//!
//! [`TelemetryHttp`] reads a [`BreakerHandle`] (from `breaker-otel`) and
//! mounts three routes with [`configure`](TelemetryHttp::configure), each
//! answering `GET` and `HEAD` (the same status and headers, no body):
//!
//! | route | answer |
//! |---|---|
//! | `GET /health` | `200 {"status":"pass"}` while the process serves |
//! | `GET /health/telemetry` | `200` when the circuit is closed, `503` when open or half-open; `application/health+json` |
//! | `GET /metrics` | Prometheus text format, rate limited per client IP (`429` + `Retry-After`) |
//!
//! `/metrics` exposes `circuit_state`, `spans_processed_total{outcome}` and
//! `circuit_transitions_total{from,to}`, read from the handle at scrape time,
//! then, for each backend breaker given with
//! [`with_backends`](TelemetryHttp::with_backends), its state by endpoint and
//! signals and the semantic conventions' `otel_sdk_exporter_*` series,
//! and the HTTP server metrics recorded by the [`HttpMetrics`] middleware the
//! host wraps around its `App`; the series of the three routes above exist
//! from the first scrape. The [`ServerSpans`] middleware records each
//! request's HTTP server span, following the semantic conventions. Each
//! instance owns its own
//! [`prometheus::Registry`]; nothing is global.
//!
//! The client of a `/metrics` request is the TCP peer; `X-Forwarded-For` is
//! believed only from `trusted_proxies`, and then only its rightmost hop that
//! is not itself a trusted proxy, so a client cannot choose its own key.
//! The limiter is `governor` itself: `actix-governor` is GPL-3.0-or-later and
//! this crate is `MIT OR Apache-2.0`.
//!
//! Features: `serde` makes [`TrustedProxy`] (de)serialize as its string
//! form; `test-util` adds `ManualClock` and `TelemetryHttp::with_manual_clock`,
//! a `/metrics` limiter clock that tests move by hand.
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
//!             trusted_proxies: vec!["10.0.0.0/8".parse()?],
//!             ..TelemetryHttpConfig::default()
//!         },
//!     )?;
//!     let http_metrics = telemetry.http_metrics();
//!     // The host's own routes; the telemetry routes are registered already.
//!     http_metrics.register_route("GET", "/tasks/{id}");
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
use breaker_otel::{BackendHandle, BreakerHandle};
use prometheus::Registry;

mod backend_metrics;
mod breaker_metrics;
mod client_ip;
mod config;
mod error;
mod health;
mod http_metrics;
mod matched_route;
mod otlp_metrics;
mod rate_limit;
mod routes;
mod server_spans;
#[cfg(feature = "test-util")]
pub mod test_util;
mod trusted_proxy;

pub use config::TelemetryHttpConfig;
pub use error::Error;
pub use http_metrics::{
    HttpMetrics, HttpMetricsService, KNOWN_METHODS, OTHER_METHOD, UNMATCHED_ROUTE,
};
#[cfg(feature = "test-util")]
pub use rate_limit::ManualClock;
pub use server_spans::{ServerSpanFuture, ServerSpans, ServerSpansService};
pub use trusted_proxy::{ParseError, TrustedProxy};

use crate::backend_metrics::{BackendCollector, Backends};
use crate::breaker_metrics::BreakerCollector;
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
    /// The backend breakers shown per endpoint and signals, none at first.
    pub(crate) backends: Backends,
    pub(crate) config: TelemetryHttpConfig,
    pub(crate) registry: Registry,
    pub(crate) http_metrics: HttpMetrics,
    pub(crate) limiter: MetricsRateLimiter,
}

impl TelemetryHttp {
    /// The paths [`configure`](Self::configure) mounts, each for `GET` and
    /// `HEAD`. Their HTTP metrics series (method `GET`) exist from the first
    /// scrape; the host need not register them.
    pub const ROUTES: [&'static str; 3] = ["/health", "/health/telemetry", "/metrics"];

    /// Registers the breaker metrics and the HTTP metrics (with the series of
    /// [`ROUTES`](Self::ROUTES)) in a new registry.
    ///
    /// # Errors
    ///
    /// [`Error::MetricRegistration`] if the registry refuses a metric.
    pub fn new(handle: BreakerHandle, config: TelemetryHttpConfig) -> Result<Self, Error> {
        Self::build(
            handle,
            config,
            LimiterClock::Monotonic {
                origin: Instant::now(),
            },
        )
    }

    /// Like [`new`](Self::new), but the `/metrics` limiter refills only as
    /// `clock` is advanced: tests check refills without waiting. Only with
    /// the `test-util` feature.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    #[cfg(feature = "test-util")]
    pub fn with_manual_clock(
        handle: BreakerHandle,
        config: TelemetryHttpConfig,
        clock: ManualClock,
    ) -> Result<Self, Error> {
        Self::build(handle, config, LimiterClock::Manual(clock))
    }

    fn build(
        handle: BreakerHandle,
        config: TelemetryHttpConfig,
        clock: LimiterClock,
    ) -> Result<Self, Error> {
        let registry = Registry::new();
        registry.register(Box::new(BreakerCollector::new(handle.clone())?))?;
        let backends = Backends::default();
        registry.register(Box::new(BackendCollector::new(Arc::clone(&backends))?))?;
        let http_metrics = HttpMetrics::new(&registry)?;
        for route in Self::ROUTES {
            // HEAD is served too, but rarely enough that its series may
            // appear on first use rather than double these.
            http_metrics.register_route("GET", route);
        }
        Ok(Self {
            shared: Arc::new(Shared {
                handle,
                backends,
                limiter: MetricsRateLimiter::new(config.quota(), clock),
                config,
                registry,
                http_metrics,
            }),
        })
    }

    /// Shows these backend breakers too, after any given before: in
    /// `/metrics`, each one's state (`backend_circuit_state{endpoint,signals}`
    /// and its transitions and probes) and the semantic conventions'
    /// exporter metrics of each signal it serves
    /// (`otel_sdk_exporter_span_exported_total` and the like); in
    /// `/health/telemetry`, one entry of `backends` each. The span path's
    /// handle given to [`new`](Self::new) still alone decides the health
    /// status and the seed's series. Clones share the list.
    ///
    /// ```no_run
    /// # fn demo(span_path: breaker_otel::BreakerHandle, collector: breaker_otel::BackendBreaker)
    /// # -> Result<(), telemetry_http::Error> {
    /// use telemetry_http::{TelemetryHttp, TelemetryHttpConfig};
    ///
    /// let telemetry = TelemetryHttp::new(span_path, TelemetryHttpConfig::default())?
    ///     .with_backends([collector.handle()]);
    /// # drop(telemetry); Ok(()) }
    /// ```
    #[must_use]
    pub fn with_backends(self, backends: impl IntoIterator<Item = BackendHandle>) -> Self {
        self.shared
            .backends
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(backends);
        self
    }

    /// Mounts `/health`, `/health/telemetry` and `/metrics`, each for `GET`
    /// and `HEAD`: `App::new().configure(|cfg| telemetry.configure(cfg))`.
    /// Other methods get `405` with `Allow: GET, HEAD`. A `HEAD /metrics`
    /// renders the same text as a `GET` and so counts against the same rate
    /// limit; the server sends its headers only.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        let data = web::Data::from(Arc::clone(&self.shared));
        cfg.service(
            web::resource("/health")
                .route(web::get().to(routes::liveness))
                .route(web::head().to(routes::liveness)),
        )
        .service(
            web::resource("/health/telemetry")
                .app_data(data.clone())
                .route(web::get().to(routes::telemetry_health))
                .route(web::head().to(routes::telemetry_health)),
        )
        .service(
            web::resource("/metrics")
                .app_data(data)
                .route(web::get().to(routes::metrics))
                .route(web::head().to(routes::metrics)),
        );
    }

    /// The middleware recording HTTP server metrics into this instance's
    /// registry; wrap it around the host's `App`.
    #[must_use]
    pub fn http_metrics(&self) -> HttpMetrics {
        self.shared.http_metrics.clone()
    }

    /// The middleware recording each request's HTTP server span, with
    /// `client.address` resolved through this instance's `trusted_proxies`
    /// as the `/metrics` rate limiter resolves it; wrap it around the routes
    /// to trace.
    #[must_use]
    pub fn server_spans(&self) -> ServerSpans {
        ServerSpans::new().trusted_proxies(self.shared.config.trusted_proxies.iter().copied())
    }

    /// This instance's registry, which `/metrics` renders. The host may
    /// register its own collectors in it.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Everything the registry holds (what `/metrics` shows) as OTLP metrics, for a host
    /// that also pushes them: cumulative points stamped `now`, started at `start`.
    #[must_use]
    pub fn otlp_metrics(
        &self,
        start: std::time::SystemTime,
        now: std::time::SystemTime,
    ) -> Vec<opentelemetry_proto::tonic::metrics::v1::Metric> {
        otlp_metrics::to_otlp(&self.shared.registry.gather(), start, now)
    }

    /// The `service.instance.id` that `/health/telemetry` shows
    /// ([`TelemetryHttpConfig::service_instance_id`]).
    #[must_use]
    pub fn service_instance_id(&self) -> Option<&str> {
        self.shared.config.service_instance_id.as_deref()
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
