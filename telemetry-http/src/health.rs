//! Health responses in the shape of the IETF draft "Health Check Response
//! Format for HTTP APIs" (`application/health+json`), plus the fields the
//! contract names (`circuit_state`, `timestamp`) and what an operator needs
//! to act: since when, after how many failures, and where the spans went.

use std::collections::BTreeMap;
use std::time::SystemTime;

use breaker_otel::{BackendSnapshot, BreakerSnapshot, CircuitState, FailureCause};
use serde::Serialize;

/// The draft's media type.
pub(crate) const HEALTH_JSON: &str = "application/health+json";

/// The draft's status values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HealthStatus {
    Pass,
    /// Healthy with a concern: the backend is up and asked us to wait.
    Warn,
    Fail,
}

/// The body of `GET /health`.
#[derive(Debug, Serialize)]
pub(crate) struct Liveness {
    pub(crate) status: HealthStatus,
}

/// The body of `GET /health/telemetry`.
#[derive(Debug, Serialize)]
pub(crate) struct TelemetryHealth {
    pub(crate) status: HealthStatus,
    description: &'static str,
    /// Why the status is not `pass`; the draft omits it on `pass`.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
    circuit_state: &'static str,
    /// Which process answers: the `service.instance.id` of its spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    service_instance_id: Option<String>,
    timestamp: String,
    since: String,
    consecutive_failures: u32,
    /// The most recent failed export, `null` before any.
    last_failure: Option<LastFailure>,
    /// While the backend's requested wait lasts: until when (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    throttled_until: Option<String>,
    spans: SpanCounts,
    queue: Queue,
    /// Failed exports by cause, every cause listed.
    failed_batches: BTreeMap<&'static str, u64>,
    /// Spans of failed exports by cause, every cause listed.
    failed_spans: BTreeMap<&'static str, u64>,
    probes: u64,
    checks: BTreeMap<&'static str, Vec<Check>>,
    /// Each backend breaker the host gave, in its order: information, the
    /// status above is the span path's alone.
    backends: Vec<BackendHealth>,
}

/// One backend breaker in `/health/telemetry`.
#[derive(Debug, Serialize)]
struct BackendHealth {
    /// `null` for a breaker named after no endpoint.
    endpoint: Option<String>,
    /// The signals it serves: `traces`, `logs`, `metrics`.
    signals: Vec<&'static str>,
    state: &'static str,
    since: String,
    consecutive_failures: u32,
    last_failure: Option<LastFailure>,
    probes: u64,
    /// Per signal served, its items by outcome.
    counts: BTreeMap<&'static str, SignalItems>,
}

/// One signal's items on one backend breaker.
#[derive(Debug, Serialize)]
struct SignalItems {
    exported: u64,
    rejected: u64,
    dropped: u64,
    failed: u64,
    /// In an export that has not ended yet.
    inflight: u64,
}

