//! Starting `cargo` and other tools: every command is echoed before it runs,
//! and a command that cannot start or exits non-zero becomes an error that
//! quotes it.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// A `cargo` command run from the workspace root, with the same cargo that
/// runs us (cargo sets `CARGO` for `cargo run` and `cargo test`).
pub(crate) fn cargo(root: &Path) -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.current_dir(root);
    // CI builds from a fresh clone: incremental compilation only costs there (time, and
    // gigabytes of disk), so it is off unless the caller chose.
    if std::env::var_os("CI").is_some() && std::env::var_os("CARGO_INCREMENTAL").is_none() {
        command.env("CARGO_INCREMENTAL", "0");
    }
    command
}

/// Runs `command` with inherited output; fails unless it exits with 0.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let shown = display(command);
    println!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` quietly and returns its output; fails unless it exits with 0,
/// quoting what it printed on stderr.
pub(crate) fn output(command: &mut Command) -> Result<Output> {
    let shown = display(command);
    let output = command
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim_end()
        );
    }
    Ok(output)
}

/// Whether `command` starts and exits with 0; its output is discarded.
pub(crate) fn succeeds(command: &mut Command) -> bool {
    command
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false)
}

/// The command as a shell line: environment overrides first, `cargo` by its
/// short name rather than the toolchain path in `CARGO`.
pub(crate) fn display(command: &Command) -> String {
    let env = command.get_envs().filter_map(|(key, value)| {
        value.map(|value| format!("{}={}", key.to_string_lossy(), value.to_string_lossy()))
    });
    let program = Path::new(command.get_program())
        .file_name()
        .unwrap_or(OsStr::new("?"))
        .to_string_lossy()
        .into_owned();
    let args = command
        .get_args()
        .map(|arg| arg.to_string_lossy().into_owned());
    env.chain([program])
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_env_overrides_and_the_short_program_name() {
        let mut command = Command::new("/opt/toolchain/bin/cargo");
        command
            .args(["doc", "--no-deps"])
            .env("RUSTDOCFLAGS", "-Dwarnings");
        assert_eq!(
            display(&command),
            "RUSTDOCFLAGS=-Dwarnings cargo doc --no-deps"
        );
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let error = run(&mut Command::new("xtask-no-such-program-anywhere")).unwrap_err();
        assert!(format!("{error:#}").contains("could not start `xtask-no-such-program-anywhere`"));
        assert!(!succeeds(&mut Command::new(
            "xtask-no-such-program-anywhere"
        )));
    }

    #[test]
    fn a_failing_command_is_an_error_quoting_its_stderr() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo broken pipe dream >&2; exit 3"]);
        let error = format!("{:#}", output(&mut command).unwrap_err());
        assert!(error.contains("exit status: 3"), "{error}");
        assert!(error.contains("broken pipe dream"), "{error}");
    }
}
