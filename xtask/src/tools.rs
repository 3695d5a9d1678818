//! The tools some gates need beyond `cargo` and `rustc`, and installing them
//! when they are missing, so that `cargo xtask ci` works on a fresh machine.
//!
//! Each install prints one line saying what it installs and why. Debian
//! packages need root: as any other user the gate fails and names the command
//! to run instead. With `--no-install` nothing is installed and a missing
//! tool fails its gate the same way. Whether to install is decided by
//! [`decide`], a pure function, so the "missing tool" paths are tested
//! without uninstalling anything.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

use crate::process;

/// A tool, how to tell it is there, and where it comes from.
#[derive(Debug)]
pub(crate) struct Tool {
    /// What is missing, as a person would name it.
    pub(crate) name: &'static str,
    /// Why a gate needs it: printed with the install.
    why: &'static str,
    source: Source,
}

/// Where a tool comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// A Debian package, installed with `apt-get` as root.
    Apt { package: &'static str },
    /// A `rustup` component of the toolchain that runs us.
    RustupComponent { component: &'static str },
    /// A crate installed with `cargo install --locked`.
    CargoInstall { krate: &'static str },
}

/// `promtool` lints `/metrics` and unit-tests the alert rules; `prometheus`
/// scrapes the server in the end-to-end suite. Debian ships both in one package.
pub(crate) const PROMETHEUS: Tool = Tool {
    name: "promtool and prometheus",
    why: "the tests lint /metrics and the alert rules with promtool and scrape the server with prometheus",
    source: Source::Apt {
        package: "prometheus",
    },
};

/// `initdb` and `pg_ctl`: the PostgreSQL store's tests start a throw-away cluster of their
/// own. Debian's `postgresql` package puts them in `/usr/lib/postgresql/<version>/bin`
/// (not on `PATH`) and starts no server we use.
pub(crate) const POSTGRESQL: Tool = Tool {
    name: "PostgreSQL (initdb, pg_ctl)",
    why: "the PostgreSQL store's tests and the multi-replica test run a throw-away cluster",
    source: Source::Apt {
        package: "postgresql",
    },
};

/// `valgrind --tool=callgrind` and `callgrind_control`: `pipeline-bench` counts the
/// server's instructions per exported span, a figure scheduler noise cannot blur.
pub(crate) const VALGRIND: Tool = Tool {
    name: "valgrind (callgrind)",
    why: "the pipeline bench counts the server's instructions per span under callgrind",
    source: Source::Apt {
        package: "valgrind",
    },
};

/// `cargo llvm-cov` reads the profiles with the toolchain's `llvm-profdata`
/// and `llvm-cov`.
pub(crate) const LLVM_TOOLS: Tool = Tool {
    name: "llvm-tools",
    why: "cargo-llvm-cov measures coverage with the toolchain's llvm-profdata and llvm-cov",
    source: Source::RustupComponent {
        component: "llvm-tools-preview",
    },
};

/// The coverage gate's driver.
pub(crate) const CARGO_LLVM_COV: Tool = Tool {
    name: "cargo-llvm-cov",
    why: "the coverage gate measures breaker-core's line coverage with it",
    source: Source::CargoInstall {
        krate: "cargo-llvm-cov",
    },
};

/// What the gates may do about a missing tool, and what has been done so far.
#[derive(Debug)]
pub(crate) struct Installer {
    /// False with `--no-install`: fail and name the command instead.
    may_install: bool,
    /// `apt-get update` runs once, before the first package install.
    apt_updated: bool,
}

impl Installer {
    pub(crate) fn new(may_install: bool) -> Self {
        Self {
            may_install,
            apt_updated: false,
        }
    }

    /// Makes sure `tool` is there: `present` says whether it is. Installs it
    /// when missing and allowed, then asks `present` again.
    pub(crate) fn ensure(
        &mut self,
        root: &Path,
        tool: &Tool,
        present: impl Fn() -> bool,
    ) -> Result<()> {
        if present() {
            return Ok(());
        }
        let situation = Situation {
            may_install: self.may_install,
            is_root: tool.source.needs_root() && running_as_root(),
            apt_updated: self.apt_updated,
        };
        match decide(tool, situation) {
            Decision::Fail(message) => bail!(message),
            Decision::Install(commands) => {
                println!(
                    "==> installing {}: {} (`{}`)",
                    tool.name,
                    tool.why,
                    shell_line(&commands)
                );
                for command in &commands {
                    process::run(&mut command.to_command(root))?;
                    if command.program == "apt-get" && command.args.first() == Some(&"update") {
                        self.apt_updated = true;
                    }
                }
                if !present() {
                    bail!(
                        "{} is still missing after `{}`",
                        tool.name,
                        shell_line(&commands)
                    );
                }
                Ok(())
            }
        }
    }
}

impl Source {
    fn needs_root(self) -> bool {
        matches!(self, Self::Apt { .. })
    }
}

/// What [`decide`] knows besides the tool.
#[derive(Debug, Clone, Copy)]
struct Situation {
    may_install: bool,
    is_root: bool,
    apt_updated: bool,
}

/// One command line to run.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    /// Environment overrides.
    env: &'static [(&'static str, &'static str)],
    program: &'static str,
    args: Vec<&'static str>,
}

impl Step {
    fn to_command(&self, root: &Path) -> Command {
        let mut command = if self.program == "cargo" {
            process::cargo(root)
        } else {
            let mut command = Command::new(self.program);
            command.current_dir(root);
            command
        };
        command.args(&self.args).envs(self.env.iter().copied());
        command
    }

    fn shell(&self) -> String {
        self.env
            .iter()
            .map(|(key, value)| format!("{key}={value}"))
            .chain([self.program.to_owned()])
            .chain(self.args.iter().map(|arg| (*arg).to_owned()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn shell_line(steps: &[Step]) -> String {
    steps
        .iter()
        .map(Step::shell)
        .collect::<Vec<_>>()
        .join(" && ")
}

/// What to do about a missing tool.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Run these, in order.
    Install(Vec<Step>),
    /// Give up with this message, which names the command to run.
    Fail(String),
}

const APT_ENV: &[(&str, &str)] = &[("DEBIAN_FRONTEND", "noninteractive")];

/// The commands that install `tool`; `apt_updated` leaves out `apt-get update`.
fn install_steps(tool: &Tool, apt_updated: bool) -> Vec<Step> {
    match tool.source {
        Source::Apt { package } => {
            let update = Step {
                env: APT_ENV,
                program: "apt-get",
                args: vec!["update", "-qq"],
            };
            let install = Step {
                env: APT_ENV,
                program: "apt-get",
                args: vec!["install", "-y", "-qq", "--no-install-recommends", package],
            };
            if apt_updated {
                vec![install]
            } else {
                vec![update, install]
            }
        }
        Source::RustupComponent { component } => vec![Step {
            env: &[],
            program: "rustup",
            args: vec!["component", "add", component],
        }],
        Source::CargoInstall { krate } => vec![Step {
            env: &[],
            program: "cargo",
            args: vec!["install", krate, "--locked"],
        }],
    }
}

/// Whether and how to install a missing `tool`.
fn decide(tool: &Tool, situation: Situation) -> Decision {
    let steps = install_steps(tool, situation.apt_updated);
    if !situation.may_install {
        // The full command: whoever runs it has not run our `apt-get update`.
        let line = shell_line(&install_steps(tool, false));
        return Decision::Fail(format!(
            "{} not found ({}); install it with `{line}`, or run without --no-install",
            tool.name, tool.why
        ));
    }
    if tool.source.needs_root() && !situation.is_root {
        let line = shell_line(&install_steps(tool, false));
        return Decision::Fail(format!(
            "{} not found ({}), and only root may install Debian packages: \
             run `sudo {}` (or this command as root)",
            tool.name,
            tool.why,
            line.replace(" && ", " && sudo ")
        ));
    }
    Decision::Install(steps)
}

/// Whether this process runs as root (effective user id 0), from Linux's
/// `/proc/self/status`, else from `id -u`.
fn running_as_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        return effective_uid(&status) == Some(0);
    }
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .is_some_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// The effective user id on the `Uid:` line (real, effective, saved, fs).
fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|line| line.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Whether `program --version` starts and exits with 0; prints its first line.
pub(crate) fn answers_version(program: &str) -> bool {
    match Command::new(program).arg("--version").output() {
        Ok(output) if output.status.success() => {
            // Some tools (promtool) print their version on stderr.
            let text = if output.stdout.is_empty() {
                output.stderr
            } else {
                output.stdout
            };
            let text = String::from_utf8_lossy(&text);
            println!("{}", text.lines().next().unwrap_or(program));
            true
        }
        _ => false,
    }
}

/// Whether PostgreSQL's server programs are there, where the tests' harness looks for
/// them: on `PATH`, or in the newest `/usr/lib/postgresql/<version>/bin`.
pub(crate) fn has_postgres_server() -> bool {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let on_path = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| has_both(&dir)));
    let debian = std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|versions| {
        versions
            .filter_map(Result::ok)
            .any(|version| has_both(&version.path().join("bin")))
    });
    on_path || debian
}

