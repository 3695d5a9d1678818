//! The task API driven in-process through the real application ([`app::app`]) with an
//! in-memory store: every bad input is a 4xx JSON error of one shape, and the happy paths
//! (CRUD, pagination, filtering) behave as documented.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::ServiceResponse;
use actix_web::http::Method;
use actix_web::http::{StatusCode, header};
use actix_web::test::{self, TestRequest};
use actix_web::{HttpServer, rt};
use breaker_otel::BreakerHandle;
use serde_json::{Value, json};
use taskman_server::app::{AppState, app};
use taskman_server::storage::{IN_MEMORY, Store};
use telemetry_http::{TelemetryHttp, TelemetryHttpConfig};

/// Small enough that "huge" bodies are cheap to build.
const MAX_BODY: usize = 2048;

fn state() -> AppState {
    AppState {
        store: Store::open(Path::new(IN_MEMORY)).unwrap(),
        max_body_bytes: MAX_BODY,
        telemetry: TelemetryHttp::new(BreakerHandle::disabled(), TelemetryHttpConfig::default())
            .unwrap(),
    }
}

struct Reply {
    status: StatusCode,
    headers: header::HeaderMap,
    body: Value,
    raw: String,
}

async fn reply<B: MessageBody>(resp: ServiceResponse<B>) -> Reply {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = test::read_body(resp).await;
    let raw = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        raw,
    }
}

/// Sends a `TestRequest` to the service and reads the whole reply. A macro because the
/// service's request type cannot be named outside actix.
macro_rules! send {
    ($svc:expr, $req:expr $(,)?) => {
        reply(test::call_service(&$svc, $req.to_request()).await)
    };
}

fn json_post(uri: &str, body: &Value) -> TestRequest {
    TestRequest::post()
        .uri(uri)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body.to_string())
}

fn json_patch(uri: &str, body: &Value) -> TestRequest {
    TestRequest::patch()
        .uri(uri)
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body.to_string())
}

