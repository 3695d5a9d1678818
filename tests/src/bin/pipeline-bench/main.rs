//! `pipeline-bench`: what tracing costs the server on a healthy day, the measurement behind
//! the "CPU per exported span" and "tracing on against off" goals of `docs/benchmarks.md`.
//!
//! The release server runs pinned to CPU 0 (`taskset`); this process, which is the load
//! generator ([`tests::load`]) and the OTLP/gRPC receiver ([`tests::receiver`]), runs pinned
//! to CPU 1, so that the server's CPU time is the server's own cost and nothing else
//! competes with it. Each round starts every variant afresh, all at once, each exporting
//! to a receiver of its own, and runs each load in slices of a few seconds that take the
//! variants in turn (the one to go first moves on by one each slice): the speed of this
//! shared host moves by half from minute to minute, and slices that small let it hit
//! every variant alike. The servers that are not under load meanwhile sit idle on the
//! same CPU. The variants:
//!
//! - **tracing off** (`OTEL_SDK_DISABLED=true`): the baseline;
//! - **ours**: the shipped pipeline (our OTLP exporter behind the breaker);
//! - **stock**: `opentelemetry-otlp`'s exporter straight into the SDK's batch processor
//!   (the `bench` build with `TASKMAN_BENCH_STOCK_PIPELINE=true`);
//! - any further variant given with `--variant NAME:KEY=VALUE,...` (the shipped binary
//!   with extra environment), e.g. a setting under test.
//!
//! Each variant sees three loads of `GET /tasks/{id}` (two spans a request: the server
//! span and the storage span):
//!
//! 1. **paced** at `--paced-rate` (2000/s): the server's CPU time per request; tracing on
//!    minus tracing off, divided by the spans the receiver got per request, is the CPU
//!    per exported span;
//! 2. **saturation**: a closed loop of `--connections` (16): throughput and p99;
//! 3. **low rate** at 1000/s: p99.
//!
//! A variant's CPU time under a load is counted from before its first slice until its
//! pipeline has delivered the load's last span, to the nanosecond
//! (the process's CPU clock), and split between the telemetry's threads and the request
//! threads. After each load the bench waits for every pipeline to flush
//! and counts what reached each receiver against the spans that ended. Nothing is
//! asserted: numbers are reported.
//!
//! With `--instructions` (or `--instructions-only`, which skips the timed rounds) each
//! variant also runs once under `valgrind --tool=callgrind` at a paced rate
//! ([`instructions`]): instructions per request, tracing on minus off, per exported span.
//! On a shared VM that count is steady where CPU time at a paced rate is not.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "progress on the console is what the person running a benchmark watches"
)]

mod instructions;
mod report;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use ::tests::load::{self, GetClient, LoadReport, LoadSpec};
use ::tests::process_stats;
use ::tests::receiver::Receiver;
use ::tests::server::TaskmanServer;
use anyhow::{Context as _, bail};
use clap::Parser;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Parser)]
#[command(name = "pipeline-bench")]
struct Cli {
    /// The shipped release server.
    #[arg(long, value_name = "PATH", required_unless_present = "render_from")]
    server: Option<PathBuf>,
    /// The release server built with the `bench` feature (the stock pipeline).
    #[arg(long, value_name = "PATH", required_unless_present = "render_from")]
    stock_server: Option<PathBuf>,
    /// Writes the Markdown again from the JSON of an earlier run, measuring nothing.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["server", "stock_server", "json"])]
    render_from: Option<PathBuf>,
    /// Where the Markdown section goes.
    #[arg(long, value_name = "PATH")]
    markdown: PathBuf,
    /// Where every measurement goes, as JSON.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Short phases and one round, to try the bench out.
    #[arg(long)]
    quick: bool,
    #[arg(long)]
    rounds: Option<usize>,
    #[arg(long, value_name = "SECONDS")]
    phase_secs: Option<u64>,
    /// Each variant's turn in a load, in seconds (at most the phase).
    #[arg(long, value_name = "SECONDS")]
    slice_secs: Option<u64>,
    /// An extra variant: `NAME:KEY=VALUE,KEY=VALUE` on the shipped server, or
    /// `NAME@PATH:KEY=VALUE,...` on another build of it (two builds side by side).
    #[arg(long, value_name = "NAME:ENV")]
    variant: Vec<String>,
    /// Leave out the stock pipeline.
    #[arg(long)]
    no_stock: bool,
    /// Only these variants (by name), in this order; tracing off is always kept.
    #[arg(long, value_name = "NAME")]
    only: Vec<String>,
    /// Also count each variant's instructions under `valgrind --tool=callgrind`.
    #[arg(long)]
    instructions: bool,
    /// Only count instructions: no timed rounds.
    #[arg(long, conflicts_with = "rounds")]
    instructions_only: bool,
}

