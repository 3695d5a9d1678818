//! `outage-bench`: the service-level benchmarks that `cargo xtask bench`
//! runs and reports in `docs/benchmarks.md`.
//!
//! It runs the real `taskman-server` against the in-process OTLP receiver
//! of this crate, under load from [`tests::load`], on loopback:
//!
//! - **outage impact** and **versus no breaker**: a server with the breaker
//!   and the stock pipeline (`TASKMAN_BENCH_STOCK_PIPELINE=true`, a build with the
//!   `bench` feature: the stock pipeline and the SDK's own logs) each go through a healthy phase and three outages
//!   (refused, unavailable, hanging), each outage followed by a recovery
//!   window; rounds alternate the variants so machine drift cancels;
//! - **telemetry overhead**: the same server with `OTEL_SDK_DISABLED=true`,
//!   healthy phase only, in the same rounds;
//! - **recovery time**: from the receiver's return to the circuit closing,
//!   with the default breaker and batch settings, at a low and a high
//!   request rate.
//!
//! It writes the Markdown sections of those benchmarks and every
//! measurement as JSON. Nothing is asserted: numbers are reported.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "progress on the console is what the person running a benchmark watches"
)]

mod phases;
mod recovery;
mod report;
mod rig;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};

/// Measures what telemetry outages cost taskman-server, with and without
/// the circuit breaker.
#[derive(Debug, Parser)]
#[command(name = "outage-bench")]
struct Cli {
    /// The server as shipped (release build).
    #[arg(long, value_name = "PATH", required_unless_present = "render_from")]
    server: Option<PathBuf>,
    /// The server built with `--features bench` (release: the stock pipeline and
    /// the SDK's own logs); it runs with `TASKMAN_BENCH_STOCK_PIPELINE=true`.
    #[arg(long, value_name = "PATH", required_unless_present = "render_from")]
    stock_server: Option<PathBuf>,
    /// Measure nothing: write the Markdown again from the JSON of an earlier run.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["server", "stock_server", "json"])]
    render_from: Option<PathBuf>,
    /// Where to write the Markdown sections.
    #[arg(long, value_name = "PATH")]
    markdown: PathBuf,
    /// Where to write every measurement as JSON.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Short phases and one round: to try the benchmark, not to publish it.
    #[arg(long)]
    quick: bool,
    /// Run only these parts (repeatable); all of them by default.
    #[arg(long, value_enum)]
    only: Vec<Part>,
    /// Overrides the number of rounds.
    #[arg(long)]
    rounds: Option<usize>,
    /// Overrides the length of each phase, in seconds.
    #[arg(long, value_name = "SECONDS")]
    phase_secs: Option<u64>,
}

/// The parts of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Outage phases with and without the breaker, and tracing off.
    Outages,
    /// Recovery time with the default settings.
    Recovery,
}

/// How long and how hard each part runs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Rounds of the alternating variants.
    pub(crate) rounds: usize,
    /// Load before the first phase of each server, not measured.
    pub(crate) warmup: Duration,
    /// Length of each phase.
    pub(crate) phase: Duration,
    /// Load after each outage, while spans delivered are counted.
    pub(crate) recovery_window: Duration,
    /// Load connections.
    pub(crate) connections: usize,
    /// Requests per second of the paced outage runs.
    pub(crate) paced_rate: f64,
    /// One request in this many creates a task.
    pub(crate) post_every: u32,
    /// Requests per second of the low-rate recovery measurement.
    pub(crate) low_rate: f64,
    /// Samples of the high-rate recovery measurement.
    pub(crate) high_rate_samples: usize,
    /// How long to wait, in the low-rate "mid-period" recovery sample,
    /// between a failed probe and the receiver's return.
    pub(crate) mid_period_wait: Duration,
}

impl Plan {
    fn full() -> Self {
        Self {
            rounds: 3,
            warmup: Duration::from_secs(2),
            phase: Duration::from_secs(8),
            recovery_window: Duration::from_secs(5),
            connections: 8,
            paced_rate: 1000.0,
            post_every: 4,
            low_rate: 10.0,
            high_rate_samples: 3,
            mid_period_wait: Duration::from_secs(15),
        }
    }

    fn quick() -> Self {
        Self {
            rounds: 1,
            warmup: Duration::from_secs(1),
            phase: Duration::from_secs(3),
            high_rate_samples: 1,
            ..Self::full()
        }
    }
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
    if let Some(path) = &cli.render_from {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let (plan, outages, recovery) = report::from_json(&value)?;
        let markdown = report::markdown(&plan, outages.as_ref(), recovery.as_ref());
        std::fs::write(&cli.markdown, markdown)
            .with_context(|| format!("writing {}", cli.markdown.display()))?;
        println!("outage-bench: wrote {}", cli.markdown.display());
        return Ok(());
    }
    let (Some(server), Some(stock_server)) = (cli.server.clone(), cli.stock_server.clone()) else {
        anyhow::bail!("--server and --stock-server are required to measure");
    };
    let wanted = |part| cli.only.is_empty() || cli.only.contains(&part);
    let started = Instant::now();
    let rig = rig::Rig::new(server, stock_server)?;

    let outages = if wanted(Part::Outages) {
        Some(phases::run(&rig, &plan)?)
    } else {
        None
    };
    let recovery = if wanted(Part::Recovery) {
        Some(recovery::run(&rig, &plan)?)
    } else {
        None
    };

    let markdown = report::markdown(&plan, outages.as_ref(), recovery.as_ref());
    std::fs::write(&cli.markdown, markdown)
        .with_context(|| format!("writing {}", cli.markdown.display()))?;
    if let Some(path) = &cli.json {
        let json = report::json(&plan, outages.as_ref(), recovery.as_ref());
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "outage-bench: done in {:.0?}; wrote {}",
        started.elapsed(),
        cli.markdown.display()
    );
    Ok(())
}
