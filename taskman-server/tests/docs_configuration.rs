//! Keeps `docs/configuration.md` true. Its key tables are checked against what the real
//! binary prints with `--print-config` and no configuration (every key, every default), its
//! environment variable names against the `TASKMAN__SECTION__KEY` rule and the real loader,
//! and its examples by loading them. A failure names the key and says which side to fix.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::Command;

use taskman_server::config::{Env, Settings};

const BIN: &str = env!("CARGO_BIN_EXE_taskman-server");
const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
/// Every key table in the document starts with exactly this header row.
const TABLE_HEADER: &str = "| key | type | default | environment variable | effect |";
/// The placeholder the document uses when it explains the naming rule.
const ENV_PLACEHOLDER: &str = "TASKMAN__SECTION__KEY";

fn doc() -> String {
    std::fs::read_to_string(DOC_PATH).expect("docs/configuration.md must exist")
}

/// One row of a key table.
#[derive(Debug)]
struct Row {
    key: String,
    default: String,
    env_var: String,
    line: usize,
}

/// The rows of every key table, in document order.
fn key_rows(doc: &str) -> Vec<Row> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut rows = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim() != TABLE_HEADER {
            i += 1;
            continue;
        }
        i += 2; // the header and the |---| row
        while i < lines.len() && lines[i].trim_start().starts_with('|') {
            let cells: Vec<&str> = lines[i]
                .trim()
                .trim_start_matches('|')
                .trim_end_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            let line = i + 1;
            assert_eq!(
                cells.len(),
                5,
                "docs/configuration.md:{line}: a key table row needs 5 cells (key, type, default, \
                 environment variable, effect); a `|` inside a cell breaks the table"
            );
            let key = code_span(cells[0]).unwrap_or_else(|| {
                panic!("docs/configuration.md:{line}: the key cell must be `section.key`")
            });
            rows.push(Row {
                key: key.to_owned(),
                default: cells[2].to_owned(),
                env_var: cells[3].to_owned(),
                line,
            });
            i += 1;
        }
    }
    assert!(
        !rows.is_empty(),
        "docs/configuration.md has no key table (a table whose header is `{TABLE_HEADER}`)"
    );
    rows
}

/// The text of the first `code span` in `cell`.
fn code_span(cell: &str) -> Option<&str> {
    let start = cell.find('`')? + 1;
    let len = cell[start..].find('`')?;
    Some(&cell[start..start + len])
}

/// The fenced code blocks of a markdown text: (info string, body).
fn fenced_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut open, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => blocks.extend(open.take()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// `section.key = literal` for the TOML subset `--print-config` writes and the examples use:
/// `[section]` headers, one-line `key = value` pairs, comments and blank lines.
fn toml_keys(text: &str, origin: &str) -> Vec<(String, String)> {
    let mut section = None;
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = Some(name.trim().to_owned());
            continue;
        }
        let (key, value) = line.split_once(" = ").unwrap_or_else(|| {
            panic!(
                "{origin}: this test reads only `[section]` and `key = value` lines, not {line:?}"
            )
        });
        let section = section
            .as_deref()
            .unwrap_or_else(|| panic!("{origin}: `{key}` is outside any [section]"));
        keys.push((format!("{section}.{}", key.trim()), value.trim().to_owned()));
    }
    keys
}

/// The canonical environment variable of `section.key`.
fn env_var(key: &str) -> String {
    let (section, name) = key.split_once('.').expect("keys are section.key");
    format!(
        "TASKMAN__{}__{}",
        section.to_ascii_uppercase(),
        name.to_ascii_uppercase()
    )
}

/// A TOML literal as an environment variable's value: strings unquoted, arrays
/// comma-separated.
fn env_value(literal: &str) -> String {
    let unquote = |s: &str| s.trim().trim_matches('"').to_owned();
    match literal.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        Some(items) => items
            .split(',')
            .filter(|i| !i.trim().is_empty())
            .map(unquote)
            .collect::<Vec<_>>()
            .join(","),
        None => unquote(literal),
    }
}