/// How long each part of a round takes, and at what rates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub(crate) rounds: usize,
    pub(crate) warmup: Duration,
    /// Each variant's share of one load: the sum of its slices.
    pub(crate) phase: Duration,
    /// One variant's turn under a load; the variants take turns until each has had
    /// `phase`. Runs from before the slices came have none: each variant had its phase
    /// in one piece, one after the other.
    #[serde(default)]
    pub(crate) slice: Option<Duration>,
    /// A variant's CPU time is counted from before its first slice of a load until its
    /// last span is delivered, in nanoseconds (the process's CPU clock). Runs from before
    /// counted only during the variant's own slices, in clock ticks.
    #[serde(default)]
    pub(crate) cpu_per_load: bool,
    pub(crate) connections: usize,
    pub(crate) paced_rate: f64,
    pub(crate) low_rate: f64,
    /// The server CPU and the load's CPU.
    pub(crate) server_cpu: usize,
    pub(crate) load_cpu: usize,
}

impl Plan {
    fn full() -> Self {
        Self {
            rounds: 3,
            warmup: Duration::from_secs(2),
            phase: Duration::from_secs(10),
            slice: Some(Duration::from_secs(2)),
            cpu_per_load: true,
            connections: 16,
            paced_rate: 2000.0,
            low_rate: 1000.0,
            server_cpu: 0,
            load_cpu: 1,
        }
    }

    fn quick() -> Self {
        Self {
            rounds: 1,
            warmup: Duration::from_secs(1),
            phase: Duration::from_secs(3),
            slice: Some(Duration::from_secs(1)),
            ..Self::full()
        }
    }
}

/// One server configuration under test.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Variant {
    pub(crate) name: String,
    /// Which binary: the stock build or the shipped one.
    pub(crate) stock: bool,
    /// Another build than `--server` (`NAME@PATH:...`).
    #[serde(default)]
    pub(crate) binary: Option<PathBuf>,
    pub(crate) env: Vec<(String, String)>,
}

/// The threads that serve no request, by the start of their names as the kernel keeps
/// them (15 bytes): our telemetry runtime (`otel-export`), the SDK's own processor
/// threads (`OpenTelemetry.Traces.BatchProcessor`, …), and the server's main runtime,
/// where the stock exporter's gRPC client runs. They live as long as the server, so their
/// time is exact; everything else (actix's workers and their blocking pool, whose threads
/// come and go) serves requests.
pub(crate) const TELEMETRY_THREADS: [&str; 3] = ["otel-export", "OpenTelemetry", "taskman-main"];

/// The name of the baseline variant.
pub(crate) const OFF: &str = "tracing off";
/// The name of the shipped pipeline.
pub(crate) const OURS: &str = "ours";
/// The name of the stock pipeline.
pub(crate) const STOCK: &str = "stock";

