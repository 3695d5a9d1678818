//! The `taskman-server` binary: command line, configuration, logging and the Tokio runtime,
//! then [`taskman_server::app::run`]. Every failure before serving ends here as one line on
//! stderr and a non-zero exit status, never a panic.

use std::fmt::Display;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use taskman_server::config::{self, Env, Settings};
use taskman_server::telemetry::Telemetry;
use taskman_server::{app, logging};

/// Exit status for bad configuration, as for bad command-line usage.
const EXIT_CONFIG: u8 = 2;

/// A small persisted task API whose tracing never hurts it.
#[derive(Debug, Parser)]
#[command(
    name = "taskman-server",
    version,
    after_help = "\
Configuration layers, later ones winning: built-in defaults, the TOML file (--config or
TASKMAN_CONFIG), then TASKMAN__SECTION__KEY environment variables, for example
TASKMAN__SERVER__BIND=0.0.0.0:8080 or TASKMAN__METRICS__TRUSTED_PROXIES=10.0.0.0/8,::1.
Run --print-config to see every key and its effective value.

The span exporter reads the standard OpenTelemetry variables: OTEL_EXPORTER_OTLP_ENDPOINT
and OTEL_EXPORTER_OTLP_PROTOCOL (default grpc to http://localhost:4317), OTEL_BSP_*,
OTEL_SERVICE_NAME. RUST_LOG sets the log level (default info).

SIGTERM, SIGINT or SIGHUP stops the server gracefully within server.shutdown_timeout."
)]
struct Cli {
    /// TOML configuration file; overrides TASKMAN_CONFIG.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Print the effective configuration as TOML (secrets masked) and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = match config::process_env() {
        Ok(env) => env,
        Err(err) => return config_error(err),
    };
    let file = config::config_file(cli.config.as_deref(), &env);
    let settings = match Settings::load(file.as_deref(), &env) {
        Ok(settings) => settings,
        Err(err) => return config_error(err),
    };
    if cli.print_config {
        return print_config(&settings, file.as_deref(), &env);
    }
    let filter = match logging::filter(env.get("RUST_LOG").map(String::as_str)) {
        Ok(filter) => filter,
        Err(err) => return config_error(err),
    };
    // Named apart from the HTTP workers' own runtimes (`top -H`, the benchmarks): besides
    // start-up and shutdown, its threads run little but the span exports.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("taskman-main")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fatal(format_args!("cannot start the Tokio runtime: {err}")),
    };
    // Inside the runtime: the exporter runs its exports there.
    let telemetry = match runtime.block_on(async { Telemetry::install(&settings) }) {
        Ok(telemetry) => telemetry,
        Err(err) => return startup_error(&err),
    };
    if let Err(err) = logging::init(settings.log.format, &filter, telemetry.logger_provider()) {
        return fatal(format_args!("cannot start logging: {err}"));
    }
    let outcome = runtime.block_on(app::run(settings, telemetry));
    // A span exporter stuck on a dead backend must not hold the exit: shutdown already
    // waited as long as the configuration allows.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => startup_error(&err),
    }
}

/// A configuration error found while starting exits like one found while loading.
fn startup_error(err: &anyhow::Error) -> ExitCode {
    match err.downcast_ref::<config::ConfigError>() {
        Some(config_err) => {
            report(format_args!("config error: {config_err}"));
            ExitCode::from(EXIT_CONFIG)
        }
        None => fatal(format_args!("{err:#}")),
    }
}

fn print_config(settings: &Settings, file: Option<&Path>, env: &Env) -> ExitCode {
    let text = match settings.to_toml(file, env) {
        Ok(text) => text,
        Err(err) => return fatal(format_args!("cannot print the configuration: {err}")),
    };
    // A closed stdout (`| head`) is not worth a message.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}

fn config_error(err: config::ConfigError) -> ExitCode {
    report(format_args!("config error: {err}"));
    ExitCode::from(EXIT_CONFIG)
}

fn fatal(message: impl Display) -> ExitCode {
    report(message);
    ExitCode::FAILURE
}

/// One line on stderr. `eprintln!` would panic if stderr is closed; this ignores that.
fn report(message: impl Display) {
    let _ = writeln!(std::io::stderr().lock(), "taskman-server: {message}");
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["taskman-server", "--config", "a.toml", "--print-config"])
            .unwrap();
        assert_eq!(cli.config, Some(PathBuf::from("a.toml")));
        assert!(cli.print_config);
        assert!(Cli::try_parse_from(["taskman-server", "--bogus"]).is_err());
    }
}