fn content_type(reply: &Reply) -> &str {
    reply
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A bad request: what is sent and which error must come back.
struct Bad {
    name: &'static str,
    method: &'static str,
    uri: &'static str,
    content_type: Option<&'static str>,
    body: String,
    status: u16,
    code: &'static str,
}

fn bad(
    name: &'static str,
    method: &'static str,
    uri: &'static str,
    body: impl Into<String>,
    status: u16,
    code: &'static str,
) -> Bad {
    Bad {
        name,
        method,
        uri,
        content_type: Some("application/json"),
        body: body.into(),
        status,
        code,
    }
}

fn title_json(title: &str) -> String {
    json!({ "title": title }).to_string()
}

#[rustfmt::skip] // a table reads best one case per line
fn bad_requests() -> Vec<Bad> {
    let huge = json!({ "title": "x", "description": "d".repeat(MAX_BODY) }).to_string();
    let typed = |content_type, case: Bad| Bad { content_type, ..case };
    vec![
        // Bodies that are not JSON.
        bad("truncated json", "POST", "/tasks", r#"{"title": "#, 400, "malformed_json"),
        bad("trailing garbage", "POST", "/tasks", r#"{"title": "a"} x"#, 400, "malformed_json"),
        bad("empty body", "POST", "/tasks", "", 400, "malformed_json"),
        bad("not json at all", "POST", "/tasks", "title=a", 400, "malformed_json"),
        // JSON of the wrong shape.
        bad("title is a number", "POST", "/tasks", r#"{"title": 5}"#, 400, "invalid_body"),
        bad("title is null", "POST", "/tasks", r#"{"title": null}"#, 400, "invalid_body"),
        bad("description is a list", "POST", "/tasks", r#"{"title": "a", "description": []}"#, 400, "invalid_body"),
        bad("body is a list of field values", "POST", "/tasks", r#"["a"]"#, 400, "invalid_body"),
        bad("body is a string", "POST", "/tasks", r#""a""#, 400, "invalid_body"),
        bad("title missing", "POST", "/tasks", "{}", 400, "invalid_body"),
        bad("unknown status", "POST", "/tasks", r#"{"title": "a", "status": "doing"}"#, 400, "invalid_body"),
        bad("status is null", "POST", "/tasks", r#"{"title": "a", "status": null}"#, 400, "invalid_body"),
        bad("unknown field", "POST", "/tasks", r#"{"title": "a", "priority": 1}"#, 400, "invalid_body"),
        bad("client-chosen id", "POST", "/tasks", r#"{"title": "a", "id": 7}"#, 400, "invalid_body"),
        // Well-formed but breaking the title rule.
        bad("empty title", "POST", "/tasks", title_json(""), 400, "validation_failed"),
        bad("blank title", "POST", "/tasks", title_json(" \t "), 400, "validation_failed"),
        bad("201-character title", "POST", "/tasks", title_json(&"x".repeat(201)), 400, "validation_failed"),
        bad("201 two-byte characters", "POST", "/tasks", title_json(&"é".repeat(201)), 400, "validation_failed"),
        // Transport-level problems.
        bad("body over the limit", "POST", "/tasks", huge.clone(), 413, "payload_too_large"),
        typed(Some("text/plain"), bad("text/plain body", "POST", "/tasks", title_json("a"), 415, "unsupported_media_type")),
        typed(None, bad("no content type", "POST", "/tasks", title_json("a"), 415, "unsupported_media_type")),
        // The same rules on PATCH (task 1 exists in every case).
        bad("patch truncated json", "PATCH", "/tasks/1", "{", 400, "malformed_json"),
        bad("patch unknown field", "PATCH", "/tasks/1", r#"{"done": true}"#, 400, "invalid_body"),
        bad("patch title null", "PATCH", "/tasks/1", r#"{"title": null}"#, 400, "invalid_body"),
        bad("patch body is a list", "PATCH", "/tasks/1", r#"["a"]"#, 400, "invalid_body"),
        bad("patch status wrong type", "PATCH", "/tasks/1", r#"{"status": 1}"#, 400, "invalid_body"),
        bad("patch unknown status", "PATCH", "/tasks/1", r#"{"status": "DONE"}"#, 400, "invalid_body"),
        bad("patch 201-character title", "PATCH", "/tasks/1", title_json(&"x".repeat(201)), 400, "validation_failed"),
        bad("patch body over the limit", "PATCH", "/tasks/1", huge, 413, "payload_too_large"),
        typed(Some("application/xml"), bad("patch xml", "PATCH", "/tasks/1", "<task/>", 415, "unsupported_media_type")),
        // Ids that name no task.
        bad("non-numeric id", "GET", "/tasks/abc", "", 404, "not_found"),
        bad("non-numeric id on patch", "PATCH", "/tasks/abc", title_json("a"), 404, "not_found"),
        bad("non-numeric id on delete", "DELETE", "/tasks/abc", "", 404, "not_found"),
        bad("id beyond i64", "GET", "/tasks/99999999999999999999", "", 404, "not_found"),
        bad("missing id", "GET", "/tasks/999", "", 404, "not_found"),
        bad("missing id on patch", "PATCH", "/tasks/999", title_json("a"), 404, "not_found"),
        bad("missing id on delete", "DELETE", "/tasks/999", "", 404, "not_found"),
        bad("negative id", "GET", "/tasks/-1", "", 404, "not_found"),
        // Query parameters.
        bad("limit over 100", "GET", "/tasks?limit=101", "", 400, "invalid_query"),
        bad("negative limit", "GET", "/tasks?limit=-1", "", 400, "invalid_query"),
        bad("non-numeric limit", "GET", "/tasks?limit=ten", "", 400, "invalid_query"),
        bad("empty limit", "GET", "/tasks?limit=", "", 400, "invalid_query"),
        bad("negative offset", "GET", "/tasks?offset=-5", "", 400, "invalid_query"),
        bad("offset beyond i64", "GET", "/tasks?offset=9223372036854775808", "", 400, "invalid_query"),
        bad("unknown status filter", "GET", "/tasks?status=doing", "", 400, "invalid_query"),
        bad("unknown parameter", "GET", "/tasks?sort=title", "", 400, "invalid_query"),
        bad("repeated parameter", "GET", "/tasks?limit=1&limit=2", "", 400, "invalid_query"),
        // Routes and methods.
        bad("unknown route", "GET", "/nope", "", 404, "not_found"),
        bad("below a task", "GET", "/tasks/1/comments", "", 404, "not_found"),
        bad("trailing slash", "GET", "/tasks/", "", 404, "not_found"),
        bad("put on the collection", "PUT", "/tasks", title_json("a"), 405, "method_not_allowed"),
        bad("post on a task", "POST", "/tasks/1", title_json("a"), 405, "method_not_allowed"),
    ]
}

#[actix_web::test]
async fn every_bad_request_is_a_4xx_json_error() {
    let svc = test::init_service(app(state())).await;
    // Task 1 exists, so PATCH cases fail for the reason they name.
    let created = send!(svc, json_post("/tasks", &json!({ "title": "existing" }))).await;
    assert_eq!(created.status, StatusCode::CREATED);

    for case in bad_requests() {
        let method = actix_web::http::Method::from_bytes(case.method.as_bytes()).unwrap();
        let mut req = TestRequest::default()
            .method(method)
            .uri(case.uri)
            .set_payload(case.body.clone());
        if let Some(ct) = case.content_type {
            req = req.insert_header((header::CONTENT_TYPE, ct));
        }
        let reply = send!(svc, req).await;
        let name = case.name;
        assert!(
            reply.status.is_client_error(),
            "{name}: status {} body {}",
            reply.status,
            reply.raw
        );
        assert_eq!(
            reply.status.as_u16(),
            case.status,
            "{name}: body {}",
            reply.raw
        );
        assert_eq!(content_type(&reply), "application/json", "{name}");
        let fields = reply
            .body
            .as_object()
            .unwrap_or_else(|| panic!("{name}: not a JSON object: {}", reply.raw));
        assert_eq!(
            fields.len(),
            2,
            "{name}: exactly error and detail: {}",
            reply.raw
        );
        assert_eq!(reply.body["error"], case.code, "{name}: {}", reply.raw);
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty(), "{name}: empty detail");
    }

    // None of the rejected writes changed anything.
    let list = send!(svc, TestRequest::get().uri("/tasks")).await;
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["items"][0]["title"], "existing");
}

#[actix_web::test]
async fn error_details_name_what_was_wrong() {
    let svc = test::init_service(app(state())).await;
    let cases = [
        (
            json_post("/tasks", &json!({ "title": "x".repeat(201) })),
            "title must be at most 200 characters, got 201",
        ),
        (
            json_post("/tasks", &json!({ "title": "a", "colour": "red" })),
            "unknown field `colour`",
        ),
        (
            TestRequest::get().uri("/tasks?limit=500"),
            "limit must be a whole number from 0 to 100, got \"500\"",
        ),
        (
            TestRequest::get().uri("/tasks?status=later"),
            "unknown status \"later\"",
        ),
        (TestRequest::get().uri("/tasks/77"), "no task with id 77"),
        (
            TestRequest::delete().uri("/nowhere"),
            "no route for DELETE /nowhere",
        ),
    ];
    for (req, expected) in cases {
        let reply = send!(svc, req).await;
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(expected),
            "{detail:?} should contain {expected:?}"
        );
    }
}

#[actix_web::test]
async fn the_route_list_matches_the_routes() {
    let svc = test::init_service(app(state())).await;
    // DELETE last, so task 1 exists for the others.
    for (method, template) in taskman_server::api::tasks::ROUTES {
        let method = actix_web::http::Method::from_bytes(method.as_bytes()).unwrap();
        let req = TestRequest::default()
            .method(method.clone())
            .uri(&template.replace("{id}", "1"))
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .set_payload(json!({ "title": "t" }).to_string());
        let reply = send!(svc, req).await;
        assert!(
            reply.status.is_success(),
            "{method} {template}: {} {}",
            reply.status,
            reply.raw
        );
    }
}

#[actix_web::test]
async fn method_not_allowed_lists_the_allowed_methods() {
    let svc = test::init_service(app(state())).await;
    for (req, allow) in [
        (TestRequest::put().uri("/tasks"), "GET, HEAD, POST"),
        (TestRequest::delete().uri("/tasks"), "GET, HEAD, POST"),
        (
            TestRequest::post().uri("/tasks/1"),
            "GET, HEAD, PATCH, DELETE",
        ),
    ] {
        let reply = send!(svc, req).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(reply.headers.get(header::ALLOW).unwrap(), allow);
    }
}

#[actix_web::test]
async fn create_read_update_delete() {
    let svc = test::init_service(app(state())).await;

    let created = send!(svc, json_post("/tasks", &json!({ "title": "buy milk" }))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(content_type(&created), "application/json");
    let task = created.body.clone();
    let id = task["id"].as_i64().unwrap();
    assert_eq!(
        created.headers.get(header::LOCATION).unwrap(),
        &format!("/tasks/{id}")
    );
    assert_eq!(task["title"], "buy milk");
    assert_eq!(task["description"], Value::Null);
    assert_eq!(task["status"], "todo");
    assert_eq!(task["created_at"], task["updated_at"]);
    let created_at = task["created_at"].as_str().unwrap();
    assert!(
        created_at.ends_with('Z') && created_at.contains('T'),
        "RFC 3339 UTC: {created_at}"
    );
    let keys: Vec<&String> = task.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 6, "{keys:?}");

    let read = send!(svc, TestRequest::get().uri(&format!("/tasks/{id}"))).await;
    assert_eq!((read.status, &read.body), (StatusCode::OK, &task));

    // Only what is sent changes.
    let patched = send!(
        svc,
        json_patch(
            &format!("/tasks/{id}"),
            &json!({ "status": "in_progress", "description": "2 litres" })
        )
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK);
    assert_eq!(patched.body["title"], "buy milk");
    assert_eq!(patched.body["status"], "in_progress");
    assert_eq!(patched.body["description"], "2 litres");
    assert_eq!(patched.body["created_at"], task["created_at"]);
    assert!(patched.body["updated_at"].as_str().unwrap() >= created_at);

    // null removes the description; merge-patch content type is accepted.
    let cleared = send!(
        svc,
        TestRequest::patch()
            .uri(&format!("/tasks/{id}"))
            .insert_header((header::CONTENT_TYPE, "application/merge-patch+json"))
            .set_payload(r#"{"description": null, "title": "buy oat milk"}"#),
    )
    .await;
    assert_eq!(cleared.status, StatusCode::OK, "{}", cleared.raw);
    assert_eq!(cleared.body["description"], Value::Null);
    assert_eq!(cleared.body["title"], "buy oat milk");
    assert_eq!(cleared.body["status"], "in_progress");

    // An empty patch changes nothing, not even updated_at.
    let same = send!(svc, json_patch(&format!("/tasks/{id}"), &json!({}))).await;
    assert_eq!((same.status, &same.body), (StatusCode::OK, &cleared.body));

    let deleted = send!(svc, TestRequest::delete().uri(&format!("/tasks/{id}"))).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert!(deleted.raw.is_empty());
    let gone = send!(svc, TestRequest::get().uri(&format!("/tasks/{id}"))).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let again = send!(svc, TestRequest::delete().uri(&format!("/tasks/{id}"))).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
}

#[actix_web::test]
async fn titles_are_measured_in_characters() {
    let svc = test::init_service(app(state())).await;
    for title in [
        "x".repeat(200),
        "é".repeat(200),
        "🦀".repeat(200),
        "a".to_owned(),
    ] {
        let reply = send!(
            svc,
            json_post("/tasks", &json!({ "title": title, "status": "done" }))
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{} chars, {} bytes: {}",
            title.chars().count(),
            title.len(),
            reply.raw
        );
        assert_eq!(reply.body["title"], title.as_str());
        assert_eq!(reply.body["status"], "done");
    }
}

#[actix_web::test]
async fn list_paginates_and_filters() {
    let svc = test::init_service(app(state())).await;
    let statuses = ["todo", "done", "todo", "in_progress", "todo"];
    for (i, status) in statuses.iter().enumerate() {
        let reply = send!(
            svc,
            json_post(
                "/tasks",
                &json!({ "title": format!("t{i}"), "status": status })
            )
        )
        .await;
        assert_eq!(reply.status, StatusCode::CREATED);
    }
    let titles = |body: &Value| -> Vec<String> {
        body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["title"].as_str().unwrap().to_owned())
            .collect()
    };

    let cases: &[(&str, &[&str], u64, u64, u64)] = &[
        // uri, titles, total, limit, offset
        ("/tasks", &["t0", "t1", "t2", "t3", "t4"], 5, 20, 0),
        ("/tasks?limit=2", &["t0", "t1"], 5, 2, 0),
        ("/tasks?limit=2&offset=2", &["t2", "t3"], 5, 2, 2),
        ("/tasks?limit=2&offset=4", &["t4"], 5, 2, 4),
        ("/tasks?offset=10", &[], 5, 20, 10),
        ("/tasks?limit=0", &[], 5, 0, 0),
        (
            "/tasks?limit=100",
            &["t0", "t1", "t2", "t3", "t4"],
            5,
            100,
            0,
        ),
        ("/tasks?status=todo", &["t0", "t2", "t4"], 3, 20, 0),
        ("/tasks?status=todo&limit=1&offset=1", &["t2"], 3, 1, 1),
        ("/tasks?status=in_progress", &["t3"], 1, 20, 0),
        ("/tasks?status=done", &["t1"], 1, 20, 0),
    ];
    for (uri, expected, total, limit, offset) in cases {
        let reply = send!(svc, TestRequest::get().uri(uri)).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}");
        assert_eq!(titles(&reply.body), *expected, "{uri}");
        assert_eq!(reply.body["total"], *total, "{uri}");
        assert_eq!(reply.body["limit"], *limit, "{uri}");
        assert_eq!(reply.body["offset"], *offset, "{uri}");
        assert_eq!(reply.body.as_object().unwrap().len(), 4, "{uri}");
    }
}

#[actix_web::test]
async fn head_answers_wherever_get_does_with_the_same_status_and_headers() {
    let svc = test::init_service(app(state())).await;
    let created = send!(svc, json_post("/tasks", &json!({ "title": "t" }))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    for uri in [
        "/tasks",
        "/tasks?status=todo",
        "/tasks/1",
        "/tasks/2",
        "/tasks?limit=x",
    ] {
        let get = send!(svc, TestRequest::get().uri(uri)).await;
        let head = send!(svc, TestRequest::default().method(Method::HEAD).uri(uri)).await;
        assert_eq!(head.status, get.status, "{uri}");
        assert_eq!(content_type(&head), content_type(&get), "{uri}");
    }
}

/// One HTTP/1.1 exchange on a real socket, as the client saw it: the status line, the
/// headers but `date` (names lowercased, sorted) and every byte the server sent after them.
fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> (String, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    // A bound on a hang, not on speed: a healthy answer takes milliseconds.
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_owned();
    let mut headers: Vec<(String, String)> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .filter(|(name, _)| name != "date")
        .collect();
    headers.sort();
    (status, headers, raw[end + 4..].to_vec())
}

#[actix_web::test]
async fn head_on_the_task_routes_sends_no_body_on_the_wire() {
    let state = state();
    let svc = test::init_service(app(state.clone())).await;
    let created = send!(svc, json_post("/tasks", &json!({ "title": "t" }))).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let server = HttpServer::new(move || app(state.clone()))
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .unwrap();
    let addr = server.addrs()[0];
    let running = server.run();
    let handle = running.handle();
    rt::spawn(running);

    for (path, status) in [
        ("/tasks", "HTTP/1.1 200 OK"),
        ("/tasks/1", "HTTP/1.1 200 OK"),
        ("/tasks/2", "HTTP/1.1 404 Not Found"),
    ] {
        let (get, head) = rt::task::spawn_blocking(move || {
            (exchange(addr, "GET", path), exchange(addr, "HEAD", path))
        })
        .await
        .unwrap();
        assert_eq!(get.0, status, "GET {path}");
        assert_eq!(head.0, status, "HEAD {path}");
        assert!(!get.2.is_empty(), "GET {path} has a body");
        assert!(
            head.2.is_empty(),
            "HEAD {path} sent {:?}",
            String::from_utf8_lossy(&head.2)
        );
        // Content-Length included: it is the size a GET would have sent.
        assert_eq!(head.1, get.1, "{path}");
    }
    handle.stop(false).await;
}
