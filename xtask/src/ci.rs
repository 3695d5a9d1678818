//! `cargo xtask ci`: the quality gates, in the order they run.
//!
//! A gate is a name and a function; adding one is adding a row to [`GATES`].
//! The run stops at the first failing gate and names it. A gate whose tool is
//! missing installs it first ([`crate::tools`]), unless `--no-install` says
//! to fail with the command that installs it instead.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::tools::{self, Installer};
use crate::{licences, process};

/// One quality gate.
#[derive(Debug)]
pub(crate) struct Gate {
    pub(crate) name: &'static str,
    /// One line for `cargo xtask ci --list`.
    summary: &'static str,
    run: fn(&Path, &mut Installer) -> Result<()>,
}

/// Every gate, in the order `cargo xtask ci` runs them.
pub(crate) const GATES: &[Gate] = &[
    Gate {
        name: "fmt",
        summary: "cargo fmt --all --check",
        run: fmt,
    },
    Gate {
        name: "clippy",
        summary: "cargo clippy --workspace --all-targets -- -D warnings",
        run: clippy,
    },
    Gate {
        name: "promtool",
        summary: "promtool and prometheus are on PATH (tests lint metrics and scrape the server); \
                  installs Debian's `prometheus` as root",
        run: promtool,
    },
    Gate {
        name: "postgres",
        summary: "initdb and pg_ctl are there (the PostgreSQL store's tests run a cluster of their \
                  own); installs Debian's `postgresql` as root",
        run: postgres,
    },
    Gate {
        name: "tests",
        summary: "cargo nextest run --workspace (cargo test without nextest)",
        run: tests,
    },
    Gate {
        name: "doctests",
        summary: "cargo test --doc --workspace",
        run: doctests,
    },
    Gate {
        name: "docs",
        summary: "RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps --workspace",
        run: docs,
    },
    Gate {
        name: "coverage",
        summary: "line coverage of breaker-core/src by its own tests >= 90%; \
                  installs llvm-tools-preview and cargo-llvm-cov",
        run: coverage,
    },
    Gate {
        name: "licences",
        summary: "no GPL-family code in library crates' default dependencies",
        run: licences,
    },
];

/// Minimum line coverage, in percent, of `breaker-core`'s source files.
const COVERAGE_MIN_LINES: f64 = 90.0;

/// Set for the test gate: tests that need `promtool` fail instead of skipping.
const REQUIRE_PROMTOOL: &str = "TASKMAN_REQUIRE_PROMTOOL";

/// Set for the test gate: tests that need PostgreSQL fail instead of skipping.
const REQUIRE_POSTGRES: &str = "TASKMAN_REQUIRE_POSTGRES";

/// The test that pipes `/metrics` through `promtool check metrics`.
const PROMTOOL_TEST: &str = "telemetry-http/tests/http/promtool.rs";

/// Which gates to run, always in table order, and whether they may install
/// the tools they need.
#[derive(Debug, PartialEq)]
pub(crate) struct Selection {
    /// Empty means every gate.
    only: Vec<&'static str>,
    /// False with `--no-install`.
    install: bool,
}

impl Selection {
    pub(crate) fn new(only: Vec<&'static str>, install: bool) -> Self {
        Self { only, install }
    }

    /// Whether gates may install a missing tool.
    pub(crate) fn installs(&self) -> bool {
        self.install
    }

    pub(crate) fn gates(&self) -> impl Iterator<Item = &'static Gate> + '_ {
        GATES
            .iter()
            .filter(|gate| self.only.is_empty() || self.only.contains(&gate.name))
    }
}

/// The canonical name of the gate called `name`, or a usage error listing them.
pub(crate) fn gate_named(name: &str) -> Result<&'static str, String> {
    GATES
        .iter()
        .find(|gate| gate.name == name)
        .map(|gate| gate.name)
        .ok_or_else(|| {
            let names: Vec<&str> = GATES.iter().map(|gate| gate.name).collect();
            format!("unknown gate `{name}` (gates: {})", names.join(", "))
        })
}

pub(crate) fn list_gates() {
    for gate in GATES {
        println!("{:<10} {}", gate.name, gate.summary);
    }
}

