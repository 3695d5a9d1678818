//! The Markdown section of `pipeline-bench`: medians over rounds, each tracing-on figure
//! against tracing off of the same round, and the goals they are held to.

use std::fmt::Write as _;

use crate::{Load, OFF, OURS, Results, STOCK, Sample};

/// The goals of the healthy-day pipeline (`docs/contract.md`, "Benchmark goals").
const CPU_PER_SPAN_GOAL_US: f64 = 2.0;
const SATURATION_RATIO_GOAL: f64 = 0.85;
const SATURATION_DELIVERED_GOAL: f64 = 0.99;
const BACKGROUND_RATIO_GOAL: f64 = 0.95;
const BACKGROUND_P99_GOAL: f64 = 1.25;
const LOW_RATE_P99_GOAL: f64 = 1.10;
const STOCK_FACTOR_GOAL: f64 = 3.0;

/// The variant name the normal-priority goals apply to (`ours` runs the default,
/// background priority).
pub(crate) const NORMAL: &str = "normal";

pub(crate) fn one_line(s: &Sample) -> String {
    format!(
        "{:?}: {:.0} req/s, p99 {:.2} ms, server CPU {:.1} µs/request ({:.0} % busy), \
         {} of {} spans delivered, {} errors",
        s.load,
        s.throughput,
        s.p99_us / 1000.0,
        cpu_per_request(s),
        busy(s) * 100.0,
        s.delivered,
        s.ended,
        s.errors
    )
}

fn cpu_per_request(s: &Sample) -> f64 {
    if s.requests == 0 {
        return f64::NAN;
    }
    s.server_cpu_us / s.requests as f64
}

fn busy(s: &Sample) -> f64 {
    s.server_cpu_us / s.wall_us.max(1.0)
}

fn delivered_share(s: &Sample) -> f64 {
    if s.ended == 0 {
        return f64::NAN;
    }
    s.delivered as f64 / s.ended as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        f64::midpoint(values[n / 2 - 1], values[n / 2])
    }
}

impl Results {
    fn samples(&self, variant: &str, load: Load) -> impl Iterator<Item = &Sample> {
        self.samples
            .iter()
            .filter(move |s| s.variant == variant && s.load == load)
    }

    fn same_round(&self, other: &Sample, variant: &str) -> Option<&Sample> {
        self.samples
            .iter()
            .find(|s| s.variant == variant && s.load == other.load && s.round == other.round)
    }

    fn med(&self, variant: &str, load: Load, value: impl Fn(&Sample) -> f64) -> f64 {
        median(self.samples(variant, load).map(value).collect())
    }

    /// The median over rounds of `value(sample, tracing-off sample of its round)`.
    fn med_vs_off(
        &self,
        variant: &str,
        load: Load,
        value: impl Fn(&Sample, &Sample) -> f64,
    ) -> f64 {
        median(
            self.samples(variant, load)
                .filter_map(|s| self.same_round(s, OFF).map(|off| value(s, off)))
                .collect(),
        )
    }

    /// Server CPU per delivered span, tracing on minus off, at the paced rate.
    pub(crate) fn cpu_per_span(&self, variant: &str) -> f64 {
        self.med_vs_off(variant, Load::Paced, |on, off| {
            let spans_per_request = on.delivered as f64 / on.requests.max(1) as f64;
            (cpu_per_request(on) - cpu_per_request(off)) / spans_per_request
        })
    }

    fn throughput_ratio(&self, variant: &str) -> f64 {
        self.med_vs_off(variant, Load::Saturation, |on, off| {
            on.throughput / off.throughput
        })
    }

    fn p99_ratio(&self, variant: &str, load: Load) -> f64 {
        self.med_vs_off(variant, load, |on, off| on.p99_us / off.p99_us)
    }

    fn traced(&self) -> impl Iterator<Item = &str> {
        self.variants
            .iter()
            .map(|v| v.name.as_str())
            .filter(|name| *name != OFF)
    }
}

