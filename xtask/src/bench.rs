//! `cargo xtask bench`: runs every benchmark behind the goals of
//! `docs/contract.md` (section 9, "Benchmark goals") and rewrites
//! `docs/benchmarks.md` with the machine, the method, the medians, the
//! ratios and the commands that reproduce them.
//!
//! 1. `breaker-core`'s criterion benchmark (`decision`): one breaker decision.
//! 2. to 5. `outage-bench` (in the `tests` crate): the release server under
//!    load through telemetry outages, with and without the breaker, with
//!    tracing off, and the recovery time; it writes those sections itself.
//! 6. `telemetry-http`'s criterion benchmark (`handlers`): the health and
//!    metrics routes.
//! 7. `scale-bench` (in the `tests` crate): one replica against three on one
//!    PostgreSQL, and SQLite against PostgreSQL for one; it writes its section
//!    itself. It needs PostgreSQL's server programs, installed first if missing.
//! 8. `pipeline-bench`: the pipeline's cost per span, the server pinned to one
//!    CPU, against tracing off and the stock pipeline, timed and counted in
//!    instructions under callgrind (valgrind, installed first if missing).
//! 9. `tests`' criterion benchmark (`span_path`): one span, stage by stage.
//!
//! Speed is measured here, never asserted in CI: no gate runs this, and a
//! missed goal is reported in the document, not as a failure.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::process;
use crate::tools::{self, Installer};

/// Where the report goes.
const REPORT: &str = "docs/benchmarks.md";

/// Spans per batch in `span_path`'s `encode` and `send` groups.
const SPAN_PATH_BATCH: f64 = 512.0;

/// The goal for one closed-path decision on one thread, in nanoseconds.
const DECISION_GOAL_NS: f64 = 10.0;

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Options {
    /// Short runs, to try the benchmarks out; the report goes to
    /// `target/bench/benchmarks-quick.md` and `docs/` is left alone.
    pub(crate) quick: bool,
}

/// Criterion arguments for a quick run.
const QUICK_CRITERION: [&str; 4] = ["--warm-up-time", "0.3", "--measurement-time", "0.7"];

