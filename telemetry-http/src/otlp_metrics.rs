//! The registry's metrics as OTLP, for a service that also pushes its metrics
//! (`OTEL_METRICS_EXPORTER=otlp`): the same instruments `/metrics` shows, read at push
//! time and converted, so that no instrument is defined twice and the two views never
//! disagree.
//!
//! Why a conversion and not the SDK's instruments: the OpenTelemetry API has no
//! observable histogram, so the SDK could read the registry's counters and gauges but not
//! its request-duration histogram, and the Prometheus endpoint's names and help texts are
//! the service's contract. The conversion follows what an OpenTelemetry Collector's
//! Prometheus receiver does with the same text: counters become cumulative monotonic sums
//! without their `_total` suffix, gauges gauges, histograms cumulative explicit-bucket
//! histograms with per-bucket counts. Summaries and untyped families are not pushed (the
//! registry has none).

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Sum,
    metric, number_data_point,
};
use prometheus::proto::{LabelPair, MetricFamily, MetricType};

/// Converts gathered families into OTLP metrics, their points stamped `now` and, for
/// cumulative ones, started at `start` (when the process began counting).
#[must_use]
pub(crate) fn to_otlp(
    families: &[MetricFamily],
    start: SystemTime,
    now: SystemTime,
) -> Vec<Metric> {
    let (start, now) = (unix_nanos(start), unix_nanos(now));
    families
        .iter()
        .filter_map(|family| {
            let data = match family.get_field_type() {
                MetricType::COUNTER => metric::Data::Sum(Sum {
                    data_points: numbers(family, start, now, |m| m.get_counter().get_value()),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                MetricType::GAUGE => metric::Data::Gauge(Gauge {
                    data_points: numbers(family, 0, now, |m| m.get_gauge().get_value()),
                }),
                MetricType::HISTOGRAM => metric::Data::Histogram(Histogram {
                    data_points: histograms(family, start, now),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
                MetricType::SUMMARY | MetricType::UNTYPED => return None,
            };
            let name = family.name();
            let name = match family.get_field_type() {
                MetricType::COUNTER => name.strip_suffix("_total").unwrap_or(name),
                _ => name,
            };
            Some(Metric {
                name: name.to_owned(),
                description: family.help().to_owned(),
                unit: unit(name).to_owned(),
                metadata: Vec::new(),
                data: Some(data),
            })
        })
        .collect()
}

/// The UCUM unit a Prometheus base-unit suffix names.
fn unit(name: &str) -> &'static str {
    if name.ends_with("_seconds") {
        "s"
    } else if name.ends_with("_bytes") {
        "By"
    } else {
        ""
    }
}

fn numbers(
    family: &MetricFamily,
    start: u64,
    now: u64,
    value: impl Fn(&prometheus::proto::Metric) -> f64,
) -> Vec<NumberDataPoint> {
    family
        .get_metric()
        .iter()
        .map(|m| NumberDataPoint {
            attributes: attributes(m.get_label()),
            start_time_unix_nano: start,
            time_unix_nano: now,
            exemplars: Vec::new(),
            flags: 0,
            value: Some(number_data_point::Value::AsDouble(value(m))),
        })
        .collect()
}

fn histograms(family: &MetricFamily, start: u64, now: u64) -> Vec<HistogramDataPoint> {
    family
        .get_metric()
        .iter()
        .map(|m| {
            let h = m.get_histogram();
            let count = h.get_sample_count();
            // Prometheus buckets are cumulative and end below +Inf; OTLP's are per bucket
            // and end with the +Inf one.
            let mut explicit_bounds = Vec::new();
            let mut bucket_counts = Vec::new();
            let mut below = 0;
            for bucket in h.get_bucket() {
                if bucket.upper_bound().is_infinite() {
                    continue;
                }
                let cumulative = bucket.cumulative_count();
                explicit_bounds.push(bucket.upper_bound());
                bucket_counts.push(cumulative.saturating_sub(below));
                below = cumulative;
            }
            bucket_counts.push(count.saturating_sub(below));
            HistogramDataPoint {
                attributes: attributes(m.get_label()),
                start_time_unix_nano: start,
                time_unix_nano: now,
                count,
                sum: Some(h.get_sample_sum()),
                bucket_counts,
                explicit_bounds,
                exemplars: Vec::new(),
                flags: 0,
                min: None,
                max: None,
            }
        })
        .collect()
}

fn attributes(labels: &[LabelPair]) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|label| KeyValue {
            key: label.name().to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(label.value().to_owned())),
            }),
            ..KeyValue::default()
        })
        .collect()
}

fn unix_nanos(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

    use super::*;

    fn registry() -> Registry {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("http_server_requests_total", "Requests served."),
            &["route", "status"],
        )
        .unwrap();
        requests.with_label_values(&["/tasks", "200"]).inc_by(3);
        let duration = HistogramVec::new(
            HistogramOpts::new("http_server_request_duration_seconds", "Latency.")
                .buckets(vec![0.1, 1.0]),
            &["route"],
        )
        .unwrap();
        for seconds in [0.05, 0.5, 0.7, 3.0] {
            duration.with_label_values(&["/tasks"]).observe(seconds);
        }
        let state = IntGauge::new("circuit_state", "0 closed, 1 open.").unwrap();
        state.set(1);
        registry.register(Box::new(requests)).unwrap();
        registry.register(Box::new(duration)).unwrap();
        registry.register(Box::new(state)).unwrap();
        registry
    }

    #[test]
    fn what_metrics_shows_is_what_is_pushed() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000);
        let now = start + Duration::from_secs(60);
        let metrics = to_otlp(&registry().gather(), start, now);
        let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "circuit_state",
                "http_server_request_duration_seconds",
                "http_server_requests"
            ]
        );

        let Some(metric::Data::Gauge(gauge)) = &metrics[0].data else {
            panic!("{:?}", metrics[0])
        };
        assert_eq!(
            gauge.data_points[0].value,
            Some(number_data_point::Value::AsDouble(1.0))
        );

        let histogram = &metrics[1];
        assert_eq!(histogram.unit, "s");
        let Some(metric::Data::Histogram(histogram)) = &histogram.data else {
            panic!("{histogram:?}")
        };
        let point = &histogram.data_points[0];
        assert_eq!(point.explicit_bounds, [0.1, 1.0]);
        assert_eq!(point.bucket_counts, [1, 2, 1], "per bucket, +Inf last");
        assert_eq!(point.count, 4);
        assert_eq!(point.sum, Some(0.05 + 0.5 + 0.7 + 3.0));
        assert_eq!(point.start_time_unix_nano, 1_000_000_000_000);
        assert_eq!(point.time_unix_nano, 1_060_000_000_000);

        let Some(metric::Data::Sum(sum)) = &metrics[2].data else {
            panic!("{:?}", metrics[2])
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let point = &sum.data_points[0];
        assert_eq!(point.value, Some(number_data_point::Value::AsDouble(3.0)));
        let labels: Vec<(&str, Option<&any_value::Value>)> = point
            .attributes
            .iter()
            .map(|kv| {
                (
                    kv.key.as_str(),
                    kv.value.as_ref().and_then(|v| v.value.as_ref()),
                )
            })
            .collect();
        assert_eq!(
            labels,
            [
                (
                    "route",
                    Some(&any_value::Value::StringValue("/tasks".into()))
                ),
                ("status", Some(&any_value::Value::StringValue("200".into())))
            ]
        );
    }
}