pub(crate) fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let p = &r.plan;
    let _ = writeln!(
        out,
        "## 8. Pipeline cost on a healthy day (server pinned to one CPU)\n\n\
         From `pipeline-bench` (`tests/src/bin/pipeline-bench/`). The release server runs \
         pinned to CPU {server} (`taskset -a -p -c {server}`); the load generator and the \
         OTLP/gRPC receiver run in the bench's own process, pinned to CPU {load}, so the \
         server's CPU time (from `/proc`) is its own cost. Every variant is started afresh \
         in each of {rounds} round(s), in turn; each figure is the median over rounds, and \
         each ratio compares a variant with tracing off **of the same round**. The load is \
         `GET /tasks/{{id}}` on an in-memory store: two spans per request (the server span and \
         the storage span). Phases of {phase:?} after a {warmup:?} warm-up; after each phase \
         the bench waits for the pipeline to flush before it counts what was delivered. \
         Load average before: {before}; after: {after}.\n",
        server = p.server_cpu,
        load = p.load_cpu,
        rounds = p.rounds,
        phase = p.phase,
        warmup = p.warmup,
        before = r.load_average_before,
        after = r.load_average_after,
    );
    let variants: Vec<String> = r
        .variants
        .iter()
        .map(|v| {
            let env = v
                .env
                .iter()
                .map(|(k, v)| format!("`{k}={v}`"))
                .collect::<Vec<_>>()
                .join(" ");
            let build = if v.stock {
                "`bench` build"
            } else {
                "shipped build"
            };
            format!("- **{}**: {build} {env}", v.name)
        })
        .collect();
    let _ = writeln!(out, "Variants:\n\n{}\n", variants.join("\n"));

    paced_table(&mut out, r);
    saturation_table(&mut out, r);
    low_rate_table(&mut out, r);
    goals(&mut out, r);
    out
}

fn paced_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "### CPU per exported span, paced at {:.0} requests/s\n\n\
         | variant | server CPU per request | CPU busy | spans delivered per request | delivered / ended | CPU per exported span (vs off) |\n\
         |---|---:|---:|---:|---:|---:|",
        r.plan.paced_rate
    );
    for v in &r.variants {
        let name = v.name.as_str();
        let per_span = if name == OFF {
            "baseline".to_owned()
        } else {
            format!("**{:.2} µs**", r.cpu_per_span(name))
        };
        let _ = writeln!(
            out,
            "| {name} | {:.1} µs | {:.0} % | {:.2} | {} | {per_span} |",
            r.med(name, Load::Paced, cpu_per_request),
            r.med(name, Load::Paced, busy) * 100.0,
            r.med(name, Load::Paced, |s| s.delivered as f64
                / s.requests.max(1) as f64),
            share(r.med(name, Load::Paced, delivered_share)),
        );
    }
    out.push('\n');
}

fn saturation_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "### Saturation: a closed loop of {} connections\n\n\
         | variant | throughput | vs off | p99 | vs off | server CPU busy | delivered / ended | lost in the queue (counted) | dropped by the breaker |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|",
        r.plan.connections
    );
    for v in &r.variants {
        let name = v.name.as_str();
        let (ratio, p99_ratio) = if name == OFF {
            ("1".to_owned(), "1".to_owned())
        } else {
            (
                format!("**{:.3}**", r.throughput_ratio(name)),
                format!("×{:.2}", r.p99_ratio(name, Load::Saturation)),
            )
        };
        let counted = |f: fn(&crate::Counts) -> u64| {
            if name == OFF {
                "–".to_owned()
            } else {
                format!(
                    "{:.0}",
                    r.med(name, Load::Saturation, |s| s
                        .counts
                        .as_ref()
                        .map_or(f64::NAN, |c| f(c) as f64))
                )
            }
        };
        let _ = writeln!(
            out,
            "| {name} | {:.0} req/s | {ratio} | {:.2} ms | {p99_ratio} | {:.0} % | {} | {} | {} |",
            r.med(name, Load::Saturation, |s| s.throughput),
            r.med(name, Load::Saturation, |s| s.p99_us) / 1000.0,
            r.med(name, Load::Saturation, busy) * 100.0,
            share(r.med(name, Load::Saturation, delivered_share)),
            counted(|c| c.queue_full),
            counted(|c| c.dropped),
        );
    }
    out.push('\n');
}

