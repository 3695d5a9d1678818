//! Keeps `docs/reuse.md` compiled: every ```rust block in it must be a verbatim excerpt of
//! an example that CI builds (`*/examples/*.rs` of the workspace), indentation aside, and
//! every example it names must exist. Change the example, then copy the excerpt again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
const DOC: &str = "docs/reuse.md";

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(WORKSPACE).join(relative))
        .unwrap_or_else(|err| panic!("{relative}: {err}"))
}

/// Every `<crate>/examples/*.rs` of the workspace, as (path relative to the root, text).
fn examples() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for member in std::fs::read_dir(WORKSPACE).unwrap() {
        let dir = member.unwrap().path().join("examples");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path: PathBuf = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "rs") {
                let relative = path
                    .strip_prefix(WORKSPACE)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                found.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    found.sort();
    found
}

/// The ```rust blocks of a markdown text: (line of the opening fence, body lines).
fn rust_blocks(text: &str) -> Vec<(usize, Vec<&str>)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, bool, Vec<&str>)> = None;
    for (i, line) in text.lines().enumerate() {
        match (&mut open, line.trim_start().strip_prefix("```")) {
            (None, Some(info)) => open = Some((i + 1, info.trim() == "rust", Vec::new())),
            (Some(_), Some(_)) => {
                if let Some((at, true, body)) = open.take() {
                    blocks.push((at, body));
                }
            }
            (Some((_, _, body)), None) => body.push(line),
            (None, None) => {}
        }
    }
    blocks
}

/// `lines` without trailing blanks and without the indentation they all share.
fn dedent(lines: &[&str]) -> Vec<String> {
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out: Vec<String> = lines
        .iter()
        .map(|l| l.get(indent..).unwrap_or("").trim_end().to_owned())
        .collect();
    while out.last().is_some_and(String::is_empty) {
        out.pop();
    }
    out
}

/// Whether `block` (already dedented) is a run of consecutive lines of `source`, up to
/// indentation.
fn contains_excerpt(source: &str, block: &[String]) -> bool {
    let lines: Vec<&str> = source.lines().collect();
    block.len() <= lines.len()
        && lines
            .windows(block.len())
            .any(|window| dedent(window) == block)
}

#[test]
fn every_rust_block_is_an_excerpt_of_a_compiled_example() {
    let doc = read(DOC);
    let examples = examples();
    assert!(!examples.is_empty(), "the workspace has no examples/*.rs");
    let blocks = rust_blocks(&doc);
    assert!(
        blocks.len() >= 5,
        "{DOC} should show each way in (pipeline, wrapper, actix, handle, control) in ```rust \
         blocks; found {}",
        blocks.len()
    );
    let mut problems = Vec::new();
    for (line, body) in blocks {
        let block = dedent(&body);
        if block.is_empty() {
            problems.push(format!("{DOC}:{line}: empty ```rust block"));
            continue;
        }
        if !examples
            .iter()
            .any(|(_, source)| contains_excerpt(source, &block))
        {
            problems.push(format!(
                "{DOC}:{line}: the ```rust block starting {:?} is not in any of {:?}; copy it \
                 again from the example",
                block[0],
                examples.iter().map(|(path, _)| path).collect::<Vec<_>>()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_example_the_doc_names_exists() {
    let doc = read(DOC);
    let mut named = Vec::new();
    // Paths such as `telemetry-http/examples/actix_service.rs`...
    for (at, _) in doc.match_indices("/examples/") {
        let start = doc[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
            .map_or(0, |i| i + 1);
        let end = at
            + doc[at..]
                .find(".rs")
                .expect("an examples/ path ends in .rs")
            + 3;
        named.push(doc[start..end].to_owned());
    }
    // ...and commands such as `cargo run -p telemetry-http --example actix_service`.
    for line in doc.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, word) in words.iter().enumerate() {
            if *word == "--example" {
                let krate = words[..i]
                    .windows(2)
                    .find(|w| w[0] == "-p")
                    .map(|w| w[1])
                    .unwrap_or_else(|| panic!("{DOC}: `{line}` names no package"));
                named.push(format!("{krate}/examples/{}.rs", words[i + 1]));
            }
        }
    }
    assert!(!named.is_empty(), "{DOC} names no example");
    for path in named {
        assert!(
            Path::new(WORKSPACE).join(&path).is_file(),
            "{DOC} names {path}, which does not exist"
        );
    }
}
