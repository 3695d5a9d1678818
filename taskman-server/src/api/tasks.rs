//! `/tasks`: create, list, read, update and delete tasks.
//!
//! | request | success |
//! |---|---|
//! | `POST /tasks` `{"title", "description"?, "status"?}` | 201, `Location: /tasks/{id}`, the task |
//! | `GET /tasks?limit&offset&status` | 200 `{"items", "total", "limit", "offset"}` |
//! | `GET /tasks/{id}` | 200, the task |
//! | `PATCH /tasks/{id}` `{"title"?, "description"?, "status"?}` | 200, the task |
//! | `DELETE /tasks/{id}` | 204 |
//!
//! `HEAD` is answered wherever `GET` is, by the same handler: the same status and headers, and
//! the server sends no body.
//!
//! Bodies reject unknown fields; in a PATCH, `"description": null` removes the description,
//! while `null` for `title` or `status` is an error (they cannot be absent). `limit` is 0 to
//! 100 (default 20), `offset` 0 or more. Errors are described in [`super::error`].
//!
//! A body must arrive within `server.request_body_timeout` of the request's head
//! ([`body_deadline`]); actix bounds the head and idle connections but not bodies, so without
//! it a client that announces a `Content-Length` and then stalls holds its connection, and
//! the request's memory, for as long as it likes. Such a request is answered `408`
//! `request_timeout` and its connection closed.

use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::{JsonPayloadError, PayloadError};
use actix_web::http::{ConnectionType, StatusCode, header};
use actix_web::middleware::Next;
use actix_web::{HttpMessage as _, HttpRequest, HttpResponse, Scope, web};
use futures_util::StreamExt as _;
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::ApiError;
use super::error::{always, json_error, path_error, query_error};
use crate::storage::{ListQuery, Store};
use crate::task::{NewTask, Task, TaskChanges, TaskStatus, Title};

/// Items per page when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 20;
/// The largest `limit` accepted.
pub const MAX_LIMIT: u32 = 100;

/// Every task route as (method, route template): what a per-route metric should know about
/// before the first request. `HEAD` goes wherever `GET` does and is not listed: its series
/// appear on first use.
pub const ROUTES: [(&str, &str); 5] = [
    ("POST", "/tasks"),
    ("GET", "/tasks"),
    ("GET", "/tasks/{id}"),
    ("PATCH", "/tasks/{id}"),
    ("DELETE", "/tasks/{id}"),
];

/// The `/tasks` routes, with their body limit and error handlers. Needs `web::Data<Store>`
/// in the application. A [`Scope`] rather than a configure function so that middleware
/// (request tracing) can wrap the task routes and nothing else.
pub fn scope(max_body_bytes: usize) -> Scope {
    web::scope("/tasks")
        .app_data(
            web::JsonConfig::default()
                .limit(max_body_bytes)
                .error_handler(body_error),
        )
        .app_data(web::PathConfig::default().error_handler(path_error))
        .app_data(web::QueryConfig::default().error_handler(query_error))
        .service(
            web::resource("")
                .name("tasks")
                .route(web::get().to(list_tasks))
                .route(web::head().to(list_tasks))
                .route(web::post().to(create_task))
                .default_service(always(ApiError::method_not_allowed("GET, HEAD, POST"))),
        )
        .service(
            web::resource("/{id}")
                .name("task")
                .route(web::get().to(get_task))
                .route(web::head().to(get_task))
                .route(web::patch().to(update_task))
                .route(web::delete().to(delete_task))
                .default_service(always(ApiError::method_not_allowed(
                    "GET, HEAD, PATCH, DELETE",
                ))),
        )
}

/// How long a request body may take to arrive, counted from the end of the head: the
/// `server.request_body_timeout` that [`body_deadline`] reads from the application's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTimeout(pub Duration);

impl Default for BodyTimeout {
    /// The default of `server.request_body_timeout`, for applications that set none.
    fn default() -> Self {
        Self(Duration::from_secs(10))
    }
}

/// Middleware: the request's body stream ends with a timeout error once [`BodyTimeout`] has
/// passed since the head arrived, and the answer to such a request (`408`) closes the
/// connection, so a stalled client cannot hold it open afterwards.
///
/// # Errors
/// Those of the wrapped service.
pub async fn body_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let BodyTimeout(timeout) = req.app_data::<BodyTimeout>().copied().unwrap_or_default();
    let deadline = tokio::time::Instant::now() + timeout;
    let payload = req.take_payload();
    // `Some(payload)` while reading; `None` once the deadline has passed, so the stream ends.
    let stream = futures_util::stream::unfold(Some(payload), move |payload| async move {
        let mut payload = payload?;
        match tokio::time::timeout_at(deadline, payload.next()).await {
            Ok(Some(chunk)) => Some((chunk, Some(payload))),
            Ok(None) => None,
            Err(_) => Some((Err(body_timed_out(timeout)), None)),
        }
    });
    req.set_payload(Payload::from(
        Box::pin(stream) as std::pin::Pin<Box<dyn futures_util::Stream<Item = _>>>
    ));
    let mut res = next.call(req).await?;
    if res.status() == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body may never come: waiting for it would keep the connection.
        res.response_mut()
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    Ok(res)
}