fn low_rate_table(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "### Paced at {:.0} requests/s\n\n\
         | variant | p50 | p99 | p99 vs off | server CPU busy | delivered / ended |\n\
         |---|---:|---:|---:|---:|---:|",
        r.plan.low_rate
    );
    for v in &r.variants {
        let name = v.name.as_str();
        let p99_ratio = if name == OFF {
            "1".to_owned()
        } else {
            format!("×{:.2}", r.p99_ratio(name, Load::LowRate))
        };
        let _ = writeln!(
            out,
            "| {name} | {:.3} ms | {:.3} ms | {p99_ratio} | {:.0} % | {} |",
            r.med(name, Load::LowRate, |s| s.p50_us) / 1000.0,
            r.med(name, Load::LowRate, |s| s.p99_us) / 1000.0,
            r.med(name, Load::LowRate, busy) * 100.0,
            share(r.med(name, Load::LowRate, delivered_share)),
        );
    }
    out.push('\n');
}

fn share(value: f64) -> String {
    if value.is_finite() {
        format!("{:.2} %", value * 100.0)
    } else {
        "–".to_owned()
    }
}

/// `(goal, measured, met)` for each goal this run can judge.
pub(crate) fn goal_rows(r: &Results) -> Vec<(String, String, bool)> {
    let mut rows = Vec::new();
    let has = |name: &str| r.variants.iter().any(|v| v.name == name);
    if has(OURS) {
        let per_span = r.cpu_per_span(OURS);
        rows.push((
            format!("CPU per exported span (paced) ≤ {CPU_PER_SPAN_GOAL_US} µs"),
            format!("{per_span:.2} µs"),
            per_span <= CPU_PER_SPAN_GOAL_US,
        ));
    }
    // The shipped default is background priority: `ours` is the background variant.
    if has(NORMAL) {
        let ratio = r.throughput_ratio(NORMAL);
        let delivered = r.med(NORMAL, Load::Saturation, delivered_share);
        rows.push((
            format!(
                "saturation, normal priority: throughput ≥ {SATURATION_RATIO_GOAL} of tracing off, \
                 ≥ {:.0} % of ended spans delivered",
                SATURATION_DELIVERED_GOAL * 100.0
            ),
            format!("{ratio:.3}, {}", share(delivered)),
            ratio >= SATURATION_RATIO_GOAL && delivered >= SATURATION_DELIVERED_GOAL,
        ));
    }
    if has(OURS) {
        let ratio = r.throughput_ratio(OURS);
        let p99 = r.p99_ratio(OURS, Load::Saturation);
        rows.push((
            format!(
                "saturation, background priority: throughput ≥ {BACKGROUND_RATIO_GOAL}, \
                 p99 ≤ ×{BACKGROUND_P99_GOAL} of tracing off, shed spans counted"
            ),
            format!("{ratio:.3}, ×{p99:.2}"),
            ratio >= BACKGROUND_RATIO_GOAL && p99 <= BACKGROUND_P99_GOAL,
        ));
    }
    for name in r.traced().filter(|n| *n == OURS || *n == NORMAL) {
        let p99 = r.p99_ratio(name, Load::LowRate);
        let delivered = r.med(name, Load::LowRate, delivered_share);
        rows.push((
            format!(
                "{name}, {:.0} requests/s: 100 % delivered, p99 ≤ ×{LOW_RATE_P99_GOAL} of tracing off",
                r.plan.low_rate
            ),
            format!("{}, ×{p99:.2}", share(delivered)),
            delivered >= 1.0 && p99 <= LOW_RATE_P99_GOAL,
        ));
    }
    if has(OURS) && has(STOCK) {
        let factor = r.cpu_per_span(STOCK) / r.cpu_per_span(OURS);
        rows.push((
            format!(
                "CPU per span: stock `opentelemetry-otlp` pipeline ≥ {STOCK_FACTOR_GOAL}× ours"
            ),
            format!("{factor:.2}×"),
            factor >= STOCK_FACTOR_GOAL,
        ));
    }
    rows
}