pub(crate) fn run(root: &Path, options: &Options) -> Result<()> {
    let started = Instant::now();
    // Bench 7 runs a PostgreSQL cluster: a missing install fails now, not after the rest.
    let mut installer = Installer::new(true);
    installer.ensure(root, &tools::POSTGRESQL, tools::has_postgres_server)?;
    // Bench 8 counts instructions under callgrind.
    installer.ensure(root, &tools::VALGRIND, || {
        tools::answers_version("valgrind") && tools::answers_version("callgrind_control")
    })?;
    let machine = Machine::read(root);
    let target = target_dir(root)?;
    let criterion_dir = target.join("criterion");
    let out_dir = target.join("bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut commands = Commands {
        root: root.to_path_buf(),
        shown: Vec::new(),
    };

    println!("==> bench 1: breaker-core decision cost (criterion)");
    let since = SystemTime::now();
    let mut command = process::cargo(root);
    command.args(["bench", "--package", "breaker-core", "--bench", "decision"]);
    criterion_args(&mut command, options);
    run_logged(&mut command, &mut commands)?;
    let decision = criterion_results(&criterion_dir, since)?;

    println!("==> bench 6: telemetry-http route costs (criterion)");
    let since = SystemTime::now();
    let mut command = process::cargo(root);
    command.args([
        "bench",
        "--package",
        "telemetry-http",
        "--bench",
        "handlers",
    ]);
    criterion_args(&mut command, options);
    run_logged(&mut command, &mut commands)?;
    let handlers = criterion_results(&criterion_dir, since)?;

    println!("==> benches 2-5: building the servers and the outage bench");
    let stock_target = target.join("bench-stock");
    run_logged(
        process::cargo(root).args(["build", "--release", "--package", "taskman-server"]),
        &mut commands,
    )?;
    run_logged(
        process::cargo(root)
            .args([
                "build",
                "--release",
                "--package",
                "taskman-server",
                "--features",
                "bench",
                "--target-dir",
            ])
            .arg(&stock_target),
        &mut commands,
    )?;
    run_logged(
        process::cargo(root).args([
            "build",
            "--release",
            "--package",
            "tests",
            "--bin",
            "outage-bench",
            "--bin",
            "pipeline-bench",
            "--bin",
            "scale-bench",
        ]),
        &mut commands,
    )?;

    println!("==> benches 2-5: the server through telemetry outages");
    let server = target.join("release").join("taskman-server");
    let mut command = fragment_bench(root, &target, &out_dir, "outage-bench", options);
    command
        .arg("--server")
        .arg(&server)
        .arg("--stock-server")
        .arg(stock_target.join("release").join("taskman-server"));
    let fragment = run_fragment_bench(command, &out_dir, "outage-bench", &mut commands)?;
    let json_path = out_dir.join("outage-bench.json");
    let outage_json: Value = serde_json::from_str(
        &std::fs::read_to_string(&json_path)
            .with_context(|| format!("reading {}", json_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", json_path.display()))?;

    println!("==> bench 7: replicas and storage (scale-bench)");
    let mut command = fragment_bench(root, &target, &out_dir, "scale-bench", options);
    command.arg("--server").arg(&server);
    let scale_fragment = run_fragment_bench(command, &out_dir, "scale-bench", &mut commands)?;

    println!("==> bench 8: the pipeline's cost per span, server pinned to one CPU");
    let mut command = fragment_bench(root, &target, &out_dir, "pipeline-bench", options);
    command
        .arg("--server")
        .arg(&server)
        .arg("--stock-server")
        .arg(stock_target.join("release").join("taskman-server"))
        // The setting under test: telemetry at normal priority, against the default.
        .args(["--variant", "normal:TASKMAN__TELEMETRY__PRIORITY=normal"])
        // CPU per span as instructions too: this VM's timed figures are too noisy for it.
        .arg("--instructions");
    let pipeline = run_fragment_bench(command, &out_dir, "pipeline-bench", &mut commands)?;

    println!("==> bench 9: the span path stage by stage (criterion)");
    let since = SystemTime::now();
    let mut command = process::cargo(root);
    command.args(["bench", "--package", "tests", "--bench", "span_path"]);
    criterion_args(&mut command, options);
    run_logged(&mut command, &mut commands)?;
    let stages = criterion_results(&criterion_dir, since)?;

    let report = Report {
        machine,
        machine_after: LoadAverage::read(),
        decision,
        handlers,
        fragment,
        pipeline,
        stages,
        outage_json,
        scale_fragment,
        commands: commands.shown,
        took_minutes: started.elapsed().as_secs_f64() / 60.0,
        quick: options.quick,
    };
    let path = if options.quick {
        out_dir.join("benchmarks-quick.md")
    } else {
        root.join(REPORT)
    };
    std::fs::write(&path, report.render())
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "==> bench: wrote {} in {:.1} min",
        path.display(),
        report.took_minutes
    );
    Ok(())
}

/// A bench binary of the `tests` crate that writes its section to `out_dir/NAME.md` and
/// its measurements to `out_dir/NAME.json`; the caller adds its own arguments.
fn fragment_bench(
    root: &Path,
    target: &Path,
    out_dir: &Path,
    name: &str,
    options: &Options,
) -> Command {
    let mut command = Command::new(target.join("release").join(name));
    command
        .current_dir(root)
        .arg("--markdown")
        .arg(out_dir.join(format!("{name}.md")))
        .arg("--json")
        .arg(out_dir.join(format!("{name}.json")));
    if options.quick {
        command.arg("--quick");
    }
    command
}

/// Runs a [`fragment_bench`] command and returns the section it wrote.
fn run_fragment_bench(
    mut command: Command,
    out_dir: &Path,
    name: &str,
    commands: &mut Commands,
) -> Result<String> {
    run_logged(&mut command, commands)?;
    let path = out_dir.join(format!("{name}.md"));
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

fn criterion_args(command: &mut Command, options: &Options) {
    if options.quick {
        command.arg("--").args(QUICK_CRITERION);
    }
}

/// The commands run so far, as the report shows them.
#[derive(Debug)]
struct Commands {
    root: PathBuf,
    shown: Vec<String>,
}

/// Runs `command` and records it for the report.
fn run_logged(command: &mut Command, commands: &mut Commands) -> Result<()> {
    commands.shown.push(shown(command, &commands.root));
    process::run(command)
}

/// `command` as a shell line run from `root`: paths under `root` relative
/// to it, other programs (cargo) by their short name.
fn shown(command: &Command, root: &Path) -> String {
    let prefix = format!("{}/", root.display());
    let program = Path::new(command.get_program());
    let program = match program.strip_prefix(root) {
        Ok(relative) => relative.display().to_string(),
        Err(_) => program
            .file_name()
            .unwrap_or(program.as_os_str())
            .to_string_lossy()
            .into_owned(),
    };
    std::iter::once(program)
        .chain(
            command
                .get_args()
                .map(|arg| arg.to_string_lossy().replace(&prefix, "")),
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// Cargo's target directory (`CARGO_TARGET_DIR` and config honoured).
fn target_dir(root: &Path) -> Result<PathBuf> {
    let output = process::output(process::cargo(root).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
    ]))?;
    let metadata: Value =
        serde_json::from_slice(&output.stdout).context("`cargo metadata` printed no JSON")?;
    metadata["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("`cargo metadata` names no target_directory")
}

/// One criterion benchmark's result.
#[derive(Debug, Clone, PartialEq)]
struct Estimate {
    /// `group/function/value`, as criterion names it.
    id: String,
    group: String,
    function: String,
    value: Option<String>,
    median_ns: f64,
    lower_ns: f64,
    upper_ns: f64,
}

/// The results criterion wrote under `dir` at or after `since` (older ones
/// are from earlier runs or from benchmarks that no longer exist).
fn criterion_results(dir: &Path, since: SystemTime) -> Result<Vec<Estimate>> {
    let mut found = Vec::new();
    collect_estimates(dir, since, &mut found)?;
    if found.is_empty() {
        bail!(
            "criterion wrote no results under {} during this run",
            dir.display()
        );
    }
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

fn collect_estimates(dir: &Path, since: SystemTime, found: &mut Vec<Estimate>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|name| name == "new") {
            let estimates = path.join("estimates.json");
            let fresh = std::fs::metadata(&estimates)
                .and_then(|m| m.modified())
                .is_ok_and(|modified| modified >= since);
            if fresh {
                let read = |name: &str| -> Result<Value> {
                    let file = path.join(name);
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    serde_json::from_str(&text)
                        .with_context(|| format!("{} is not JSON", file.display()))
                };
                found.push(parse_estimate(
                    &read("benchmark.json")?,
                    &read("estimates.json")?,
                )?);
            }
        } else {
            collect_estimates(&path, since, found)?;
        }
    }
    Ok(())
}

fn parse_estimate(benchmark: &Value, estimates: &Value) -> Result<Estimate> {
    let text = |value: &Value| value.as_str().map(str::to_owned);
    let median = &estimates["median"];
    let number = |value: &Value, what: &str| {
        value
            .as_f64()
            .with_context(|| format!("criterion's estimates have no {what}"))
    };
    Ok(Estimate {
        id: text(&benchmark["full_id"]).context("criterion's benchmark.json has no full_id")?,
        group: text(&benchmark["group_id"])
            .context("criterion's benchmark.json has no group_id")?,
        function: text(&benchmark["function_id"]).unwrap_or_default(),
        value: text(&benchmark["value_str"]),
        median_ns: number(&median["point_estimate"], "median")?,
        lower_ns: number(
            &median["confidence_interval"]["lower_bound"],
            "median lower bound",
        )?,
        upper_ns: number(
            &median["confidence_interval"]["upper_bound"],
            "median upper bound",
        )?,
    })
}

/// `12.3 ns`, `4.56 µs`, `7.89 ms`.
fn time(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// What the machine is and how busy it was.
#[derive(Debug, Clone, Default)]
struct Machine {
    model: String,
    cpus: String,
    hypervisor: Option<String>,
    memory: String,
    kernel: String,
    rustc: String,
    commit: String,
    date: String,
    load: LoadAverage,
}

#[derive(Debug, Clone, Default)]
struct LoadAverage(String);

impl LoadAverage {
    fn read() -> Self {
        Self(
            std::fs::read_to_string("/proc/loadavg")
                .map(|text| {
                    text.split_whitespace()
                        .take(3)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_else(|_| "unknown".to_owned()),
        )
    }
}

impl Machine {
    fn read(root: &Path) -> Self {
        let lscpu = command_text(Command::new("lscpu").env("LC_ALL", "C"));
        let field = |name: &str| {
            lscpu.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == name).then(|| value.trim().to_owned())
            })
        };
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(format!("{:.1} GiB", kib / (1024.0 * 1024.0)))
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let dirty = !command_text(
            Command::new("git")
                .current_dir(root)
                .args(["status", "--porcelain"]),
        )
        .trim()
        .is_empty();
        let commit = command_text(Command::new("git").current_dir(root).args([
            "rev-parse",
            "--short",
            "HEAD",
        ]));
        Self {
            model: field("Model name").unwrap_or_else(|| "unknown".to_owned()),
            cpus: field("CPU(s)").unwrap_or_else(|| "?".to_owned()),
            hypervisor: field("Hypervisor vendor"),
            memory,
            kernel: command_text(Command::new("uname").arg("-r")),
            rustc: command_text(Command::new("rustc").arg("--version")),
            commit: match (commit.trim(), dirty) {
                ("", _) => "unknown".to_owned(),
                (commit, true) => format!("{commit} with uncommitted changes"),
                (commit, false) => commit.to_owned(),
            },
            date: command_text(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
            load: LoadAverage::read(),
        }
    }
}

/// What `command` prints, trimmed; empty if it cannot run.
fn command_text(command: &mut Command) -> String {
    command
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Everything the document is made of.
#[derive(Debug)]
struct Report {
    machine: Machine,
    machine_after: LoadAverage,
    decision: Vec<Estimate>,
    handlers: Vec<Estimate>,
    /// Sections 2 to 5, written by `outage-bench`.
    fragment: String,
    /// The pinned healthy-day section, written by `pipeline-bench`.
    pipeline: String,
    /// `tests/benches/span_path.rs`: one span's cost per stage.
    stages: Vec<Estimate>,
    /// `outage-bench`'s raw results, for the summary of goals.
    outage_json: Value,
    /// Section 7, written by `scale-bench`.
    scale_fragment: String,
    commands: Vec<String>,
    took_minutes: f64,
    quick: bool,
}

/// One line of the summary: a goal of `docs/contract.md` section 9 and how it went.
#[derive(Debug, Clone, PartialEq)]
struct Goal {
    goal: String,
    result: String,
    met: Option<bool>,
}

impl Report {
    fn render(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        self.goals_table(&mut out);
        self.decision_section(&mut out);
        out.push_str(&self.fragment);
        self.handlers_section(&mut out);
        out.push_str(&self.scale_fragment);
        out.push_str(&self.pipeline);
        self.stages_section(&mut out);
        self.reproduce(&mut out);
        out
    }

    fn header(&self, out: &mut String) {
        let m = &self.machine;
        let _ = writeln!(out, "# Benchmarks\n");
        if self.quick {
            let _ = writeln!(
                out,
                "**A quick run (`cargo xtask bench --quick`): short measurements, one round. \
                 Not for publishing.**\n"
            );
        }
        let _ = writeln!(
            out,
            "What the circuit breaker costs and what it saves, measured by `cargo xtask bench` \
             against the goals in [contract.md](contract.md#9-benchmark-goals). This file is \
             generated: run the command again rather than editing it. Benchmarks are measured, \
             never asserted in CI. Sections follow the goals' numbering.\n"
        );
        let machine_kind = match &m.hypervisor {
            Some(vendor) => format!("a {}-CPU virtual machine ({vendor})", m.cpus),
            None => format!("{} CPUs", m.cpus),
        };
        let _ = writeln!(out, "## Machine and run\n");
        let _ = writeln!(
            out,
            "- Machine: {machine_kind}, {model}, {memory} of memory; Linux {kernel}; {rustc}.",
            model = m.model,
            memory = m.memory,
            kernel = m.kernel,
            rustc = m.rustc,
        );
        let _ = writeln!(
            out,
            "- Run: {date}, commit {commit}, {took:.1} minutes in all.",
            date = m.date,
            commit = m.commit,
            took = self.took_minutes,
        );
        let _ = writeln!(
            out,
            "- Load average (1, 5, 15 min) before the run: {}; after: {}. The machine is \
             shared: section 4 ends with how much CPU other work used during the service \
             benchmarks.\n",
            m.load.0, self.machine_after.0
        );
    }

    fn goals(&self) -> Vec<Goal> {
        let mut goals = Vec::new();
        let closed_one = self
            .decision
            .iter()
            .find(|e| e.id == "closed_path/1_thread/breaker-core");
        goals.push(match closed_one {
            Some(e) => Goal {
                goal: format!("core decision, closed path, 1 thread: < {DECISION_GOAL_NS} ns"),
                result: time(e.median_ns),
                met: Some(e.median_ns < DECISION_GOAL_NS),
            },
            None => Goal {
                goal: format!("core decision, closed path, 1 thread: < {DECISION_GOAL_NS} ns"),
                result: "no `closed_path/1_thread/breaker-core` row".to_owned(),
                met: None,
            },
        });
        let comparisons = failsafe_comparisons(&self.decision);
        let slower: Vec<String> = comparisons
            .iter()
            .filter(|c| c.ratio >= 1.0)
            .map(|c| format!("`{}` ({:.2}×)", c.id, c.ratio))
            .collect();
        goals.push(Goal {
            goal: "core decision faster than `failsafe` in every row".to_owned(),
            result: if comparisons.is_empty() {
                "no failsafe rows".to_owned()
            } else if slower.is_empty() {
                format!("faster in all {} rows", comparisons.len())
            } else {
                format!("not faster in {}", slower.join(", "))
            },
            met: (!comparisons.is_empty()).then_some(slower.is_empty()),
        });
        if let Some(list) = self.outage_json["goals"].as_array() {
            for goal in list {
                goals.push(Goal {
                    goal: goal["goal"].as_str().unwrap_or("?").to_owned(),
                    result: goal["result"].as_str().unwrap_or("?").to_owned(),
                    met: goal["met"].as_bool(),
                });
            }
        }
        goals
    }

    fn goals_table(&self, out: &mut String) {
        let _ = writeln!(out, "## Goals\n");
        let _ = writeln!(out, "| goal | measured | verdict |");
        let _ = writeln!(out, "|---|---|---|");
        for goal in self.goals() {
            let verdict = match goal.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "not measured",
            };
            let _ = writeln!(out, "| {} | {} | {verdict} |", goal.goal, goal.result);
        }
        let _ = writeln!(
            out,
            "\nMissed goals are discussed where they are measured.\n"
        );
    }

    fn decision_section(&self, out: &mut String) {
        let _ = writeln!(out, "## 1. Core decision cost\n");
        let _ = writeln!(
            out,
            "`cargo bench -p breaker-core --bench decision` (criterion; its rows are described \
             at the top of `breaker-core/benches/decision.rs`): one closed-path call (permit + \
             record a success) and one open-path rejection, against the `failsafe` crate \
             configured the same way. Two-thread rows: wall time divided by the calls of both \
             threads. Median of criterion's samples, with its 95 % confidence interval; the \
             last column compares each row with `failsafe` on the same path and threads.\n"
        );
        let comparisons = failsafe_comparisons(&self.decision);
        let _ = writeln!(
            out,
            "| path | threads | implementation | median | 95 % CI | vs failsafe |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---|---:|");
        for e in &self.decision {
            let versus = comparisons
                .iter()
                .find(|c| c.id == e.id)
                .map(|c| format!("{:.2}×", c.ratio))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} – {} | {versus} |",
                e.group,
                e.function,
                e.value.as_deref().unwrap_or(""),
                time(e.median_ns),
                time(e.lower_ns),
                time(e.upper_ns),
            );
        }
        let _ = writeln!(out);
    }

    fn stages_section(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## 9. One span, stage by stage\n\n\
             From `tests/benches/span_path.rs` (criterion, medians per span; module docs say \
             what each row does). `record/*` is the request thread's cost of making a span; \
             `handoff/*` adds ending it into a real batch processor; `encode/*` and `send/*` \
             run on the telemetry threads, per span of a 512-span batch.\n\n\
             | stage | per span |\n|---|---:|"
        );
        for e in &self.stages {
            // Criterion times one iteration: a span, or a whole batch for these groups.
            let spans = if e.group == "encode" || e.group == "send" {
                SPAN_PATH_BATCH
            } else {
                1.0
            };
            let _ = writeln!(out, "| `{}` | {} |", e.id, time(e.median_ns / spans));
        }
        out.push('\n');
    }

    fn handlers_section(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## 6. `/metrics` render cost and health handler cost\n"
        );
        let _ = writeln!(
            out,
            "`cargo bench -p telemetry-http --bench handlers` (criterion): one request through \
             the actix service stack (`actix_web::test::call_service`, building the test \
             request included), and rendering the `/metrics` text alone. `routes/baseline` is \
             an empty handler in the same app: the framework's share. The registry holds the \
             breaker metrics and the HTTP metrics of the bench app's own four routes; the \
             `/metrics` rate limit allows every request but is still checked.\n"
        );
        let baseline = self
            .handlers
            .iter()
            .find(|e| e.id == "routes/baseline")
            .map(|e| e.median_ns);
        let _ = writeln!(out, "| benchmark | median | 95 % CI | minus baseline |");
        let _ = writeln!(out, "|---|---:|---|---:|");
        for e in &self.handlers {
            let own = match baseline {
                Some(base) if e.group == "routes" && e.id != "routes/baseline" => {
                    time(e.median_ns - base)
                }
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} – {} | {own} |",
                e.id,
                time(e.median_ns),
                time(e.lower_ns),
                time(e.upper_ns),
            );
        }
        let _ = writeln!(out);
    }

    fn reproduce(&self, out: &mut String) {
        let _ = writeln!(out, "## Reproducing\n");
        let _ = writeln!(
            out,
            "```sh\ncargo xtask bench{}\n```\n",
            if self.quick { " --quick" } else { "" }
        );
        let _ = writeln!(
            out,
            "It ran these commands, in this order (`outage-bench` also writes every \
             measurement, round by round, to `target/bench/outage-bench.json`):\n"
        );
        let _ = writeln!(out, "```sh");
        for command in &self.commands {
            let _ = writeln!(out, "{command}");
        }
        let _ = writeln!(out, "```");
    }
}

