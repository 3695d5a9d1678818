//! The Markdown sections (2 to 5 of `docs/benchmarks.md`) and the raw JSON.
//!
//! Every figure is the median over the rounds; a ratio is computed within
//! each round (so drift between rounds cancels) and its median reported.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};

use crate::Plan;
use crate::phases::{AttemptSource, Load, Outages, Phase, PhaseResult};
use crate::recovery::{Rate, Recovery, Sample};
use crate::rig::{BREAKER_ENV, EXPORT_THREADS, PHASE_ENV, Variant};

/// Goal 2 of `docs/contract.md` section 9: the outage phases.
const MIN_THROUGHPUT_RATIO: f64 = 0.97;
const MAX_P99_RATIO: f64 = 1.10;
/// Goal 4 of `docs/contract.md` section 9: tracing on against tracing off.
const MIN_OVERHEAD_RATIO: f64 = 0.90;

/// Spans per request: the server span and the storage span.
const SPANS_PER_REQUEST: u64 = 2;
/// `OTEL_BSP_MAX_EXPORT_BATCH_SIZE`'s default.
const BATCH_SIZE: f64 = 512.0;

pub(crate) fn markdown(
    plan: &Plan,
    outages: Option<&Outages>,
    recovery: Option<&Recovery>,
) -> String {
    let mut out = String::new();
    if let Some(outages) = outages {
        outage_impact(&mut out, plan, outages);
        versus(&mut out, plan, outages);
        overhead(&mut out, outages);
        machine_noise(&mut out, plan, outages);
    }
    if let Some(recovery) = recovery {
        recovery_time(&mut out, recovery);
    }
    out
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// Which results: one server, one load, one phase.
type Key = (Variant, Load, Phase);

/// The median over rounds of `value`.
fn med(outages: &Outages, (variant, load, phase): Key, value: impl Fn(&PhaseResult) -> f64) -> f64 {
    median(
        outages
            .of(variant, load, phase)
            .into_iter()
            .map(value)
            .collect(),
    )
}

/// The median over rounds of `value(result) / value(reference)`, the
/// reference being another run or phase of the same round.
fn ratio(
    outages: &Outages,
    (variant, load, phase): Key,
    (ref_variant, ref_load, ref_phase): Key,
    value: impl Fn(&PhaseResult) -> f64,
) -> f64 {
    median(
        outages
            .of(variant, load, phase)
            .into_iter()
            .filter_map(|r| {
                let reference = outages.same_round(r.round, ref_variant, ref_load, ref_phase)?;
                Some(value(r) / value(reference))
            })
            .collect(),
    )
}

fn phase_label(phase: Phase) -> &'static str {
    match phase {
        Phase::Healthy => "healthy",
        Phase::Refused => "refused (nothing listens)",
        Phase::Unavailable => "unavailable (gRPC `UNAVAILABLE`)",
        Phase::Hanging => "hanging (never answers)",
    }
}