/// Runs the selected gates in order and stops at the first failure.
pub(crate) fn run(root: &Path, selection: &Selection) -> Result<()> {
    let mut installer = Installer::new(selection.installs());
    run_gates(root, selection.gates(), &mut installer)
}

fn run_gates<'g>(
    root: &Path,
    gates: impl Iterator<Item = &'g Gate>,
    installer: &mut Installer,
) -> Result<()> {
    let started = Instant::now();
    let mut passed = 0;
    for gate in gates {
        println!("==> gate: {}", gate.name);
        let gate_started = Instant::now();
        if let Err(error) = (gate.run)(root, installer) {
            println!(
                "==> FAILED gate: {} after {:.0?}",
                gate.name,
                gate_started.elapsed()
            );
            return Err(error.context(format!("gate `{}` failed", gate.name)));
        }
        println!(
            "==> passed gate: {} in {:.0?}",
            gate.name,
            gate_started.elapsed()
        );
        passed += 1;
    }
    println!(
        "==> ci: all {passed} gates passed in {:.0?}",
        started.elapsed()
    );
    Ok(())
}

fn fmt(root: &Path, _: &mut Installer) -> Result<()> {
    process::run(process::cargo(root).args(["fmt", "--all", "--check"]))
}

fn clippy(root: &Path, _: &mut Installer) -> Result<()> {
    process::run(process::cargo(root).args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

/// `promtool` lints `/metrics` and unit-tests the alert rules; the end-to-end suite scrapes
/// the server with a real `prometheus`. Both come from Debian's `prometheus` package.
fn promtool(root: &Path, installer: &mut Installer) -> Result<()> {
    require_promtool(root, installer, &["promtool", "prometheus"])
}

/// Makes sure every one of `programs` answers `--version`, once the promtool test exists.
fn require_promtool(root: &Path, installer: &mut Installer, programs: &[&str]) -> Result<()> {
    if !root.join(PROMTOOL_TEST).is_file() {
        println!("no {PROMTOOL_TEST}: nothing needs promtool");
        return Ok(());
    }
    installer.ensure(root, &tools::PROMETHEUS, || {
        programs
            .iter()
            .all(|program| tools::answers_version(program))
    })
}

/// The PostgreSQL store's tests start their own cluster with `initdb` and `pg_ctl`.
fn postgres(root: &Path, installer: &mut Installer) -> Result<()> {
    installer.ensure(root, &tools::POSTGRESQL, tools::has_postgres_server)
}

fn tests(root: &Path, _: &mut Installer) -> Result<()> {
    let nextest = process::succeeds(process::cargo(root).args(["nextest", "--version"]));
    let mut command = process::cargo(root);
    if nextest {
        command.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        println!("cargo-nextest is not installed: using cargo test");
        command.args(["test", "--workspace", "--no-fail-fast"]);
    }
    process::run(
        command
            .env(REQUIRE_PROMTOOL, "1")
            .env(REQUIRE_POSTGRES, "1"),
    )
}

fn doctests(root: &Path, _: &mut Installer) -> Result<()> {
    process::run(process::cargo(root).args(["test", "--doc", "--workspace"]))
}

fn docs(root: &Path, _: &mut Installer) -> Result<()> {
    process::run(
        process::cargo(root)
            .args(["doc", "--no-deps", "--workspace"])
            .env("RUSTDOCFLAGS", "-Dwarnings"),
    )
}

fn coverage(root: &Path, installer: &mut Installer) -> Result<()> {
    installer.ensure(root, &tools::LLVM_TOOLS, || tools::has_llvm_tools(root))?;
    installer.ensure(root, &tools::CARGO_LLVM_COV, || {
        process::succeeds(process::cargo(root).args(["llvm-cov", "--version"]))
    })?;
    let report = std::env::temp_dir().join(format!("xtask-coverage-{}.json", std::process::id()));
    let measured = process::run(
        process::cargo(root)
            .args([
                "llvm-cov",
                "--package",
                "breaker-core",
                "--json",
                "--summary-only",
                "--output-path",
            ])
            .arg(&report),
    )
    .and_then(|()| {
        let text = std::fs::read_to_string(&report)
            .with_context(|| format!("reading {}", report.display()))?;
        source_line_coverage(&text, &root.join("breaker-core").join("src"))
    });
    let _ = std::fs::remove_file(&report);
    let coverage = measured?;
    for file in &coverage.files {
        println!("{:>6.2}%  {}", file.percent(), file.name);
    }
    judge_coverage(&coverage.total())
}

/// Passes when `total` meets [`COVERAGE_MIN_LINES`]; measuring nothing fails.
fn judge_coverage(total: &LineCount) -> Result<()> {
    println!(
        "breaker-core/src: {} of {} lines covered ({:.2}%, minimum {COVERAGE_MIN_LINES}%)",
        total.covered,
        total.count,
        total.percent()
    );
    if total.count == 0 {
        bail!("no line of breaker-core/src was instrumented: the coverage run measured nothing");
    }
    if total.percent() < COVERAGE_MIN_LINES {
        bail!(
            "breaker-core/src line coverage is {:.2}%, below the {COVERAGE_MIN_LINES}% minimum",
            total.percent()
        );
    }
    Ok(())
}

/// Covered and instrumented line counts of one file, or of a sum of files.
#[derive(Debug, Default, Clone, PartialEq)]
struct LineCount {
    name: String,
    count: u64,
    covered: u64,
}

impl LineCount {
    fn percent(&self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        100.0 * self.covered as f64 / self.count as f64
    }
}

#[derive(Debug)]
struct Coverage {
    files: Vec<LineCount>,
}

impl Coverage {
    fn total(&self) -> LineCount {
        self.files
            .iter()
            .fold(LineCount::default(), |sum, file| LineCount {
                name: String::new(),
                count: sum.count + file.count,
                covered: sum.covered + file.covered,
            })
    }
}

/// Picks the files under `source_dir` out of an `llvm-cov export` JSON report:
/// the test files, other crates and dependencies must not dilute the number.
fn source_line_coverage(report: &str, source_dir: &Path) -> Result<Coverage> {
    let report: Value = serde_json::from_str(report).context("the coverage report is not JSON")?;
    let files = report["data"]
        .as_array()
        .context("the coverage report has no `data` array")?
        .iter()
        .filter_map(|data| data["files"].as_array())
        .flatten();
    let mut selected = Vec::new();
    for file in files {
        let name = file["filename"]
            .as_str()
            .context("a coverage entry has no `filename`")?;
        let Ok(relative) = Path::new(name).strip_prefix(source_dir) else {
            continue;
        };
        let lines = &file["summary"]["lines"];
        let (Some(count), Some(covered)) = (lines["count"].as_u64(), lines["covered"].as_u64())
        else {
            bail!("the coverage entry for {name} has no line counts");
        };
        selected.push(LineCount {
            name: format!("breaker-core/src/{}", relative.display()),
            count,
            covered,
        });
    }
    selected.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Coverage { files: selected })
}

fn licences(root: &Path, _: &mut Installer) -> Result<()> {
    licences::check_libraries(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_names_are_unique_and_in_the_documented_order() {
        let names: Vec<&str> = GATES.iter().map(|gate| gate.name).collect();
        assert_eq!(
            names,
            [
                "fmt", "clippy", "promtool", "postgres", "tests", "doctests", "docs", "coverage",
                "licences"
            ]
        );
    }

    #[test]
    fn an_unknown_gate_name_lists_the_real_ones() {
        assert_eq!(gate_named("coverage"), Ok("coverage"));
        let error = gate_named("speed").unwrap_err();
        assert!(
            error.contains("`speed`") && error.contains("fmt, clippy"),
            "{error}"
        );
    }

    #[test]
    fn coverage_counts_only_files_under_the_source_dir() {
        let report = r#"{"data": [{"files": [
            {"filename": "/ws/breaker-core/src/lib.rs", "summary": {"lines": {"count": 100, "covered": 95}}},
            {"filename": "/ws/breaker-core/src/state.rs", "summary": {"lines": {"count": 100, "covered": 80}}},
            {"filename": "/ws/breaker-core/tests/model.rs", "summary": {"lines": {"count": 500, "covered": 500}}},
            {"filename": "/ws/breaker-core/srcx/other.rs", "summary": {"lines": {"count": 9, "covered": 9}}}
        ]}]}"#;
        let coverage = source_line_coverage(report, Path::new("/ws/breaker-core/src")).unwrap();
        let names: Vec<&str> = coverage.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            ["breaker-core/src/lib.rs", "breaker-core/src/state.rs"]
        );
        let total = coverage.total();
        assert_eq!((total.covered, total.count), (175, 200));
        assert!((total.percent() - 87.5).abs() < 1e-9);
    }

    #[test]
    fn coverage_below_the_minimum_or_of_nothing_fails() {
        let lines = |covered, count| LineCount {
            name: String::new(),
            count,
            covered,
        };
        assert!(judge_coverage(&lines(90, 100)).is_ok());
        let low = judge_coverage(&lines(899, 1000)).unwrap_err().to_string();
        assert_eq!(
            low,
            "breaker-core/src line coverage is 89.90%, below the 90% minimum"
        );
        let none = judge_coverage(&lines(0, 0)).unwrap_err().to_string();
        assert!(none.contains("measured nothing"), "{none}");
    }

    #[test]
    fn promtool_is_required_only_once_the_promtool_test_exists() {
        let root = std::env::temp_dir().join(format!("xtask-promtool-{}", std::process::id()));
        let missing = ["true", "xtask-no-such-promtool"];
        // `--no-install`: the missing program fails the gate, naming the install.
        let mut installer = Installer::new(false);
        std::fs::create_dir_all(root.join(PROMTOOL_TEST).parent().unwrap()).unwrap();
        let before = require_promtool(&root, &mut installer, &missing);
        std::fs::write(root.join(PROMTOOL_TEST), "").unwrap();
        let after = require_promtool(&root, &mut installer, &missing);
        let present = require_promtool(&root, &mut installer, &["true"]);
        let _ = std::fs::remove_dir_all(&root);
        assert!(before.is_ok());
        let error = after.unwrap_err().to_string();
        assert!(
            error.starts_with("promtool and prometheus not found")
                && error.contains("apt-get install -y -qq --no-install-recommends prometheus`"),
            "{error}"
        );
        assert!(present.is_ok());
    }

    #[test]
    fn a_coverage_report_without_line_counts_is_an_error() {
        let report = r#"{"data": [{"files": [{"filename": "/ws/breaker-core/src/lib.rs", "summary": {}}]}]}"#;
        let error = source_line_coverage(report, Path::new("/ws/breaker-core/src")).unwrap_err();
        assert!(error.to_string().contains("no line counts"), "{error}");
    }

    fn pass(_: &Path, _: &mut Installer) -> Result<()> {
        Ok(())
    }

    fn fail(_: &Path, _: &mut Installer) -> Result<()> {
        bail!("the widget is crooked")
    }

    fn must_not_run(_: &Path, _: &mut Installer) -> Result<()> {
        panic!("a gate ran after a failed one");
    }

    #[test]
    fn the_first_failing_gate_stops_the_run_and_is_named() {
        let table = [
            Gate {
                name: "first",
                summary: "",
                run: pass,
            },
            Gate {
                name: "second",
                summary: "",
                run: fail,
            },
            Gate {
                name: "third",
                summary: "",
                run: must_not_run,
            },
        ];
        let mut installer = Installer::new(false);
        let error = run_gates(Path::new("."), table.iter(), &mut installer).unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "gate `second` failed: the widget is crooked"
        );
        assert!(run_gates(Path::new("."), table[..1].iter(), &mut installer).is_ok());
    }

    /// The gate skips its install when this test is absent, so a move of the test must
    /// move the constant too.
    #[test]
    fn the_promtool_test_is_where_the_gate_looks() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        assert!(
            root.join(PROMTOOL_TEST).is_file(),
            "{PROMTOOL_TEST} is missing: update PROMTOOL_TEST in xtask/src/ci.rs"
        );
    }
}