/// The error a body stream ends with at its deadline; [`body_error`] recognises it by kind.
fn body_timed_out(timeout: Duration) -> PayloadError {
    PayloadError::Io(io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "the body did not arrive within {} (server.request_body_timeout)",
            humantime::format_duration(timeout)
        ),
    ))
}

/// `JsonConfig` error handler: a body that missed its deadline is `408 request_timeout`;
/// everything else is [`json_error`]'s.
fn body_error(err: JsonPayloadError, req: &HttpRequest) -> actix_web::Error {
    match err {
        JsonPayloadError::Payload(PayloadError::Io(io)) if io.kind() == io::ErrorKind::TimedOut => {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                io.to_string(),
            )
            .into()
        }
        other => json_error(other, req),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    title: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, deserialize_with = "not_null")]
    status: Option<TaskStatus>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    #[serde(default, deserialize_with = "not_null")]
    title: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    description: Option<Option<String>>,
    #[serde(default, deserialize_with = "not_null")]
    status: Option<TaskStatus>,
}

/// `T` read from a JSON object only: serde's derive would also accept an array of the field
/// values in order, such as `["title"]`.
#[derive(Debug)]
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }

        d.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

/// A field that may be left out but not set to `null`.
fn not_null<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A field where left out (`None`) and `null` (`Some(None)`) mean different things.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Query parameters as text, so a bad value is reported by name and value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    limit: Option<String>,
    offset: Option<String>,
    status: Option<String>,
}

impl ListParams {
    fn parse(self) -> Result<ListQuery, ApiError> {
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .parse::<u32>()
                .ok()
                .filter(|n| *n <= MAX_LIMIT)
                .ok_or_else(|| {
                    ApiError::invalid_query(format!(
                        "limit must be a whole number from 0 to {MAX_LIMIT}, got {text:?}"
                    ))
                })?,
        };
        let offset = match self.offset {
            None => 0,
            // SQLite offsets are i64.
            Some(text) => text
                .parse::<i64>()
                .ok()
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| {
                    ApiError::invalid_query(format!(
                        "offset must be a whole number from 0 to {}, got {text:?}",
                        i64::MAX
                    ))
                })?,
        };
        let status = match self.status {
            None => None,
            Some(text) => Some(
                text.parse::<TaskStatus>()
                    .map_err(|err| ApiError::invalid_query(err.to_string()))?,
            ),
        };
        Ok(ListQuery {
            limit,
            offset,
            status,
        })
    }
}

#[derive(Debug, Serialize)]
struct PageBody {
    items: Vec<Task>,
    total: u64,
    limit: u32,
    offset: u64,
}

fn no_task(id: i64) -> ApiError {
    ApiError::not_found(format!("no task with id {id}"))
}

async fn create_task(
    store: web::Data<Store>,
    body: web::Json<Object<CreateBody>>,
) -> Result<HttpResponse, ApiError> {
    let Object(body) = body.into_inner();
    let task = NewTask {
        title: Title::new(body.title).map_err(ApiError::validation)?,
        description: body.description,
        status: body.status.unwrap_or_default(),
    };
    let task = store.create(task).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/tasks/{}", task.id)))
        .json(task))
}

async fn list_tasks(
    store: web::Data<Store>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    let query = params.into_inner().parse()?;
    let page = store.list(query).await?;
    Ok(HttpResponse::Ok().json(PageBody {
        items: page.items,
        total: page.total,
        limit: query.limit,
        offset: query.offset,
    }))
}

async fn get_task(store: web::Data<Store>, id: web::Path<i64>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let task = store.get(id).await?.ok_or_else(|| no_task(id))?;
    Ok(HttpResponse::Ok().json(task))
}

async fn update_task(
    store: web::Data<Store>,
    id: web::Path<i64>,
    body: web::Json<Object<PatchBody>>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let Object(body) = body.into_inner();
    let changes = TaskChanges {
        title: body
            .title
            .map(Title::new)
            .transpose()
            .map_err(ApiError::validation)?,
        description: body.description,
        status: body.status,
    };
    let task = store
        .update(id, changes)
        .await?
        .ok_or_else(|| no_task(id))?;
    Ok(HttpResponse::Ok().json(task))
}

async fn delete_task(
    store: web::Data<Store>,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    if store.delete(id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(no_task(id))
    }
}
