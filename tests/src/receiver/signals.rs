//! The three OTLP signals the receiver serves, as one trait over
//! `opentelemetry-proto`'s request and response messages: how many items a
//! request carries, how its accepted items are recorded, and how an OK answer
//! (with or without a partial success) is built. The gRPC and HTTP sides
//! answer every signal through it, with the same [`Mode`](super::Mode).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};

use super::{ReceivedSpan, Stats, hex, scalar_attributes, scalar_text, service_name};

/// One of the three OTLP signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// Spans: `TraceService/Export`, `POST /v1/traces`.
    Traces,
    /// Log records: `LogsService/Export`, `POST /v1/logs`.
    Logs,
    /// Metric data points: `MetricsService/Export`, `POST /v1/metrics`.
    Metrics,
}

impl Signal {
    /// Every signal, in this order.
    pub const ALL: [Self; 3] = [Self::Traces, Self::Logs, Self::Metrics];

    /// The OTLP/HTTP path of its export requests.
    #[must_use]
    pub const fn http_path(self) -> &'static str {
        match self {
            Self::Traces => super::http::TRACES_PATH,
            Self::Logs => super::http::LOGS_PATH,
            Self::Metrics => super::http::METRICS_PATH,
        }
    }

    /// What its items are called in messages.
    #[must_use]
    pub const fn items(self) -> &'static str {
        match self {
            Self::Traces => "spans",
            Self::Logs => "log records",
            Self::Metrics => "data points",
        }
    }

    pub(super) const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Traces => "traces",
            Self::Logs => "logs",
            Self::Metrics => "metrics",
        })
    }
}

/// One accepted log record, as it arrived on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedLog {
    /// The `service.name` of its resource ([`NO_SERVICE_NAME`](super::NO_SERVICE_NAME) when missing).
    pub service: String,
    /// Its instrumentation scope's name (the SDK puts the record's target there).
    pub scope: String,
    /// The severity number (`SeverityNumber` as an integer; 0 when unspecified).
    pub severity_number: i32,
    /// The severity text, as sent.
    pub severity_text: String,
    /// The body as text when it is a scalar (string, bool, int, double).
    pub body: Option<String>,
    /// The event name, as sent (empty when none).
    pub event_name: String,
    /// 32 hex digits, empty when the record carries no trace context.
    pub trace_id: String,
    /// 16 hex digits, empty when the record carries no trace context.
    pub span_id: String,
    /// Attributes with scalar values, written as text.
    pub attributes: BTreeMap<String, String>,
    /// Its resource's attributes, written like [`attributes`](Self::attributes).
    pub resource: Arc<BTreeMap<String, String>>,
}

impl ReceivedLog {
    /// The attribute's value as text, if the record has it.
    #[must_use]
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// One accepted metric data point, as it arrived on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedDataPoint {
    /// The `service.name` of its resource ([`NO_SERVICE_NAME`](super::NO_SERVICE_NAME) when missing).
    pub service: String,
    /// Its instrumentation scope's name (the meter's name).
    pub scope: String,
    /// The metric's name.
    pub metric: String,
    /// The metric's unit, as sent.
    pub unit: String,
    /// `gauge`, `sum`, `histogram`, `exponential_histogram` or `summary`.
    pub kind: &'static str,
    /// A gauge's or sum's value (integers converted); `None` for the other kinds.
    pub value: Option<f64>,
    /// A histogram's or summary's count; `None` for gauges and sums.
    pub count: Option<u64>,
    /// The point's attributes with scalar values, written as text.
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedDataPoint {
    /// The attribute's value as text, if the point has it.
    #[must_use]
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// One OTLP export request type the receiver serves.
pub(super) trait Export: prost::Message + Default + Send + 'static {
    /// The service's answer.
    type Response: prost::Message + Default + Send + 'static;

    /// Which signal it carries.
    const SIGNAL: Signal;

    /// The items (spans, log records, data points) it carries.
    fn items(&self) -> usize;

    /// Records the first `to_accept` items as accepted; with `keep`, keeps them (and, for
    /// logs and metrics, the request itself) for content checks.
    fn record(&self, stats: &mut Stats, to_accept: usize, keep: bool);

    /// The OK answer: no partial success, or `rejected` items rejected with a message.
    fn response(rejected: Option<usize>) -> Self::Response;
}

/// The `error_message` of a partial success.
fn partial_success_message(rejected: usize, signal: Signal) -> String {
    format!("test receiver: rejected {rejected} {}", signal.items())
}

fn count(rejected: usize) -> i64 {
    i64::try_from(rejected).unwrap_or(i64::MAX)
}

fn resource_of(
    resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
) -> Arc<BTreeMap<String, String>> {
    Arc::new(
        resource
            .map(|r| scalar_attributes(&r.attributes))
            .unwrap_or_default(),
    )
}

impl Export for ExportTraceServiceRequest {
    type Response = ExportTraceServiceResponse;
    const SIGNAL: Signal = Signal::Traces;

    fn items(&self) -> usize {
        self.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }

    fn record(&self, stats: &mut Stats, to_accept: usize, keep: bool) {
        let mut seen = 0;
        for resource_spans in &self.resource_spans {
            let service = service_name(resource_spans.resource.as_ref());
            let resource = resource_of(resource_spans.resource.as_ref());
            for span in resource_spans.scope_spans.iter().flat_map(|s| &s.spans) {
                seen += 1;
                if seen > to_accept {
                    return;
                }
                *stats.spans_by_service.entry(service.clone()).or_default() += 1;
                *stats.spans_by_name.entry(span.name.clone()).or_default() += 1;
                if keep {
                    stats
                        .received
                        .push(ReceivedSpan::new(&service, &resource, span));
                }
            }
        }
    }

