//! The test OTLP receiver itself, driven by real clients: over gRPC by
//! `opentelemetry-proto`'s generated service clients, over HTTP by a
//! plain `ureq` client. Each test asserts what a client sees (status code,
//! retry details, `Retry-After`, protobuf body) and what the receiver counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use tests::receiver::{Mode, Outcome, OutcomeCount, Receiver, Signal};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

/// Generous: only reached when something is broken.
const WAIT: Duration = Duration::from_secs(10);

/// One request from `service` with one span per name.
fn request(service: &str, names: &[&str]) -> ExportTraceServiceRequest {
    let spans = names
        .iter()
        .zip(1_u8..)
        .map(|(name, n)| Span {
            trace_id: vec![n; 16],
            span_id: vec![n; 8],
            name: (*name).to_owned(),
            ..Span::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".to_owned(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.to_owned())),
                    }),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

async fn grpc_client(receiver: &Receiver) -> TraceServiceClient<Channel> {
    TraceServiceClient::connect(receiver.endpoint())
        .await
        .unwrap()
}

async fn grpc_export(
    client: &mut TraceServiceClient<Channel>,
    names: &[&str],
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    client
        .export(request("alpha", names))
        .await
        .map(tonic::Response::into_inner)
}

/// What an HTTP client saw.
#[derive(Debug)]
struct HttpAnswer {
    status: u16,
    content_type: Option<String>,
    retry_after: Option<String>,
    body: Vec<u8>,
}

impl HttpAnswer {
    fn export_response(&self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse::decode(self.body.as_slice()).unwrap()
    }

    fn status_body(&self) -> tonic_types::Status {
        tonic_types::Status::decode(self.body.as_slice()).unwrap()
    }
}

/// POSTs `body` to `url` from a blocking thread, as a plain HTTP client would.
async fn post(
    url: String,
    content_type: &'static str,
    encoding: Option<&'static str>,
    body: Vec<u8>,
) -> Result<HttpAnswer, ureq::Error> {
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(WAIT))
                .build(),
        );
        let mut request = agent.post(&url).header("content-type", content_type);
        if let Some(encoding) = encoding {
            request = request.header("content-encoding", encoding);
        }
        let mut response = request.send(&body[..])?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|value| value.to_str().unwrap().to_owned())
        };
        let content_type = header("content-type");
        let retry_after = header("retry-after");
        Ok(HttpAnswer {
            status: response.status().as_u16(),
            content_type,
            retry_after,
            body: response.body_mut().read_to_vec()?,
        })
    })
    .await
    .unwrap()
}

