//! The breaker's contract metrics, read from its handle at scrape time.
//!
//! A custom collector rather than counters incremented by the exporter:
//! the handle already counts monotonically, so reading it keeps one source
//! of truth, and every label set exists from the first scrape because the
//! snapshot lists every reachable transition, zero counts included.

use std::collections::HashMap;
use std::time::SystemTime;

use breaker_otel::{BreakerHandle, BreakerSnapshot, CircuitState};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

const CIRCUIT_STATE: &str = "circuit_state";
const CIRCUIT_STATE_HELP: &str =
    "State of the span exporter's circuit breaker: 0 closed, 1 half-open, 2 open.";
const SPANS_PROCESSED: &str = "spans_processed_total";
const SPANS_PROCESSED_HELP: &str = "Spans handed to the circuit-breaking exporter, by outcome: \
     exported, rejected (the backend took the batch but said it rejected these), \
     dropped (circuit open or backend throttling) or failed (backend error, timeout or panic).";
const SPANS_FAILED: &str = "spans_failed_total";
const SPANS_FAILED_HELP: &str =
    "Spans of failed exports (outcome failed of spans_processed_total), by cause.";
const EXPORTS_FAILED: &str = "span_exports_failed_total";
const EXPORTS_FAILED_HELP: &str = "Failed export calls of the span exporter, by cause.";
const LAST_FAILURE: &str = "span_export_last_failure_timestamp_seconds";
const LAST_FAILURE_HELP: &str =
    "When the span exporter's last export failed, in Unix seconds; 0 before any failure.";
const THROTTLED_UNTIL: &str = "circuit_throttled_until_timestamp_seconds";
const THROTTLED_UNTIL_HELP: &str = "Until when the backend asked the span exporter to send \
     nothing (RetryInfo or Retry-After), in Unix seconds; 0 when it did not.";
// The semantic conventions' SDK self-observability metrics for the batch processor
// (`otel.sdk.processor.span.*`), in Prometheus' translation.
const PROCESSED: &str = "otel_sdk_processor_span_processed_total";
const PROCESSED_HELP: &str = "Spans whose processing by the batch span processor has \
     finished: handed to the exporter (no error_type), or lost because the queue was full \
     (error_type queue_full).";
const QUEUE_SIZE: &str = "otel_sdk_processor_span_queue_size";
const QUEUE_SIZE_HELP: &str = "Spans in the batch span processor's queue.";
const QUEUE_CAPACITY: &str = "otel_sdk_processor_span_queue_capacity";
const QUEUE_CAPACITY_HELP: &str = "Spans the batch span processor's queue holds.";
/// `otel.component.type` and `otel.component.name` of the one processor.
const COMPONENT: [(&str, &str); 2] = [
    ("otel_component_name", "batching_span_processor/0"),
    ("otel_component_type", "batching_span_processor"),
];
const TRANSITIONS: &str = "circuit_transitions_total";
const TRANSITIONS_HELP: &str =
    "Changes of the circuit breaker's state, by state left and state entered.";

/// The `circuit_state` gauge's value for `state`, as the contract publishes
/// it (dashboards and alerts compare against these numbers). Written out
/// here, not derived from the enum's order, so reordering the states cannot
/// change it.
pub(crate) fn gauge_value(state: CircuitState) -> f64 {
    match state {
        CircuitState::Closed => 0.0,
        CircuitState::HalfOpen => 1.0,
        CircuitState::Open => 2.0,
    }
}

#[derive(Debug)]
pub(crate) struct BreakerCollector {
    handle: BreakerHandle,
    descs: [Desc; 10],
}

impl BreakerCollector {
    pub(crate) fn new(handle: BreakerHandle) -> Result<Self, prometheus::Error> {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            Desc::new(
                name.to_owned(),
                help.to_owned(),
                labels.iter().map(|l| (*l).to_owned()).collect(),
                HashMap::new(),
            )
        };
        Ok(Self {
            handle,
            descs: [
                desc(CIRCUIT_STATE, CIRCUIT_STATE_HELP, &[])?,
                desc(SPANS_PROCESSED, SPANS_PROCESSED_HELP, &["outcome"])?,
                desc(TRANSITIONS, TRANSITIONS_HELP, &["from", "to"])?,
                desc(SPANS_FAILED, SPANS_FAILED_HELP, &["cause"])?,
                desc(EXPORTS_FAILED, EXPORTS_FAILED_HELP, &["cause"])?,
                desc(LAST_FAILURE, LAST_FAILURE_HELP, &[])?,
                desc(THROTTLED_UNTIL, THROTTLED_UNTIL_HELP, &[])?,
                desc(
                    PROCESSED,
                    PROCESSED_HELP,
                    &["error_type", "otel_component_name", "otel_component_type"],
                )?,
                desc(
                    QUEUE_SIZE,
                    QUEUE_SIZE_HELP,
                    &["otel_component_name", "otel_component_type"],
                )?,
                desc(
                    QUEUE_CAPACITY,
                    QUEUE_CAPACITY_HELP,
                    &["otel_component_name", "otel_component_type"],
                )?,
            ],
        })
    }
}

