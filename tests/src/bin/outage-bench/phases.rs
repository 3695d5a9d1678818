//! Outage phases: each server variant under load through a healthy phase
//! and outages of the receiver, each outage followed by a recovery window;
//! the runs alternate within each round.
//!
//! Two loads: the closed loop's maximum (the service saturated: what an
//! outage does to throughput and latency), and a paced moderate rate (the
//! machine has room: what exporting against a dead backend costs in CPU,
//! attempts and log lines, without the closed loop hiding it).

use std::thread;
use std::time::{Duration, Instant};

use ::tests::load::{self, GetClient, LoadSpec};
use ::tests::receiver::Mode;
use ::tests::server::TaskmanServer;

use crate::Plan;
use crate::rig::{BREAKER_ENV, EXPORT_THREADS, Marks, PHASE_ENV, RECEIVER_THREADS, Rig, Variant};

/// What the receiver does during a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Accepts every export.
    Healthy,
    /// Not listening: connections are refused.
    Refused,
    /// Answers every export with gRPC `UNAVAILABLE`.
    Unavailable,
    /// Takes every export and never answers.
    Hanging,
}

impl Phase {
    pub(crate) const ALL: [Self; 4] = [
        Self::Healthy,
        Self::Refused,
        Self::Unavailable,
        Self::Hanging,
    ];
    pub(crate) const OUTAGES: [Self; 3] = [Self::Refused, Self::Unavailable, Self::Hanging];
    /// The phases of the closed-loop runs: the three of goal 2 in
    /// `docs/contract.md` section 9.
    const MAX_LOAD: [Self; 3] = [Self::Healthy, Self::Refused, Self::Hanging];

    fn mode(self) -> Mode {
        match self {
            Self::Healthy => Mode::Accept,
            Self::Refused => Mode::Stopped,
            Self::Unavailable => Mode::Unavailable,
            Self::Hanging => Mode::Hang,
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Refused => "refused",
            Self::Unavailable => "unavailable",
            Self::Hanging => "hanging",
        }
    }
}

/// How hard the load pushes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Load {
    /// Closed loop: the next request as soon as the answer arrives.
    Max,
    /// This many requests per second over all connections.
    Paced(f64),
}

impl Load {
    pub(crate) fn key(self) -> String {
        match self {
            Self::Max => "max".to_owned(),
            Self::Paced(rate) => format!("{rate:.0}/s"),
        }
    }
}

/// One server under one load through its phases.
#[derive(Debug, Clone, Copy)]
struct Run {
    variant: Variant,
    load: Load,
    phases: &'static [Phase],
}

/// The runs of one round, in order.
fn runs(plan: &Plan) -> [Run; 5] {
    let paced = Load::Paced(plan.paced_rate);
    [
        Run {
            variant: Variant::Breaker,
            load: Load::Max,
            phases: &Phase::MAX_LOAD,
        },
        Run {
            variant: Variant::Stock,
            load: Load::Max,
            phases: &Phase::MAX_LOAD,
        },
        Run {
            variant: Variant::TracingOff,
            load: Load::Max,
            phases: &[Phase::Healthy],
        },
        Run {
            variant: Variant::Breaker,
            load: paced,
            phases: &Phase::ALL,
        },
        Run {
            variant: Variant::Stock,
            load: paced,
            phases: &Phase::ALL,
        },
    ]
}

/// Where a count of export attempts comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptSource {
    /// Requests the receiver saw.
    Receiver,
    /// Failed exports in the breaker's `/health/telemetry` (retries are off).
    BreakerHealth,
    /// The OTLP exporter's own log line per failed batch, which counts its retries.
    ExporterLog,
}

/// One phase of one variant in one round.
#[derive(Debug, Clone)]
pub(crate) struct PhaseResult {
    pub(crate) round: usize,
    pub(crate) variant: Variant,
    pub(crate) load: Load,
    pub(crate) phase: Phase,
    pub(crate) throughput: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// The server process, every thread.
    pub(crate) cpu: Duration,
    /// The server's [`EXPORT_THREADS`].
    pub(crate) export_cpu: Duration,
    /// The receiver's threads in the bench process.
    pub(crate) receiver_cpu: Duration,
    /// CPU time the machine spent on anything but the server and the bench.
    pub(crate) other_cpu: Duration,
    /// CPU time the hypervisor took away.
    pub(crate) steal: Duration,
    pub(crate) rss_start: u64,
    pub(crate) rss_end: u64,
    pub(crate) outage: Option<Outage>,
}

