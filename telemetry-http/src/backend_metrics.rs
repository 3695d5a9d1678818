//! The series of each backend breaker (`BackendHandle`), read at scrape
//! time: its state labelled by endpoint and by the signals it serves, and
//! the OpenTelemetry semantic conventions' exporter metrics of each signal
//! (`otel.sdk.exporter.*`, version 1.42.0) in Prometheus' translation.
//!
//! Nothing here is shown before a backend is given
//! ([`TelemetryHttp::with_backends`](crate::TelemetryHttp::with_backends)):
//! the seed's series, in `breaker_metrics.rs`, stay what they were.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use breaker_otel::{BackendHandle, BackendSnapshot, Signal, SignalSnapshot};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};

use crate::breaker_metrics::{counter, family, gauge, gauge_value, labels};

const STATE: &str = "backend_circuit_state";
const STATE_HELP: &str = "State of each backend's circuit breaker, by endpoint and the signals \
     it serves: 0 closed, 1 half-open, 2 open.";
const TRANSITIONS: &str = "backend_circuit_transitions_total";
const TRANSITIONS_HELP: &str =
    "Changes of each backend breaker's state, by state left and state entered.";
const PROBES: &str = "backend_circuit_probes_total";
const PROBES_HELP: &str =
    "Probe exports each backend breaker let through while open, by any of its signals.";

const DURATION: &str = "otel_sdk_exporter_operation_duration_seconds";
const DURATION_HELP: &str = "The duration of exporting a batch of telemetry records \
     (otel.sdk.exporter.operation.duration); error_type set unless the export fully succeeded.";

/// A signal's `otel.sdk.exporter.<signal>.exported` and `.inflight`, translated.
struct SignalNames {
    exported: &'static str,
    exported_help: &'static str,
    inflight: &'static str,
    inflight_help: &'static str,
}

/// `None` for a signal this crate does not know yet (`Signal` is
/// non-exhaustive): its items are not shown rather than shown as another's.
const fn names(signal: Signal) -> Option<SignalNames> {
    Some(match signal {
        Signal::Traces => SignalNames {
            exported: "otel_sdk_exporter_span_exported_total",
            exported_help: "Spans whose export has finished (otel.sdk.exporter.span.exported): \
                 exported (no error_type), rejected, circuit_open (dropped unsent) or failed by cause.",
            inflight: "otel_sdk_exporter_span_inflight",
            inflight_help: "Spans passed to the exporter whose export has not finished \
                 (otel.sdk.exporter.span.inflight).",
        },
        Signal::Logs => SignalNames {
            exported: "otel_sdk_exporter_log_exported_total",
            exported_help: "Log records whose export has finished (otel.sdk.exporter.log.exported): \
                 exported (no error_type), rejected, circuit_open (dropped unsent) or failed by cause.",
            inflight: "otel_sdk_exporter_log_inflight",
            inflight_help: "Log records passed to the exporter whose export has not finished \
                 (otel.sdk.exporter.log.inflight).",
        },
        Signal::Metrics => SignalNames {
            exported: "otel_sdk_exporter_metric_data_point_exported_total",
            exported_help: "Metric data points whose export has finished \
                 (otel.sdk.exporter.metric_data_point.exported): exported (no error_type), \
                 rejected, circuit_open (dropped unsent) or failed by cause.",
            inflight: "otel_sdk_exporter_metric_data_point_inflight",
            inflight_help: "Metric data points passed to the exporter whose export has not \
                 finished (otel.sdk.exporter.metric_data_point.inflight).",
        },
        _ => return None,
    })
}

/// The backends whose series `/metrics` shows; shared with the health route.
pub(crate) type Backends = Arc<RwLock<Vec<BackendHandle>>>;

/// Reads the backends' snapshots at scrape time, as `BreakerCollector`
/// reads the span exporter's handle.
#[derive(Debug)]
pub(crate) struct BackendCollector {
    backends: Backends,
    descs: Vec<Desc>,
}

impl BackendCollector {
    pub(crate) fn new(backends: Backends) -> Result<Self, prometheus::Error> {
        // Labels vary by series (`error_type` only on failures, `server_*`
        // only with an endpoint), so the descriptions name none: they are
        // what the registry checks names against.
        let desc = |name: &str, help: &str| {
            Desc::new(name.to_owned(), help.to_owned(), Vec::new(), HashMap::new())
        };
        let mut descs = vec![
            desc(STATE, STATE_HELP)?,
            desc(TRANSITIONS, TRANSITIONS_HELP)?,
            desc(PROBES, PROBES_HELP)?,
            desc(DURATION, DURATION_HELP)?,
        ];
        for n in Signal::ALL.into_iter().filter_map(names) {
            descs.push(desc(n.exported, n.exported_help)?);
            descs.push(desc(n.inflight, n.inflight_help)?);
        }
        Ok(Self { backends, descs })
    }
}

impl Collector for BackendCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let snapshots: Vec<BackendSnapshot> = self
            .backends
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(BackendHandle::snapshot)
            .collect();
        families(&snapshots)
    }
}