impl Collector for BreakerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        families(&self.handle.snapshot())
    }
}

fn families(snapshot: &BreakerSnapshot) -> Vec<MetricFamily> {
    let state = gauge(gauge_value(snapshot.state));

    let spans = [
        ("exported", snapshot.spans.exported),
        ("rejected", snapshot.spans.rejected),
        ("dropped", snapshot.spans.dropped),
        ("failed", snapshot.spans.failed),
    ]
    .into_iter()
    .map(|(outcome, count)| counter(&[("outcome", outcome)], count))
    .collect();

    let transitions = snapshot
        .transitions
        .iter()
        .map(|(from, to, count)| counter(&[("from", from.as_str()), ("to", to.as_str())], count))
        .collect();

    let by_cause = |pick: fn(breaker_otel::CauseCounts) -> u64| {
        snapshot
            .failures
            .iter()
            .map(|(cause, counts)| counter(&[("cause", cause.as_str())], pick(counts)))
            .collect()
    };
    let last_failure = gauge(unix_seconds(snapshot.last_failure.map(|f| f.at)));
    let throttled_until = gauge(unix_seconds(snapshot.throttled_until));
    let processed = vec![
        counter(&COMPONENT, snapshot.spans.total()),
        counter(
            &[("error_type", "queue_full"), COMPONENT[0], COMPONENT[1]],
            snapshot.queue.lost,
        ),
    ];
    let queue_gauge = |value: u64| {
        let mut metric = gauge(value as f64);
        metric.set_label(labels(&COMPONENT));
        vec![metric]
    };

    vec![
        family(
            CIRCUIT_STATE,
            CIRCUIT_STATE_HELP,
            MetricType::GAUGE,
            vec![state],
        ),
        family(
            SPANS_PROCESSED,
            SPANS_PROCESSED_HELP,
            MetricType::COUNTER,
            spans,
        ),
        family(
            TRANSITIONS,
            TRANSITIONS_HELP,
            MetricType::COUNTER,
            transitions,
        ),
        family(
            SPANS_FAILED,
            SPANS_FAILED_HELP,
            MetricType::COUNTER,
            by_cause(|c| c.spans),
        ),
        family(
            EXPORTS_FAILED,
            EXPORTS_FAILED_HELP,
            MetricType::COUNTER,
            by_cause(|c| c.batches),
        ),
        family(
            LAST_FAILURE,
            LAST_FAILURE_HELP,
            MetricType::GAUGE,
            vec![last_failure],
        ),
        family(
            THROTTLED_UNTIL,
            THROTTLED_UNTIL_HELP,
            MetricType::GAUGE,
            vec![throttled_until],
        ),
        family(PROCESSED, PROCESSED_HELP, MetricType::COUNTER, processed),
        family(
            QUEUE_SIZE,
            QUEUE_SIZE_HELP,
            MetricType::GAUGE,
            queue_gauge(snapshot.queue.size),
        ),
        family(
            QUEUE_CAPACITY,
            QUEUE_CAPACITY_HELP,
            MetricType::GAUGE,
            queue_gauge(snapshot.queue.capacity),
        ),
    ]
}

/// A time as a Prometheus timestamp gauge: Unix seconds, 0 for none.
fn unix_seconds(time: Option<SystemTime>) -> f64 {
    time.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64())
}

pub(crate) fn gauge(value: f64) -> Metric {
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    Metric::from_gauge(gauge)
}

pub(crate) fn counter(labels: &[(&str, &str)], count: u64) -> Metric {
    let mut value = Counter::default();
    // Exact up to 2^53 spans; Prometheus stores samples as f64 anyway.
    value.set_value(count as f64);
    let mut metric = Metric::default();
    metric.set_label(self::labels(labels));
    metric.set_counter(value);
    metric
}

pub(crate) fn labels(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name((*name).to_owned());
            pair.set_value((*value).to_owned());
            pair
        })
        .collect()
}

pub(crate) fn family(
    name: &str,
    help: &str,
    kind: MetricType,
    metrics: Vec<Metric>,
) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_values_are_the_contract() {
        let seen: Vec<_> = CircuitState::ALL
            .iter()
            .map(|s| (s.as_str(), gauge_value(*s)))
            .collect();
        assert_eq!(seen, [("closed", 0.0), ("half_open", 1.0), ("open", 2.0)]);
    }

    #[test]
    fn the_help_text_states_the_encoding() {
        for state in CircuitState::ALL {
            let value = gauge_value(state);
            let name = state.as_str().replace('_', "-");
            assert!(
                CIRCUIT_STATE_HELP.contains(&format!("{value} {name}")),
                "{CIRCUIT_STATE_HELP:?} should say {value} {name}"
            );
        }
    }
}
