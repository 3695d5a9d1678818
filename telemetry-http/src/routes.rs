//! The three handlers. They find their state in resource-level app data,
//! so two instances mounted in different scopes do not see each other's.

use std::sync::PoisonError;
use std::time::SystemTime;

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, CacheDirective, RETRY_AFTER};
use actix_web::{HttpRequest, HttpResponse, web};
use breaker_otel::BackendHandle;
use prometheus::{Encoder, TextEncoder};
use serde::Serialize;

use crate::Shared;
use crate::client_ip::client_key;
use crate::health::{HEALTH_JSON, HealthStatus, Liveness, TelemetryHealth};
use crate::rate_limit::Decision;

/// The body of a refused request, in the shape the host service uses for
/// its own errors.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: &'static str,
    detail: String,
}

fn no_store() -> (actix_web::http::header::HeaderName, String) {
    (CACHE_CONTROL, CacheDirective::NoStore.to_string())
}

fn json<T: Serialize>(
    mut builder: actix_web::HttpResponseBuilder,
    content_type: &str,
    body: &T,
) -> HttpResponse {
    match serde_json::to_vec(body) {
        Ok(bytes) => builder
            .insert_header((CONTENT_TYPE, content_type))
            .insert_header(no_store())
            .body(bytes),
        // Our bodies are plain structs of strings and numbers.
        Err(err) => HttpResponse::InternalServerError()
            .insert_header(no_store())
            .body(err.to_string()),
    }
}

pub(crate) async fn liveness() -> HttpResponse {
    json(
        HttpResponse::Ok(),
        HEALTH_JSON,
        &Liveness {
            status: HealthStatus::Pass,
        },
    )
}

pub(crate) async fn telemetry_health(shared: web::Data<Shared>) -> HttpResponse {
    let backends: Vec<_> = shared
        .backends
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(BackendHandle::snapshot)
        .collect();
    let body = TelemetryHealth::new(&shared.handle.snapshot(), SystemTime::now())
        .with_service_instance_id(shared.config.service_instance_id.as_deref())
        .with_backends(&backends);
    let builder = match body.status {
        HealthStatus::Pass | HealthStatus::Warn => HttpResponse::Ok(),
        HealthStatus::Fail => HttpResponse::ServiceUnavailable(),
    };
    json(builder, HEALTH_JSON, &body)
}

pub(crate) async fn metrics(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    let key = client_key(&req, &shared.config.trusted_proxies);
    if let Decision::Limited { retry_after_secs } = shared.limiter.check(key) {
        let detail = format!(
            "at most {} /metrics requests per minute per client (burst {}); retry in {retry_after_secs} s",
            shared.config.requests_per_minute, shared.config.burst
        );
        let mut builder = HttpResponse::TooManyRequests();
        builder.insert_header((RETRY_AFTER, retry_after_secs.to_string()));
        return json(
            builder,
            "application/json",
            &ErrorBody {
                error: "rate_limited",
                detail,
            },
        );
    }

    let encoder = TextEncoder::new();
    let mut text = Vec::new();
    match encoder.encode(&shared.registry.gather(), &mut text) {
        Ok(()) => HttpResponse::Ok()
            .insert_header((CONTENT_TYPE, encoder.format_type()))
            .insert_header(no_store())
            .body(text),
        Err(err) => json(
            HttpResponse::InternalServerError(),
            "application/json",
            &ErrorBody {
                error: "metrics_encoding_failed",
                detail: err.to_string(),
            },
        ),
    }
}
