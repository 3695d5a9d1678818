//! `scale-bench`: what a second and third replica, and PostgreSQL instead of SQLite, change
//! for `taskman-server`'s throughput: section 7 of `docs/benchmarks.md`, run by
//! `cargo xtask bench` after the other benchmarks.
//!
//! Three variants, under the same closed-loop mixed load from [`tests::load`] (one create to
//! three reads of tasks that connection created), on loopback:
//!
//! - **1 replica, SQLite**: the release server with its default store, a file in a temporary
//!   directory (WAL, `synchronous=FULL`: one fsync per write);
//! - **1 replica, PostgreSQL**: the same server on a throw-away PostgreSQL cluster
//!   ([`tests::postgres`]) run with `fsync` on, PostgreSQL's default, so that both stores
//!   make a write durable before it is acknowledged;
//! - **3 replicas, PostgreSQL**: three such servers on one database, the load's connections
//!   spread over them.
//!
//! Each variant runs once per round, in the order A B C, for several rounds, so that the
//! machine's drift hits every variant alike; each run starts its servers afresh on an empty
//! database, warms them up, then measures. Every server exports its spans to the in-process
//! OTLP receiver, as deployed. It reports throughput, latency percentiles, errors, where the
//! CPU time went (servers, PostgreSQL, the bench process) and the machine's load average,
//! and writes a Markdown fragment and every measurement as JSON. Nothing is asserted.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "progress on the console is what the person running a benchmark watches"
)]

mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ::tests::load::{self, LoadReport, LoadSpec};
use ::tests::postgres::{INSTALL_HINT, Postgres};
use ::tests::process_stats::{self, MachineCpu};
use ::tests::receiver::Receiver;
use ::tests::server::{ServerCommand, TaskmanServer};
use anyhow::{Context as _, bail};
use clap::Parser;

/// Measures 1 vs 3 replicas on PostgreSQL, and SQLite vs PostgreSQL for one replica.
#[derive(Debug, Parser)]
#[command(name = "scale-bench")]
struct Cli {
    /// The server as shipped (release build).
    #[arg(long, value_name = "PATH")]
    server: PathBuf,
    /// Where to write the Markdown section.
    #[arg(long, value_name = "PATH")]
    markdown: PathBuf,
    /// Where to write every measurement as JSON.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Short phases and one round: to try the benchmark, not to publish it.
    #[arg(long)]
    quick: bool,
    /// Overrides the number of rounds.
    #[arg(long)]
    rounds: Option<usize>,
    /// Overrides the length of each measured phase, in seconds.
    #[arg(long, value_name = "SECONDS")]
    phase_secs: Option<u64>,
}

/// How long and how hard each run goes.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) quick: bool,
    /// Rounds of the three variants.
    pub(crate) rounds: usize,
    /// Load before each measurement, not measured (it also makes tasks to read).
    pub(crate) warmup: Duration,
    /// Length of each measurement.
    pub(crate) phase: Duration,
    /// Load connections in all; with three replicas, a third on each.
    pub(crate) connections: usize,
    /// One request in this many creates a task.
    pub(crate) post_every: u32,
    /// `storage.pool_size` of each PostgreSQL replica.
    pub(crate) pool_size: u32,
    /// Write-and-fsync samples of the disk's own flush time.
    pub(crate) fsync_samples: usize,
}

impl Plan {
    fn full() -> Self {
        Self {
            quick: false,
            rounds: 3,
            warmup: Duration::from_secs(3),
            phase: Duration::from_secs(15),
            connections: 12,
            post_every: 4,
            pool_size: 8,
            fsync_samples: 200,
        }
    }

    fn quick() -> Self {
        Self {
            quick: true,
            rounds: 1,
            warmup: Duration::from_secs(1),
            phase: Duration::from_secs(3),
            fsync_samples: 50,
            ..Self::full()
        }
    }
}

/// The three setups compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    SqliteOne,
    PostgresOne,
    PostgresThree,
}

impl Variant {
    pub(crate) const ALL: [Self; 3] = [Self::SqliteOne, Self::PostgresOne, Self::PostgresThree];

    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::SqliteOne => "sqlite_1",
            Self::PostgresOne => "postgres_1",
            Self::PostgresThree => "postgres_3",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::SqliteOne => "1 replica, SQLite",
            Self::PostgresOne => "1 replica, PostgreSQL",
            Self::PostgresThree => "3 replicas, PostgreSQL",
        }
    }

    pub(crate) fn replicas(self) -> usize {
        match self {
            Self::SqliteOne | Self::PostgresOne => 1,
            Self::PostgresThree => 3,
        }
    }

    fn postgres(self) -> bool {
        !matches!(self, Self::SqliteOne)
    }
}