fn env_list(vars: &[(&str, &str)]) -> String {
    vars.iter()
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn outage_impact(out: &mut String, plan: &Plan, outages: &Outages) {
    let _ = writeln!(out, "## 2. Outage impact on the service\n");
    let _ = writeln!(
        out,
        "The release build of `taskman-server` (two HTTP workers, tasks in `:memory:` so that \
         the disk's `fsync` adds no noise), exporting to the OTLP/gRPC receiver of the `tests` \
         crate, both on loopback. Load: a closed loop of {connections} keep-alive HTTP/1.1 \
         connections (one thread each, in the bench process), one `POST /tasks` to {reads} \
         `GET /tasks/{{id}}` of tasks that connection created; every request's latency is \
         kept. Each server is warmed up for {warmup} s, then goes through {phase} s phases; \
         after each outage phase the receiver accepts again for a {window} s recovery window \
         (section 3). Rounds: {rounds}; in each, the server with the breaker, the stock \
         pipeline and tracing off run one after the other (then the paced runs of section 3), \
         so drift cancels in the ratios, which are taken within a round against the same \
         server's healthy phase. Medians over the rounds.\n",
        connections = plan.connections,
        reads = plan.post_every - 1,
        warmup = plan.warmup.as_secs(),
        phase = plan.phase.as_secs(),
        window = plan.recovery_window.as_secs(),
        rounds = plan.rounds,
    );
    let _ = writeln!(
        out,
        "Settings: {} for every server; with the breaker also {} (`probe_every` and \
         `failure_threshold` at their defaults, 10 and 3). The stock server runs with \
         `TASKMAN_BENCH_STOCK_PIPELINE=true`. The OTLP exporter's own timeout is its default \
         (10 s) in both.\n",
        env_list(&PHASE_ENV),
        env_list(&BREAKER_ENV),
    );
    let _ = writeln!(
        out,
        "Goal ([contract.md](contract.md#9-benchmark-goals)), with the breaker, in the \
         refused and hanging phases: throughput \
         ratio ≥ {MIN_THROUGHPUT_RATIO:.2} and p99 ratio ≤ {MAX_P99_RATIO:.2}.\n"
    );
    let _ = writeln!(
        out,
        "### At the closed loop's maximum\n\nThe server is saturated: throughput is what it \
         sustains, latency mostly queueing.\n"
    );
    impact_table(
        out,
        outages,
        Load::Max,
        &[Phase::Healthy, Phase::Refused, Phase::Hanging],
    );
    let paced = Load::Paced(plan.paced_rate);
    let _ = writeln!(
        out,
        "### At {:.0} requests per second\n\nThe paced runs of section 3: the server has room, so \
         latency shows what an outage adds to a request, not queueing. Throughput is the \
         pace.\n",
        plan.paced_rate
    );
    impact_table(out, outages, paced, &Phase::ALL);
}

fn impact_table(out: &mut String, outages: &Outages, load: Load, phases: &[Phase]) {
    let _ = writeln!(
        out,
        "| server | phase | throughput (req/s) | p50 (ms) | p99 (ms) | throughput ratio | p99 ratio | goal |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---|");
    for variant in [Variant::Breaker, Variant::Stock] {
        for &phase in phases {
            let key = (variant, load, phase);
            let healthy = (variant, load, Phase::Healthy);
            let throughput = med(outages, key, |r| r.throughput);
            let p50 = med(outages, key, |r| ms(r.p50));
            let p99 = med(outages, key, |r| ms(r.p99));
            let t_ratio = ratio(outages, key, healthy, |r| r.throughput);
            let p_ratio = ratio(outages, key, healthy, |r| ms(r.p99));
            let goal = if variant == Variant::Breaker
                && matches!(phase, Phase::Refused | Phase::Hanging)
            {
                goal_verdict(t_ratio, p_ratio)
            } else {
                String::new()
            };
            let errors: u64 = outages
                .of(variant, load, phase)
                .iter()
                .map(|r| r.errors)
                .sum();
            let errors = if errors > 0 {
                format!(" ({errors} failed requests)")
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "| {} | {}{errors} | {throughput:.0} | {p50:.2} | {p99:.2} | {t_ratio:.3} | {p_ratio:.3} | {goal} |",
                variant.label(),
                phase_label(phase),
            );
        }
    }
    let _ = writeln!(out);
}

fn goal_verdict(throughput_ratio: f64, p99_ratio: f64) -> String {
    let mut missed = Vec::new();
    if throughput_ratio < MIN_THROUGHPUT_RATIO {
        missed.push(format!(
            "throughput {:.1} points short",
            (MIN_THROUGHPUT_RATIO - throughput_ratio) * 100.0
        ));
    }
    if p99_ratio > MAX_P99_RATIO {
        missed.push(format!(
            "p99 {:.1} points over",
            (p99_ratio - MAX_P99_RATIO) * 100.0
        ));
    }
    if missed.is_empty() {
        "met".to_owned()
    } else {
        format!("**missed**: {}", missed.join(", "))
    }
}

fn versus(out: &mut String, plan: &Plan, outages: &Outages) {
    let _ = writeln!(out, "## 3. Versus no breaker\n");
    let _ = writeln!(
        out,
        "The same servers and outages, measured twice: at the closed loop's maximum (the runs \
         of section 2) and at a paced {paced:.0} requests per second over the same \
         {connections} connections ({spans:.0} spans per second), where the machine has room \
         and what exporting costs is not hidden by a saturated server. The paced runs add an \
         outage where the backend answers gRPC `UNAVAILABLE`. Per {phase} s outage phase, \
         medians over the rounds:\n\n\
         - **export attempts**: export requests sent to the dead backend. Counted by the \
         receiver when it is there to count (unavailable, hanging); when nothing listens \
         (refused), from the failed exports in `/health/telemetry` with the breaker (its OTLP \
         retries are off, so one export is one attempt) and from the OTLP exporter's own log \
         line per failed batch (`retries=N`, so N + 1 attempts) without it.\n\
         - **server CPU**: user + system time of the whole server process (`/proc/PID/stat`); \
         **export CPU**: of its threads that export (`{threads}`: the SDK's batch processor \
         thread and the main Tokio runtime, which runs the breaker's exports and the gRPC \
         client; the HTTP workers have their own runtimes); **per 1000 req**: server CPU per \
         thousand requests served.\n\
         - **log lines**: lines the server wrote to stderr from the outage's start to the end \
         of the recovery window. The stock server is built with `--features bench` \
         (the stock pipeline, with the SDK's and OTLP exporter's own logs, as they are by \
         default in those crates and off in ours).\n\
         - **delivered after recovery**: spans the receiver accepted in the {window} s after it \
         came back, and spans the server ended in that window.\n\
         - **closed after**: from the receiver's return until `/health/telemetry` reported a \
         closed circuit (polled every 10 ms).\n\
         - **RSS growth**: resident memory at the end of the outage minus at its start.\n",
        paced = plan.paced_rate,
        connections = plan.connections,
        spans = plan.paced_rate * SPANS_PER_REQUEST as f64,
        phase = plan.phase.as_secs(),
        window = plan.recovery_window.as_secs(),
        threads = EXPORT_THREADS.join("`, `"),
    );
    for (load, phases, title) in [
        (
            Load::Paced(plan.paced_rate),
            &Phase::OUTAGES[..],
            format!("At {:.0} requests per second", plan.paced_rate),
        ),
        (
            Load::Max,
            &[Phase::Refused, Phase::Hanging][..],
            "At the closed loop's maximum".to_owned(),
        ),
    ] {
        let _ = writeln!(out, "### {title}\n");
        versus_table(out, outages, load, phases);
        let healthy = |variant| {
            let key = (variant, load, Phase::Healthy);
            (
                med(outages, key, |r| r.cpu.as_secs_f64()),
                med(outages, key, |r| r.export_cpu.as_secs_f64()),
                med(outages, key, |r| r.throughput),
            )
        };
        let (b_cpu, b_export, b_rate) = healthy(Variant::Breaker);
        let (s_cpu, s_export, s_rate) = healthy(Variant::Stock);
        let _ = writeln!(
            out,
            "\nThe healthy phase for reference: with the breaker {b_rate:.0} req/s, server CPU \
             {b_cpu:.2} s, export CPU {b_export:.2} s; stock {s_rate:.0} req/s, {s_cpu:.2} s, \
             {s_export:.2} s.\n"
        );
    }
    versus_findings(out, plan, outages);
}

/// What the versus tables say that is not obvious from them.
fn versus_findings(out: &mut String, plan: &Plan, outages: &Outages) {
    let _ = writeln!(out, "### What the numbers say\n");
    let attempts = |variant, load, phase| {
        median(
            outages
                .of(variant, load, phase)
                .iter()
                .filter_map(|r| r.outage.as_ref()?.attempts.map(|a| a as f64))
                .collect(),
        )
    };
    let lines = |variant, load, phase| {
        median(
            outages
                .of(variant, load, phase)
                .iter()
                .filter_map(|r| r.outage.as_ref().map(|o| o.log_lines as f64))
                .collect(),
        )
    };
    let paced = Load::Paced(plan.paced_rate);
    let phase_s = plan.phase.as_secs_f64();
    let window_s = phase_s + plan.recovery_window.as_secs_f64();
    for (load, label) in [
        (paced, format!("{:.0} req/s", plan.paced_rate)),
        (Load::Max, "the maximum".to_owned()),
    ] {
        let b = attempts(Variant::Breaker, load, Phase::Refused);
        let s = attempts(Variant::Stock, load, Phase::Refused);
        let bl = lines(Variant::Breaker, load, Phase::Refused);
        let sl = lines(Variant::Stock, load, Phase::Refused);
        let _ = writeln!(
            out,
            "- Refused backend at {label}: {b:.0} export attempts with the breaker against \
             {s:.0} without ({:.1} vs {:.1} per second); {bl:.0} log lines against {sl:.0} \
             ({:.1} vs {:.1} per second, recovery window included).",
            b / phase_s,
            s / phase_s,
            bl / window_s,
            sl / window_s,
        );
    }
    let max_spans = med(
        outages,
        (Variant::Breaker, Load::Max, Phase::Refused),
        |r| r.throughput * SPANS_PER_REQUEST as f64,
    );
    let batches = max_spans / BATCH_SIZE;
    let _ = writeln!(
        out,
        "- Why the breaker probes more at the maximum: while the circuit is open it drops \
         batches at once, so the batch span processor exports as fast as batches fill: about \
         {batches:.0} batches per second at {max_spans:.0} spans per second. Every tenth \
         attempt is a probe (`probe_every` = 10), so about {probes:.0} probes per second reach \
         the dead backend, and each failed probe logs two lines (open → half-open, half-open → \
         open). The stock pipeline instead spends about a second per batch in the exporter's \
         retry back-off, and its queue drops the spans that arrive meanwhile. `probe_after` \
         bounds the time between probes from above, nothing bounds it from below: a minimum \
         interval between probes (a change to `breaker-core`'s probe rule) or one log line per \
         failed probe rather than two would make the breaker as quiet at high span rates as at \
         low ones.",
        probes = batches / 10.0,
    );
    let b_delivered = median(
        outages
            .of(Variant::Breaker, paced, Phase::Refused)
            .iter()
            .filter_map(|r| r.outage.as_ref().map(|o| o.delivered as f64))
            .collect(),
    );
    let s_delivered = median(
        outages
            .of(Variant::Stock, paced, Phase::Refused)
            .iter()
            .filter_map(|r| r.outage.as_ref().map(|o| o.delivered as f64))
            .collect(),
    );
    let _ = writeln!(
        out,
        "- Spans delivered after recovery ({b_delivered:.0} with the breaker, {s_delivered:.0} \
         without, at {paced:.0} req/s after a refused backend): the breaker drops spans until \
         a probe succeeds (its rule: drop, never queue), so the spans of the first moments \
         after the return are lost; the stock pipeline still holds up to a queue's worth \
         (2048 spans) from the outage and sends them late, and more than the window's own \
         spans arrive.",
        paced = plan.paced_rate,
    );
    let _ = writeln!(
        out,
        "- A hanging backend costs the stock pipeline one export per `OTEL_EXPORTER_OTLP_TIMEOUT` \
         (10 s): its batch processor thread waits that long each time, and a shutdown in that \
         state waits too. The breaker cuts every export at `export_timeout` ({timeout}) and \
         then rejects without waiting.\n",
        timeout = BREAKER_ENV
            .iter()
            .find(|(k, _)| k.ends_with("EXPORT_TIMEOUT"))
            .map_or("", |(_, v)| v),
    );
}

fn versus_table(out: &mut String, outages: &Outages, load: Load, phases: &[Phase]) {
    let _ = writeln!(
        out,
        "| phase | server | export attempts | server CPU (s) | export CPU (s) | CPU per 1000 req (ms) | log lines | delivered after recovery (ended) | closed after (s) | RSS growth (MiB) |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &phase in phases {
        for variant in [Variant::Breaker, Variant::Stock] {
            let key = (variant, load, phase);
            let results = outages.of(variant, load, phase);
            let outage = |f: &dyn Fn(&crate::phases::Outage) -> Option<f64>| {
                median(
                    results
                        .iter()
                        .filter_map(|r| r.outage.as_ref().and_then(f))
                        .collect(),
                )
            };
            let attempts = outage(&|o| o.attempts.map(|a| a as f64));
            let source = results
                .iter()
                .find_map(|r| r.outage.as_ref())
                .map(|o| match o.attempts_source {
                    AttemptSource::Receiver => "",
                    AttemptSource::BreakerHealth => " (health)",
                    AttemptSource::ExporterLog => " (log)",
                })
                .unwrap_or("");
            let attempts = if attempts.is_nan() {
                "unknown".to_owned()
            } else {
                format!("{attempts:.0}{source}")
            };
            let cpu = med(outages, key, |r| r.cpu.as_secs_f64());
            let export_cpu = med(outages, key, |r| r.export_cpu.as_secs_f64());
            let per_1000 = med(outages, key, |r| {
                ms(r.cpu) / (r.requests.max(1) as f64 / 1000.0)
            });
            let log_lines = outage(&|o| Some(o.log_lines as f64));
            let delivered = outage(&|o| Some(o.delivered as f64));
            let ended = outage(&|o| Some(o.ended_in_window as f64));
            let closed = outage(&|o| o.closed_after.map(|d| d.as_secs_f64()));
            let closed = if closed.is_nan() {
                "n/a".to_owned()
            } else {
                format!("{closed:.2}")
            };
            let rss = med(outages, key, |r| {
                (r.rss_end as f64 - r.rss_start as f64) / (1024.0 * 1024.0)
            });
            let _ = writeln!(
                out,
                "| {} | {} | {attempts} | {cpu:.2} | {export_cpu:.2} | {per_1000:.1} | {log_lines:.0} | {delivered:.0} ({ended:.0}) | {closed} | {rss:+.1} |",
                phase.key(),
                variant.label(),
            );
        }
    }
}

fn overhead(out: &mut String, outages: &Outages) {
    let _ = writeln!(out, "## 4. Telemetry overhead\n");
    let _ = writeln!(
        out,
        "The healthy phases of section 2 against the same server with `OTEL_SDK_DISABLED=true` \
         (no span is recorded), run in the same rounds. Ratios are taken within each round. \
         Goal ([contract.md](contract.md#9-benchmark-goals)): throughput ratio ≥ \
         {MIN_OVERHEAD_RATIO:.2} with tracing on.\n"
    );
    let _ = writeln!(
        out,
        "| server | throughput (req/s) | lowest – highest round | p50 (ms) | p99 (ms) | server CPU per request (µs) | throughput ratio to tracing off | p99 ratio | goal |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let off = (Variant::TracingOff, Load::Max, Phase::Healthy);
    let on = (Variant::Breaker, Load::Max, Phase::Healthy);
    let per_request =
        |r: &PhaseResult, cpu: Duration| cpu.as_secs_f64() * 1e6 / r.requests.max(1) as f64;
    for variant in [Variant::TracingOff, Variant::Breaker, Variant::Stock] {
        let key = (variant, Load::Max, Phase::Healthy);
        let throughput = med(outages, key, |r| r.throughput);
        let rounds: Vec<f64> = outages
            .of(variant, Load::Max, Phase::Healthy)
            .iter()
            .map(|r| r.throughput)
            .collect();
        let lowest = rounds.iter().copied().fold(f64::INFINITY, f64::min);
        let highest = rounds.iter().copied().fold(0.0, f64::max);
        let p50 = med(outages, key, |r| ms(r.p50));
        let p99 = med(outages, key, |r| ms(r.p99));
        let cpu = med(outages, key, |r| per_request(r, r.cpu));
        let t_ratio = ratio(outages, key, off, |r| r.throughput);
        let p_ratio = ratio(outages, key, off, |r| ms(r.p99));
        let goal = match variant {
            Variant::Breaker if t_ratio >= MIN_OVERHEAD_RATIO => "met".to_owned(),
            Variant::Breaker => format!(
                "**missed** by {:.1} points",
                (MIN_OVERHEAD_RATIO - t_ratio) * 100.0
            ),
            _ => String::new(),
        };
        let label = match variant {
            Variant::TracingOff => "tracing off",
            Variant::Breaker => "tracing on, with breaker",
            Variant::Stock => "tracing on, no breaker (stock)",
        };
        let _ = writeln!(
            out,
            "| {label} | {throughput:.0} | {lowest:.0} – {highest:.0} | {p50:.2} | {p99:.2} | {cpu:.1} | {t_ratio:.3} | {p_ratio:.3} | {goal} |"
        );
    }
    let round_ratios: Vec<String> = outages
        .of(Variant::Breaker, Load::Max, Phase::Healthy)
        .iter()
        .filter_map(|r| {
            let reference = outages.same_round(r.round, off.0, off.1, off.2)?;
            Some(format!("{:.3}", r.throughput / reference.throughput))
        })
        .collect();
    let _ = writeln!(
        out,
        "\nThe ratio, round by round: {}. Identical runs differ by up to the spread shown: the \
         healthy phases with and without the breaker do the same work, and so do the rounds of \
         one row.\n",
        round_ratios.join(", ")
    );

    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let on_us = med(outages, on, |r| per_request(r, r.cpu));
    let off_us = med(outages, off, |r| per_request(r, r.cpu));
    let export_us = med(outages, on, |r| per_request(r, r.export_cpu));
    let export_share = med(outages, on, |r| {
        r.export_cpu.as_secs_f64() / r.cpu.as_secs_f64().max(1e-9)
    }) * 100.0;
    let receiver = med(outages, on, |r| r.receiver_cpu.as_secs_f64());
    let phase = med(outages, on, |r| r.cpu.as_secs_f64());
    let t_ratio = ratio(outages, on, off, |r| r.throughput);
    let _ = writeln!(
        out,
        "Where the overhead goes, with tracing on at the maximum: the server spends \
         {on_us:.1} µs of CPU per request against {off_us:.1} µs with tracing off, \
         {extra:.1} µs more: {export_us:.1} µs of it in the export threads ({export_share:.0} % \
         of the server's CPU time) and the remaining {inline:.1} µs in the request path \
         (recording the server and storage spans: the actix middleware, the `tracing` bridge, \
         the batch queue). The OTLP receiver, which runs on the same {cpus} CPUs in the bench \
         process, used another {receiver:.2} s per phase (the server used {phase:.2} s). A \
         `perf` profile of the export threads taken while this benchmark was written shows the \
         OTLP exporter's own work: converting `SpanData` to protobuf (`opentelemetry-proto`'s \
         transform, mostly allocation and copying of attribute values), `prost` encoding and \
         the gRPC write; the breaker's decision does not show.{verdict}\n",
        extra = on_us - off_us,
        inline = on_us - off_us - export_us,
        verdict = if t_ratio >= MIN_OVERHEAD_RATIO {
            String::new()
        } else {
            format!(
                " The goal is missed by {:.1} points on this {cpus}-CPU machine, where the \
                 server is saturated and every CPU cycle spent on telemetry, the receiver's \
                 included, is a request not served. What would close the gap: a collector on \
                 another host (the receiver's share is a test artefact), sampling \
                 (`OTEL_TRACES_SAMPLER=parentbased_traceidratio` at 0.5 halves the export \
                 work), or a cheaper span-to-protobuf conversion upstream; nothing in the \
                 breaker or the routes would.",
                (MIN_OVERHEAD_RATIO - t_ratio) * 100.0
            )
        },
    );
}

fn machine_noise(out: &mut String, plan: &Plan, outages: &Outages) {
    let phase = plan.phase.as_secs_f64();
    let other: Vec<f64> = outages
        .results
        .iter()
        .map(|r| r.other_cpu.as_secs_f64() / phase * 100.0)
        .collect();
    let steal: Vec<f64> = outages
        .results
        .iter()
        .map(|r| r.steal.as_secs_f64() / phase * 100.0)
        .collect();
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "Other work on the machine during sections 2 to 4 (CPU time of everything but the \
         server and the bench process, from `/proc/stat`, in % of one CPU): median {:.0} %, \
         highest phase {:.0} %. CPU stolen by the hypervisor: median {:.1} %, highest {:.1} %.\n",
        median(other.clone()),
        max(&other),
        median(steal.clone()),
        max(&steal),
    );
}

fn recovery_time(out: &mut String, recovery: &Recovery) {
    let _ = writeln!(out, "## 5. Recovery time\n");
    let low_rate = recovery
        .samples
        .iter()
        .find_map(|s| match s.rate {
            Rate::Low(rate) => Some(rate),
            Rate::High => None,
        })
        .unwrap_or(0.0);
    let batch_period_high = BATCH_SIZE / recovery.high_spans_per_second;
    let _ = writeln!(
        out,
        "From the receiver's return (stopped → accepting) to `/health/telemetry` reporting a \
         closed circuit, polled every 10 ms. **Default settings throughout**: \
         `failure_threshold` 3, `probe_every` 10, `probe_after` 30 s, `min_probe_interval` 1 s, \
         `idle_probes` on, `export_timeout` 10 s, `OTEL_BSP_SCHEDULE_DELAY` 5000 ms, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` 512. Each sample: \
         the receiver stops, the circuit opens, the bench waits for a probe to fail (the \
         `probes` count in `/health/telemetry` goes up), optionally waits longer, then brings \
         the receiver back. Returning right after a failed probe is the worst case: the next \
         probe is a whole probe wait away.\n"
    );
    let _ = writeln!(
        out,
        "What to expect. The circuit closes on the first successful probe, and the time to \
         it is at most one probe wait. Probes are paced by time at any rate: the wait after \
         the n-th consecutive failed probe lies in [F/2, F] with F = min(2^n s, `probe_after`). \
         When no batch is there to be the probe, the server sends an empty export (no spans) \
         the moment the wait is over (`idle_probes`).\n\n\
         - **Low rate** ({low_rate:.0} requests/s = {spans:.0} spans/s): a batch leaves only \
         every 5 s, so the empty probes decide. Expected: ≈ 1–2 s when returning just after \
         the first failed probe; up to 8–16 s when returning 15 s after one (a few more have \
         failed meanwhile); up to 15–30 s after a minute, the floor at its cap. Without empty \
         probes the batches would decide: `probe_after`, 30–35 s.\n\
         - **High rate** (the closed loop, {high:.0} requests/s measured = {high_spans:.0} \
         spans/s): batches fill to 512 spans every {batch_ms:.0} ms and could probe every 10 \
         batches ≈ {period:.1} s, but the floor holds them back, and the empty probe usually \
         starts first: ≈ 1–2 s when returning just after the first failed probe.\n",
        spans = low_rate * SPANS_PER_REQUEST as f64,
        high = recovery.high_throughput,
        high_spans = recovery.high_spans_per_second,
        batch_ms = batch_period_high * 1e3,
        period = 10.0 * batch_period_high,
    );
    let _ = writeln!(
        out,
        "| rate | achieved (req/s) | receiver returned after a failed probe | circuit closed after (s) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for sample in &recovery.samples {
        let (rate, achieved) = match sample.rate {
            Rate::Low(rate) => (
                format!("low ({rate:.0} req/s, paced)"),
                recovery.low_throughput,
            ),
            Rate::High => ("high (closed loop)".to_owned(), recovery.high_throughput),
        };
        let closed = sample.closed_after.map_or_else(
            || "did not close in 120 s".to_owned(),
            |d| format!("{:.2}", d.as_secs_f64()),
        );
        let _ = writeln!(
            out,
            "| {rate} | {achieved:.0} | {:.0} s | {closed} |",
            sample.returned_after_probe.as_secs_f64(),
        );
    }
    let _ = writeln!(out);
}

/// The goals of `docs/contract.md` section 9 as measured: (goal, result, met).
fn goals(plan: &Plan, outages: &Outages) -> Vec<(String, String, bool)> {
    let mut goals = Vec::new();
    for (load, where_) in [
        (Load::Max, "at the closed loop's maximum".to_owned()),
        (
            Load::Paced(plan.paced_rate),
            format!("at {:.0} req/s", plan.paced_rate),
        ),
    ] {
        for phase in [Phase::Refused, Phase::Hanging] {
            let key = (Variant::Breaker, load, phase);
            let healthy = (Variant::Breaker, load, Phase::Healthy);
            let t = ratio(outages, key, healthy, |r| r.throughput);
            let p = ratio(outages, key, healthy, |r| ms(r.p99));
            goals.push((
                format!(
                    "{} backend, with breaker, {where_}: throughput ratio to healthy ≥ {MIN_THROUGHPUT_RATIO:.2}",
                    phase.key()
                ),
                format!("{t:.3}"),
                t >= MIN_THROUGHPUT_RATIO,
            ));
            goals.push((
                format!(
                    "{} backend, with breaker, {where_}: p99 ratio to healthy ≤ {MAX_P99_RATIO:.2}",
                    phase.key()
                ),
                format!("{p:.3}"),
                p <= MAX_P99_RATIO,
            ));
        }
    }
    let on = (Variant::Breaker, Load::Max, Phase::Healthy);
    let off = (Variant::TracingOff, Load::Max, Phase::Healthy);
    let t = ratio(outages, on, off, |r| r.throughput);
    goals.push((
        format!("tracing on vs off: throughput ratio ≥ {MIN_OVERHEAD_RATIO:.2}"),
        format!("{t:.3}"),
        t >= MIN_OVERHEAD_RATIO,
    ));
    goals
}

pub(crate) fn json(plan: &Plan, outages: Option<&Outages>, recovery: Option<&Recovery>) -> Value {
    let secs = |d: Duration| d.as_secs_f64();
    let phases: Vec<Value> = outages
        .map(|o| o.results.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|r| {
            json!({
                "round": r.round,
                "server": r.variant.key(),
                "load": r.load.key(),
                "phase": r.phase.key(),
                "throughput": r.throughput,
                "p50_ms": ms(r.p50),
                "p99_ms": ms(r.p99),
                "requests": r.requests,
                "errors": r.errors,
                "cpu_s": secs(r.cpu),
                "export_cpu_s": secs(r.export_cpu),
                "receiver_cpu_s": secs(r.receiver_cpu),
                "other_cpu_s": secs(r.other_cpu),
                "steal_s": secs(r.steal),
                "rss_start": r.rss_start,
                "rss_end": r.rss_end,
                "outage": r.outage.as_ref().map(|o| json!({
                    "attempts": o.attempts,
                    "attempts_source": format!("{:?}", o.attempts_source),
                    "log_lines": o.log_lines,
                    "delivered": o.delivered,
                    "ended_in_window": o.ended_in_window,
                    "closed_after_s": o.closed_after.map(secs),
                })),
            })
        })
        .collect();
    let samples: Vec<Value> = recovery
        .map(|r| r.samples.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            json!({
                "rate": match s.rate { Rate::Low(rate) => json!(rate), Rate::High => json!("closed loop") },
                "returned_after_probe_s": secs(s.returned_after_probe),
                "closed_after_s": s.closed_after.map(secs),
            })
        })
        .collect();
    let goals: Vec<Value> = outages
        .map(|outages| goals(plan, outages))
        .unwrap_or_default()
        .into_iter()
        .map(|(goal, result, met)| json!({"goal": goal, "result": result, "met": met}))
        .collect();
    json!({
        "goals": goals,
        "plan": {
            "rounds": plan.rounds,
            "phase_s": secs(plan.phase),
            "warmup_s": secs(plan.warmup),
            "recovery_window_s": secs(plan.recovery_window),
            "connections": plan.connections,
            "paced_rate": plan.paced_rate,
            "post_every": plan.post_every,
            "low_rate": plan.low_rate,
            "high_rate_samples": plan.high_rate_samples,
            "mid_period_wait_s": secs(plan.mid_period_wait),
        },
        "phases": phases,
        "recovery": {
            "samples": samples,
            "low_throughput": recovery.map(|r| r.low_throughput),
            "high_throughput": recovery.map(|r| r.high_throughput),
            "high_spans_per_second": recovery.map(|r| r.high_spans_per_second),
        },
    })
}

