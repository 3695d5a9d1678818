//! Recovery time: from the receiver's return to `/health/telemetry`
//! reporting a closed circuit, with the default breaker and batch settings
//! (`probe_every` 10, `probe_after` 30 s, `OTEL_BSP_SCHEDULE_DELAY` 5 s), at
//! a low paced request rate and at the closed loop's maximum.
//!
//! Each sample stops the receiver, waits for the circuit to open and for a
//! probe to fail, optionally waits some more, then brings the receiver back
//! and times the circuit closing. At the low rate the waits are none (a
//! short outage), `mid_period_wait`, and four times that, long enough for
//! the probe floor to reach its cap (`probe_after`): the quiet service's
//! recovery, which the empty probes decide.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ::tests::load::{self, GetClient, LoadReport, LoadSpec};
use ::tests::receiver::Mode;
use ::tests::server::TaskmanServer;
use anyhow::bail;

use crate::Plan;
use crate::rig::{Health, Rig, Variant};

/// How long any wait for the circuit may take before the sample is given up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(120);

/// How often `/health/telemetry` is polled.
const POLL: Duration = Duration::from_millis(10);

/// The request rate of a measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Rate {
    /// Paced, this many requests per second.
    Low(f64),
    /// Closed loop, as fast as the server answers.
    High,
}

/// One timed recovery.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) rate: Rate,
    /// How long after a failed probe the receiver came back.
    pub(crate) returned_after_probe: Duration,
    /// From the return to a closed circuit; `None` if it did not close
    /// within [`GIVE_UP_AFTER`].
    pub(crate) closed_after: Option<Duration>,
}

/// Every sample, and the load each rate really applied.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recovery {
    pub(crate) samples: Vec<Sample>,
    /// Requests per second achieved at the low and the high rate.
    pub(crate) low_throughput: f64,
    pub(crate) high_throughput: f64,
    /// Spans ended per second at the high rate.
    pub(crate) high_spans_per_second: f64,
}

pub(crate) fn run(rig: &Rig, plan: &Plan) -> anyhow::Result<Recovery> {
    let mut recovery = Recovery::default();

    println!(
        "outage-bench: recovery at {} requests/s, default settings",
        plan.low_rate
    );
    let waits = [
        Duration::ZERO,
        plan.mid_period_wait,
        plan.mid_period_wait * 4,
    ];
    let (samples, load, _) = with_server(rig, plan, Rate::Low(plan.low_rate), &waits)?;
    recovery.low_throughput = load.throughput();
    recovery.samples.extend(samples);

    println!("outage-bench: recovery at the closed loop's rate, default settings");
    let waits = vec![Duration::ZERO; plan.high_rate_samples];
    let (samples, load, spans_per_second) = with_server(rig, plan, Rate::High, &waits)?;
    recovery.high_throughput = load.throughput();
    recovery.high_spans_per_second = spans_per_second;
    recovery.samples.extend(samples);

    rig.set_mode(Mode::Accept)?;
    Ok(recovery)
}

/// Starts a server with the default settings under load at `rate`, and
/// times one recovery per entry of `waits` (the extra wait after a failed
/// probe).
fn with_server(
    rig: &Rig,
    plan: &Plan,
    rate: Rate,
    waits: &[Duration],
) -> anyhow::Result<(Vec<Sample>, LoadReport, f64)> {
    rig.set_mode(Mode::Accept)?;
    let server = rig.start(Variant::Breaker, &[])?;
    let mut health = GetClient::new(server.addr(), Duration::from_secs(10));
    let stop = Arc::new(AtomicBool::new(false));
    let spec = match rate {
        Rate::Low(per_second) => LoadSpec {
            rate: Some(per_second),
            post_every: plan.post_every,
            stop: Some(Arc::clone(&stop)),
            ..LoadSpec::closed_loop(server.addr(), 1, Duration::from_secs(3600))
        },
        Rate::High => LoadSpec {
            post_every: plan.post_every,
            stop: Some(Arc::clone(&stop)),
            ..LoadSpec::closed_loop(server.addr(), plan.connections, Duration::from_secs(3600))
        },
    };
    let traffic = thread::spawn(move || load::run(&spec));
    let started = Instant::now();
    let ended_before = Health::read(&mut health).ended;

    let mut samples = Vec::new();
    let mut outcome = Ok(());
    for &wait in waits {
        match one_sample(rig, &server, &mut health, wait) {
            Ok(closed_after) => {
                println!("  returned {wait:?} after a failed probe: closed after {closed_after:?}");
                samples.push(Sample {
                    rate,
                    returned_after_probe: wait,
                    closed_after,
                });
            }
            Err(err) => {
                outcome = Err(err);
                break;
            }
        }
    }
    let ended = Health::read(&mut health).ended - ended_before;
    let spans_per_second = ended as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let load = traffic
        .join()
        .map_err(|_| anyhow::anyhow!("the load thread panicked"))?;
    outcome?;
    Ok((samples, load, spans_per_second))
}

fn one_sample(
    rig: &Rig,
    server: &TaskmanServer,
    health: &mut GetClient,
    wait: Duration,
) -> anyhow::Result<Option<Duration>> {
    rig.set_mode(Mode::Stopped)?;
    let open = wait_for(health, "the circuit to open", |h| h.circuit_state == "open")
        .map_err(|err| anyhow::anyhow!("{err}\n{}", server.stderr()))?;
    wait_for(health, "a probe to fail", |h| {
        h.probes > open.probes && h.circuit_state == "open"
    })
    .map_err(|err| anyhow::anyhow!("{err}\n{}", server.stderr()))?;
    thread::sleep(wait);
    rig.set_mode(Mode::Accept)?;
    let returned = Instant::now();
    Ok(wait_for(health, "the circuit to close", |h| {
        h.circuit_state == "closed"
    })
    .ok()
    .map(|_| returned.elapsed()))
}

fn wait_for(
    health: &mut GetClient,
    what: &str,
    mut done: impl FnMut(&Health) -> bool,
) -> anyhow::Result<Health> {
    let deadline = Instant::now() + GIVE_UP_AFTER;
    loop {
        let now = Health::read(health);
        if done(&now) {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            bail!("waited {GIVE_UP_AFTER:?} for {what}; /health/telemetry: {now:?}");
        }
        thread::sleep(POLL);
    }
}