/// What one run of one variant measured.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) variant: Variant,
    pub(crate) round: usize,
    pub(crate) load: LoadReport,
    /// CPU time of the server processes, summed.
    pub(crate) server_cpu: Duration,
    /// CPU time of PostgreSQL: the postmaster and its backends (zero for SQLite).
    pub(crate) postgres_cpu: Duration,
    /// CPU time of this process: the load generator and the OTLP receiver.
    pub(crate) bench_cpu: Duration,
    /// The whole machine over the measurement.
    pub(crate) machine: MachineCpu,
    /// Spans the receiver accepted during the measurement.
    pub(crate) spans: u64,
}

/// What the machine was doing around the whole run, and its disk's flush time.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    /// Time of one in-place 4 KiB write plus `fdatasync`, in the directory SQLite's file is
    /// in, sorted.
    pub(crate) fsync: Vec<Duration>,
    pub(crate) postgres_version: String,
    pub(crate) took: Duration,
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
    if !cli.server.is_file() {
        bail!("no server binary at {}", cli.server.display());
    }
    let started = Instant::now();
    let load_before = load_average();
    let rig = Rig::new(cli.server.clone())?;
    let fsync = fsync_times(plan.fsync_samples).context("measuring the disk's fsync")?;

    let mut runs = Vec::new();
    for round in 1..=plan.rounds {
        for variant in Variant::ALL {
            println!(
                "scale-bench: round {round}/{}: {}",
                plan.rounds,
                variant.label()
            );
            let run = rig.run(variant, round, &plan)?;
            println!(
                "scale-bench:   {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} errors",
                run.load.throughput(),
                run.load.percentile(0.5).as_secs_f64() * 1e3,
                run.load.percentile(0.99).as_secs_f64() * 1e3,
                run.load.errors
            );
            runs.push(run);
        }
    }
    let context = Context {
        load_before,
        load_after: load_average(),
        fsync,
        postgres_version: rig.postgres_version(),
        took: started.elapsed(),
    };

    std::fs::write(&cli.markdown, report::markdown(&plan, &context, &runs))
        .with_context(|| format!("writing {}", cli.markdown.display()))?;
    if let Some(path) = &cli.json {
        let json = report::json(&plan, &context, &runs);
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "scale-bench: done in {:.0?}; wrote {}",
        started.elapsed(),
        cli.markdown.display()
    );
    Ok(())
}

/// The receiver, the PostgreSQL cluster and the server binary.
struct Rig {
    server: PathBuf,
    postgres: Postgres,
    receiver: Receiver,
    // Last, so that it outlives the receiver it runs.
    _runtime: tokio::runtime::Runtime,
}

impl Rig {
    fn new(server: PathBuf) -> anyhow::Result<Self> {
        let postgres = Postgres::start_durable()
            .with_context(|| format!("a PostgreSQL cluster for the benchmark; {INSTALL_HINT}"))?;
        // One worker: the receiver's work is light, and the servers, PostgreSQL and the
        // load need the machine's two cores.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-receiver")
            .enable_all()
            .build()
            .context("a Tokio runtime for the receiver")?;
        let receiver = runtime
            .block_on(Receiver::start())
            .context("starting the OTLP receiver")?;
        receiver.forget_spans();
        Ok(Self {
            server,
            postgres,
            receiver,
            _runtime: runtime,
        })
    }

    fn postgres_version(&self) -> String {
        self.postgres
            .sql("postgres", "SHOW server_version")
            .unwrap_or_else(|_| "?".to_owned())
    }