fn goals(out: &mut String, r: &Results) {
    let _ = writeln!(
        out,
        "### Goals\n\n| goal | measured | met |\n|---|---:|:---:|"
    );
    for (goal, measured, met) in goal_rows(r) {
        let _ = writeln!(
            out,
            "| {goal} | {measured} | {} |",
            if met { "yes" } else { "**no**" }
        );
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Counts, Plan, Variant};

    fn sample(variant: &str, load: Load, round: usize, cpu_us: f64, delivered: u64) -> Sample {
        Sample {
            round,
            variant: variant.to_owned(),
            load,
            requests: 1000,
            errors: 0,
            throughput: if variant == OFF { 40_000.0 } else { 30_000.0 },
            p50_us: 100.0,
            p99_us: if variant == OFF { 1000.0 } else { 2000.0 },
            server_cpu_us: cpu_us,
            wall_us: 1_000_000.0,
            ended: 2000,
            delivered,
            counts: (variant != OFF).then(Counts::default),
        }
    }

    fn results(samples: Vec<Sample>) -> Results {
        Results {
            plan: Plan {
                rounds: 2,
                warmup: Duration::from_secs(1),
                phase: Duration::from_secs(1),
                connections: 16,
                paced_rate: 2000.0,
                low_rate: 1000.0,
                server_cpu: 0,
                load_cpu: 1,
            },
            variants: vec![
                Variant::new(OFF, false, &[]),
                Variant::new(OURS, false, &[]),
                Variant::new(STOCK, true, &[]),
            ],
            samples,
            load_average_before: "0.1 0.1 0.1".into(),
            load_average_after: "0.2 0.2 0.2".into(),
        }
    }

    #[test]
    fn cpu_per_span_is_paired_with_tracing_off_of_the_same_round() {
        // Round 1: off 40 µs/request, ours 44 µs/request, 2 spans/request -> 2 µs/span.
        // Round 2: the machine got slower for both: off 60, ours 66 -> 3 µs/span.
        let r = results(vec![
            sample(OFF, Load::Paced, 1, 40_000.0, 0),
            sample(OURS, Load::Paced, 1, 44_000.0, 2000),
            sample(OFF, Load::Paced, 2, 60_000.0, 0),
            sample(OURS, Load::Paced, 2, 66_000.0, 2000),
            sample(STOCK, Load::Paced, 1, 56_000.0, 2000),
            sample(STOCK, Load::Paced, 2, 78_000.0, 2000),
        ]);
        assert!((r.cpu_per_span(OURS) - 2.5).abs() < 1e-9);
        assert!((r.cpu_per_span(STOCK) - 8.5).abs() < 1e-9);
        let rows = goal_rows(&r);
        let stock = rows.iter().find(|row| row.0.contains("stock")).unwrap();
        assert_eq!(stock.1, "3.40×");
        assert!(stock.2);
        let per_span = rows
            .iter()
            .find(|row| row.0.starts_with("CPU per exported"))
            .unwrap();
        assert_eq!(per_span.1, "2.50 µs");
        assert!(!per_span.2, "2.5 µs misses a 2 µs goal");
    }

    #[test]
    fn the_section_names_every_variant_and_goal() {
        let mut samples = Vec::new();
        for load in Load::ALL {
            for variant in [OFF, OURS, STOCK] {
                samples.push(sample(variant, load, 1, 40_000.0, 2000));
            }
        }
        let text = markdown(&results(samples));
        for needle in [
            "| ours |",
            "| stock |",
            "| tracing off |",
            "0.750",
            "### Goals",
            "×2.00",
        ] {
            assert!(text.contains(needle), "{needle} missing from:\n{text}");
        }
    }
}