impl Variant {
    fn new(name: &str, stock: bool, env: &[(&str, &str)]) -> Self {
        Self {
            name: name.to_owned(),
            stock,
            binary: None,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Whether this variant traces at all (tracing off sets `OTEL_SDK_DISABLED`).
    pub(crate) fn traced(&self) -> bool {
        self.env.iter().all(|(k, _)| k != "OTEL_SDK_DISABLED")
    }

    /// `NAME:KEY=VALUE,KEY=VALUE` or `NAME@PATH:KEY=VALUE,...`.
    fn parse(text: &str) -> anyhow::Result<Self> {
        let (name, env) = text
            .split_once(':')
            .with_context(|| format!("--variant {text}: expected NAME:KEY=VALUE,..."))?;
        let (name, binary) = match name.split_once('@') {
            Some((name, path)) => {
                let path = PathBuf::from(path);
                if !path.is_file() {
                    bail!("--variant {text}: no server binary at {}", path.display());
                }
                (name, Some(path))
            }
            None => (name, None),
        };
        let env = env
            .split(',')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                pair.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .with_context(|| format!("--variant {text}: `{pair}` is not KEY=VALUE"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            name: name.to_owned(),
            stock: false,
            binary,
            env,
        })
    }
}

/// Which load.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Load {
    Paced,
    Saturation,
    LowRate,
}

impl Load {
    pub(crate) const ALL: [Self; 3] = [Self::Paced, Self::Saturation, Self::LowRate];
}

/// One variant under one load in one round.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Sample {
    pub(crate) round: usize,
    pub(crate) variant: String,
    pub(crate) load: Load,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) throughput: f64,
    pub(crate) p50_us: f64,
    pub(crate) p99_us: f64,
    /// The server's CPU time under the load (its slices and the export of their spans),
    /// in microseconds.
    pub(crate) server_cpu_us: f64,
    /// Of `server_cpu_us`, the part on the threads that serve no request
    /// ([`TELEMETRY_THREADS`]); the rest is the request threads'. Absent in runs from
    /// before it was counted.
    #[serde(default)]
    pub(crate) telemetry_threads_cpu_us: Option<f64>,
    /// The load's length, in microseconds (to tell how busy the server's CPU was).
    pub(crate) wall_us: f64,
    /// Spans that ended in the server during the load and its flush.
    pub(crate) ended: u64,
    /// Spans the receiver accepted during the load and its flush.
    pub(crate) delivered: u64,
    /// The pipeline's own counts over the same time (absent with tracing off).
    pub(crate) counts: Option<Counts>,
}

/// What `/health/telemetry` counted.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) ended: u64,
    pub(crate) exported: u64,
    pub(crate) dropped: u64,
    pub(crate) failed: u64,
    pub(crate) rejected: u64,
    /// Lost in the batch queue, as the pipeline reports it (absent: 0).
    pub(crate) queue_full: u64,
}

impl Counts {
    fn read(client: &mut GetClient) -> Self {
        let json = client
            .get("/health/telemetry")
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .unwrap_or(Value::Null);
        let spans = &json["spans"];
        let count = |key: &str| spans[key].as_u64().unwrap_or(0);
        Self {
            ended: count("ended"),
            exported: count("exported"),
            dropped: count("dropped"),
            failed: count("failed"),
            rejected: count("rejected"),
            queue_full: count("queue_full"),
        }
    }

