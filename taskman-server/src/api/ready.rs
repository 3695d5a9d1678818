//! `GET /health/ready` (and `HEAD`): readiness, meaning "the task database answers".
//!
//! | store | state | answer |
//! |---|---|---|
//! | SQLite | the database file is still the one opened, and it reads | `200 {"status":"pass"}` |
//! | SQLite | deleted, replaced, unreadable | `503 {"status":"fail","output":"<why, one line>"}` |
//! | PostgreSQL | `SELECT 1` answered through the pool | `200 {"status":"pass"}` |
//! | PostgreSQL | no connection within `storage.acquire_timeout`, or no answer within `storage.statement_timeout` | `503 {"status":"fail","output":"<why, one line>"}` |
//!
//! `application/health+json` (the IETF health-check draft, like `/health` and
//! `/health/telemetry`), `Cache-Control: no-store`. The check is cheap ([`Store::check`]: a
//! `stat` and a header read, or one round trip), so probes may come often; the route is
//! neither rate limited nor traced. For SQLite it cannot see a full disk: only a write shows
//! that, and a full disk still serves reads, so failing readiness for it would take a server
//! out of rotation that can still answer and could never be seen recovering. Writes then
//! answer 503 `storage_unavailable`.
//!
//! Liveness (`/health`) stays independent of the database: a restart does not bring back a
//! deleted file, nor a database server.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, CacheDirective};
use actix_web::{HttpResponse, web};
use serde::Serialize;

use crate::storage::Store;

/// The route's path.
pub const PATH: &str = "/health/ready";

/// The draft's media type.
const HEALTH_JSON: &str = "application/health+json";

#[derive(Debug, Serialize)]
struct Readiness {
    status: &'static str,
    /// Why the status is not `pass`; the draft omits it on `pass`.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
}

/// Mounts `GET` and `HEAD /health/ready`. Needs `web::Data<Store>` in the application.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(PATH)
            .route(web::get().to(ready))
            .route(web::head().to(ready)),
    );
}

async fn ready(store: web::Data<Store>) -> HttpResponse {
    let (status, body) = match store.check().await {
        Ok(()) => (
            StatusCode::OK,
            Readiness {
                status: "pass",
                output: None,
            },
        ),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Readiness {
                status: "fail",
                // Display is one line: the store's messages never quote SQL.
                output: Some(err.to_string().replace('\n', " ")),
            },
        ),
    };
    HttpResponse::build(status)
        .content_type(HEALTH_JSON)
        .insert_header(header::CacheControl(vec![CacheDirective::NoStore]))
        .body(serde_json::to_string(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use actix_web::{App, test};

    use super::*;

    #[actix_web::test]
    async fn passes_while_the_file_is_ours_and_fails_with_the_reason_once_it_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let store = Store::open(&path).unwrap();
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(store))
                .configure(configure),
        )
        .await;
        let probe = |method: actix_web::http::Method| {
            test::TestRequest::default()
                .method(method)
                .uri(PATH)
                .to_request()
        };

        let ok = test::call_service(&app, probe(actix_web::http::Method::GET)).await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers().get(header::CONTENT_TYPE).unwrap(), HEALTH_JSON);
        assert_eq!(ok.headers().get(header::CACHE_CONTROL).unwrap(), "no-store");
        assert_eq!(test::read_body(ok).await, r#"{"status":"pass"}"#);
        let head = test::call_service(&app, probe(actix_web::http::Method::HEAD)).await;
        assert_eq!(head.status(), StatusCode::OK);

        std::fs::remove_file(&path).unwrap();
        let fail = test::call_service(&app, probe(actix_web::http::Method::GET)).await;
        assert_eq!(fail.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            fail.headers().get(header::CONTENT_TYPE).unwrap(),
            HEALTH_JSON
        );
        assert_eq!(
            fail.headers().get(header::CACHE_CONTROL).unwrap(),
            "no-store"
        );
        let body: serde_json::Value = serde_json::from_slice(&test::read_body(fail).await).unwrap();
        assert_eq!(body["status"], "fail");
        let output = body["output"].as_str().unwrap();
        assert!(output.contains("deleted or renamed"), "{output}");
        let head = test::call_service(&app, probe(actix_web::http::Method::HEAD)).await;
        assert_eq!(head.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