    fn response(rejected: Option<usize>) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: rejected.map(|rejected| ExportTracePartialSuccess {
                rejected_spans: count(rejected),
                error_message: partial_success_message(rejected, Self::SIGNAL),
            }),
        }
    }
}

impl Export for ExportLogsServiceRequest {
    type Response = ExportLogsServiceResponse;
    const SIGNAL: Signal = Signal::Logs;

    fn items(&self) -> usize {
        self.resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum()
    }

    fn record(&self, stats: &mut Stats, to_accept: usize, keep: bool) {
        if !keep {
            return;
        }
        stats.log_requests.push(self.clone());
        let mut seen = 0;
        for resource_logs in &self.resource_logs {
            let service = service_name(resource_logs.resource.as_ref());
            let resource = resource_of(resource_logs.resource.as_ref());
            for scope_logs in &resource_logs.scope_logs {
                let scope = scope_logs
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                for record in &scope_logs.log_records {
                    seen += 1;
                    if seen > to_accept {
                        return;
                    }
                    stats
                        .received_logs
                        .push(received_log(&service, &scope, &resource, record));
                }
            }
        }
    }

    fn response(rejected: Option<usize>) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: rejected.map(|rejected| ExportLogsPartialSuccess {
                rejected_log_records: count(rejected),
                error_message: partial_success_message(rejected, Self::SIGNAL),
            }),
        }
    }
}

fn received_log(
    service: &str,
    scope: &str,
    resource: &Arc<BTreeMap<String, String>>,
    record: &LogRecord,
) -> ReceivedLog {
    ReceivedLog {
        service: service.to_owned(),
        scope: scope.to_owned(),
        severity_number: record.severity_number,
        severity_text: record.severity_text.clone(),
        body: record.body.as_ref().and_then(scalar_text),
        event_name: record.event_name.clone(),
        trace_id: hex(&record.trace_id),
        span_id: hex(&record.span_id),
        attributes: scalar_attributes(&record.attributes),
        resource: Arc::clone(resource),
    }
}

/// How many data points one metric carries.
fn points_of(metric: &Metric) -> usize {
    match &metric.data {
        Some(metric::Data::Gauge(data)) => data.data_points.len(),
        Some(metric::Data::Sum(data)) => data.data_points.len(),
        Some(metric::Data::Histogram(data)) => data.data_points.len(),
        Some(metric::Data::ExponentialHistogram(data)) => data.data_points.len(),
        Some(metric::Data::Summary(data)) => data.data_points.len(),
        None => 0,
    }
}

impl Export for ExportMetricsServiceRequest {
    type Response = ExportMetricsServiceResponse;
    const SIGNAL: Signal = Signal::Metrics;

    fn items(&self) -> usize {
        self.resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(points_of)
            .sum()
    }

    fn record(&self, stats: &mut Stats, to_accept: usize, keep: bool) {
        if !keep {
            return;
        }
        stats.metric_requests.push(self.clone());
        let mut accepted = Vec::new();
        for resource_metrics in &self.resource_metrics {
            let service = service_name(resource_metrics.resource.as_ref());
            for scope_metrics in &resource_metrics.scope_metrics {
                let scope = scope_metrics
                    .scope
                    .as_ref()
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                for metric in &scope_metrics.metrics {
                    data_points(&service, &scope, metric, &mut accepted);
                }
            }
        }
        accepted.truncate(to_accept);
        stats.received_points.extend(accepted);
    }

    fn response(rejected: Option<usize>) -> Self::Response {
        ExportMetricsServiceResponse {
            partial_success: rejected.map(|rejected| ExportMetricsPartialSuccess {
                rejected_data_points: count(rejected),
                error_message: partial_success_message(rejected, Self::SIGNAL),
            }),
        }
    }
}

/// Appends one [`ReceivedDataPoint`] per data point of `metric` to `into`.
fn data_points(service: &str, scope: &str, metric: &Metric, into: &mut Vec<ReceivedDataPoint>) {
    let point = |kind, value, count, attributes| ReceivedDataPoint {
        service: service.to_owned(),
        scope: scope.to_owned(),
        metric: metric.name.clone(),
        unit: metric.unit.clone(),
        kind,
        value,
        count,
        attributes: scalar_attributes(attributes),
    };
    // A test's integers are small: as f64 they are exact.
    let number = |value: &Option<number_data_point::Value>| match value {
        Some(number_data_point::Value::AsDouble(x)) => Some(*x),
        Some(number_data_point::Value::AsInt(n)) => Some(*n as f64),
        None => None,
    };
    match &metric.data {
        Some(metric::Data::Gauge(data)) => into.extend(
            data.data_points
                .iter()
                .map(|p| point("gauge", number(&p.value), None, &p.attributes)),
        ),
        Some(metric::Data::Sum(data)) => into.extend(
            data.data_points
                .iter()
                .map(|p| point("sum", number(&p.value), None, &p.attributes)),
        ),
        Some(metric::Data::Histogram(data)) => into.extend(
            data.data_points
                .iter()
                .map(|p| point("histogram", None, Some(p.count), &p.attributes)),
        ),
        Some(metric::Data::ExponentialHistogram(data)) => {
            into.extend(
                data.data_points
                    .iter()
                    .map(|p| point("exponential_histogram", None, Some(p.count), &p.attributes)),
            );
        }
        Some(metric::Data::Summary(data)) => into.extend(
            data.data_points
                .iter()
                .map(|p| point("summary", None, Some(p.count), &p.attributes)),
        ),
        None => {}
    }
}