/// What only an outage phase measures.
#[derive(Debug, Clone)]
pub(crate) struct Outage {
    /// Export requests against the dead backend during the phase.
    pub(crate) attempts: Option<u64>,
    pub(crate) attempts_source: AttemptSource,
    /// Log lines from the outage's start to the end of the recovery window.
    pub(crate) log_lines: usize,
    /// Spans the receiver accepted in the recovery window.
    pub(crate) delivered: u64,
    /// Spans the server ended in the recovery window.
    pub(crate) ended_in_window: u64,
    /// From the receiver's return to `/health/telemetry` reporting closed.
    pub(crate) closed_after: Option<Duration>,
}

/// Every phase of every round.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outages {
    pub(crate) results: Vec<PhaseResult>,
}

impl Outages {
    /// The results of one variant, load and phase, one per round.
    pub(crate) fn of(&self, variant: Variant, load: Load, phase: Phase) -> Vec<&PhaseResult> {
        self.results
            .iter()
            .filter(|r| r.variant == variant && r.load == load && r.phase == phase)
            .collect()
    }

    /// The result of the same round for another variant or phase.
    pub(crate) fn same_round(
        &self,
        round: usize,
        variant: Variant,
        load: Load,
        phase: Phase,
    ) -> Option<&PhaseResult> {
        self.results.iter().find(|r| {
            r.round == round && r.variant == variant && r.load == load && r.phase == phase
        })
    }
}

/// Runs every round.
pub(crate) fn run(rig: &Rig, plan: &Plan) -> anyhow::Result<Outages> {
    let mut outages = Outages::default();
    for round in 0..plan.rounds {
        for Run {
            variant,
            load,
            phases,
        } in runs(plan)
        {
            println!(
                "outage-bench: round {}/{}: {}, load {}",
                round + 1,
                plan.rounds,
                variant.label(),
                load.key()
            );
            rig.set_mode(Mode::Accept)?;
            let mut env = PHASE_ENV.to_vec();
            if variant == Variant::Breaker {
                env.extend_from_slice(&BREAKER_ENV);
            }
            let server = rig.start(variant, &env)?;
            let mut health = GetClient::new(server.addr(), Duration::from_secs(10));
            let warmup = load::run(&spec(plan, &server, load, plan.warmup));
            if warmup.requests() == 0 {
                anyhow::bail!(
                    "the warm-up got no answer from the server: {:?}\n{}",
                    warmup.first_errors,
                    server.stderr()
                );
            }
            for &phase in phases {
                let result =
                    run_phase(rig, plan, &server, &mut health, round, variant, load, phase)?;
                println!("  {}", summary(&result));
                outages.results.push(result);
            }
        }
    }
    rig.set_mode(Mode::Accept)?;
    Ok(outages)
}

fn spec(plan: &Plan, server: &TaskmanServer, load: Load, duration: Duration) -> LoadSpec {
    LoadSpec {
        post_every: plan.post_every,
        rate: match load {
            Load::Max => None,
            Load::Paced(rate) => Some(rate),
        },
        ..LoadSpec::closed_loop(server.addr(), plan.connections, duration)
    }
}

#[allow(clippy::too_many_arguments)]
fn run_phase(
    rig: &Rig,
    plan: &Plan,
    server: &TaskmanServer,
    health: &mut GetClient,
    round: usize,
    variant: Variant,
    load_kind: Load,
    phase: Phase,
) -> anyhow::Result<PhaseResult> {
    rig.set_mode(phase.mode())?;
    let before = rig.marks(server, health);
    let load = load::run(&spec(plan, server, load_kind, plan.phase));
    let after = rig.marks(server, health);
    if !load.first_errors.is_empty() {
        println!("  {} errors, first: {:?}", load.errors, load.first_errors);
    }

    let outage = if phase == Phase::Healthy {
        None
    } else {
        Some(recover(
            rig, plan, server, health, variant, load_kind, phase, &before, &after,
        )?)
    };

    let cpu = after.cpu.since(&before.cpu);
    let bench_cpu = after.bench_cpu.since(&before.bench_cpu);
    let machine = after.machine.since(&before.machine);
    let ours = cpu.total + bench_cpu.total;
    Ok(PhaseResult {
        round,
        variant,
        load: load_kind,
        phase,
        throughput: load.throughput(),
        p50: load.percentile(0.50),
        p99: load.percentile(0.99),
        requests: load.requests(),
        errors: load.errors,
        cpu: cpu.total,
        export_cpu: EXPORT_THREADS
            .iter()
            .map(|name| cpu.threads_named(name))
            .sum(),
        receiver_cpu: bench_cpu.threads_named(RECEIVER_THREADS),
        other_cpu: machine.busy.saturating_sub(ours),
        steal: machine.steal,
        rss_start: before.rss,
        rss_end: after.rss,
        outage,
    })
}

