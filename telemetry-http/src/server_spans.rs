//! The HTTP server span of each request, as an actix middleware: what
//! `opentelemetry-instrumentation-actix-web`'s `RequestTracing` records, at a
//! fraction of its cost, with bounded names for any method.
//!
//! It follows the OpenTelemetry HTTP semantic conventions (the version in
//! `docs/contract.md`) for server spans:
//!
//! - the name is `{method} {route}` (`GET /tasks/{id}`), `HTTP {route}` for a
//!   method outside the nine known ones, and only the method when no route
//!   matched, so a client can make neither the name nor `http.request.method`
//!   unbounded: such a method is recorded as `_OTHER`, with what was sent in
//!   `http.request.method_original`;
//! - `http.request.method`, `http.route`, `url.path`, `url.query` (when
//!   present), `url.scheme`, `network.protocol.version`, `server.address` and
//!   `server.port` (from the `Host` header), `client.address` (the peer, or the
//!   client a trusted proxy forwarded for; then `network.peer.address` is the
//!   proxy), `user_agent.original`, and `http.response.status_code`;
//! - a 5xx response sets `error.type` to the status code and the span status to
//!   error; a 4xx is the client's error, not the server's, and leaves both unset.
//!
//! The parent comes from the request headers through the global text-map
//! propagator; the span is the current context while the inner service runs,
//! so the spans it starts are its children. The span ends when the response
//! head is ready.
//!
//! What it saves against `RequestTracing` (measured in `docs/benchmarks.md`):
//! no `ConnectionInfo` (which parses the forwarding headers and copies host,
//! scheme and address into the request's extensions), static strings for the
//! method, scheme and protocol version, the route and span name interned once
//! per pattern (`matched_route`), the host, user agent and client address
//! shared with the previous request when they repeat, and a concrete future
//! instead of a boxed one.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::future::{Future, Ready, ready};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix_web::Error;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::uri::Authority;
use actix_web::http::{StatusCode, Version};
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt as _, Tracer as _};
use opentelemetry::{InstrumentationScope, KeyValue, StringValue};

use crate::TrustedProxy;
use crate::client_ip;
use crate::http_metrics::{KNOWN_METHODS, OTHER_METHOD};
use crate::matched_route::{MatchedRoute, Route};

/// The instrumentation scope of the server spans.
const SCOPE: &str = "telemetry-http";

/// Server spans for the requests of the service it wraps.
///
/// Wrap it around the routes to trace (`scope.wrap(ServerSpans::new())`), inside
/// any middleware that should stay out of the span; obtain one that knows the
/// host's trusted proxies from
/// [`TelemetryHttp::server_spans`](crate::TelemetryHttp::server_spans). Spans
/// go to the global tracer provider as it is when the application is built
/// (once per worker), so install the provider first.
#[derive(Clone, Debug, Default)]
pub struct ServerSpans {
    trusted_proxies: Arc<[TrustedProxy]>,
}

impl ServerSpans {
    /// Server spans whose `client.address` is the TCP peer.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Believes the `X-Forwarded-For` header of these proxies, as the
    /// `/metrics` rate limiter does: behind one, `client.address` is the client
    /// it forwarded for and `network.peer.address` the proxy.
    #[must_use]
    pub fn trusted_proxies(mut self, proxies: impl IntoIterator<Item = TrustedProxy>) -> Self {
        self.trusted_proxies = proxies.into_iter().collect();
        self
    }
}

impl<S, B> Transform<S, ServiceRequest> for ServerSpans
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = ServerSpansService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        let scope = InstrumentationScope::builder(SCOPE)
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        ready(Ok(ServerSpansService {
            service,
            tracer: global::tracer_with_scope(scope),
            trusted_proxies: Arc::clone(&self.trusted_proxies),
            recent: Recent::default(),
        }))
    }
}

/// The service [`ServerSpans`] wraps around the host's service.
pub struct ServerSpansService<S> {
    service: S,
    tracer: BoxedTracer,
    trusted_proxies: Arc<[TrustedProxy]>,
    recent: Recent,
}