/// Reads back what [`json()`] wrote, to render the Markdown again without
/// measuring again (after a change to the wording, say).
pub(crate) fn from_json(
    value: &Value,
) -> anyhow::Result<(Plan, Option<Outages>, Option<Recovery>)> {
    let number = |value: &Value, what: &str| {
        value
            .as_f64()
            .with_context(|| format!("the JSON has no number at {what}"))
    };
    let secs = |value: &Value, what: &str| number(value, what).map(Duration::from_secs_f64);
    let plan_json = &value["plan"];
    let defaults = Plan::full();
    let plan = Plan {
        rounds: number(&plan_json["rounds"], "plan.rounds")? as usize,
        warmup: secs(&plan_json["warmup_s"], "plan.warmup_s")?,
        phase: secs(&plan_json["phase_s"], "plan.phase_s")?,
        recovery_window: secs(&plan_json["recovery_window_s"], "plan.recovery_window_s")?,
        connections: number(&plan_json["connections"], "plan.connections")? as usize,
        paced_rate: number(&plan_json["paced_rate"], "plan.paced_rate")?,
        post_every: number(&plan_json["post_every"], "plan.post_every")? as u32,
        low_rate: plan_json["low_rate"].as_f64().unwrap_or(defaults.low_rate),
        high_rate_samples: plan_json["high_rate_samples"]
            .as_u64()
            .map_or(defaults.high_rate_samples, |n| n as usize),
        mid_period_wait: plan_json["mid_period_wait_s"]
            .as_f64()
            .map_or(defaults.mid_period_wait, Duration::from_secs_f64),
    };
    let mut results = Vec::new();
    for (i, r) in value["phases"].as_array().into_iter().flatten().enumerate() {
        let at = |field: &str| format!("phases[{i}].{field}");
        let variant = match r["server"].as_str() {
            Some("breaker") => Variant::Breaker,
            Some("stock") => Variant::Stock,
            Some("tracing_off") => Variant::TracingOff,
            other => anyhow::bail!("{}: unknown server {other:?}", at("server")),
        };
        let load = match r["load"].as_str() {
            Some("max") => Load::Max,
            Some(paced) => Load::Paced(
                paced
                    .trim_end_matches("/s")
                    .parse()
                    .with_context(|| format!("{}: {paced:?}", at("load")))?,
            ),
            None => anyhow::bail!("{}: missing", at("load")),
        };
        let phase = Phase::ALL
            .into_iter()
            .find(|p| Some(p.key()) == r["phase"].as_str())
            .with_context(|| format!("{}: unknown phase", at("phase")))?;
        let outage = match &r["outage"] {
            Value::Null => None,
            o => Some(crate::phases::Outage {
                attempts: o["attempts"].as_u64(),
                attempts_source: match o["attempts_source"].as_str() {
                    Some("BreakerHealth") => AttemptSource::BreakerHealth,
                    Some("ExporterLog") => AttemptSource::ExporterLog,
                    _ => AttemptSource::Receiver,
                },
                log_lines: number(&o["log_lines"], &at("outage.log_lines"))? as usize,
                delivered: number(&o["delivered"], &at("outage.delivered"))? as u64,
                ended_in_window: number(&o["ended_in_window"], &at("outage.ended_in_window"))?
                    as u64,
                closed_after: o["closed_after_s"].as_f64().map(Duration::from_secs_f64),
            }),
        };
        results.push(PhaseResult {
            round: number(&r["round"], &at("round"))? as usize,
            variant,
            load,
            phase,
            throughput: number(&r["throughput"], &at("throughput"))?,
            p50: Duration::from_secs_f64(number(&r["p50_ms"], &at("p50_ms"))? / 1e3),
            p99: Duration::from_secs_f64(number(&r["p99_ms"], &at("p99_ms"))? / 1e3),
            requests: number(&r["requests"], &at("requests"))? as u64,
            errors: number(&r["errors"], &at("errors"))? as u64,
            cpu: secs(&r["cpu_s"], &at("cpu_s"))?,
            export_cpu: secs(&r["export_cpu_s"], &at("export_cpu_s"))?,
            receiver_cpu: secs(&r["receiver_cpu_s"], &at("receiver_cpu_s"))?,
            other_cpu: secs(&r["other_cpu_s"], &at("other_cpu_s"))?,
            steal: secs(&r["steal_s"], &at("steal_s"))?,
            rss_start: number(&r["rss_start"], &at("rss_start"))? as u64,
            rss_end: number(&r["rss_end"], &at("rss_end"))? as u64,
            outage,
        });
    }
    let outages = (!results.is_empty()).then_some(Outages { results });
    let recovery_json = &value["recovery"];
    let samples: Vec<Sample> = recovery_json["samples"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| Sample {
            rate: s["rate"].as_f64().map_or(Rate::High, Rate::Low),
            returned_after_probe: Duration::from_secs_f64(
                s["returned_after_probe_s"].as_f64().unwrap_or(0.0),
            ),
            closed_after: s["closed_after_s"].as_f64().map(Duration::from_secs_f64),
        })
        .collect();
    let recovery = (!samples.is_empty()).then(|| Recovery {
        samples,
        low_throughput: recovery_json["low_throughput"].as_f64().unwrap_or(0.0),
        high_throughput: recovery_json["high_throughput"].as_f64().unwrap_or(0.0),
        high_spans_per_second: recovery_json["high_spans_per_second"]
            .as_f64()
            .unwrap_or(0.0),
    });
    Ok((plan, outages, recovery))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn the_json_reads_back_into_the_same_report() {
        let plan = Plan::full();
        let result = |round, variant, load, phase, throughput: f64| PhaseResult {
            round,
            variant,
            load,
            phase,
            throughput,
            p50: Duration::from_micros(300),
            p99: Duration::from_micros(2100),
            requests: (throughput * 8.0) as u64,
            errors: 0,
            cpu: Duration::from_millis(11_900),
            export_cpu: Duration::from_millis(1_100),
            receiver_cpu: Duration::from_millis(780),
            other_cpu: Duration::ZERO,
            steal: Duration::ZERO,
            rss_start: 10 << 20,
            rss_end: 12 << 20,
            outage: (phase != Phase::Healthy).then(|| crate::phases::Outage {
                attempts: Some(7),
                attempts_source: AttemptSource::BreakerHealth,
                log_lines: 11,
                delivered: 8800,
                ended_in_window: 10_000,
                closed_after: Some(Duration::from_millis(640)),
            }),
        };
        let paced = Load::Paced(plan.paced_rate);
        let mut results = Vec::new();
        for round in 0..2 {
            for variant in [Variant::Breaker, Variant::Stock] {
                for phase in Phase::ALL {
                    results.push(result(
                        round,
                        variant,
                        Load::Max,
                        phase,
                        20_000.0 + round as f64,
                    ));
                    results.push(result(round, variant, paced, phase, 1000.0));
                }
            }
            results.push(result(
                round,
                Variant::TracingOff,
                Load::Max,
                Phase::Healthy,
                25_000.0,
            ));
        }
        let outages = Outages { results };
        let recovery = Recovery {
            samples: vec![
                Sample {
                    rate: Rate::Low(10.0),
                    returned_after_probe: Duration::ZERO,
                    closed_after: Some(Duration::from_secs(30)),
                },
                Sample {
                    rate: Rate::High,
                    returned_after_probe: Duration::ZERO,
                    closed_after: None,
                },
            ],
            low_throughput: 10.0,
            high_throughput: 20_000.0,
            high_spans_per_second: 40_000.0,
        };
        let text = markdown(&plan, Some(&outages), Some(&recovery));
        let value = json(&plan, Some(&outages), Some(&recovery));
        let (plan_back, outages_back, recovery_back) = from_json(&value).unwrap();
        let again = markdown(&plan_back, outages_back.as_ref(), recovery_back.as_ref());
        assert_eq!(again, text);
        assert!(text.contains("**missed** by 10.0 points"), "{text}");
        assert!(
            text.contains("| low (10 req/s, paced) | 10 | 0 s | 30.00 |"),
            "{text}"
        );
    }

    #[test]
    fn verdicts_say_by_how_much_a_goal_was_missed() {
        assert_eq!(goal_verdict(0.99, 1.05), "met");
        assert_eq!(
            goal_verdict(0.95, 1.20),
            "**missed**: throughput 2.0 points short, p99 10.0 points over"
        );
    }
}
