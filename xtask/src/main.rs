//! Project automation, the matklad way: `cargo xtask <command>` (an alias in
//! `.cargo/config.toml`) runs this binary.
//!
//! `cargo xtask ci` runs every quality gate in order and stops at the first
//! failure; `cargo xtask bench` runs every benchmark and rewrites
//! `docs/benchmarks.md`. Facts about
//! the tree (no clock in `breaker-core`, no GPL in library crates, ...) are
//! `#[test]`s (module `tidy`, and [`licences`]), so plain `cargo test` enforces
//! them too. A gate that needs a tool cargo does not bring (promtool,
//! llvm-tools, cargo-llvm-cov) installs it when missing (module `tools`), so
//! `cargo xtask ci` works by itself on a fresh machine; `.ci/run` only calls it.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "console output is what this program is for"
)]

mod bench;
mod ci;
mod licences;
mod process;
#[cfg(test)]
mod tidy;
mod tools;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci                  run every quality gate in order; stop at the first failure
  ci --only GATE      run only the named gate (repeatable)
  ci --list           list the gates in the order they run
  ci --no-install     never install a missing tool; fail naming the command that would
                      (by default: the promtool gate installs Debian's `prometheus` with
                      apt-get when run as root, the coverage gate runs
                      `rustup component add llvm-tools-preview` and
                      `cargo install cargo-llvm-cov --locked`)
  bench               run every benchmark (about 15 minutes) and rewrite docs/benchmarks.md
  bench --quick       short runs to try it out; writes target/bench/benchmarks-quick.md
  docs                regenerate the generated parts of docs/ (the configuration reference
                      tables, from the settings' declarations)
  receiver [-- ARGS]  run the test OTLP/gRPC receiver standalone for demos
                      (default --port 4317; type `help` at its prompt)
  help, --help, -h    print this text
";

/// What the command line asked for.
#[derive(Debug, PartialEq)]
enum Task {
    Ci(ci::Selection),
    ListGates,
    Bench(bench::Options),
    Receiver(Vec<String>),
    Docs,
    Help,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = match parse_args(&args) {
        Ok(task) => task,
        Err(message) => {
            eprintln!("xtask: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let root = workspace_root();
    let outcome = match task {
        Task::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Task::ListGates => {
            ci::list_gates();
            Ok(())
        }
        Task::Ci(selection) => ci::run(&root, &selection),
        Task::Bench(options) => bench::run(&root, &options),
        Task::Receiver(args) => receiver(&root, &args),
        Task::Docs => docs(&root),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the arguments after `cargo xtask`; an error is a usage mistake.
fn parse_args(args: &[String]) -> Result<Task, String> {
    let Some((command, rest)) = args.split_first() else {
        return Err("no command given".to_owned());
    };
    match command.as_str() {
        "help" | "--help" | "-h" => Ok(Task::Help),
        "ci" => parse_ci_args(rest),
        "bench" => parse_bench_args(rest),
        "docs" if rest.is_empty() => Ok(Task::Docs),
        "docs" => Err(format!("unexpected argument `{}` to docs", rest[0])),
        "receiver" => match rest.split_first() {
            None => Ok(Task::Receiver(Vec::new())),
            Some((dashes, receiver_args)) if dashes == "--" => {
                Ok(Task::Receiver(receiver_args.to_vec()))
            }
            Some((other, _)) => Err(format!(
                "unexpected argument `{other}` to receiver (its arguments go after `--`)"
            )),
        },
        other => Err(format!("unknown command `{other}`")),
    }
}

/// Rewrites the generated block of `docs/configuration.md`: the test that checks it writes
/// it instead when `TASKMAN_UPDATE_DOCS` is set, so the generator and the check are one code.
fn docs(root: &Path) -> anyhow::Result<()> {
    let mut command = process::cargo(root);
    command
        .args([
            "test",
            "--package",
            "taskman-server",
            "--test",
            "docs_configuration",
            "--",
            "the_reference_tables_are_generated_from_the_declarations",
        ])
        .env("TASKMAN_UPDATE_DOCS", "1");
    process::run(&mut command)
}

/// Runs the `tests` crate's OTLP receiver in the foreground.
fn receiver(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut command = process::cargo(root);
    command.args(["run", "--package", "tests", "--bin", "otlp-receiver", "--"]);
    if args.is_empty() {
        command.args(["--port", "4317"]);
    }
    command.args(args);
    process::run(&mut command)
}

fn parse_bench_args(args: &[String]) -> Result<Task, String> {
    let mut options = bench::Options::default();
    for arg in args {
        match arg.as_str() {
            "--quick" => options.quick = true,
            other => return Err(format!("unexpected argument `{other}` to bench")),
        }
    }
    Ok(Task::Bench(options))
}

fn parse_ci_args(args: &[String]) -> Result<Task, String> {
    let mut only = Vec::new();
    let mut install = true;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => return Ok(Task::ListGates),
            "--no-install" => install = false,
            "--only" => {
                let name = args.next().ok_or("`--only` needs a gate name")?;
                only.push(ci::gate_named(name)?);
            }
            other => return Err(format!("unexpected argument `{other}` to ci")),
        }
    }
    Ok(Task::Ci(ci::Selection::new(only, install)))
}

/// The workspace root: this crate lives in `<root>/xtask`, and `cargo xtask`
/// always builds it from the tree it checks.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Task, String> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse_args(&args)
    }

    #[test]
    fn ci_without_options_selects_every_gate() {
        let Ok(Task::Ci(selection)) = parse("ci") else {
            panic!("`ci` did not parse as the ci task");
        };
        let names: Vec<&str> = selection.gates().map(|gate| gate.name).collect();
        assert_eq!(names, ci::GATES.iter().map(|g| g.name).collect::<Vec<_>>());
        assert!(
            selection.installs(),
            "gates install missing tools by default"
        );
    }

    #[test]
    fn no_install_keeps_the_gates_and_forbids_installs() {
        let Ok(Task::Ci(selection)) = parse("ci --no-install --only coverage") else {
            panic!("`ci --no-install` did not parse as the ci task");
        };
        assert!(!selection.installs());
        let names: Vec<&str> = selection.gates().map(|gate| gate.name).collect();
        assert_eq!(names, ["coverage"]);
    }

    #[test]
    fn only_keeps_the_table_order_whatever_the_argument_order() {
        let Ok(Task::Ci(selection)) = parse("ci --only licences --only coverage") else {
            panic!("`ci --only` did not parse as the ci task");
        };
        let names: Vec<&str> = selection.gates().map(|gate| gate.name).collect();
        assert_eq!(names, ["coverage", "licences"]);
    }

    #[test]
    fn usage_mistakes_are_errors_that_name_the_culprit() {
        for (line, culprit) in [
            ("", "no command"),
            ("deploy", "`deploy`"),
            ("ci --only", "`--only`"),
            ("ci --only nonsense", "`nonsense`"),
            ("ci --fast", "`--fast`"),
            ("bench --fast", "`--fast`"),
            ("bench -- --quick", "`--`"),
        ] {
            let error = parse(line).expect_err(line);
            assert!(error.contains(culprit), "{line:?} gave {error:?}");
        }
    }

    #[test]
    fn help_and_bench_arguments_parse() {
        for line in ["help", "--help", "-h"] {
            assert_eq!(parse(line), Ok(Task::Help));
        }
        assert_eq!(parse("ci --list"), Ok(Task::ListGates));
        assert_eq!(
            parse("bench"),
            Ok(Task::Bench(bench::Options { quick: false }))
        );
        assert_eq!(
            parse("bench --quick"),
            Ok(Task::Bench(bench::Options { quick: true }))
        );
        assert_eq!(
            parse("receiver -- --port 4000"),
            Ok(Task::Receiver(vec!["--port".to_owned(), "4000".to_owned()]))
        );
        assert!(parse("receiver --port").is_err());
    }

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }
}
