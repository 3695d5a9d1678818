//! Facts about the tree, as `#[test]`s: plain `cargo test` enforces them, and
//! so does the `tests` gate of `cargo xtask ci`.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{licences, process, workspace_root};

/// `std` modules that mean threads or I/O; the sans-I/O core uses none.
const FORBIDDEN_STD_MODULES: [&str; 6] = ["thread", "net", "fs", "io", "process", "env"];

/// Paths that read a clock.
const CLOCK_READS: [&[&str]; 3] = [
    &["Instant", "::", "now"],
    &["SystemTime", "::", "now"],
    &["UNIX_EPOCH"],
];

/// Crates nobody else may depend on.
const UNPUBLISHED: [&str; 3] = ["taskman-server", "xtask", "tests"];

#[test]
fn breaker_core_reads_no_clock_and_does_no_io() {
    let src = workspace_root().join("breaker-core/src");
    let mut violations = Vec::new();
    for file in rust_files(&src) {
        let text = fs::read_to_string(&file).unwrap();
        let shown = file
            .strip_prefix(workspace_root())
            .unwrap_or(&file)
            .display()
            .to_string();
        violations.extend(
            clock_and_io_uses(&text)
                .into_iter()
                .map(|(line, what)| format!("{shown}:{line}: {what}")),
        );
    }
    assert!(
        violations.is_empty(),
        "breaker-core takes `now` from its caller and does no I/O; \
         tests that need a clock belong in breaker-core/tests/:\n{}",
        violations.join("\n")
    );
}