impl<S> std::fmt::Debug for ServerSpansService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSpansService")
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<ServiceRequest> for ServerSpansService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error>,
    B: 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = ServerSpanFuture<S::Future>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let parent = global::get_text_map_propagator(|propagator| {
            propagator.extract(&Headers(req.headers()))
        });
        let method = req.method().as_str();
        let known = KNOWN_METHODS.iter().position(|known| *known == method);
        let route = MatchedRoute::resolve(&req).map(|route| route.0);
        let name = match (route, known) {
            (Some(route), known) => route.span_name(known),
            (None, Some(index)) => KNOWN_METHODS[index],
            (None, None) => "HTTP",
        };
        let attributes =
            self.request_attributes(&req, known.map(|index| KNOWN_METHODS[index]), route);
        let builder = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes);
        let span = self.tracer.build_with_context(builder, &parent);
        let cx = parent.with_span(span);
        ServerSpanFuture {
            inner: self.service.call(req).with_context(cx.clone()),
            cx: Some(cx),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future, run in the server span's context; the span
    /// ends with the response head.
    pub struct ServerSpanFuture<F> {
        #[pin]
        inner: WithContext<F>,
        cx: Option<opentelemetry::Context>,
    }
}

impl<F> std::fmt::Debug for ServerSpanFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSpanFuture").finish_non_exhaustive()
    }
}

impl<F, B> Future for ServerSpanFuture<F>
where
    F: Future<Output = Result<ServiceResponse<B>, Error>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, task: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(task));
        if let Some(cx) = this.cx.take() {
            let status = match &result {
                Ok(res) => res.status(),
                // The response actix makes of the error is what the client gets.
                Err(err) => err.as_response_error().status_code(),
            };
            end(&cx, status);
        }
        Poll::Ready(result)
    }
}

/// Records the response and ends the span.
fn end(cx: &opentelemetry::Context, status: StatusCode) {
    let span = cx.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if status.is_server_error() {
        span.set_attribute(KeyValue::new("error.type", status_text(status)));
        span.set_status(Status::error(""));
    }
    span.end();
}

/// The status code as `error.type` wants it: its digits, static for the usual ones.
fn status_text(status: StatusCode) -> StringValue {
    match status.as_u16() {
        500 => "500".into(),
        502 => "502".into(),
        503 => "503".into(),
        504 => "504".into(),
        other => other.to_string().into(),
    }
}