    /// Starts `variant`'s servers on an empty database, warms them up, measures, and stops
    /// them.
    fn run(&self, variant: Variant, round: usize, plan: &Plan) -> anyhow::Result<Run> {
        let servers = self.start(variant, plan)?;
        let addrs: Vec<_> = servers.iter().map(TaskmanServer::addr).collect();
        let warmup = spread(&addrs, plan, plan.warmup);
        if warmup.requests() == 0 {
            bail!(
                "{}: no request succeeded during the warm-up: {:?}",
                variant.label(),
                warmup.first_errors
            );
        }

        let postgres_pid = self.postgres.server_pid();
        let postgres_cpu = || {
            postgres_pid
                .and_then(|pid| process_stats::cpu_with_children(pid).ok())
                .unwrap_or_default()
        };
        let servers_cpu = || -> Duration {
            servers
                .iter()
                .filter_map(|server| process_stats::cpu_times(server.pid()).ok())
                .map(|cpu| cpu.total)
                .sum()
        };
        let bench_cpu = || {
            process_stats::cpu_times(std::process::id())
                .map(|cpu| cpu.total)
                .unwrap_or_default()
        };
        let (server_before, postgres_before, bench_before) =
            (servers_cpu(), postgres_cpu(), bench_cpu());
        let machine_before = process_stats::machine_cpu().unwrap_or_default();
        let spans_before = self.receiver.totals().spans;

        let load = spread(&addrs, plan, plan.phase);

        let machine = process_stats::machine_cpu()
            .unwrap_or_default()
            .since(&machine_before);
        let run = Run {
            variant,
            round,
            server_cpu: servers_cpu().saturating_sub(server_before),
            postgres_cpu: if variant.postgres() {
                postgres_cpu().saturating_sub(postgres_before)
            } else {
                Duration::ZERO
            },
            bench_cpu: bench_cpu().saturating_sub(bench_before),
            machine,
            spans: self.receiver.totals().spans.saturating_sub(spans_before),
            load,
        };
        for server in &servers {
            // Graceful, so that each server closes its connections to PostgreSQL itself.
            let _ = server.sigterm();
        }
        for mut server in servers {
            let _ = server.wait_exit(Duration::from_secs(15));
        }
        Ok(run)
    }

    fn start(&self, variant: Variant, plan: &Plan) -> anyhow::Result<Vec<TaskmanServer>> {
        let endpoint = self.receiver.endpoint();
        let common = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
        if !variant.postgres() {
            // The harness's own temporary database file: SQLite with its defaults.
            let server = ServerCommand::with_binary(&self.server)
                .env(&common)
                .start()
                .context("starting the SQLite server")?;
            return Ok(vec![server]);
        }
        let url = self
            .postgres
            .create_database()
            .context("creating an empty database")?;
        let pool_size = plan.pool_size.to_string();
        (0..variant.replicas())
            .map(|n| {
                ServerCommand::with_binary(&self.server)
                    .default_db_path()
                    .env(&common)
                    .env(&[
                        ("TASKMAN__STORAGE__URL", url.as_str()),
                        ("TASKMAN__STORAGE__POOL_SIZE", pool_size.as_str()),
                    ])
                    .start()
                    .with_context(|| format!("starting PostgreSQL replica {n}"))
            })
            .collect()
    }
}

/// The plan's load for `duration`, its connections spread evenly over `addrs`, all at once;
/// one report for all of them.
fn spread(addrs: &[std::net::SocketAddr], plan: &Plan, duration: Duration) -> LoadReport {
    let share = (plan.connections / addrs.len()).max(1);
    let runs: Vec<_> = addrs
        .iter()
        .map(|&addr| {
            let spec = LoadSpec {
                post_every: plan.post_every,
                ..LoadSpec::closed_loop(addr, share, duration)
            };
            std::thread::spawn(move || load::run(&spec))
        })
        .collect();
    let mut total = LoadReport::default();
    for run in runs {
        match run.join() {
            Ok(report) => {
                total.elapsed = total.elapsed.max(report.elapsed);
                total.latencies.extend(report.latencies);
                total.errors += report.errors;
                for error in report.first_errors {
                    if total.first_errors.len() < 5 {
                        total.first_errors.push(error);
                    }
                }
            }
            Err(_) => {
                total.errors += 1;
                total.first_errors.push("a load thread panicked".to_owned());
            }
        }
    }
    total.latencies.sort_unstable();
    total
}

/// `/proc/loadavg`'s three averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// `samples` times a 4 KiB write in place plus `fdatasync`, in the temporary directory where
/// the SQLite server's file goes: what a commit to a reused WAL waits for. The file is
/// written and flushed whole first, so that no write changes its size (which would make
/// every flush a journal commit of the file system too). Sorted.
fn fsync_times(samples: usize) -> anyhow::Result<Vec<Duration>> {
    use std::io::{Seek as _, SeekFrom, Write as _};
    const BLOCK: usize = 4096;
    let dir = tempfile::tempdir()?;
    let mut file = std::fs::File::create(dir.path().join("fsync-probe"))?;
    file.write_all(&vec![0_u8; BLOCK * samples.max(1)])?;
    file.sync_all()?;
    file.seek(SeekFrom::Start(0))?;
    let block = [0x5a_u8; BLOCK];
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let began = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(began.elapsed());
    }
    times.sort_unstable();
    Ok(times)
}