#[test]
fn breaker_core_depends_on_std_alone() {
    let core = workspace_package("breaker-core");
    let shipped: Vec<&str> = core["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|dependency| dependency["kind"].as_str() != Some("dev"))
        .map(|dependency| dependency["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        shipped,
        Vec::<&str>::new(),
        "breaker-core's [dependencies] must stay empty"
    );
}

#[test]
fn every_crate_uses_the_workspace_lints() {
    let mut missing = Vec::new();
    for package in workspace_packages() {
        let manifest = package["manifest_path"].as_str().unwrap();
        let text = fs::read_to_string(manifest).unwrap();
        if !section_has_line(&text, "[lints]", "workspace = true") {
            missing.push(manifest.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "no `[lints] workspace = true` in {missing:?}"
    );
}

#[test]
fn server_xtask_and_tests_are_not_published() {
    for name in UNPUBLISHED {
        let package = workspace_package(name);
        // `cargo metadata` shows `publish = false` as an empty registry list.
        assert_eq!(
            package["publish"],
            Value::Array(Vec::new()),
            "{name} needs `publish = false`"
        );
    }
}

#[test]
fn readme_names_the_ci_command() {
    let readme = fs::read_to_string(workspace_root().join("README.md"))
        .expect("README.md at the workspace root");
    assert!(
        readme.contains("cargo xtask ci"),
        "README.md must name `cargo xtask ci`"
    );
}

/// The lines `.ci/run` may have besides comments and blank lines.
const CI_SCRIPT_LINES: [&str; 3] = [
    "set -euo pipefail",
    r#"cd "$(dirname "$0")/..""#,
    "exec cargo xtask ci",
];

#[test]
fn ci_script_runs_exactly_cargo_xtask_ci() {
    let path = workspace_root().join(".ci/run");
    let script = fs::read_to_string(&path).unwrap();
    let calls: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#') && line.contains("cargo xtask"))
        .collect();
    assert!(
        matches!(calls.as_slice(), ["exec cargo xtask ci" | "cargo xtask ci"]),
        ".ci/run must call exactly `cargo xtask ci`, once; it has {calls:?}"
    );
    // Installing belongs to the gates, where `cargo xtask ci` run by hand does it too.
    let other: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter(|line| !CI_SCRIPT_LINES.contains(line))
        .collect();
    assert!(
        other.is_empty(),
        ".ci/run must do nothing but call `cargo xtask ci`; it also has {other:?}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_ne!(mode & 0o111, 0, ".ci/run must be executable");
    }
}

/// Extensions of the files whose text must explain itself.
const SELF_CONTAINED_EXTENSIONS: [&str; 5] = ["rs", "md", "toml", "yml", "yaml"];

#[test]
fn the_repository_cites_only_files_inside_it() {
    let root = workspace_root();
    let mut citations = Vec::new();
    for file in tracked_files(&root) {
        let shown = file.display().to_string();
        if shown.starts_with("target/")
            || !file
                .extension()
                .is_some_and(|ext| SELF_CONTAINED_EXTENSIONS.iter().any(|e| ext == *e))
        {
            continue;
        }
        let Ok(text) = fs::read_to_string(root.join(&file)) else {
            continue;
        };
        citations.extend(
            outside_citations(&text)
                .into_iter()
                .map(|(line, what)| format!("{shown}:{line}: {what}")),
        );
    }
    assert!(
        citations.is_empty(),
        "cite files in this repository (usually docs/contract.md), not requirement \
         documents or issue numbers kept elsewhere:\n{}",
        citations.join("\n")
    );
}

#[test]
fn outside_citations_are_found_in_any_case() {
    // Spelled in pieces so that this file passes the check it tests.
    let contract = ["CONTRACT", ".md"].concat();
    let shared = ["../", "shared/"].concat();
    let (upper, lower) = ("Issue", "issue");
    let text = format!(
        "as {contract} section 2 says\nsee {shared}notes\n\
         ({upper} 7) and {lower} #12 and {lower}s 3\n\
         docs/contract.md, an issue, tissue 9, issue number, reissue 4\n"
    );
    let found: Vec<(usize, String)> = outside_citations(&text);
    assert_eq!(
        found,
        [
            (1, contract.clone()),
            (2, shared),
            (3, ["Issue", " 7"].concat()),
            (3, ["issue", " #12"].concat()),
            (3, ["issues", " 3"].concat()),
        ]
    );
}

/// Citations of documents outside the repository in `text`, as (line, what):
/// the requirement file, the directory it lives in, or an issue by number.
fn outside_citations(text: &str) -> Vec<(usize, String)> {
    let outside_files = [["CONTRACT", ".md"].concat(), ["../", "shared/"].concat()];
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        for file in &outside_files {
            if line.contains(file.as_str()) {
                found.push((index + 1, file.clone()));
            }
        }
        found.extend(
            issue_numbers(line)
                .into_iter()
                .map(|cite| (index + 1, cite)),
        );
    }
    found
}

/// `issue N`, `issues N`, `issue #N` in `line`, in any case, as written.
fn issue_numbers(line: &str) -> Vec<String> {
    let lower = line.to_ascii_lowercase();
    let word = "issue";
    let mut found = Vec::new();
    for (at, _) in lower.match_indices(word) {
        let starts_word = !lower[..at]
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric);
        let mut end = at + word.len();
        if lower[end..].starts_with('s') {
            end += 1;
        }
        let rest = &lower[end..];
        let gap = rest.len() - rest.trim_start_matches([' ', '#']).len();
        let digits = rest[gap..].len()
            - rest[gap..]
                .trim_start_matches(|c: char| c.is_ascii_digit())
                .len();
        if starts_word && gap > 0 && digits > 0 {
            found.push(line[at..end + gap + digits].to_owned());
        }
    }
    found
}

/// The files git tracks under `root`, relative to it; every file under it
/// (but `target/` and `.git/`) when git cannot say.
fn tracked_files(root: &Path) -> Vec<PathBuf> {
    let mut git = std::process::Command::new("git");
    git.args(["ls-files", "-z"]).current_dir(root);
    if let Ok(output) = process::output(&mut git) {
        return output
            .stdout
            .split(|byte| *byte == 0)
            .filter(|name| !name.is_empty())
            .map(|name| PathBuf::from(String::from_utf8_lossy(name).into_owned()))
            .collect();
    }
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            if path.is_dir() {
                if relative != Path::new("target") && relative != Path::new(".git") {
                    dirs.push(path);
                }
            } else {
                files.push(relative);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn library_crates_depend_on_no_gpl_code_by_default() {
    if let Err(error) = licences::check_libraries(&workspace_root()) {
        panic!("{error:#}");
    }
}

#[test]
fn the_clock_and_io_scan_sees_code_but_not_comments() {
    let code = "\
//! Time comes from the caller, never `Instant::now()`.
use std::time::{Duration, Instant};
use std::{collections::VecDeque, io::Write};
/// let start = Instant::now();
fn f() { let _ = std::thread::current(); } // std::fs in a comment
fn g() -> Instant { Instant :: now() }
const E: SystemTime = UNIX_EPOCH;
use std::{
    net::TcpStream,
    sync::{Arc, atomic::AtomicU64},
};
fn h() { let _ = mystd::fs::read; let _ = SystemTime::now(); }
";
    assert_eq!(
        clock_and_io_uses(code),
        [
            (3, "std::io".to_owned()),
            (5, "std::thread".to_owned()),
            (6, "Instant::now".to_owned()),
            (7, "UNIX_EPOCH".to_owned()),
            (9, "std::net".to_owned()),
            (12, "SystemTime::now".to_owned()),
        ]
    );
}

#[test]
fn section_lines_are_found_only_in_their_section() {
    let manifest = "[package]\nname = \"x\"\nworkspace = true\n\n[lints]\n workspace  =  true \n";
    assert!(section_has_line(manifest, "[lints]", "workspace = true"));
    assert!(!section_has_line(
        "[lints]\nrust.missing_docs = \"warn\"\n[x]\nworkspace = true\n",
        "[lints]",
        "workspace = true"
    ));
}

/// A token of Rust code: an identifier, `::`, or one punctuation character.
#[derive(Debug)]
struct Token<'t> {
    text: &'t str,
    line: usize,
}

/// Clock reads and uses of forbidden `std` modules in `code`, as
/// (line, what), ignoring `//` comments (doc examples may build a base time).
fn clock_and_io_uses(code: &str) -> Vec<(usize, String)> {
    let tokens = tokenize(code);
    let mut uses = Vec::new();
    for (at, token) in tokens.iter().enumerate() {
        let texts = || tokens[at..].iter().map(|t| t.text);
        for read in CLOCK_READS {
            if texts().take(read.len()).eq(read.iter().copied()) {
                uses.push((token.line, read.concat()));
            }
        }
        if token.text == "std" && tokens.get(at + 1).is_some_and(|t| t.text == "::") {
            for (line, module) in std_modules(&tokens[at + 2..]) {
                if FORBIDDEN_STD_MODULES.contains(&module) {
                    uses.push((line, format!("std::{module}")));
                }
            }
        }
    }
    uses
}

/// The modules named right after `std::`: one, or each item of a `{...}` group.
fn std_modules<'t>(after: &[Token<'t>]) -> Vec<(usize, &'t str)> {
    let Some(first) = after.first() else {
        return Vec::new();
    };
    if first.text != "{" {
        return vec![(first.line, first.text)];
    }
    let mut modules = Vec::new();
    let mut depth = 0;
    let mut item_start = true;
    for token in after {
        match token.text {
            "{" => {
                depth += 1;
                item_start = depth == 1;
            }
            "}" => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            "," => item_start = depth == 1,
            text => {
                if item_start {
                    modules.push((token.line, text));
                }
                item_start = false;
            }
        }
    }
    modules
}

fn tokenize(code: &str) -> Vec<Token<'_>> {
    let mut tokens = Vec::new();
    for (index, line) in code.lines().enumerate() {
        let code = line.find("//").map_or(line, |comment| &line[..comment]);
        let mut rest = code;
        while let Some(start) = rest.find(|c: char| !c.is_whitespace()) {
            rest = &rest[start..];
            let word = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let length = match word {
                0 if rest.starts_with("::") => 2,
                0 => rest.chars().next().map_or(1, char::len_utf8),
                _ => word,
            };
            tokens.push(Token {
                text: &rest[..length],
                line: index + 1,
            });
            rest = &rest[length..];
        }
    }
    tokens
}

/// Whether `manifest` has, inside the `[header]` section, a line equal to
/// `wanted` once spaces are normalised.
fn section_has_line(manifest: &str, header: &str, wanted: &str) -> bool {
    let squeeze = |line: &str| line.split_whitespace().collect::<String>();
    let mut inside = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
        } else if inside && squeeze(line) == squeeze(wanted) {
            return true;
        }
    }
    false
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The workspace members, as `cargo metadata --no-deps` describes them.
fn workspace_packages() -> Vec<Value> {
    let mut command = process::cargo(&workspace_root());
    command.args(["metadata", "--no-deps", "--format-version", "1"]);
    let output = process::output(&mut command).unwrap();
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"].as_array().unwrap().clone()
}

fn workspace_package(name: &str) -> Value {
    workspace_packages()
        .into_iter()
        .find(|package| package["name"] == name)
        .unwrap_or_else(|| panic!("{name} is not a workspace member"))
}
