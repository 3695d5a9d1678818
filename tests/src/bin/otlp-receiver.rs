//! Runs the test OTLP/gRPC trace receiver standalone, for manual demos.
//!
//! `cargo run -p tests --bin otlp-receiver -- --port 4317` listens on
//! `127.0.0.1:4317`, logs what it has received every few seconds (when that
//! changed), and reads mode changes from stdin, one per line: `accept`,
//! `unavailable`, `exhausted`, `hang`, `stop`, `start`, `status`, `quit`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use ::tests::receiver::{Mode, Receiver, Snapshot};
use anyhow::Context as _;
use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs the OTLP/gRPC test receiver on loopback until Ctrl-C or `quit`.
#[derive(Debug, Parser)]
#[command(name = "otlp-receiver")]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 4317)]
    port: u16,
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

const HELP: &str =
    "commands: accept | unavailable | exhausted | hang | stop | start | status | help | quit";

fn parse_command(line: &str) -> Option<Command> {
    Some(match line.trim().to_ascii_lowercase().as_str() {
        "accept" | "start" => Command::Switch(Mode::Accept),
        "unavailable" => Command::Switch(Mode::Unavailable),
        "exhausted" | "resource_exhausted" => Command::Switch(Mode::ResourceExhausted),
        "hang" => Command::Switch(Mode::Hang),
        "stop" => Command::Switch(Mode::Stopped),
        "status" => Command::Status,
        "help" | "?" => Command::Help,
        "quit" | "exit" => Command::Quit,
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

    let receiver = Receiver::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)))
        .await
        .context("cannot start the OTLP receiver")?;
    tracing::info!(endpoint = %receiver.endpoint(), "OTLP/gRPC trace receiver listening");
    tracing::info!("{HELP}");

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut report = tokio::time::interval(args.report_every);
    let mut last_reported: Option<(usize, Mode, usize)> = None;

    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = report.tick() => {
                let snapshot = receiver.snapshot();
                let key = (snapshot.requests.len(), snapshot.mode, snapshot.in_flight);
                if last_reported != Some(key) {
                    last_reported = Some(key);
                    log_counts(&snapshot);
                }
            }
            line = lines.next_line(), if stdin_open => match line {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => match parse_command(&line) {
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

    #[test]
    fn stdin_commands_map_to_modes() {
        assert_eq!(parse_command("accept"), Some(Command::Switch(Mode::Accept)));
        assert_eq!(
            parse_command(" start\n"),
            Some(Command::Switch(Mode::Accept))
        );
        assert_eq!(
            parse_command("Unavailable"),
            Some(Command::Switch(Mode::Unavailable))
        );
        assert_eq!(
            parse_command("exhausted"),
            Some(Command::Switch(Mode::ResourceExhausted))
        );
        assert_eq!(parse_command("hang"), Some(Command::Switch(Mode::Hang)));
        assert_eq!(parse_command("stop"), Some(Command::Switch(Mode::Stopped)));
        assert_eq!(parse_command("quit"), Some(Command::Quit));
        assert_eq!(parse_command("status"), Some(Command::Status));
        assert_eq!(parse_command("frobnicate"), None);
    }
}