impl BackendHealth {
    fn new(snapshot: &BackendSnapshot) -> Self {
        Self {
            endpoint: snapshot.endpoint.clone(),
            signals: snapshot.signals.iter().map(|s| s.signal.as_str()).collect(),
            state: snapshot.state.as_str(),
            since: rfc3339(snapshot.since),
            consecutive_failures: snapshot.consecutive_failures,
            last_failure: snapshot.last_failure.map(|f| LastFailure {
                cause: f.cause.as_str(),
                time: rfc3339(f.at),
            }),
            probes: snapshot.probes,
            counts: snapshot
                .signals
                .iter()
                .map(|s| {
                    (
                        s.signal.as_str(),
                        SignalItems {
                            exported: s.counts.exported,
                            rejected: s.counts.rejected,
                            dropped: s.counts.dropped,
                            failed: s.counts.failed,
                            inflight: s.inflight,
                        },
                    )
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
struct LastFailure {
    cause: &'static str,
    time: String,
}

#[derive(Debug, Serialize)]
struct SpanCounts {
    /// Spans that ended in a pipeline built by `breaker-otel` (0 for a bare
    /// exporter). Each is counted in one of the others, or is still in the
    /// queue (`queue.size`) or in the batch being exported.
    ended: u64,
    exported: u64,
    rejected: u64,
    dropped: u64,
    failed: u64,
    /// Lost because the batch queue was full when they ended.
    queue_full: u64,
}

/// The pipeline's batch queue now.
#[derive(Debug, Serialize)]
struct Queue {
    size: u64,
    capacity: u64,
}

/// One entry of the draft's `checks` map.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Check {
    #[serde(skip_serializing_if = "Option::is_none")]
    component_id: Option<&'static str>,
    component_type: &'static str,
    observed_value: Observed,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_unit: Option<&'static str>,
    /// Only the circuit state decides health; counts are information.
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<HealthStatus>,
    time: String,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Observed {
    State(&'static str),
    Cause(&'static str),
    Count(u64),
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// What a cause means to the operator reading `output`: the three things an
/// operator does differently are "the backend is down", "our credentials are
/// refused" and "the backend wants less from us".
fn meaning(cause: FailureCause) -> &'static str {
    match cause {
        FailureCause::Unavailable => "the backend is unreachable or unavailable",
        FailureCause::Timeout => "the backend did not answer in time",
        FailureCause::Throttled => "the backend is overloaded and refuses our data",
        FailureCause::Unauthenticated => {
            "the backend refuses our credentials: check the token in the OTLP headers"
        }
        FailureCause::PermissionDenied => {
            "the backend refuses our credentials' rights: check what the token may write"
        }
        FailureCause::Invalid => "the backend refuses our data as invalid",
        FailureCause::TooLarge => "the backend refuses our batches as too large",
        FailureCause::Panic => "the span exporter panicked",
        _ => "the span exporter failed",
    }
}

impl TelemetryHealth {
    /// Closed passes; open and half-open fail, since spans are being dropped.
    /// A closed circuit the backend asked to wait warns: it is up and said
    /// when to come back, so nobody has to act, but spans are dropped
    /// until then (HTTP 200 still, since the circuit is closed).
    pub(crate) fn new(snapshot: &BreakerSnapshot, now: SystemTime) -> Self {
        let throttled_until = snapshot.throttled_until.filter(|&until| until > now);
        let status = match (snapshot.state, throttled_until) {
            (CircuitState::Closed, None) => HealthStatus::Pass,
            (CircuitState::Closed, Some(_)) => HealthStatus::Warn,
            (CircuitState::HalfOpen | CircuitState::Open, _) => HealthStatus::Fail,
        };
        let since = rfc3339(snapshot.since);
        let last = snapshot.last_failure.map(|f| (f.cause, rfc3339(f.at)));
        let why = match &last {
            Some((cause, at)) => format!("last failure {at}: {cause}, {}", meaning(*cause)),
            None => "no export has failed".to_owned(),
        };
        let wait = throttled_until.map(|until| {
            format!(
                "the backend asked us to send nothing until {}; spans are dropped until then",
                rfc3339(until)
            )
        });
        let output = match snapshot.state {
            CircuitState::Closed => wait,
            CircuitState::Open => Some(format!(
                "circuit open since {since} ({} consecutive export failures; {why}): spans are dropped until a probe export succeeds{}",
                snapshot.consecutive_failures,
                wait.map(|w| format!("; {w}")).unwrap_or_default(),
            )),
            CircuitState::HalfOpen => Some(format!(
                "circuit half-open since {since} ({why}): a probe export is in flight; other spans are dropped until it succeeds"
            )),
        };
        let timestamp = rfc3339(now);
        let check = |component_id, observed_value, observed_unit| Check {
            component_id,
            component_type: "component",
            observed_value,
            observed_unit,
            status: None,
            time: timestamp.clone(),
        };
        let spans = &snapshot.spans;
        let mut checks = BTreeMap::from([
            (
                "span_exporter:circuit_state",
                vec![Check {
                    status: Some(status),
                    ..check(None, Observed::State(snapshot.state.as_str()), None)
                }],
            ),
            (
                "span_exporter:consecutive_failures",
                vec![check(
                    None,
                    Observed::Count(u64::from(snapshot.consecutive_failures)),
                    Some("failures"),
                )],
            ),
            (
                "span_exporter:spans",
                vec![
                    check(
                        Some("exported"),
                        Observed::Count(spans.exported),
                        Some("spans"),
                    ),
                    check(
                        Some("rejected"),
                        Observed::Count(spans.rejected),
                        Some("spans"),
                    ),
                    check(
                        Some("dropped"),
                        Observed::Count(spans.dropped),
                        Some("spans"),
                    ),
                    check(Some("failed"), Observed::Count(spans.failed), Some("spans")),
                ],
            ),
        ]);
        if let Some((cause, at)) = &last {
            // The draft's `time` is when the observed value was read: here, when
            // the failure happened.
            checks.insert(
                "span_exporter:last_failure",
                vec![Check {
                    time: at.clone(),
                    ..check(None, Observed::Cause(cause.as_str()), None)
                }],
            );
        }
        let by_cause = |pick: fn(breaker_otel::CauseCounts) -> u64| {
            snapshot
                .failures
                .iter()
                .map(|(cause, counts)| (cause.as_str(), pick(counts)))
                .collect()
        };
        Self {
            status,
            description: "Export of trace spans through the circuit breaker",
            output,
            circuit_state: snapshot.state.as_str(),
            service_instance_id: None,
            timestamp,
            since,
            consecutive_failures: snapshot.consecutive_failures,
            last_failure: last.map(|(cause, time)| LastFailure {
                cause: cause.as_str(),
                time,
            }),
            throttled_until: throttled_until.map(rfc3339),
            spans: SpanCounts {
                ended: snapshot.spans_ended,
                exported: spans.exported,
                rejected: spans.rejected,
                dropped: spans.dropped,
                failed: spans.failed,
                queue_full: snapshot.queue.lost,
            },
            queue: Queue {
                size: snapshot.queue.size,
                capacity: snapshot.queue.capacity,
            },
            failed_batches: by_cause(|c| c.batches),
            failed_spans: by_cause(|c| c.spans),
            probes: snapshot.probes,
            checks,
            backends: Vec::new(),
        }
    }

    /// Lists the backend breakers, after the span path's fields.
    pub(crate) fn with_backends(mut self, backends: &[BackendSnapshot]) -> Self {
        self.backends = backends.iter().map(BackendHealth::new).collect();
        self
    }

    /// Names the process that answers (`None`: the field is left out).
    pub(crate) fn with_service_instance_id(mut self, id: Option<&str>) -> Self {
        self.service_instance_id = id.map(str::to_owned);
        self
    }
}