impl<S> ServerSpansService<S> {
    /// The attributes known when the request arrives.
    fn request_attributes(
        &self,
        req: &ServiceRequest,
        known_method: Option<&'static str>,
        route: Option<&'static Route>,
    ) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(13);
        match known_method {
            Some(method) => attributes.push(KeyValue::new("http.request.method", method)),
            None => {
                attributes.push(KeyValue::new("http.request.method", OTHER_METHOD));
                attributes.push(KeyValue::new(
                    "http.request.method_original",
                    req.method().as_str().to_owned(),
                ));
            }
        }
        if let Some(route) = route {
            attributes.push(KeyValue::new("http.route", route.pattern()));
        }
        let uri = req.uri();
        attributes.push(KeyValue::new("url.path", uri.path().to_owned()));
        if let Some(query) = uri.query() {
            attributes.push(KeyValue::new("url.query", query.to_owned()));
        }
        let scheme = if req.app_config().secure() {
            "https"
        } else {
            "http"
        };
        attributes.push(KeyValue::new("url.scheme", scheme));
        if let Some(version) = protocol_version(req.version()) {
            attributes.push(KeyValue::new("network.protocol.version", version));
        }
        if let Some((host, port)) =
            authority(req).and_then(|text| self.recent.host.get(text, server_address))
        {
            attributes.push(KeyValue::new("server.address", host));
            if let Some(port) = port {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        if let Some(peer) = req.peer_addr().map(|addr| addr.ip()) {
            let client = client_ip::client_ip(peer, req.headers(), &self.trusted_proxies);
            attributes.push(KeyValue::new(
                "client.address",
                self.recent
                    .client
                    .get(&client, |ip| shared(&ip.to_string())),
            ));
            if client != peer {
                attributes.push(KeyValue::new(
                    "network.peer.address",
                    self.recent.peer.get(&peer, |ip| shared(&ip.to_string())),
                ));
            }
        }
        if let Some(agent) = req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
        {
            attributes.push(KeyValue::new(
                "user_agent.original",
                self.recent.agent.get(agent, shared),
            ));
        }
        attributes
    }
}

/// The last value of each attribute that repeats from one request to the next
/// (the `Host` a service is reached by, a client's address and user agent on
/// its keep-alive connection), so that a worker copies each once per change
/// rather than once per request: a hit is a comparison and a reference count.
#[derive(Debug, Default)]
struct Recent {
    /// The authority as sent, and what it says.
    host: LastSeen<String, Option<ServerAddress>>,
    agent: LastSeen<String, StringValue>,
    client: LastSeen<IpAddr, StringValue>,
    peer: LastSeen<IpAddr, StringValue>,
}

/// `server.address` and, when the authority names one, `server.port`.
type ServerAddress = (StringValue, Option<u16>);

/// The value made of the last key seen.
#[derive(Debug)]
struct LastSeen<K, V>(RefCell<Option<(K, V)>>);

impl<K, V> Default for LastSeen<K, V> {
    fn default() -> Self {
        Self(RefCell::new(None))
    }
}

impl<K, V: Clone> LastSeen<K, V> {
    /// The value of `key`: the last one's when `key` is the last key, else
    /// `make(key)`, then remembered.
    fn get<Q>(&self, key: &Q, make: impl FnOnce(&Q) -> V) -> V
    where
        Q: ?Sized + PartialEq + ToOwned<Owned = K>,
        K: Borrow<Q>,
    {
        let mut last = self.0.borrow_mut();
        match &*last {
            Some((seen, value)) if seen.borrow() == key => value.clone(),
            _ => {
                let value = make(key);
                *last = Some((key.to_owned(), value.clone()));
                value
            }
        }
    }
}

/// A shared attribute value of `text`.
fn shared(text: &str) -> StringValue {
    StringValue::from(Arc::<str>::from(text))
}

/// `network.protocol.version`: `1.1`, `2` and so on.
fn protocol_version(version: Version) -> Option<&'static str> {
    match version {
        Version::HTTP_09 => Some("0.9"),
        Version::HTTP_10 => Some("1.0"),
        Version::HTTP_11 => Some("1.1"),
        Version::HTTP_2 => Some("2"),
        Version::HTTP_3 => Some("3"),
        _ => None,
    }
}

/// The authority the client addressed: the request target's (HTTP/2,
/// absolute-form) or the `Host` header. `None` when neither names one.
fn authority(req: &ServiceRequest) -> Option<&str> {
    match req.uri().authority() {
        Some(authority) => Some(authority.as_str()),
        None => req.headers().get(header::HOST)?.to_str().ok(),
    }
}

/// `server.address` and `server.port` of an authority; `None` when it names no
/// host.
fn server_address(authority: &str) -> Option<ServerAddress> {
    let authority = authority.parse::<Authority>().ok()?;
    // `server.address` is the bare name or address: no IPv6 brackets.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    (!host.is_empty()).then(|| (shared(host), authority.port_u16()))
}

/// The request headers as the propagator reads them.
struct Headers<'a>(&'a HeaderMap);

/// The W3C Trace Context headers, the ones the propagator asks for on every request.
const TRACEPARENT: header::HeaderName = header::HeaderName::from_static("traceparent");
const TRACESTATE: header::HeaderName = header::HeaderName::from_static("tracestate");

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // A known name is looked up as it is; any other is parsed (validated and
        // lower-cased) first, which under callgrind was half of the lookup's cost.
        let value = match key {
            "traceparent" => self.0.get(TRACEPARENT),
            "tracestate" => self.0.get(TRACESTATE),
            other => self.0.get(other),
        };
        value.and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}
