//! `cargo xtask bench`: runs `breaker-core`'s criterion benchmarks.
//!
//! Speed is measured here, never asserted in CI: no gate runs this.

use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::process;

/// Where the benchmarks live.
const BENCH_DIR: &str = "breaker-core/benches";

pub(crate) fn run(root: &Path, criterion_args: &[String]) -> Result<()> {
    let benches = bench_files(&root.join(BENCH_DIR))?;
    if benches.is_empty() {
        bail!("breaker-core has no benchmarks: no {BENCH_DIR}/*.rs to run");
    }
    println!("==> bench: {}", benches.join(", "));
    let mut command = process::cargo(root);
    command.args(["bench", "--package", "breaker-core"]);
    if !criterion_args.is_empty() {
        command.arg("--").args(criterion_args);
    }
    process::run(&mut command)
}

/// The `.rs` files directly in `dir`, sorted; none when `dir` does not exist.
fn bench_files(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", dir.display()));
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "rs") {
            names.push(
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_benchmarks_bench_fails_with_a_clear_error() {
        let root = std::env::temp_dir().join(format!("xtask-bench-{}", std::process::id()));
        std::fs::create_dir_all(&root).unwrap();
        let error = run(&root, &[]).unwrap_err();
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(
            error.to_string(),
            "breaker-core has no benchmarks: no breaker-core/benches/*.rs to run"
        );
    }

    #[test]
    fn bench_files_are_the_rust_files_of_the_directory() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["open.rs", "closed.rs", "notes.md"] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        let names = bench_files(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(names, ["closed.rs", "open.rs"]);
    }
}