/// Brings the receiver back and keeps the load on for the recovery window,
/// watching the circuit; returns what the outage cost.
#[allow(clippy::too_many_arguments)]
fn recover(
    rig: &Rig,
    plan: &Plan,
    server: &TaskmanServer,
    health: &mut GetClient,
    variant: Variant,
    load: Load,
    phase: Phase,
    before: &Marks,
    after: &Marks,
) -> anyhow::Result<Outage> {
    let attempts_during = || -> (Option<u64>, AttemptSource) {
        match (phase, variant) {
            (Phase::Refused, Variant::Breaker) => (
                Some(after.health.failed_batches - before.health.failed_batches),
                AttemptSource::BreakerHealth,
            ),
            (Phase::Refused, _) => {
                let log = server.stderr();
                let lines: Vec<&str> = log
                    .lines()
                    .skip(before.log_lines)
                    .take(after.log_lines.saturating_sub(before.log_lines))
                    .collect();
                (exporter_log_attempts(&lines), AttemptSource::ExporterLog)
            }
            _ => (
                Some(after.totals.requests - before.totals.requests),
                AttemptSource::Receiver,
            ),
        }
    };
    let (attempts, attempts_source) = attempts_during();

    rig.set_mode(Mode::Accept)?;
    let returned = Instant::now();
    let start = rig.marks(server, health);
    let spec = spec(plan, server, load, plan.recovery_window);
    let traffic = thread::spawn(move || load::run(&spec));
    let mut closed_after = None;
    let window_end = returned + plan.recovery_window;
    while Instant::now() < window_end {
        let state = crate::rig::Health::read(health).circuit_state;
        if state == "closed" {
            closed_after = Some(returned.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = traffic.join();
    let end = rig.marks(server, health);
    Ok(Outage {
        attempts,
        attempts_source,
        log_lines: end.log_lines - before.log_lines,
        delivered: end.totals.spans - start.totals.spans,
        ended_in_window: end.health.ended - start.health.ended,
        closed_after: closed_after.filter(|_| variant == Variant::Breaker),
    })
}

/// Export attempts from the OTLP exporter's log: each failed batch logs one
/// `Export.Failed.*` line, and those after retrying say how many retries.
fn exporter_log_attempts(lines: &[&str]) -> Option<u64> {
    let failed: Vec<&&str> = lines
        .iter()
        .filter(|line| line.contains("Export.Failed"))
        .collect();
    if failed.is_empty() {
        // No failure, or a build without the exporter's logs (feature `bench`): unknown.
        return None;
    }
    Some(
        failed
            .iter()
            .map(|line| {
                let retries = line
                    .split_whitespace()
                    .find_map(|word| word.strip_prefix("retries="))
                    .and_then(|n| n.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
                    .unwrap_or(0u64);
                retries + 1
            })
            .sum(),
    )
}

fn summary(r: &PhaseResult) -> String {
    let mut text = format!(
        "{:<11} {:>7.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  cpu {:.2} s (export threads {:.2} s)  receiver {:.2} s  other {:.2} s",
        r.phase.key(),
        r.throughput,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.cpu.as_secs_f64(),
        r.export_cpu.as_secs_f64(),
        r.receiver_cpu.as_secs_f64(),
        r.other_cpu.as_secs_f64(),
    );
    if let Some(o) = &r.outage {
        text.push_str(&format!(
            "  attempts {:?}  log lines {}  delivered {}/{} after recovery  closed after {:?}",
            o.attempts, o.log_lines, o.delivered, o.ended_in_window, o.closed_after
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_read_from_the_exporters_log_lines() {
        let lines = [
            "2026-01-01T00:00:00Z  WARN opentelemetry_otlp: name=\"Export.Failed.Exhausted\" operation=\"tonic_export\" retries=3 message=\"...\"",
            "2026-01-01T00:00:00Z ERROR opentelemetry_sdk: name=\"BatchSpanProcessor.ExportError\" error=\"...\"",
            "2026-01-01T00:00:01Z  WARN opentelemetry_otlp: name=\"Export.Failed.Exhausted\" retries=3",
            "2026-01-01T00:00:02Z  WARN opentelemetry_otlp: name=\"Export.Failed.NonRetryable\" operation=\"x\"",
        ];
        assert_eq!(exporter_log_attempts(&lines), Some(4 + 4 + 1));
        assert_eq!(exporter_log_attempts(&["listening"]), None);
    }
}
