//! Request methods outside the known set, kept out of span names.
//!
//! `RequestTracing` (from `opentelemetry-instrumentation-actix-web`) names the server span
//! `"{method} {route}"` and copies the raw method into `http.request.method`, so a client
//! sending made-up methods makes span names, and the attribute, unbounded. The HTTP semantic
//! conventions say: for a method outside GET HEAD POST PUT DELETE CONNECT OPTIONS TRACE PATCH
//! (compared case-sensitively) the span is named `HTTP {route}`, `http.request.method` is
//! `_OTHER` and `http.request.method_original` is what was sent.
//!
//! The middleware cannot be configured for this, and attributes set later are added, not
//! replaced, so two small middlewares bracket it instead:
//!
//! - [`hide`], outside it, puts `_OTHER` in the request's method, which gives the attribute;
//! - [`restore`], inside it (and so running within its span's context), renames the span,
//!   records the original method and puts it back before routing.
//!
//! Requests with a known method pass both untouched.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage as _};
use opentelemetry::KeyValue;
use opentelemetry::trace::TraceContextExt as _;
use telemetry_http::{KNOWN_METHODS, OTHER_METHOD};

/// The attribute holding a method that was replaced by `_OTHER`.
const METHOD_ORIGINAL: &str = "http.request.method_original";

/// The method a request arrived with, while the tracing middleware sees `_OTHER`.
struct OriginalMethod(Method);

/// Replaces a method outside the known set by `_OTHER`, keeping the original aside.
pub(super) async fn hide(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let known = KNOWN_METHODS.contains(&req.method().as_str());
    // `_OTHER` is a valid method token; the fallback only keeps this free of `unwrap`.
    if let (false, Ok(other)) = (known, Method::from_bytes(OTHER_METHOD.as_bytes())) {
        let original = std::mem::replace(&mut req.head_mut().method, other);
        req.extensions_mut().insert(OriginalMethod(original));
    }
    next.call(req).await
}

/// Within the server span: names it `HTTP {route}`, records the original method, and gives
/// the request its method back, so routing and error details see what the client sent.
pub(super) async fn restore(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let original = req.extensions_mut().remove::<OriginalMethod>();
    if let Some(OriginalMethod(original)) = original {
        let cx = opentelemetry::Context::current();
        let span = cx.span();
        // The route as `RequestTracing` names it.
        let route = req.match_pattern().unwrap_or_else(|| "default".to_owned());
        span.update_name(format!("HTTP {route}"));
        span.set_attribute(KeyValue::new(METHOD_ORIGINAL, original.to_string()));
        req.head_mut().method = original;
    }
    next.call(req).await
}