/// `traces,logs`: the `signals` label of a breaker.
pub(crate) fn signals_label(snapshot: &BackendSnapshot) -> String {
    snapshot
        .signals
        .iter()
        .map(|s| s.signal.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// One family per name, every backend's series in it; none without backends.
fn families(snapshots: &[BackendSnapshot]) -> Vec<MetricFamily> {
    let mut state = Vec::new();
    let mut transitions = Vec::new();
    let mut probes = Vec::new();
    let mut durations = Vec::new();
    let mut exported: [Vec<Metric>; 3] = Default::default();
    let mut inflight: [Vec<Metric>; 3] = Default::default();
    for snapshot in snapshots {
        let endpoint = snapshot.endpoint.as_deref().unwrap_or("");
        let signals = signals_label(snapshot);
        let breaker = [("endpoint", endpoint), ("signals", signals.as_str())];
        let mut metric = gauge(gauge_value(snapshot.state));
        metric.set_label(labels(&breaker));
        state.push(metric);
        probes.push(counter(&breaker, snapshot.probes));
        transitions.extend(snapshot.transitions.iter().map(|(from, to, count)| {
            counter(
                &[
                    breaker[0],
                    ("from", from.as_str()),
                    breaker[1],
                    ("to", to.as_str()),
                ],
                count,
            )
        }));
        let port = snapshot.server_port.map(|p| p.to_string());
        for signal in &snapshot.signals {
            if names(signal.signal).is_none() {
                continue;
            }
            let exporter = Exporter::of(snapshot, signal, port.as_deref());
            let i = Signal::ALL
                .iter()
                .position(|&s| s == signal.signal)
                .unwrap_or(0);
            exported[i].extend(signal.by_error_type().map(|(error_type, count)| {
                counter(&exporter.labels(error_type.map(|t| t.as_str())), count)
            }));
            let mut metric = gauge(signal.inflight as f64);
            metric.set_label(labels(&exporter.labels(None)));
            inflight[i].push(metric);
            durations.extend(
                signal
                    .durations
                    .iter()
                    // Success always; an error type once it has happened,
                    // as an SDK's histogram shows the attributes recorded.
                    .filter(|(error_type, h)| error_type.is_none() || h.count() > 0)
                    .map(|(error_type, h)| {
                        histogram(&exporter.labels(error_type.map(|t| t.as_str())), h)
                    }),
            );
        }
    }
    if snapshots.is_empty() {
        return Vec::new();
    }
    let mut out = vec![
        family(STATE, STATE_HELP, MetricType::GAUGE, state),
        family(
            TRANSITIONS,
            TRANSITIONS_HELP,
            MetricType::COUNTER,
            transitions,
        ),
        family(PROBES, PROBES_HELP, MetricType::COUNTER, probes),
    ];
    for (i, signal) in Signal::ALL.into_iter().enumerate() {
        let Some(n) = names(signal) else { continue };
        let exported = std::mem::take(&mut exported[i]);
        let inflight = std::mem::take(&mut inflight[i]);
        if !exported.is_empty() {
            out.push(family(
                n.exported,
                n.exported_help,
                MetricType::COUNTER,
                exported,
            ));
            out.push(family(
                n.inflight,
                n.inflight_help,
                MetricType::GAUGE,
                inflight,
            ));
        }
    }
    if !durations.is_empty() {
        out.push(family(
            DURATION,
            DURATION_HELP,
            MetricType::HISTOGRAM,
            durations,
        ));
    }
    out
}

/// The attributes every exporter series of one signal carries.
struct Exporter<'a> {
    component_name: &'a str,
    component_type: &'a str,
    server_address: Option<&'a str>,
    server_port: Option<&'a str>,
}

impl<'a> Exporter<'a> {
    fn of(backend: &'a BackendSnapshot, signal: &'a SignalSnapshot, port: Option<&'a str>) -> Self {
        Self {
            component_name: &signal.component_name,
            component_type: signal.component_type,
            server_address: backend.server_address.as_deref(),
            server_port: port,
        }
    }

    /// The labels, in name order, with `error_type` when given.
    fn labels(&self, error_type: Option<&'a str>) -> Vec<(&'static str, &'a str)> {
        let mut out = Vec::with_capacity(5);
        if let Some(error_type) = error_type {
            out.push(("error_type", error_type));
        }
        out.push(("otel_component_name", self.component_name));
        out.push(("otel_component_type", self.component_type));
        if let Some(address) = self.server_address {
            out.push(("server_address", address));
        }
        if let Some(port) = self.server_port {
            out.push(("server_port", port));
        }
        out
    }
}

fn histogram(labels: &[(&str, &str)], durations: &breaker_otel::DurationHistogram) -> Metric {
    let mut histogram = Histogram::default();
    histogram.set_sample_count(durations.count());
    histogram.set_sample_sum(durations.sum().as_secs_f64());
    histogram.set_bucket(
        durations
            .cumulative()
            .map(|(bound, count)| {
                let mut bucket = Bucket::default();
                bucket.set_upper_bound(bound.as_secs_f64());
                bucket.set_cumulative_count(count);
                bucket
            })
            .collect(),
    );
    let mut metric = Metric::default();
    metric.set_label(self::labels(labels));
    metric.set_histogram(histogram);
    metric
}