/// The defaults exactly as `taskman-server --print-config` prints them with no file and no
/// variables.
fn printed_defaults() -> BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--print-config")
        .env_clear()
        .current_dir(dir.path())
        .output()
        .expect("run taskman-server --print-config");
    assert!(
        out.status.success(),
        "--print-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let keys = toml_keys(&text, "--print-config");
    assert!(!keys.is_empty(), "--print-config printed no keys:\n{text}");
    keys.into_iter().collect()
}

fn load_file(text: &str) -> Result<Settings, String> {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    Settings::load(Some(file.path()), &Env::new()).map_err(|err| err.to_string())
}

fn load_env(pairs: &[(String, String)]) -> Result<Settings, String> {
    let env: Env = pairs.iter().cloned().collect();
    Settings::load(None, &env).map_err(|err| err.to_string())
}

/// Every `section.key = value` set by a ```toml block of the document.
fn example_values(doc: &str) -> BTreeMap<String, String> {
    let mut values = BTreeMap::new();
    for (info, body) in fenced_blocks(doc).into_iter().filter(|(i, _)| i == "toml") {
        values.extend(toml_keys(
            &body,
            &format!("docs/configuration.md ```{info} block"),
        ));
    }
    values
}

#[test]
fn every_default_is_documented_with_the_value_print_config_prints() {
    let doc = doc();
    let rows = key_rows(&doc);
    let mut problems = Vec::new();
    for (key, printed) in printed_defaults() {
        let Some(row) = rows.iter().find(|r| r.key == key) else {
            problems.push(format!(
                "`{key}` (default {printed}) is missing from the key tables"
            ));
            continue;
        };
        let documented = code_span(&row.default);
        if documented != Some(printed.as_str()) {
            problems.push(format!(
                "`{key}` (line {}): documented default {:?}, but --print-config prints `{printed}`",
                row.line, row.default
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md has drifted from the configuration:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_documented_key_exists_and_is_documented_once() {
    let doc = doc();
    let rows = key_rows(&doc);
    let defaults = printed_defaults();
    let examples = example_values(&doc);
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for row in &rows {
        let key = &row.key;
        if !seen.insert(key.clone()) {
            problems.push(format!("`{key}` (line {}) is documented twice", row.line));
        }
        if !defaults.contains_key(key) && !row.default.starts_with("unset") {
            problems.push(format!(
                "`{key}` (line {}) is documented with default {:?}, but --print-config prints no \
                 such key: remove the row, or write `unset: ...` if the key has no default",
                row.line, row.default
            ));
        }
        // Proof that the key exists: the loader rejects unknown keys, so a one-key file with
        // the example's value must load.
        let Some(value) = examples.get(key) else {
            problems.push(format!(
                "`{key}` (line {}) is not set in the example configuration file",
                row.line
            ));
            continue;
        };
        let (section, name) = key.split_once('.').unwrap();
        if let Err(err) = load_file(&format!("[{section}]\n{name} = {value}\n")) {
            problems.push(format!(
                "`{key}` (line {}): the real configuration rejects `{name} = {value}`: {err}",
                row.line
            ));
        }
    }
    for key in examples.keys().filter(|k| !seen.contains(*k)) {
        problems.push(format!(
            "`{key}` is set in an example but has no row in the key tables"
        ));
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md documents keys the configuration does not have:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn environment_variable_names_are_canonical_and_work() {
    let doc = doc();
    let rows = key_rows(&doc);
    let examples = example_values(&doc);
    let mut problems = Vec::new();
    for row in &rows {
        let expected = env_var(&row.key);
        if code_span(&row.env_var) != Some(expected.as_str()) {
            problems.push(format!(
                "`{}` (line {}): environment variable {:?}, expected `{expected}`",
                row.key, row.line, row.env_var
            ));
            continue;
        }
        // The variable must set the same value as the file key does.
        let Some(value) = examples.get(&row.key) else {
            continue; // reported by every_documented_key_exists_and_is_documented_once
        };
        let (section, name) = row.key.split_once('.').unwrap();
        let from_file = load_file(&format!("[{section}]\n{name} = {value}\n"));
        let from_env = load_env(&[(expected.clone(), env_value(value))]);
        if from_file.is_err() || from_file != from_env {
            problems.push(format!(
                "`{}`: `{name} = {value}` in the file gives {from_file:?}, but {expected}={} \
                 gives {from_env:?}",
                row.key,
                env_value(value)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md names environment variables wrongly:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_variable_and_key_the_prose_mentions_is_real() {
    let doc = doc();
    let rows = key_rows(&doc);
    let keys: BTreeSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let vars: BTreeSet<String> = rows.iter().map(|r| env_var(&r.key)).collect();
    let sections: BTreeSet<&str> = keys
        .iter()
        .filter_map(|k| k.split_once('.'))
        .map(|(s, _)| s)
        .collect();
    let mut problems = BTreeSet::new();

    // Every TASKMAN__ name, and every `NAME=value` assignment the text shows.
    for (at, _) in doc.match_indices("TASKMAN__") {
        let rest = &doc[at..];
        let name_len = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        // `TASKMAN__*` and the placeholder speak of all of them.
        if name == "TASKMAN__" || name == ENV_PLACEHOLDER {
            continue;
        }
        if !vars.contains(name) {
            problems.insert(format!("{name} is not the variable of any documented key"));
            continue;
        }
        if let Some(after) = rest[name_len..].strip_prefix('=') {
            let value_len = after
                .find(|c: char| c.is_whitespace() || c == '`')
                .unwrap_or(after.len());
            let value = &after[..value_len];
            if let Err(err) = load_env(&[(name.to_owned(), value.to_owned())]) {
                problems.insert(format!("the example {name}={value} is rejected: {err}"));
            }
        }
    }

    // Every `section.key` code span names a documented key.
    for span in prose(&doc).split('`').skip(1).step_by(2) {
        if let Some((section, name)) = span.split_once('.')
            && sections.contains(section)
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            && !keys.contains(span)
        {
            problems.insert(format!("`{span}` is mentioned but is not a documented key"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/configuration.md mentions settings that do not exist:\n  {}",
        problems.into_iter().collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn examples_load_and_the_environment_example_matches_the_file() {
    let doc = doc();
    let rows = key_rows(&doc);
    let blocks = fenced_blocks(&doc);
    let files: Vec<(BTreeSet<String>, Settings)> = blocks
        .iter()
        .filter(|(info, _)| info == "toml")
        .map(|(_, body)| {
            let settings = load_file(body)
                .unwrap_or_else(|err| panic!("an example file in docs/configuration.md: {err}"));
            let keys = toml_keys(body, "example")
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            (keys, settings)
        })
        .collect();
    assert!(
        !files.is_empty(),
        "docs/configuration.md needs an example configuration file (a ```toml block)"
    );

    // A ```sh block made only of `TASKMAN__X=value` lines is the environment form of the
    // example file that sets the same keys.
    let env_blocks: Vec<Vec<(String, String)>> = blocks
        .iter()
        .filter(|(info, _)| info == "sh")
        .filter_map(|(_, body)| {
            body.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| {
                    let (var, value) = l.split_once('=')?;
                    (var.starts_with("TASKMAN__") && !value.contains(char::is_whitespace))
                        .then(|| (var.to_owned(), value.to_owned()))
                })
                .collect::<Option<Vec<_>>>()
        })
        .collect();
    assert!(
        !env_blocks.is_empty(),
        "docs/configuration.md needs the example file as environment variables (a ```sh block \
         of TASKMAN__SECTION__KEY=value lines)"
    );
    for pairs in env_blocks {
        let keys: BTreeSet<String> = pairs
            .iter()
            .map(|(var, _)| {
                rows.iter()
                    .find(|row| env_var(&row.key) == *var)
                    .map(|row| row.key.clone())
                    .unwrap_or_else(|| panic!("{var} is not the variable of any documented key"))
            })
            .collect();
        let from_env = load_env(&pairs)
            .unwrap_or_else(|err| panic!("the environment example is rejected: {err}"));
        let (_, from_file) = files
            .iter()
            .find(|(file_keys, _)| *file_keys == keys)
            .expect("the environment example sets other keys than every example file");
        assert_eq!(
            &from_env, from_file,
            "docs/configuration.md: the environment example and the example file differ"
        );
    }
}

/// The document without its fenced code blocks.
fn prose(doc: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in doc.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