/// One breaker-core row against `failsafe` on the same path and threads.
#[derive(Debug, Clone, PartialEq)]
struct Comparison {
    id: String,
    /// breaker-core's median / failsafe's: below 1 is faster.
    ratio: f64,
}

fn failsafe_comparisons(rows: &[Estimate]) -> Vec<Comparison> {
    rows.iter()
        .filter(|e| e.value.as_deref().is_some_and(|v| v != "failsafe"))
        .filter_map(|e| {
            let failsafe = rows.iter().find(|f| {
                f.group == e.group
                    && f.function == e.function
                    && f.value.as_deref() == Some("failsafe")
            })?;
            Some(Comparison {
                id: e.id.clone(),
                ratio: e.median_ns / failsafe.median_ns,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn estimate(id: &str, median_ns: f64) -> Estimate {
        let mut parts = id.splitn(3, '/');
        Estimate {
            id: id.to_owned(),
            group: parts.next().unwrap().to_owned(),
            function: parts.next().unwrap().to_owned(),
            value: parts.next().map(str::to_owned),
            median_ns,
            lower_ns: median_ns * 0.9,
            upper_ns: median_ns * 1.1,
        }
    }

    #[test]
    fn criterion_files_are_read_into_estimates() {
        let benchmark = json!({"group_id": "closed_path", "function_id": "1_thread",
            "value_str": "breaker-core", "full_id": "closed_path/1_thread/breaker-core"});
        let estimates = json!({"median": {"point_estimate": 4.5,
            "confidence_interval": {"lower_bound": 4.25, "upper_bound": 4.75}}});
        assert_eq!(
            parse_estimate(&benchmark, &estimates).unwrap(),
            Estimate {
                id: "closed_path/1_thread/breaker-core".to_owned(),
                group: "closed_path".to_owned(),
                function: "1_thread".to_owned(),
                value: Some("breaker-core".to_owned()),
                median_ns: 4.5,
                lower_ns: 4.25,
                upper_ns: 4.75,
            }
        );
        let error = parse_estimate(&benchmark, &json!({})).unwrap_err();
        assert!(error.to_string().contains("median"), "{error}");
    }

    #[test]
    fn only_results_written_during_this_run_are_read() {
        let dir = std::env::temp_dir().join(format!("xtask-criterion-{}", std::process::id()));
        let new = dir.join("closed_path/1_thread/breaker-core/new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"closed_path","function_id":"1_thread","value_str":"breaker-core","full_id":"closed_path/1_thread/breaker-core"}"#,
        )
        .unwrap();
        std::fs::write(
            new.join("estimates.json"),
            r#"{"median":{"point_estimate":4.5,"confidence_interval":{"lower_bound":4.0,"upper_bound":5.0}}}"#,
        )
        .unwrap();
        let before = SystemTime::now() - std::time::Duration::from_secs(60);
        let after = SystemTime::now() + std::time::Duration::from_secs(60);
        let found = criterion_results(&dir, before).unwrap();
        let stale = criterion_results(&dir, after);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].median_ns, 4.5);
        assert!(stale.unwrap_err().to_string().contains("no results"));
    }

    #[test]
    fn rows_are_compared_with_failsafe_on_the_same_path_and_threads() {
        let rows = [
            estimate("closed_path/1_thread/breaker-core", 4.0),
            estimate("closed_path/1_thread/failsafe", 40.0),
            estimate("closed_path/2_threads/breaker-core+mutex", 90.0),
            estimate("closed_path/2_threads/failsafe", 60.0),
            estimate("open_path/1_thread/breaker-core", 3.0),
        ];
        assert_eq!(
            failsafe_comparisons(&rows),
            [
                Comparison {
                    id: "closed_path/1_thread/breaker-core".to_owned(),
                    ratio: 0.1
                },
                Comparison {
                    id: "closed_path/2_threads/breaker-core+mutex".to_owned(),
                    ratio: 1.5
                },
            ]
        );
    }

    #[test]
    fn the_summary_names_missed_goals() {
        let report = Report {
            machine: Machine::default(),
            machine_after: LoadAverage::default(),
            decision: vec![
                estimate("closed_path/1_thread/breaker-core", 12.0),
                estimate("closed_path/1_thread/failsafe", 40.0),
                estimate("open_path/2_threads/breaker-core+mutex", 90.0),
                estimate("open_path/2_threads/failsafe", 60.0),
            ],
            handlers: vec![estimate("routes/baseline/x", 600.0)],
            fragment: "## 2. Outage impact\n".to_owned(),
            pipeline: String::new(),
            stages: Vec::new(),
            outage_json: json!({"goals": [
                {"goal": "throughput ratio, refused", "result": "0.99", "met": true}
            ]}),
            scale_fragment: "## 7. Replicas and storage\n".to_owned(),
            commands: vec!["cargo bench".to_owned()],
            took_minutes: 1.0,
            quick: false,
        };
        let goals = report.goals();
        assert_eq!(goals[0].met, Some(false), "{goals:?}");
        assert_eq!(goals[0].result, "12.0 ns");
        assert_eq!(goals[1].met, Some(false));
        assert!(
            goals[1]
                .result
                .contains("`open_path/2_threads/breaker-core+mutex` (1.50×)"),
            "{goals:?}"
        );
        assert_eq!(goals[2].met, Some(true));
        let text = report.render();
        assert!(
            text.contains("| throughput ratio, refused | 0.99 | met |"),
            "{text}"
        );
        assert!(text.contains("## 2. Outage impact"), "{text}");
        let (handlers, scale) = (
            text.find("## 6. `/metrics` render cost").unwrap(),
            text.find("## 7. Replicas and storage").unwrap(),
        );
        assert!(handlers < scale && scale < text.find("## Reproducing").unwrap());
        assert!(text.contains("```sh\ncargo xtask bench\n```"), "{text}");
    }

    #[test]
    fn commands_are_shown_relative_to_the_workspace() {
        let root = Path::new("/ws");
        let mut command = Command::new("/ws/target/release/outage-bench");
        command.args(["--server", "/ws/target/release/taskman-server", "--quick"]);
        assert_eq!(
            shown(&command, root),
            "target/release/outage-bench --server target/release/taskman-server --quick"
        );
        let mut command = Command::new("/home/me/.cargo/bin/cargo");
        command.args(["bench", "--target-dir", "/elsewhere/target"]);
        assert_eq!(
            shown(&command, root),
            "cargo bench --target-dir /elsewhere/target"
        );
    }

    #[test]
    fn times_use_a_readable_unit() {
        assert_eq!(time(4.56), "4.6 ns");
        assert_eq!(time(52_989.0), "52.99 µs");
        assert_eq!(time(3_500_000.0), "3.50 ms");
    }
}