    fn since(self, earlier: Self) -> Self {
        Self {
            ended: self.ended - earlier.ended.min(self.ended),
            exported: self.exported - earlier.exported.min(self.exported),
            dropped: self.dropped - earlier.dropped.min(self.dropped),
            failed: self.failed - earlier.failed.min(self.failed),
            rejected: self.rejected - earlier.rejected.min(self.rejected),
            queue_full: self.queue_full - earlier.queue_full.min(self.queue_full),
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Results {
    pub(crate) plan: Plan,
    pub(crate) variants: Vec<Variant>,
    pub(crate) samples: Vec<Sample>,
    /// Each variant's instructions under callgrind (none unless asked for).
    #[serde(default)]
    pub(crate) instructions: Vec<instructions::InstructionSample>,
    pub(crate) load_average_before: String,
    pub(crate) load_average_after: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut plan = if cli.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(rounds) = cli.rounds {
        plan.rounds = rounds.max(1);
    }
    if let Some(secs) = cli.phase_secs {
        plan.phase = Duration::from_secs(secs.max(1));
    }
    if let Some(secs) = cli.slice_secs {
        plan.slice = Some(Duration::from_secs(secs.max(1)));
    }
    if let Some(path) = &cli.render_from {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let results: Results = serde_json::from_str(&text)
            .with_context(|| format!("{} is not this bench's JSON", path.display()))?;
        std::fs::write(&cli.markdown, report::markdown(&results))
            .with_context(|| format!("writing {}", cli.markdown.display()))?;
        println!("pipeline-bench: wrote {}", cli.markdown.display());
        return Ok(());
    }
    let (Some(server), Some(stock_server)) = (&cli.server, &cli.stock_server) else {
        bail!("--server and --stock-server are required to measure");
    };
    for binary in [server, stock_server] {
        if !binary.is_file() {
            bail!("no server binary at {}", binary.display());
        }
    }
    let mut variants = vec![
        Variant::new(OFF, false, &[("OTEL_SDK_DISABLED", "true")]),
        Variant::new(OURS, false, &[]),
    ];
    if !cli.no_stock {
        variants.push(Variant::new(
            STOCK,
            true,
            &[("TASKMAN_BENCH_STOCK_PIPELINE", "true")],
        ));
    }
    for text in &cli.variant {
        variants.push(Variant::parse(text)?);
    }
    if !cli.only.is_empty() {
        variants.retain(|v| v.name == OFF || cli.only.contains(&v.name));
    }

    // This process first, so that the receiver's and the load's threads inherit the CPU.
    pin(std::process::id(), plan.load_cpu)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-receiver")
        .enable_all()
        // The receivers stand in for a collector on another machine: they decode in the
        // load's idle time, never between the load and its next request.
        .on_thread_start(idle_priority)
        .build()
        .context("a Tokio runtime for the receivers")?;
    // One receiver per variant, so that each one's delivered spans are its own.
    let receivers = variants
        .iter()
        .map(|_| {
            let receiver = runtime
                .block_on(Receiver::start())
                .context("starting an OTLP receiver")?;
            receiver.forget_spans();
            Ok(receiver)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;

    let started = Instant::now();
    let load_average_before = load_average();
    let mut samples = Vec::new();
    if cli.instructions_only {
        plan.rounds = 0;
    }
    for round in 1..=plan.rounds {
        println!("==> round {round}/{}", plan.rounds);
        samples.extend(run_round(&cli, &plan, &variants, &receivers, round)?);
    }
    let mut counted = Vec::new();
    if cli.instructions || cli.instructions_only {
        let dir = cli
            .markdown
            .parent()
            .unwrap_or_else(|| std::path::Path::new("."))
            .join("callgrind");
        for (variant, receiver) in variants.iter().zip(&receivers) {
            println!("==> instructions under callgrind: {}", variant.name);
            let sample =
                instructions::measure(binary(&cli, variant)?, &plan, receiver, variant, &dir)?;
            println!("  {}", report::instructions_line(&sample));
            counted.push(sample);
        }
    }
    let results = Results {
        plan,
        variants,
        samples,
        instructions: counted,
        load_average_before,
        load_average_after: load_average(),
    };
    std::fs::write(&cli.markdown, report::markdown(&results))
        .with_context(|| format!("writing {}", cli.markdown.display()))?;
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "pipeline-bench: done in {:.0?}; wrote {}",
        started.elapsed(),
        cli.markdown.display()
    );
    drop(receivers);
    Ok(())
}

/// One variant's server in a round, and the receiver it exports to.
struct Running<'a> {
    variant: &'a Variant,
    receiver: &'a Receiver,
    server: TaskmanServer,
    health: GetClient,
}

/// What a variant's counters read before a load.
struct Before {
    counts: Option<Counts>,
    delivered: u64,
}

/// Starts every variant, each pinned to the server CPU, and runs the three loads against
/// them in interleaved slices.
fn run_round(
    cli: &Cli,
    plan: &Plan,
    variants: &[Variant],
    receivers: &[Receiver],
    round: usize,
) -> anyhow::Result<Vec<Sample>> {
    let mut running = Vec::with_capacity(variants.len());
    for (variant, receiver) in variants.iter().zip(receivers) {
        let endpoint = receiver.endpoint();
        let env = server_env(&endpoint, variant);
        let server = TaskmanServer::start_binary(binary(cli, variant)?, &env, &[])
            .with_context(|| format!("starting the server ({})", variant.name))?;
        pin(server.pid(), plan.server_cpu)?;
        let health = GetClient::new(server.addr(), Duration::from_secs(5));
        running.push(Running {
            variant,
            receiver,
            server,
            health,
        });
    }
    // Warm up: connections, the task table, the exporter's channel.
    for one in &running {
        let _ = load::run(&spec(plan, &one.server, Some(plan.paced_rate), plan.warmup));
    }
    for one in &mut running {
        settle(one.receiver, &mut one.health, one.variant.traced());
    }

    let mut samples = Vec::new();
    for kind in Load::ALL {
        let rate = match kind {
            Load::Paced => Some(plan.paced_rate),
            Load::Saturation => None,
            Load::LowRate => Some(plan.low_rate),
        };
        let before: Vec<Before> = running
            .iter_mut()
            .map(|one| Before {
                counts: one.variant.traced().then(|| Counts::read(&mut one.health)),
                delivered: one.receiver.totals().spans,
            })
            .collect();
        let mut reports = vec![LoadReport::default(); running.len()];
        // Each server's CPU from before its first slice until its last span is delivered:
        // the export of the spans a slice ended may run after it, while another variant
        // has its turn.
        let cpu_before: Vec<_> = running
            .iter()
            .map(|one| process_stats::cpu_times(one.server.pid()).unwrap_or_default())
            .collect();
        for (index, length) in slices(plan).enumerate() {
            for offset in 0..running.len() {
                let at = (index + offset) % running.len();
                let server = &running[at].server;
                reports[at].absorb(load::run(&spec(plan, server, rate, length)));
            }
        }
        for one in &mut running {
            settle(one.receiver, &mut one.health, one.variant.traced());
        }
        let used: Vec<process_stats::CpuTimes> = running
            .iter()
            .zip(&cpu_before)
            .map(|(one, before)| {
                process_stats::cpu_times(one.server.pid())
                    .unwrap_or_default()
                    .since(before)
            })
            .collect();
        for (((one, before), report), used) in
            running.iter_mut().zip(before).zip(reports).zip(&used)
        {
            let counts = before
                .counts
                .map(|earlier| Counts::read(&mut one.health).since(earlier));
            if !report.first_errors.is_empty() {
                println!(
                    "  {}: {} errors, first: {:?}",
                    one.variant.name, report.errors, report.first_errors
                );
            }
            let sample = Sample {
                round,
                variant: one.variant.name.clone(),
                load: kind,
                requests: report.requests(),
                errors: report.errors,
                throughput: report.throughput(),
                p50_us: micros(report.percentile(0.50)),
                p99_us: micros(report.percentile(0.99)),
                server_cpu_us: micros(used.total),
                telemetry_threads_cpu_us: Some(micros(
                    TELEMETRY_THREADS
                        .iter()
                        .map(|name| used.threads_named(name))
                        .sum(),
                )),
                wall_us: micros(report.elapsed),
                ended: counts.map_or(0, |c| c.ended),
                delivered: one.receiver.totals().spans - before.delivered,
                counts,
            };
            println!("  {}: {}", one.variant.name, report::one_line(&sample));
            println!("    {}", report::threads_line(used, sample.requests));
            samples.push(sample);
        }
    }
    for mut one in running {
        one.server.sigterm().context("stopping the server")?;
        let _ = one.server.wait_exit(Duration::from_secs(10));
    }
    Ok(samples)
}

/// The lengths of one load's slices: the phase cut into slices of the plan's length, the
/// last one shorter if it does not divide.
fn slices(plan: &Plan) -> impl Iterator<Item = Duration> {
    let slice = plan
        .slice
        .unwrap_or(plan.phase)
        .max(Duration::from_millis(100));
    let mut left = plan.phase;
    std::iter::from_fn(move || {
        let next = left.min(slice);
        left -= next;
        (!next.is_zero()).then_some(next)
    })
}

/// Moves the calling thread to `SCHED_IDLE`: it runs only when nothing else on its CPU
/// wants to, and any other thread that wakes takes the CPU from it at once (nice 19 alone
/// lets it finish its time slice first, and a receiver that decodes a batch for a
/// millisecond meanwhile holds up every connection of the load). Where that fails the
/// bench still runs, the receiver at normal priority.
fn idle_priority() {
    use thread_priority::ThreadPriority;
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy,
        thread_native_id,
    };
    let _ = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
}

/// The server's environment for `variant`, exporting to `endpoint`.
fn server_env<'a>(endpoint: &'a str, variant: &'a Variant) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        // The disk's fsync would dominate and add noise; the comparison is about telemetry.
        ("TASKMAN__STORAGE__PATH", ":memory:"),
        // `info`: the harness waits for the `listening on` line.
        ("RUST_LOG", "info"),
    ];
    env.extend(variant.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    env
}

/// The binary `variant` runs: the stock build or the shipped one.
fn binary<'a>(cli: &'a Cli, variant: &'a Variant) -> anyhow::Result<&'a PathBuf> {
    if let Some(path) = &variant.binary {
        return Ok(path);
    }
    match (variant.stock, &cli.stock_server, &cli.server) {
        (true, Some(stock), _) => Ok(stock),
        (false, _, Some(server)) => Ok(server),
        _ => bail!("no binary for variant {}", variant.name),
    }
}

fn spec(plan: &Plan, server: &TaskmanServer, rate: Option<f64>, duration: Duration) -> LoadSpec {
    LoadSpec {
        // One task per connection, then reads only: `GET /tasks/{id}`.
        post_every: u32::MAX,
        rate,
        ..LoadSpec::closed_loop(server.addr(), plan.connections, duration)
    }
}

/// Waits until the pipeline has handed over everything that ended (the batch
/// processor's schedule delay is 5 s by default): the receiver's count has stopped
/// moving and the server accounts for every ended span, or 12 s have passed.
fn settle(receiver: &Receiver, health: &mut GetClient, traced: bool) {
    let deadline = Instant::now() + Duration::from_secs(12);
    let mut last = receiver.totals().spans;
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = receiver.totals().spans;
        if now != last {
            last = now;
            still_since = Instant::now();
            continue;
        }
        let accounted = !traced || {
            let c = Counts::read(health);
            c.exported + c.dropped + c.failed + c.rejected + c.queue_full >= c.ended
        };
        if accounted && still_since.elapsed() >= Duration::from_millis(750) {
            return;
        }
    }
}

/// Pins every thread of `pid` to `cpu` (`taskset -a -p -c`).
fn pin(pid: u32, cpu: usize) -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .context("running taskset (util-linux)")?;
    if !status.success() {
        bail!("taskset could not pin process {pid} to CPU {cpu}: {status}");
    }
    Ok(())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".to_owned())
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_is_cut_into_slices_of_the_plan_and_a_shorter_last_one() {
        let plan = |phase: u64, slice: Option<u64>| Plan {
            phase: Duration::from_secs(phase),
            slice: slice.map(Duration::from_secs),
            ..Plan::full()
        };
        let secs = |plan: &Plan| slices(plan).map(|d| d.as_secs()).collect::<Vec<_>>();
        assert_eq!(secs(&plan(10, Some(2))), [2, 2, 2, 2, 2]);
        assert_eq!(secs(&plan(10, Some(3))), [3, 3, 3, 1]);
        // A slice longer than the phase, or none (a run from before slices): one piece.
        assert_eq!(secs(&plan(10, Some(30))), [10]);
        assert_eq!(secs(&plan(10, None)), [10]);
    }
}
