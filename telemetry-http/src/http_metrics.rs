//! Request count and duration for the host's routes, as an actix
//! middleware. Labels are bounded by construction: `route` is the matched
//! pattern (`/tasks/{id}`) or `unmatched`, `method` one of a fixed set or
//! `_OTHER`, and the status is reduced to its class.

use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::Error;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::StatusCode;
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::matched_route::MatchedRoute;

/// The `route` label of requests no resource matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The `method` label of methods outside [`KNOWN_METHODS`].
pub const OTHER_METHOD: &str = "_OTHER";

/// Methods that keep their own `method` label (those of RFC 9110 and
/// PATCH, as in the OpenTelemetry HTTP conventions).
pub const KNOWN_METHODS: [&str; 9] = [
    "CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE",
];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Bucket bounds in seconds, as the OpenTelemetry HTTP conventions advise
/// for `http.server.request.duration`.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// HTTP server metrics, and the middleware that records them.
///
/// Wrap it around the host's `App` (`App::new().wrap(metrics)`); obtain it
/// from [`TelemetryHttp::http_metrics`](crate::TelemetryHttp::http_metrics).
/// It records `http_server_requests_total{method,route,status_class}` and
/// `http_server_request_duration_seconds{method,route}`. Call
/// [`register_route`](Self::register_route) for every route the host serves
/// so that its series exist, at 0, from the first scrape; those of
/// [`TelemetryHttp::ROUTES`](crate::TelemetryHttp::ROUTES) exist already.
/// Clones share the same metrics.
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    inner: Arc<Recorders>,
}

#[derive(Debug)]
struct Recorders {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    pub(crate) fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "http_server_requests_total",
                "HTTP requests served, by method, route pattern and status class.",
            ),
            &["method", "route", "status_class"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "http_server_request_duration_seconds",
                "Time from receiving an HTTP request to having its response ready, by method and route pattern.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["method", "route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            inner: Arc::new(Recorders { requests, duration }),
        })
    }

    /// Makes the series of one route exist before its first request: the
    /// request counter for every status class and the duration histogram,
    /// all at 0. `method` is normalized as requests are (`"get"` counts as
    /// `GET`, unknown methods as `_OTHER`); `route` is the pattern as written
    /// in the host's routing, e.g. `/tasks/{id}`.
    pub fn register_route(&self, method: &str, route: &str) {
        let method = normalize_method(method);
        for class in STATUS_CLASSES {
            let _ = self
                .inner
                .requests
                .with_label_values(&[method, route, class]);
        }
        let _ = self.inner.duration.with_label_values(&[method, route]);
    }

    fn record(&self, method: &'static str, route: &str, status: StatusCode, started: Instant) {
        let class = status_class(status);
        self.inner
            .requests
            .with_label_values(&[method, route, class])
            .inc();
        self.inner
            .duration
            .with_label_values(&[method, route])
            .observe(started.elapsed().as_secs_f64());
    }
}

fn normalize_method(method: &str) -> &'static str {
    KNOWN_METHODS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(method))
        .copied()
        .unwrap_or(OTHER_METHOD)
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        // `http` accepts codes up to 999; they are not HTTP classes.
        _ => "other",
    }
}

impl<S, B> Transform<S, ServiceRequest> for HttpMetrics
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = HttpMetricsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(HttpMetricsService {
            service: Rc::new(service),
            metrics: self.clone(),
        }))
    }
}

/// The service [`HttpMetrics`] wraps around the host's service.
#[derive(Debug)]
pub struct HttpMetricsService<S> {
    service: Rc<S>,
    metrics: HttpMetrics,
}

impl<S, B> Service<ServiceRequest> for HttpMetricsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>>>>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let method = normalize_method(req.method().as_str());
        // Resolved before the call: an error result carries no request to
        // ask afterwards. Left in the request for `ServerSpans`, so that a
        // request pays for one route lookup, not two.
        let route = MatchedRoute::resolve(&req);
        let service = Rc::clone(&self.service);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = service.call(req).await;
            let status = match &result {
                Ok(res) => res.status(),
                Err(err) => err.as_response_error().status_code(),
            };
            let route = route
                .as_ref()
                .map_or(UNMATCHED_ROUTE, |route| route.0.pattern());
            metrics.record(method, route, status, started);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_normalize_to_a_fixed_set() {
        assert_eq!(normalize_method("GET"), "GET");
        assert_eq!(normalize_method("patch"), "PATCH");
        assert_eq!(normalize_method("PROPFIND"), "_OTHER");
        assert_eq!(normalize_method(""), "_OTHER");
    }

    #[test]
    fn statuses_reduce_to_their_class() {
        assert_eq!(status_class(StatusCode::CONTINUE), "1xx");
        assert_eq!(status_class(StatusCode::NO_CONTENT), "2xx");
        assert_eq!(status_class(StatusCode::NOT_MODIFIED), "3xx");
        assert_eq!(status_class(StatusCode::TOO_MANY_REQUESTS), "4xx");
        assert_eq!(status_class(StatusCode::SERVICE_UNAVAILABLE), "5xx");
        let odd = StatusCode::from_u16(799).unwrap();
        assert_eq!(status_class(odd), "other");
    }
}