async fn http_export(receiver: &Receiver, names: &[&str]) -> HttpAnswer {
    post(
        receiver.endpoint(),
        "application/x-protobuf",
        None,
        request("alpha", names).encode_to_vec(),
    )
    .await
    .unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

// ---------------------------------------------------------------- gRPC

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_partial_success_reports_the_rejected_spans_and_counts_them_apart() {
    let receiver = Receiver::start().await.unwrap();
    let mut client = grpc_client(&receiver).await;
    receiver
        .set_mode(Mode::PartialSuccess { rejected: 2 })
        .await
        .unwrap();

    let answer = grpc_export(&mut client, &["kept", "dropped", "dropped"])
        .await
        .unwrap();
    let partial = answer.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 2);
    assert!(!partial.error_message.is_empty());

    // Never more rejected than the request carried.
    receiver
        .set_mode(Mode::PartialSuccess { rejected: 10 })
        .await
        .unwrap();
    let answer = grpc_export(&mut client, &["a", "b"]).await.unwrap();
    assert_eq!(answer.partial_success.unwrap().rejected_spans, 2);

    let seen = receiver.snapshot();
    assert_eq!(seen.spans, 1);
    assert_eq!(seen.rejected_spans, 4);
    assert_eq!(seen.spans_named("kept"), 1);
    assert_eq!(seen.spans_named("dropped"), 0);
    assert_eq!(
        seen.outcome(Outcome::PartialSuccess),
        OutcomeCount {
            requests: 2,
            spans: 5
        }
    );
    let rejected: Vec<usize> = seen.requests.iter().map(|r| r.rejected_spans).collect();
    assert_eq!(rejected, [2, 2]);
    assert_eq!(receiver.totals().rejected_spans, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_throttling_carries_retry_info_with_the_delay() {
    let receiver = Receiver::start().await.unwrap();
    let mut client = grpc_client(&receiver).await;
    let retry_delay = |status: &tonic::Status| {
        status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
    };

    receiver
        .set_mode(Mode::Throttled {
            retry_after: Duration::from_secs(2),
        })
        .await
        .unwrap();
    let status = grpc_export(&mut client, &["x"]).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(retry_delay(&status), Some(Duration::from_secs(2)));

    receiver
        .set_mode(Mode::UnavailableRetryAfter(Duration::from_millis(1500)))
        .await
        .unwrap();
    let status = grpc_export(&mut client, &["x"]).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(retry_delay(&status), Some(Duration::from_millis(1500)));

    // A wall-clock deadline becomes the time remaining until it.
    receiver
        .set_mode(Mode::ThrottledUntil(
            SystemTime::now() + Duration::from_secs(600),
        ))
        .await
        .unwrap();
    let status = grpc_export(&mut client, &["x"]).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    let delay = retry_delay(&status).unwrap();
    assert!(
        delay <= Duration::from_secs(600) && delay > Duration::from_secs(600) - WAIT,
        "{delay:?}"
    );

    // A deadline in the past: retry at once.
    receiver
        .set_mode(Mode::ThrottledUntil(SystemTime::UNIX_EPOCH))
        .await
        .unwrap();
    let status = grpc_export(&mut client, &["x"]).await.unwrap_err();
    assert_eq!(retry_delay(&status), Some(Duration::ZERO));

    let seen = receiver.snapshot();
    assert_eq!(seen.outcome(Outcome::Throttled).requests, 3);
    assert_eq!(seen.outcome(Outcome::Unavailable).requests, 1);
    assert_eq!(seen.spans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_final_refusals_have_their_codes_and_no_retry_info() {
    let receiver = Receiver::start().await.unwrap();
    let mut client = grpc_client(&receiver).await;
    let cases = [
        (
            Mode::ResourceExhausted,
            Code::ResourceExhausted,
            Outcome::ResourceExhausted,
        ),
        (Mode::TooLarge, Code::ResourceExhausted, Outcome::TooLarge),
        (
            Mode::Unauthenticated,
            Code::Unauthenticated,
            Outcome::Unauthenticated,
        ),
        (
            Mode::PermissionDenied,
            Code::PermissionDenied,
            Outcome::PermissionDenied,
        ),
        (
            Mode::InvalidArgument,
            Code::InvalidArgument,
            Outcome::InvalidArgument,
        ),
        (Mode::Unavailable, Code::Unavailable, Outcome::Unavailable),
    ];
    for (mode, code, outcome) in cases {
        receiver.set_mode(mode).await.unwrap();
        let status = grpc_export(&mut client, &["x", "y"]).await.unwrap_err();
        assert_eq!(status.code(), code, "{mode}: {status:?}");
        assert!(status.get_details_retry_info().is_none(), "{mode}");
        assert_eq!(
            receiver.snapshot().outcome(outcome),
            OutcomeCount {
                requests: 1,
                spans: 2
            },
            "{mode}"
        );
    }
    assert_eq!(receiver.snapshot().spans, 0);
}

// ---------------------------------------------------------------- HTTP

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_accept_answers_an_empty_protobuf_response_and_counts_spans() {
    let receiver = Receiver::start_http().await.unwrap();
    assert_eq!(
        receiver.endpoint(),
        format!("http://{}/v1/traces", receiver.addr())
    );
    assert_eq!(receiver.traces_endpoint(), receiver.endpoint());
    assert_eq!(receiver.base_url(), format!("http://{}", receiver.addr()));

    let answer = http_export(&receiver, &["GET /tasks", "storage.list"]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.content_type.as_deref(),
        Some("application/x-protobuf")
    );
    assert_eq!(answer.export_response().partial_success, None);

    // A gzip body is inflated before counting.
    let body = gzip(&request("beta", &["GET /tasks"]).encode_to_vec());
    let answer = post(
        receiver.endpoint(),
        "application/x-protobuf",
        Some("gzip"),
        body,
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200);

    let seen = receiver.snapshot();
    assert_eq!(seen.spans, 3);
    assert_eq!(seen.spans_from("alpha"), 2);
    assert_eq!(seen.spans_from("beta"), 1);
    assert_eq!(seen.spans_named("GET /tasks"), 2);
    assert_eq!(
        seen.outcome(Outcome::Accepted),
        OutcomeCount {
            requests: 2,
            spans: 3
        }
    );
    assert!(seen.requests.iter().all(|r| r.answered));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_partial_success_answers_200_with_the_rejected_count() {
    let receiver = Receiver::start_http().await.unwrap();
    receiver
        .set_mode(Mode::PartialSuccess { rejected: 1 })
        .await
        .unwrap();
    let answer = http_export(&receiver, &["kept", "dropped"]).await;
    assert_eq!(answer.status, 200);
    let partial = answer.export_response().partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(!partial.error_message.is_empty());

    let totals = receiver.totals();
    assert_eq!((totals.spans, totals.rejected_spans), (1, 1));
    assert_eq!(receiver.snapshot().spans_named("kept"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_refusals_have_the_spec_status_codes_retry_after_and_a_status_body() {
    let receiver = Receiver::start_http().await.unwrap();
    let cases = [
        (
            Mode::Unavailable,
            503,
            None,
            Code::Unavailable,
            Outcome::Unavailable,
        ),
        (
            Mode::UnavailableRetryAfter(Duration::from_millis(1500)),
            503,
            // Rounded up to whole seconds.
            Some("2"),
            Code::Unavailable,
            Outcome::Unavailable,
        ),
        (
            Mode::ResourceExhausted,
            429,
            None,
            Code::ResourceExhausted,
            Outcome::ResourceExhausted,
        ),
        (
            Mode::Throttled {
                retry_after: Duration::from_secs(3),
            },
            429,
            Some("3"),
            Code::ResourceExhausted,
            Outcome::Throttled,
        ),
        (
            Mode::Unauthenticated,
            401,
            None,
            Code::Unauthenticated,
            Outcome::Unauthenticated,
        ),
        (
            Mode::PermissionDenied,
            403,
            None,
            Code::PermissionDenied,
            Outcome::PermissionDenied,
        ),
        (
            Mode::InvalidArgument,
            400,
            None,
            Code::InvalidArgument,
            Outcome::InvalidArgument,
        ),
        (
            Mode::TooLarge,
            413,
            None,
            Code::ResourceExhausted,
            Outcome::TooLarge,
        ),
    ];
    for (mode, status, retry_after, code, outcome) in cases {
        receiver.set_mode(mode).await.unwrap();
        let answer = http_export(&receiver, &["x"]).await;
        assert_eq!(answer.status, status, "{mode}: {answer:?}");
        assert_eq!(answer.retry_after.as_deref(), retry_after, "{mode}");
        assert_eq!(
            answer.content_type.as_deref(),
            Some("application/x-protobuf")
        );
        let body = answer.status_body();
        assert_eq!(body.code, code as i32, "{mode}: {body:?}");
        assert!(!body.message.is_empty(), "{mode}");
        assert_eq!(
            receiver.snapshot().outcome(outcome).requests,
            if outcome == Outcome::Unavailable && retry_after.is_some() {
                2
            } else {
                1
            },
            "{mode}"
        );
    }

    // A wall-clock deadline is sent as an HTTP-date.
    let until = SystemTime::now() + Duration::from_secs(120);
    receiver
        .set_mode(Mode::ThrottledUntil(until))
        .await
        .unwrap();
    let answer = http_export(&receiver, &["x"]).await;
    assert_eq!(answer.status, 429);
    let date = answer.retry_after.unwrap();
    assert_eq!(date, httpdate::fmt_http_date(until));
    let parsed = httpdate::parse_http_date(&date).unwrap();
    assert!(parsed <= until && parsed + Duration::from_secs(1) > until);

    let seen = receiver.snapshot();
    assert_eq!(seen.outcome(Outcome::Throttled).requests, 2);
    assert_eq!(seen.spans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_that_are_not_otlp_protobuf_are_refused() {
    let receiver = Receiver::start_http().await.unwrap();

    let json = post(
        receiver.endpoint(),
        "application/json",
        None,
        b"{\"resourceSpans\":[]}".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(json.status, 415, "{json:?}");
    assert_eq!(json.status_body().code, Code::InvalidArgument as i32);

    let garbage = post(
        receiver.endpoint(),
        "application/x-protobuf",
        None,
        vec![0xff; 16],
    )
    .await
    .unwrap();
    assert_eq!(garbage.status, 400, "{garbage:?}");

    let not_gzip = post(
        receiver.endpoint(),
        "application/x-protobuf",
        Some("gzip"),
        request("alpha", &["x"]).encode_to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(not_gzip.status, 400, "{not_gzip:?}");

    // Another path is not an export request and is not counted.
    let elsewhere = post(
        receiver.base_url() + "/v1/profiles",
        "application/x-protobuf",
        None,
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(elsewhere.status, 404);

    let seen = receiver.snapshot();
    assert_eq!(seen.outcome(Outcome::UnsupportedMediaType).requests, 1);
    assert_eq!(seen.outcome(Outcome::Malformed).requests, 2);
    assert_eq!(seen.requests.len(), 3);
    assert_eq!(seen.spans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_a_hung_request_is_held_until_the_mode_changes_then_answered_503() {
    let receiver = Receiver::start_http().await.unwrap();
    receiver.set_mode(Mode::Hang).await.unwrap();
    let endpoint = receiver.endpoint();
    let mut pending = tokio::spawn(post(
        endpoint,
        "application/x-protobuf",
        None,
        request("alpha", &["x"]).encode_to_vec(),
    ));
    receiver.wait_for_in_flight(1, WAIT).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut pending)
            .await
            .is_err(),
        "a hung export was answered while the receiver was still hanging"
    );

    receiver.set_mode(Mode::Accept).await.unwrap();
    let answer = pending.await.unwrap().unwrap();
    assert_eq!(answer.status, 503);
    receiver.wait_for_in_flight(0, WAIT).await.unwrap();
    let seen = receiver.snapshot();
    assert_eq!(seen.outcome(Outcome::Hung).requests, 1);
    assert!(seen.requests[0].answered);
    assert_eq!(seen.spans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_stopped_refuses_connections_and_comes_back_on_the_same_port() {
    let receiver = Receiver::start_http().await.unwrap();
    let addr = receiver.addr();
    assert_eq!(http_export(&receiver, &["before"]).await.status, 200);

    receiver.set_mode(Mode::Stopped).await.unwrap();
    let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);

    receiver.set_mode(Mode::Accept).await.unwrap();
    assert_eq!(receiver.addr(), addr);
    assert_eq!(http_export(&receiver, &["after"]).await.status, 200);
    let seen = receiver.snapshot();
    assert_eq!(seen.spans_named("before"), 1);
    assert_eq!(seen.spans_named("after"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_stop_releases_hung_requests_and_closes_the_port() {
    let receiver = Receiver::start_http().await.unwrap();
    let addr = receiver.addr();
    receiver.set_mode(Mode::Hang).await.unwrap();
    let pending = tokio::spawn(post(
        receiver.endpoint(),
        "application/x-protobuf",
        None,
        request("alpha", &["x"]).encode_to_vec(),
    ));
    receiver.wait_for_in_flight(1, WAIT).await.unwrap();

    tokio::time::timeout(WAIT, receiver.stop())
        .await
        .expect("stop waited for the hung request")
        .unwrap();
    let answer = tokio::time::timeout(WAIT, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer.status, 503);
    let refused = tokio::net::TcpStream::connect(addr).await.unwrap_err();
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
}

// ---------------------------------------------------------------- logs and metrics

mod signals {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
    };

    fn resource(service: &str) -> Option<Resource> {
        request(service, &[]).resource_spans[0].resource.clone()
    }

    fn text(value: &str) -> Option<AnyValue> {
        Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        })
    }

    /// One logs request with one record per body.
    fn logs(bodies: &[&str]) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource("alpha"),
                scope_logs: vec![ScopeLogs {
                    scope: Some(InstrumentationScope {
                        name: "taskman::api".into(),
                        ..InstrumentationScope::default()
                    }),
                    log_records: bodies
                        .iter()
                        .map(|body| LogRecord {
                            severity_number: 13,
                            severity_text: "WARN".into(),
                            body: text(body),
                            ..LogRecord::default()
                        })
                        .collect(),
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
    }

    /// One metrics request: a gauge `name` with one point per value.
    fn metrics(name: &str, values: &[i64]) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: resource("alpha"),
                scope_metrics: vec![ScopeMetrics {
                    metrics: vec![Metric {
                        name: name.into(),
                        unit: "{task}".into(),
                        data: Some(metric::Data::Gauge(Gauge {
                            data_points: values
                                .iter()
                                .map(|n| NumberDataPoint {
                                    value: Some(number_data_point::Value::AsInt(*n)),
                                    ..NumberDataPoint::default()
                                })
                                .collect(),
                        })),
                        ..Metric::default()
                    }],
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            }],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grpc_serves_logs_and_metrics_and_keeps_them_apart_from_spans() {
        let receiver = Receiver::start().await.unwrap();
        let mut logs_client = LogsServiceClient::connect(receiver.endpoint_for(Signal::Logs))
            .await
            .unwrap();
        let mut metrics_client =
            MetricsServiceClient::connect(receiver.endpoint_for(Signal::Metrics))
                .await
                .unwrap();
        let answer = logs_client
            .export(logs(&["task created", "task done"]))
            .await
            .unwrap();
        assert_eq!(answer.get_ref().partial_success, None);
        metrics_client
            .export(metrics("tasks.open", &[3, 4, 5]))
            .await
            .unwrap();

        assert_eq!(receiver.log_record_count(), 2);
        assert_eq!(receiver.metric_point_count(), 3);
        let received = receiver.logs();
        let bodies: Vec<_> = received.iter().map(|l| l.body.as_deref()).collect();
        assert_eq!(bodies, [Some("task created"), Some("task done")]);
        assert_eq!(received[0].service, "alpha");
        assert_eq!(received[0].scope, "taskman::api");
        assert_eq!(received[0].severity_text, "WARN");
        let points = receiver.metric_points();
        assert_eq!(points.len(), 3);
        assert!(
            points
                .iter()
                .all(|p| p.metric == "tasks.open" && p.kind == "gauge")
        );
        assert_eq!(points[2].value, Some(5.0));
        assert_eq!(
            receiver.log_requests(),
            [logs(&["task created", "task done"])]
        );
        assert_eq!(receiver.metric_requests().len(), 1);

        let seen = receiver.snapshot();
        assert_eq!(seen.requests.len(), 0, "no trace request arrived");
        assert_eq!(seen.logs.requests.len(), 1);
        assert_eq!(seen.logs.requests[0].signal, Signal::Logs);
        assert_eq!(seen.logs.requests[0].items(), 2);
        assert_eq!(seen.metrics.outcome(Outcome::Accepted).requests, 1);
        assert_eq!(receiver.requests(Signal::Metrics)[0].items(), 3);
        assert!(
            seen.to_string().contains("logs: 2 log records accepted"),
            "{seen}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_mode_answers_every_signal() {
        let receiver = Receiver::start().await.unwrap();
        let mut logs_client = LogsServiceClient::connect(receiver.endpoint())
            .await
            .unwrap();
        let mut metrics_client = MetricsServiceClient::connect(receiver.endpoint())
            .await
            .unwrap();
        let mut traces_client = grpc_client(&receiver).await;
        receiver
            .set_mode(Mode::Throttled {
                retry_after: Duration::from_secs(2),
            })
            .await
            .unwrap();
        let statuses = [
            grpc_export(&mut traces_client, &["x"]).await.unwrap_err(),
            logs_client.export(logs(&["x"])).await.unwrap_err(),
            metrics_client.export(metrics("m", &[1])).await.unwrap_err(),
        ];
        for status in &statuses {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert_eq!(
                status.get_details_retry_info().and_then(|i| i.retry_delay),
                Some(Duration::from_secs(2))
            );
        }
        receiver
            .set_mode(Mode::PartialSuccess { rejected: 1 })
            .await
            .unwrap();
        let answer = logs_client
            .export(logs(&["kept", "rejected"]))
            .await
            .unwrap();
        let partial = answer.into_inner().partial_success.unwrap();
        assert_eq!(partial.rejected_log_records, 1);
        assert!(partial.error_message.contains("log records"), "{partial:?}");
        let answer = metrics_client.export(metrics("m", &[1, 2])).await.unwrap();
        assert_eq!(
            answer
                .into_inner()
                .partial_success
                .unwrap()
                .rejected_data_points,
            1
        );

        let logs_seen = receiver.signal(Signal::Logs);
        assert_eq!(logs_seen.outcome(Outcome::Throttled).requests, 1);
        assert_eq!((logs_seen.items, logs_seen.rejected), (1, 1));
        let bodies: Vec<_> = receiver.logs().into_iter().map(|l| l.body).collect();
        assert_eq!(
            bodies,
            [Some("kept".to_owned())],
            "the last records are the rejected ones"
        );
        assert_eq!(receiver.signal(Signal::Metrics).rejected, 1);
        assert_eq!(
            receiver
                .signal(Signal::Traces)
                .outcome(Outcome::Throttled)
                .requests,
            1
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grpc_a_hung_logs_request_is_in_flight_for_logs_only() {
        let receiver = Receiver::start().await.unwrap();
        let mut client = LogsServiceClient::connect(receiver.endpoint())
            .await
            .unwrap();
        receiver.set_mode(Mode::Hang).await.unwrap();
        let pending = tokio::spawn(async move { client.export(logs(&["x"])).await });
        receiver
            .wait_until(WAIT, "one logs request in flight", |s| {
                s.logs.in_flight == 1
            })
            .await
            .unwrap();
        assert_eq!(receiver.snapshot().in_flight, 0, "traces count their own");
        receiver.set_mode(Mode::Accept).await.unwrap();
        let status = pending.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            receiver
                .signal(Signal::Logs)
                .outcome(Outcome::Hung)
                .requests,
            1
        );
        assert_eq!(receiver.log_record_count(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http_serves_logs_and_metrics_on_their_paths() {
        let receiver = Receiver::start_http().await.unwrap();
        assert_eq!(
            receiver.endpoint_for(Signal::Logs),
            format!("http://{}/v1/logs", receiver.addr())
        );
        let answer = post(
            receiver.endpoint_for(Signal::Logs),
            "application/x-protobuf",
            Some("gzip"),
            gzip(&logs(&["over http"]).encode_to_vec()),
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(
            ExportLogsServiceResponse::decode(answer.body.as_slice())
                .unwrap()
                .partial_success,
            None
        );
        receiver
            .set_mode(Mode::UnavailableRetryAfter(Duration::from_secs(3)))
            .await
            .unwrap();
        let answer = post(
            receiver.endpoint_for(Signal::Metrics),
            "application/x-protobuf",
            None,
            metrics("m", &[1]).encode_to_vec(),
        )
        .await
        .unwrap();
        assert_eq!(answer.status, 503);
        assert_eq!(answer.retry_after.as_deref(), Some("3"));
        receiver
            .set_mode(Mode::PartialSuccess { rejected: 5 })
            .await
            .unwrap();
        let answer = post(
            receiver.endpoint_for(Signal::Metrics),
            "application/x-protobuf",
            None,
            metrics("m", &[1, 2]).encode_to_vec(),
        )
        .await
        .unwrap();
        let partial = ExportMetricsServiceResponse::decode(answer.body.as_slice())
            .unwrap()
            .partial_success
            .unwrap();
        assert_eq!(partial.rejected_data_points, 2, "never more than sent");
        // A trace request body on the logs path is no logs request.
        let garbage = post(
            receiver.endpoint_for(Signal::Logs),
            "application/x-protobuf",
            None,
            vec![0xff; 8],
        )
        .await
        .unwrap();
        assert_eq!(garbage.status, 400);

        assert_eq!(receiver.logs()[0].body.as_deref(), Some("over http"));
        let logs_seen = receiver.signal(Signal::Logs);
        assert_eq!(logs_seen.outcome(Outcome::Malformed).requests, 1);
        assert_eq!(logs_seen.items, 1);
        let metrics_seen = receiver.signal(Signal::Metrics);
        assert_eq!(metrics_seen.outcome(Outcome::Unavailable).requests, 1);
        assert_eq!((metrics_seen.items, metrics_seen.rejected), (0, 2));
        assert_eq!(receiver.snapshot().requests.len(), 0);
    }
}
