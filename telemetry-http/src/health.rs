//! Health responses in the shape of the IETF draft "Health Check Response
//! Format for HTTP APIs" (`application/health+json`), plus the fields the
//! contract names (`circuit_state`, `timestamp`) and what an operator needs
//! to act: since when, after how many failures, and where the spans went.

use std::collections::BTreeMap;
use std::time::SystemTime;

use breaker_otel::{BreakerSnapshot, CircuitState};
use serde::Serialize;

/// The draft's media type.
pub(crate) const HEALTH_JSON: &str = "application/health+json";

/// The draft's status values this crate uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HealthStatus {
    Pass,
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
    timestamp: String,
    since: String,
    consecutive_failures: u32,
    spans: SpanCounts,
    failed_batches: FailedBatches,
    probes: u64,
    checks: BTreeMap<&'static str, Vec<Check>>,
}

#[derive(Debug, Serialize)]
struct SpanCounts {
    /// Spans that ended in a pipeline built by `breaker-otel` (0 for a bare
    /// exporter). After a clean shutdown, `ended - exported - dropped - failed`
    /// spans were lost in the SDK's queue before reaching the exporter.
    ended: u64,
    exported: u64,
    dropped: u64,
    failed: u64,
}

/// Why failed exports failed: a backend answering errors, one too slow to
/// answer, or an exporter bug.
#[derive(Debug, Serialize)]
struct FailedBatches {
    error: u64,
    timeout: u64,
    panic: u64,
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
    Count(u64),
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

impl TelemetryHealth {
    /// Closed passes; open and half-open fail, since spans are being dropped.
    pub(crate) fn new(snapshot: &BreakerSnapshot, now: SystemTime) -> Self {
        let status = match snapshot.state {
            CircuitState::Closed => HealthStatus::Pass,
            CircuitState::HalfOpen | CircuitState::Open => HealthStatus::Fail,
        };
        let since = rfc3339(snapshot.since);
        let output = match snapshot.state {
            CircuitState::Closed => None,
            CircuitState::Open => Some(format!(
                "circuit open since {since} ({} consecutive export failures): spans are dropped until a probe export succeeds",
                snapshot.consecutive_failures
            )),
            CircuitState::HalfOpen => Some(format!(
                "circuit half-open since {since}: a probe export is in flight; other spans are dropped until it succeeds"
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
        let checks = BTreeMap::from([
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
                        Some("dropped"),
                        Observed::Count(spans.dropped),
                        Some("spans"),
                    ),
                    check(Some("failed"), Observed::Count(spans.failed), Some("spans")),
                ],
            ),
        ]);
        Self {
            status,
            description: "Export of trace spans through the circuit breaker",
            output,
            circuit_state: snapshot.state.as_str(),
            timestamp,
            since,
            consecutive_failures: snapshot.consecutive_failures,
            spans: SpanCounts {
                ended: snapshot.spans_ended,
                exported: spans.exported,
                dropped: spans.dropped,
                failed: spans.failed,
            },
            failed_batches: FailedBatches {
                error: snapshot.failed_batches.error,
                timeout: snapshot.failed_batches.timeout,
                panic: snapshot.failed_batches.panic,
            },
            probes: snapshot.probes,
            checks,
        }
    }
}
