//! The API's one error shape, `{"error": "<code>", "detail": "<text>"}` with a JSON content
//! type, and the handlers that turn actix's own extractor failures into it, so that no
//! plain-text error escapes.
//!
//! | status | `error` | when |
//! |---|---|---|
//! | 400 | `malformed_json` | the body is not JSON |
//! | 400 | `invalid_body` | JSON of the wrong shape: wrong types, unknown or missing fields, unknown status |
//! | 400 | `validation_failed` | well-formed but breaks a rule (title length, blank title) |
//! | 400 | `invalid_query` | bad `limit`, `offset` or `status`, or an unknown query parameter |
//! | 400 | `unreadable_body` | the body could not be read (truncated, bad encoding) |
//! | 404 | `not_found` | no such task (including non-numeric ids) or no such route |
//! | 405 | `method_not_allowed` | the route exists, the method does not (see `Allow`) |
//! | 408 | `request_timeout` | the body did not arrive within `server.request_body_timeout`; the connection is closed |
//! | 413 | `payload_too_large` | the body exceeds `server.max_body_bytes` |
//! | 415 | `unsupported_media_type` | the body is not sent as `application/json` |
//! | 500 | `storage_error` | a database statement failed: a bug (details in the server log only) |
//! | 503 | `storage_unavailable` | the database cannot store or read tasks right now: disk full, I/O error, file deleted or replaced, locked by another process; PostgreSQL down, unreachable, out of pooled connections or too slow. Nothing was acknowledged; `Retry-After` says when to try again |
//!
//! 503 rather than 500 for an unavailable database: the request was fine and the same
//! request may succeed later (once the disk has room), which is what 503 and `Retry-After`
//! tell clients and load balancers. A write is answered 2xx only once it is committed.

use std::fmt;
use std::time::Duration;

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, ResponseError, Route, web};
use serde::Serialize;

use crate::storage::StorageError;

/// `Retry-After` of a `storage_unavailable` answer: long enough for an operator's fix or a
/// lock holder to finish, short enough that clients come back soon after.
pub const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// An error response of the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    allow: Option<&'static str>,
    retry_after: Option<Duration>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: &'a str,
}

impl ApiError {
    /// An error with this status, short code and human-readable detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            allow: None,
            retry_after: None,
        }
    }

    /// 404 `not_found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 400 `validation_failed`.
    pub fn validation(detail: impl fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "validation_failed",
            detail.to_string(),
        )
    }

    /// 400 `invalid_query`.
    pub fn invalid_query(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", detail)
    }

    /// 405 `method_not_allowed`, with an `Allow` header listing `allow`.
    pub fn method_not_allowed(allow: &'static str) -> Self {
        Self {
            allow: Some(allow),
            ..Self::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("this route allows {allow}"),
            )
        }
    }

    /// The short machine-readable code.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(allow) = self.allow {
            response.insert_header((header::ALLOW, allow));
        }
        if let Some(after) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, after.as_secs().to_string()));
        }
        response.json(ErrorBody {
            error: self.code,
            detail: &self.detail,
        })
    }
}

impl From<StorageError> for ApiError {
    /// The cause was logged where it happened; clients learn only whether to retry.
    fn from(err: StorageError) -> Self {
        if err.is_unavailable() {
            Self {
                retry_after: Some(STORAGE_RETRY_AFTER),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the task database cannot store or read tasks right now and nothing was \
                     changed; retry later (the server log has the cause)",
                )
            }
        } else {
            Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                "the task database failed; the server log has the details",
            )
        }
    }
}

/// `JsonConfig` error handler.
pub fn json_error(err: JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let too_large =
        |detail: String| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", detail);
    let api = match err {
        JsonPayloadError::OverflowKnownLength { length, limit } => {
            too_large(format!("the body is {length} bytes; the limit is {limit}"))
        }
        JsonPayloadError::Overflow { limit } => too_large(format!(
            "the body is larger than the limit of {limit} bytes"
        )),
        JsonPayloadError::ContentType => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(err) if err.is_data() => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", err.to_string())
        }
        JsonPayloadError::Deserialize(err) => {
            ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", err.to_string())
        }
        JsonPayloadError::Payload(err) if err.status_code() == StatusCode::PAYLOAD_TOO_LARGE => {
            too_large(err.to_string())
        }
        other => {
            let status = other.status_code();
            let status = if status.is_client_error() {
                status
            } else {
                StatusCode::BAD_REQUEST
            };
            ApiError::new(status, "unreadable_body", other.to_string())
        }
    };
    api.into()
}

/// `PathConfig` error handler: a path parameter that cannot be an id names no task.
pub fn path_error(_err: PathError, req: &HttpRequest) -> actix_web::Error {
    ApiError::not_found(format!("nothing at {}", req.path())).into()
}

/// `QueryConfig` error handler.
pub fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    let detail = match err {
        QueryPayloadError::Deserialize(err) => err.to_string(),
        other => other.to_string(),
    };
    ApiError::invalid_query(detail).into()
}

/// The application's default service: no route matches the path.
pub async fn no_route(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.path()
    )))
}

/// A route that fails every request with `err`, such as a resource's 405 default.
pub fn always(err: ApiError) -> Route {
    web::to(move || {
        let err = err.clone();
        async move { Err::<HttpResponse, _>(err) }
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::storage::Unavailable;

    #[test]
    fn an_unavailable_database_is_503_with_retry_after_and_a_broken_statement_500() {
        let unavailable = ApiError::from(StorageError::Unavailable(Unavailable::FileGone {
            path: PathBuf::from("/data/tasks.db"),
        }));
        let response = unavailable.error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(unavailable.code(), "storage_unavailable");
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "5");
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
        assert!(
            !unavailable.detail().contains("/data"),
            "no paths to clients"
        );

        let broken = ApiError::from(StorageError::Query(rusqlite::Error::InvalidQuery));
        let response = broken.error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(broken.code(), "storage_error");
        assert!(!response.headers().contains_key(header::RETRY_AFTER));
    }
}
