//! Runs the test OTLP receiver standalone, for manual demos and the
//! benchmarks. It serves traces, logs and metrics, all answered by one mode.
//!
//! `cargo run -p tests --bin otlp-receiver -- --port 4317` listens for
//! OTLP/gRPC on `127.0.0.1:4317` (`--protocol http`: OTLP/HTTP protobuf on
//! `127.0.0.1:4318/v1/traces`, `/v1/logs` and `/v1/metrics` unless `--port`
//! says otherwise), logs what it
//! has received every few seconds (when that changed), and reads mode
//! changes from stdin, one per line: `accept`, `partial N`, `unavailable
//! [DELAY]`, `exhausted`, `throttled DELAY`, `throttled_until DELAY` (that
//! long from now), `unauthenticated`, `denied`, `invalid`, `too_large`,
//! `hang`, `stop`, `start`, `status`, `quit`. DELAY is humantime: `2s`,
//! `500ms`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use ::tests::receiver::{Mode, Protocol, Receiver, Signal, Snapshot};
use anyhow::Context as _;
use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs the OTLP test receiver on loopback until Ctrl-C or `quit`.
#[derive(Debug, Parser)]
#[command(name = "otlp-receiver")]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one); 4317 for gRPC, 4318 for HTTP
    /// when not given.
    #[arg(long)]
    port: Option<u16>,
    /// `grpc` (OTLP/gRPC) or `http` (OTLP/HTTP with protobuf bodies).
    #[arg(long, default_value = "grpc", value_parser = parse_protocol)]
    protocol: Protocol,
    /// How often to log the counts (when they changed), e.g. `5s`, `500ms`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    report_every: Duration,
}

/// What a line on stdin asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Switch(Mode),
    Status,
    Help,
    Quit,
}

const HELP: &str = "commands: accept | partial N | unavailable [DELAY] | exhausted | \
     throttled DELAY | throttled_until DELAY | unauthenticated | denied | invalid | too_large | \
     hang | stop | start | status | help | quit";

fn parse_protocol(text: &str) -> Result<Protocol, String> {
    match text.to_ascii_lowercase().as_str() {
        "grpc" => Ok(Protocol::Grpc),
        "http" | "http/protobuf" => Ok(Protocol::Http),
        other => Err(format!("unknown protocol `{other}`: grpc or http")),
    }
}

/// Parses one stdin line; `now` is what `throttled_until DELAY` counts from.
fn parse_command(line: &str, now: SystemTime) -> Option<Command> {
    let line = line.trim().to_ascii_lowercase();
    let mut words = line.split_whitespace();
    let command = words.next()?;
    let argument = words.next();
    if words.next().is_some() {
        return None;
    }
    let delay = || humantime::parse_duration(argument?).ok();
    Some(match (command, argument) {
        ("accept" | "start", None) => Command::Switch(Mode::Accept),
        ("partial" | "partial_success", Some(rejected)) => Command::Switch(Mode::PartialSuccess {
            rejected: rejected.parse().ok()?,
        }),
        ("unavailable", None) => Command::Switch(Mode::Unavailable),
        ("unavailable", Some(_)) => Command::Switch(Mode::UnavailableRetryAfter(delay()?)),
        ("exhausted" | "resource_exhausted", None) => Command::Switch(Mode::ResourceExhausted),
        ("throttled", Some(_)) => Command::Switch(Mode::Throttled {
            retry_after: delay()?,
        }),
        ("throttled_until", Some(_)) => {
            Command::Switch(Mode::ThrottledUntil(now.checked_add(delay()?)?))
        }
        ("unauthenticated", None) => Command::Switch(Mode::Unauthenticated),
        ("denied" | "permission_denied", None) => Command::Switch(Mode::PermissionDenied),
        ("invalid" | "invalid_argument", None) => Command::Switch(Mode::InvalidArgument),
        ("too_large", None) => Command::Switch(Mode::TooLarge),
        ("hang", None) => Command::Switch(Mode::Hang),
        ("stop", None) => Command::Switch(Mode::Stopped),
        ("status", None) => Command::Status,
        ("help" | "?", None) => Command::Help,
        ("quit" | "exit", None) => Command::Quit,
        _ => return None,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let args = Args::parse();

    let port = args.port.unwrap_or(match args.protocol {
        Protocol::Grpc => 4317,
        Protocol::Http => 4318,
    });
    let receiver =
        Receiver::start_with(args.protocol, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .await
            .context("cannot start the OTLP receiver")?;
    tracing::info!(
        traces = %receiver.endpoint_for(Signal::Traces),
        logs = %receiver.endpoint_for(Signal::Logs),
        metrics = %receiver.endpoint_for(Signal::Metrics),
        protocol = %args.protocol,
        "OTLP receiver listening (traces, logs, metrics)"
    );
    tracing::info!("{HELP}");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut report = tokio::time::interval(args.report_every);
    let mut last_reported: Option<([usize; 3], Mode, [usize; 3])> = None;

    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = report.tick() => {
                let snapshot = receiver.snapshot();
                let key = (
                    [snapshot.requests.len(), snapshot.logs.requests.len(), snapshot.metrics.requests.len()],
                    snapshot.mode,
                    [snapshot.in_flight, snapshot.logs.in_flight, snapshot.metrics.in_flight],
                );
                if last_reported != Some(key) {
                    last_reported = Some(key);
                    log_counts(&snapshot);
                }
            }
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => match parse_command(&line, SystemTime::now()) {
                    Some(Command::Switch(mode)) => match receiver.set_mode(mode).await {
                        Ok(()) => tracing::info!(%mode, "mode changed"),
                        Err(err) => tracing::error!("{err}"),
                    },
                    Some(Command::Status) => log_counts(&receiver.snapshot()),
                    Some(Command::Help) => tracing::info!("{HELP}"),
                    Some(Command::Quit) => break,
                    None => tracing::warn!(line = line.trim(), "unknown command; {HELP}"),
                },
                // Without a terminal (stdin closed) the receiver keeps serving until Ctrl-C.
                Ok(None) => stdin_open = false,
                Err(err) => {
                    tracing::warn!("cannot read stdin, ignoring it from now on: {err}");
                    stdin_open = false;
                }
            },
        }
    }

    log_counts(&receiver.snapshot());
    receiver
        .stop()
        .await
        .context("the OTLP receiver did not stop cleanly")
}