/// Whether the toolchain that runs us has the `llvm-tools` component, or
/// `cargo llvm-cov` is pointed at LLVM tools of its own.
pub(crate) fn has_llvm_tools(root: &Path) -> bool {
    if std::env::var_os("LLVM_COV").is_some() && std::env::var_os("LLVM_PROFDATA").is_some() {
        return true;
    }
    let mut command = Command::new("rustup");
    command.args(["component", "list", "--installed"]);
    command.current_dir(root);
    process::output(&mut command).is_ok_and(|output| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|line| line.starts_with("llvm-tools"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: Situation = Situation {
        may_install: true,
        is_root: true,
        apt_updated: false,
    };

    fn lines(decision: &Decision) -> Vec<String> {
        match decision {
            Decision::Install(steps) => steps.iter().map(Step::shell).collect(),
            Decision::Fail(message) => panic!("expected an install, got: {message}"),
        }
    }

    fn failure(decision: Decision) -> String {
        match decision {
            Decision::Fail(message) => message,
            Decision::Install(steps) => panic!("expected a failure, got {steps:?}"),
        }
    }

    #[test]
    fn root_installs_the_debian_package_after_one_apt_update() {
        let first = decide(&PROMETHEUS, LOCAL);
        assert_eq!(
            lines(&first),
            [
                "DEBIAN_FRONTEND=noninteractive apt-get update -qq",
                "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus",
            ]
        );
        let again = Situation {
            apt_updated: true,
            ..LOCAL
        };
        assert_eq!(lines(&decide(&PROMETHEUS, again)).len(), 1);
    }

    #[test]
    fn a_user_who_is_not_root_is_told_the_command_instead() {
        let user = Situation {
            is_root: false,
            ..LOCAL
        };
        let message = failure(decide(&PROMETHEUS, user));
        assert!(
            message.starts_with("promtool and prometheus not found"),
            "{message}"
        );
        assert!(
            message.contains(
                "`sudo DEBIAN_FRONTEND=noninteractive apt-get update -qq && sudo \
                 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus`"
            ),
            "{message}"
        );
    }

    #[test]
    fn toolchain_tools_install_without_root() {
        let user = Situation {
            is_root: false,
            ..LOCAL
        };
        assert_eq!(
            lines(&decide(&LLVM_TOOLS, user)),
            ["rustup component add llvm-tools-preview"]
        );
        assert_eq!(
            lines(&decide(&CARGO_LLVM_COV, user)),
            ["cargo install cargo-llvm-cov --locked"]
        );
    }

    #[test]
    fn no_install_fails_naming_the_whole_command() {
        let no_install = Situation {
            may_install: false,
            apt_updated: true,
            ..LOCAL
        };
        for (tool, command) in [
            (&PROMETHEUS, "apt-get update -qq && "),
            (&LLVM_TOOLS, "`rustup component add llvm-tools-preview`"),
            (&CARGO_LLVM_COV, "`cargo install cargo-llvm-cov --locked`"),
        ] {
            let message = failure(decide(tool, no_install));
            assert!(message.contains(command), "{message}");
            assert!(message.contains("--no-install"), "{message}");
        }
    }

    #[test]
    fn a_present_tool_is_left_alone_even_without_leave_to_install() {
        let mut installer = Installer::new(false);
        assert!(
            installer
                .ensure(Path::new("."), &CARGO_LLVM_COV, || true)
                .is_ok()
        );
        let error = installer
            .ensure(Path::new("."), &CARGO_LLVM_COV, || false)
            .unwrap_err();
        assert!(
            error.to_string().contains("cargo install cargo-llvm-cov"),
            "{error}"
        );
    }

    #[test]
    fn the_effective_uid_is_the_second_field() {
        let status = "Name:\txtask\nUid:\t1000\t0\t1000\t1000\nGid:\t100\t100\t100\t100\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t0\t1000\t0\t0\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tx\n"), None);
        // The real check reads this process's own status and answers either way.
        let _ = running_as_root();
    }

    #[test]
    fn missing_programs_do_not_answer_their_version() {
        assert!(!answers_version("xtask-no-such-program-anywhere"));
    }
}
