//! The bench's world: one OTLP receiver (on its own small runtime), the two
//! server builds, and what can be read about a running server from outside:
//! its CPU time and memory, its log, its `/health/telemetry`.

use std::path::PathBuf;

use ::tests::load::GetClient;
use ::tests::process_stats::{self, CpuTimes, MachineCpu};
use ::tests::receiver::{Mode, Receiver, Totals};
use ::tests::server::TaskmanServer;
use anyhow::{Context as _, bail};
use serde_json::Value;

/// How a server is built and configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// As shipped: the breaker in front of the OTLP exporter.
    Breaker,
    /// The stock pipeline: `TASKMAN_BENCH_STOCK_PIPELINE=true`, built with the SDK's
    /// and OTLP exporter's own logs.
    Stock,
    /// As shipped, with `OTEL_SDK_DISABLED=true`.
    TracingOff,
}

impl Variant {
    pub(crate) fn key(self) -> &'static str {
        match self {
            Self::Breaker => "breaker",
            Self::Stock => "stock",
            Self::TracingOff => "tracing_off",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Breaker => "with breaker",
            Self::Stock => "no breaker (stock)",
            Self::TracingOff => "tracing off",
        }
    }
}

/// The thread names whose CPU time is charged to span export: the SDK's
/// batch processor thread, and the server's main Tokio runtime (where the
/// breaker runs exports and the gRPC client runs its connection; the HTTP
/// workers have runtimes of their own).
pub(crate) const EXPORT_THREADS: [&str; 2] = ["OpenTelemetry.T", "taskman-main"];

/// The name of the receiver's threads in this process.
pub(crate) const RECEIVER_THREADS: &str = "otlp-receiver";

/// Settings every server of the outage phases gets.
pub(crate) const PHASE_ENV: [(&str, &str); 1] = [
    // Several exports per second, so every phase sees many export decisions.
    ("OTEL_BSP_SCHEDULE_DELAY", "200"),
];

/// Breaker settings of the outage phases: `probe_after` must exceed
/// `export_timeout`, or after one hung probe every batch would probe.
pub(crate) const BREAKER_ENV: [(&str, &str); 2] = [
    ("TASKMAN__BREAKER__EXPORT_TIMEOUT", "1s"),
    ("TASKMAN__BREAKER__PROBE_AFTER", "2s"),
];

/// The receiver and the server builds.
#[derive(Debug)]
pub(crate) struct Rig {
    pub(crate) receiver: Receiver,
    server: PathBuf,
    stock_server: PathBuf,
    // Last, so that it outlives the receiver it runs.
    runtime: tokio::runtime::Runtime,
}

impl Rig {
    pub(crate) fn new(server: PathBuf, stock_server: PathBuf) -> anyhow::Result<Self> {
        for binary in [&server, &stock_server] {
            if !binary.is_file() {
                bail!("no server binary at {}", binary.display());
            }
        }
        // One worker: the receiver's work is light, and the server and the
        // load need the machine's two cores.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(RECEIVER_THREADS)
            .enable_all()
            .build()
            .context("a Tokio runtime for the receiver")?;
        let receiver = runtime
            .block_on(Receiver::start())
            .context("starting the OTLP receiver")?;
        receiver.forget_spans();
        Ok(Self {
            receiver,
            server,
            stock_server,
            runtime,
        })
    }

    pub(crate) fn set_mode(&self, mode: Mode) -> anyhow::Result<()> {
        self.runtime
            .block_on(self.receiver.set_mode(mode))
            .with_context(|| format!("switching the receiver to {mode}"))
    }

    /// Starts `variant` with the common environment plus `extra`.
    pub(crate) fn start(
        &self,
        variant: Variant,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<TaskmanServer> {
        let endpoint = self.receiver.endpoint();
        let mut env = vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // The disk's fsync would dominate and add noise; the comparison is about telemetry.
            ("TASKMAN__STORAGE__PATH", ":memory:"),
            ("RUST_LOG", "info"),
        ];
        let binary = match variant {
            Variant::Breaker => &self.server,
            Variant::Stock => {
                env.push(("TASKMAN_BENCH_STOCK_PIPELINE", "true"));
                &self.stock_server
            }
            Variant::TracingOff => {
                env.push(("OTEL_SDK_DISABLED", "true"));
                &self.server
            }
        };
        env.extend_from_slice(extra);
        TaskmanServer::start_binary(binary, &env, &[])
            .with_context(|| format!("starting the server ({})", variant.label()))
    }

    /// What can be read of `server` now.
    pub(crate) fn marks(&self, server: &TaskmanServer, health: &mut GetClient) -> Marks {
        let pid = server.pid();
        Marks {
            cpu: process_stats::cpu_times(pid).unwrap_or_default(),
            bench_cpu: process_stats::cpu_times(std::process::id()).unwrap_or_default(),
            machine: process_stats::machine_cpu().unwrap_or_default(),
            rss: process_stats::resident_bytes(pid).unwrap_or_default(),
            log_lines: server.stderr().lines().count(),
            totals: self.receiver.totals(),
            health: Health::read(health),
        }
    }
}

/// A moment's readings of one server and the receiver.
#[derive(Debug, Clone)]
pub(crate) struct Marks {
    pub(crate) cpu: CpuTimes,
    /// This process's CPU time (load generator and receiver).
    pub(crate) bench_cpu: CpuTimes,
    pub(crate) machine: MachineCpu,
    pub(crate) rss: u64,
    pub(crate) log_lines: usize,
    pub(crate) totals: Totals,
    pub(crate) health: Health,
}

/// The parts of `/health/telemetry` the bench reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Health {
    pub(crate) circuit_state: String,
    pub(crate) probes: u64,
    /// Failed exports of every kind (error, timeout, panic).
    pub(crate) failed_batches: u64,
    pub(crate) ended: u64,
}

impl Health {
    /// Reads `/health/telemetry`; an unreadable answer reads as state `?`.
    pub(crate) fn read(client: &mut GetClient) -> Self {
        client
            .get("/health/telemetry")
            .ok()
            .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
            .map_or_else(
                || Self {
                    circuit_state: "?".to_owned(),
                    ..Self::default()
                },
                |json| Self::from_json(&json),
            )
    }

    fn from_json(json: &Value) -> Self {
        let count = |value: &Value| value.as_u64().unwrap_or(0);
        // Every cause is listed; the sum is what the bench reports.
        let failed = json["failed_batches"]
            .as_object()
            .map_or(0, |by_cause| by_cause.values().map(count).sum());
        Self {
            circuit_state: json["circuit_state"].as_str().unwrap_or("?").to_owned(),
            probes: count(&json["probes"]),
            failed_batches: failed,
            ended: count(&json["spans"]["ended"]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_reads_the_counts_it_needs() {
        let json: Value = serde_json::from_str(
            r#"{"circuit_state":"open","probes":4,"failed_batches":{"unavailable":5,"timeout":2,"panic":1},
                "spans":{"ended":90,"exported":10,"dropped":50,"failed":30}}"#,
        )
        .unwrap();
        assert_eq!(
            Health::from_json(&json),
            Health {
                circuit_state: "open".to_owned(),
                probes: 4,
                failed_batches: 8,
                ended: 90,
            }
        );
    }
}