fn log_counts(snapshot: &Snapshot) {
    tracing::info!("{snapshot}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Option<Command> {
        parse_command(line, SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn stdin_commands_map_to_modes() {
        assert_eq!(parse("accept"), Some(Command::Switch(Mode::Accept)));
        assert_eq!(parse(" start\n"), Some(Command::Switch(Mode::Accept)));
        assert_eq!(
            parse("Unavailable"),
            Some(Command::Switch(Mode::Unavailable))
        );
        assert_eq!(
            parse("exhausted"),
            Some(Command::Switch(Mode::ResourceExhausted))
        );
        assert_eq!(parse("hang"), Some(Command::Switch(Mode::Hang)));
        assert_eq!(parse("stop"), Some(Command::Switch(Mode::Stopped)));
        assert_eq!(parse("quit"), Some(Command::Quit));
        assert_eq!(parse("status"), Some(Command::Status));
        assert_eq!(parse("frobnicate"), None);
    }

    #[test]
    fn stdin_commands_with_an_argument_map_to_the_detailed_modes() {
        assert_eq!(
            parse("partial 3"),
            Some(Command::Switch(Mode::PartialSuccess { rejected: 3 }))
        );
        assert_eq!(
            parse("unavailable 2s"),
            Some(Command::Switch(Mode::UnavailableRetryAfter(
                Duration::from_secs(2)
            )))
        );
        assert_eq!(
            parse("throttled 500ms"),
            Some(Command::Switch(Mode::Throttled {
                retry_after: Duration::from_millis(500)
            }))
        );
        assert_eq!(
            parse("throttled_until 1m"),
            Some(Command::Switch(Mode::ThrottledUntil(
                SystemTime::UNIX_EPOCH + Duration::from_secs(60)
            )))
        );
        assert_eq!(
            parse("unauthenticated"),
            Some(Command::Switch(Mode::Unauthenticated))
        );
        assert_eq!(
            parse("denied"),
            Some(Command::Switch(Mode::PermissionDenied))
        );
        assert_eq!(
            parse("invalid"),
            Some(Command::Switch(Mode::InvalidArgument))
        );
        assert_eq!(parse("too_large"), Some(Command::Switch(Mode::TooLarge)));
        // A delay that does not parse, a missing or a surplus argument.
        assert_eq!(parse("throttled soon"), None);
        assert_eq!(parse("throttled"), None);
        assert_eq!(parse("partial"), None);
        assert_eq!(parse("accept 3"), None);
    }

    #[test]
    fn the_protocol_flag_takes_grpc_or_http() {
        assert_eq!(parse_protocol("grpc"), Ok(Protocol::Grpc));
        assert_eq!(parse_protocol("HTTP"), Ok(Protocol::Http));
        assert!(parse_protocol("ws").is_err());
    }
}
