//! The pipeline's cost counted in instructions, under `valgrind --tool=callgrind`.
//!
//! The timed paced phase cannot resolve a few microseconds per request on a shared
//! virtual machine: the server's CPU per request moved by up to 22 µs between rounds of
//! the same binary. Instructions do not drift with the machine: callgrind counts every
//! instruction every thread of the server executes, whatever else the host is doing, and
//! the same binary under the same load gives the same count to a fraction of a percent.
//!
//! Each variant runs once under callgrind, pinned like the timed rounds. After a warm-up
//! the counters are zeroed (`callgrind_control --zero`); a paced load runs; the bench
//! waits until the pipeline has handed over every span that ended; the counters are
//! dumped (`callgrind_control --dump`). Tracing on minus tracing off, per request,
//! divided by the spans the receiver got per request, is the instructions per exported
//! span. Recording, batching, encoding, sending and the telemetry threads' timers are
//! all in it. The dumps stay beside the report, for `callgrind_annotate`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ::tests::load;
use ::tests::receiver::Receiver;
use ::tests::server::TaskmanServer;
use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::{Counts, Plan, Variant, pin, server_env, settle, spec};

/// Requests per second under callgrind, which runs the server about fifty times slower
/// and one thread at a time: low enough that the server keeps up, high enough that
/// batches fill.
pub(crate) const RATE: f64 = 200.0;
/// How long the counted load runs (4000 requests, 8000 spans, at [`RATE`]).
const PHASE: Duration = Duration::from_secs(20);
const WARMUP: Duration = Duration::from_secs(3);

/// One variant's count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InstructionSample {
    pub(crate) variant: String,
    pub(crate) requests: u64,
    /// Every instruction the server's threads executed between the zero and the dump.
    pub(crate) instructions: u64,
    pub(crate) ended: u64,
    pub(crate) delivered: u64,
    /// The dump, for `callgrind_annotate`.
    pub(crate) dump: PathBuf,
}

impl InstructionSample {
    pub(crate) fn per_request(&self) -> f64 {
        self.instructions as f64 / self.requests.max(1) as f64
    }

    pub(crate) fn spans_per_request(&self) -> f64 {
        self.delivered as f64 / self.requests.max(1) as f64
    }
}

/// Runs `variant` under callgrind and counts its instructions; dumps go to `dir`.
pub(crate) fn measure(
    binary: &Path,
    plan: &Plan,
    receiver: &Receiver,
    variant: &Variant,
    dir: &Path,
) -> anyhow::Result<InstructionSample> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = variant
        .name
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let out_file = dir.join(format!("{stem}.callgrind"));
    let dump = dir.join(format!("{stem}.callgrind.1"));
    for stale in [&out_file, &dump] {
        let _ = std::fs::remove_file(stale);
    }
    let valgrind_args = [
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out_file.display()),
        binary.display().to_string(),
    ];
    let valgrind_args: Vec<&str> = valgrind_args.iter().map(String::as_str).collect();
    let endpoint = receiver.endpoint();
    let env = server_env(&endpoint, variant);
    let mut server = TaskmanServer::start_binary(Path::new("valgrind"), &env, &valgrind_args)
        .with_context(|| format!("starting the server under callgrind ({})", variant.name))?;
    pin(server.pid(), plan.server_cpu)?;
    let mut health = load::GetClient::new(server.addr(), Duration::from_secs(30));
    let traced = variant.traced();

    let _ = load::run(&spec(plan, &server, Some(RATE), WARMUP));
    settle(receiver, &mut health, traced);

    let counts_before = traced.then(|| Counts::read(&mut health));
    let delivered_before = receiver.totals().spans;
    callgrind_control(server.pid(), "--zero")?;
    let report = load::run(&spec(plan, &server, Some(RATE), PHASE));
    settle(receiver, &mut health, traced);
    callgrind_control(server.pid(), "--dump")?;
    let delivered = receiver.totals().spans - delivered_before;
    let counts = counts_before.map(|before| Counts::read(&mut health).since(before));
    let instructions = read_total(&dump)?;
    server.sigterm().context("stopping the server")?;
    let _ = server.wait_exit(Duration::from_secs(60));
    if report.errors > 0 {
        println!(
            "  {} errors under callgrind, first: {:?}",
            report.errors, report.first_errors
        );
    }
    Ok(InstructionSample {
        variant: variant.name.clone(),
        requests: report.requests(),
        instructions,
        // Health checks are not traced: what ended is what the requests ended.
        ended: counts.map_or(0, |c| c.ended),
        delivered,
        dump,
    })
}

fn callgrind_control(pid: u32, command: &str) -> anyhow::Result<()> {
    let output = Command::new("callgrind_control")
        .arg(command)
        .arg(pid.to_string())
        .output()
        .context("running callgrind_control (valgrind)")?;
    if !output.status.success() {
        bail!(
            "callgrind_control {command} {pid} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The `totals:` line of a callgrind dump, which callgrind may still be writing.
fn read_total(dump: &Path) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(dump)
            && let Some(total) = parse_total(&text)
        {
            return Ok(total);
        }
        if Instant::now() >= deadline {
            bail!("no `totals:` line in {} after 30 s", dump.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn parse_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("totals:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::parse_total;

    #[test]
    fn the_total_is_read_from_a_callgrind_dump() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 43741334\n\
                    fn=(1) main\n0 12\ntotals: 43741334\n";
        assert_eq!(parse_total(dump), Some(43_741_334));
        assert_eq!(parse_total("events: Ir\n"), None, "a dump being written");
    }
}
