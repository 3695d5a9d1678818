//! The licence check: no library crate may depend on GPL-family code
//! (GPL, LGPL, AGPL) in its default features.
//!
//! Each library crate's graph comes from `cargo tree -p <crate> -e normal`,
//! one crate per call: with `-p` cargo resolves features for that package
//! alone, so a feature that only `taskman-server` turns on does not leak into
//! a library's graph (the fixture tests below show it). Only normal edges
//! count: dev- and build-dependencies do not ship in the library.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result};

use crate::process;

/// The crates other people may depend on; their default graphs must be GPL-free.
pub(crate) const LIBRARY_CRATES: [&str; 3] = ["breaker-core", "breaker-otel", "telemetry-http"];

/// A package in a library crate's graph whose licence fails the check.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Offence {
    /// `name vX.Y.Z` of every package from the library crate down to the offender.
    pub(crate) path: Vec<String>,
    /// The offender's licence expression; `None` when it declares none.
    pub(crate) licence: Option<String>,
}

impl fmt::Display for Offence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offender = self.path.last().map_or("?", String::as_str);
        match &self.licence {
            Some(licence) => write!(f, "{offender} is licensed `{licence}`")?,
            None => write!(f, "{offender} declares no `license` expression")?,
        }
        write!(f, ", pulled in by {}", self.path.join(" -> "))
    }
}

/// What the check found for one crate.
#[derive(Debug)]
pub(crate) struct Report {
    /// How many distinct packages the crate's default graph holds, itself included.
    pub(crate) packages: usize,
    pub(crate) offences: Vec<Offence>,
}

/// Checks the default-feature, normal-edge dependency graph of `krate`.
pub(crate) fn check_crate(root: &Path, krate: &str) -> Result<Report> {
    let mut command = process::cargo(root);
    command.args([
        "tree",
        "--package",
        krate,
        "--edges",
        "normal",
        "--target",
        "all",
        "--prefix",
        "depth",
        "--format",
        "{p}|{l}",
    ]);
    let output = process::output(&mut command)?;
    let text = String::from_utf8(output.stdout).context("`cargo tree` printed non-UTF-8")?;
    let nodes = parse_tree(&text).with_context(|| format!("reading `cargo tree` of {krate}"))?;
    Ok(examine(&nodes))
}

/// Checks every library crate; the error lists every offence found.
pub(crate) fn check_libraries(root: &Path) -> Result<()> {
    let mut offences = Vec::new();
    for krate in LIBRARY_CRATES {
        let report = check_crate(root, krate)?;
        println!(
            "{krate}: {} licence offence(s) among the {} package(s) of its default graph",
            report.offences.len(),
            report.packages
        );
        offences.extend(report.offences);
    }
    if offences.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = offences
        .iter()
        .map(|offence| format!("  {offence}"))
        .collect();
    anyhow::bail!(
        "library crates must not depend on GPL-family code in their default features:\n{}",
        lines.join("\n")
    )
}

/// One line of `cargo tree --prefix depth --format '{p}|{l}'`.
#[derive(Debug, PartialEq)]
struct Node {
    depth: usize,
    /// `name vX.Y.Z`, without the source in parentheses.
    package: String,
    licence: Option<String>,
}

fn parse_tree(text: &str) -> Result<Vec<Node>> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Result<Node> {
    let digits = line.len() - line.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let depth = line[..digits]
        .parse()
        .with_context(|| format!("no depth prefix in `{line}`"))?;
    let (package, licence) = line[digits..]
        .split_once('|')
        .with_context(|| format!("no `|` between package and licence in `{line}`"))?;
    // cargo marks a package whose dependencies were already shown with " (*)"
    // after the whole formatted line.
    let licence = licence.trim().trim_end_matches("(*)").trim();
    let package = package
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Node {
        depth,
        package,
        licence: (!licence.is_empty()).then(|| licence.to_owned()),
    })
}

fn examine(nodes: &[Node]) -> Report {
    let mut path: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut offences = Vec::new();
    for node in nodes {
        path.truncate(node.depth);
        path.push(node.package.clone());
        if !seen.insert(node.package.clone()) {
            continue;
        }
        let acceptable = node.licence.as_deref().is_some_and(|l| !requires_gpl(l));
        if !acceptable {
            offences.push(Offence {
                path: path.clone(),
                licence: node.licence.clone(),
            });
        }
    }
    Report {
        packages: seen.len(),
        offences,
    }
}

/// Whether every way to satisfy the SPDX `expression` involves a GPL-family
/// licence. `MIT OR GPL-3.0` does not; `GPL-3.0-or-later` and `MIT AND
/// LGPL-2.1` do. An expression we cannot read counts as requiring GPL, so the
/// check fails closed.
pub(crate) fn requires_gpl(expression: &str) -> bool {
    let tokens = tokenize(expression);
    let mut parser = Parser {
        tokens: &tokens,
        next: 0,
    };
    match parser.any_of() {
        Some(free) if parser.next == tokens.len() => !free,
        _ => true,
    }
}

fn is_gpl_family(id: &str) -> bool {
    let id = id.to_ascii_uppercase();
    ["GPL", "LGPL", "AGPL"].iter().any(|family| {
        id == *family
            || id.starts_with(&format!("{family}-"))
            || id.starts_with(&format!("{family}+"))
    })
}

fn tokenize(expression: &str) -> Vec<String> {
    // Old crates write `MIT/Apache-2.0` for `MIT OR Apache-2.0`.
    expression
        .replace('(', " ( ")
        .replace(')', " ) ")
        .replace('/', " OR ")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Recursive descent over `or := and (OR and)*`, `and := term (AND term)*`,
/// `term := ( or ) | id [WITH id]`; each rule returns whether its part can be
/// satisfied without a GPL-family licence, or `None` when malformed.
struct Parser<'t> {
    tokens: &'t [String],
    next: usize,
}

impl Parser<'_> {
    fn peek_is(&self, keyword: &str) -> bool {
        self.tokens
            .get(self.next)
            .is_some_and(|token| token.eq_ignore_ascii_case(keyword))
    }

    fn any_of(&mut self) -> Option<bool> {
        let mut free = self.all_of()?;
        while self.peek_is("OR") {
            self.next += 1;
            free |= self.all_of()?;
        }
        Some(free)
    }

    fn all_of(&mut self) -> Option<bool> {
        let mut free = self.term()?;
        while self.peek_is("AND") {
            self.next += 1;
            free &= self.term()?;
        }
        Some(free)
    }

    fn term(&mut self) -> Option<bool> {
        let token = self.tokens.get(self.next)?;
        self.next += 1;
        if token == "(" {
            let free = self.any_of()?;
            if !self.peek_is(")") {
                return None;
            }
            self.next += 1;
            return Some(free);
        }
        if [")", "OR", "AND", "WITH"]
            .iter()
            .any(|k| token.eq_ignore_ascii_case(k))
        {
            return None;
        }
        if self.peek_is("WITH") {
            // An exception (e.g. Classpath) relaxes a licence but leaves it GPL.
            self.next += 1;
            self.tokens.get(self.next)?;
            self.next += 1;
        }
        Some(!is_gpl_family(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::PathBuf;

    #[test]
    fn licence_expressions_require_gpl_only_when_no_choice_avoids_it() {
        for (expression, expected) in [
            ("MIT OR Apache-2.0", false),
            ("MIT/Apache-2.0", false),
            ("Apache-2.0 WITH LLVM-exception OR MIT", false),
            ("MIT OR GPL-3.0-or-later", false),
            ("(MIT OR Apache-2.0) AND Unicode-3.0", false),
            ("Apache-2.0 AND ISC", false),
            ("Unlicense/MIT", false),
            ("GPL-3.0-or-later", true),
            ("GPL-2.0+", true),
            ("gpl-3.0", true),
            ("LGPL-2.1-only", true),
            ("AGPL-3.0", true),
            ("MIT AND LGPL-2.1-or-later", true),
            ("(MIT OR GPL-2.0) AND GPL-3.0", true),
            ("GPL-2.0 WITH Classpath-exception-2.0", true),
            ("GPL-2.0 OR LGPL-2.1", true),
            // Malformed expressions fail closed.
            ("MIT OR", true),
            ("(MIT", true),
            ("MIT Apache-2.0", true),
        ] {
            assert_eq!(requires_gpl(expression), expected, "{expression}");
        }
    }

    #[test]
    fn a_tree_line_gives_depth_package_and_licence() {
        let node = parse_line("2gpl v0.1.0 (/tmp/ws/gpl)|GPL-3.0-or-later (*)").unwrap();
        assert_eq!(
            node,
            Node {
                depth: 2,
                package: "gpl v0.1.0".to_owned(),
                licence: Some("GPL-3.0-or-later".to_owned()),
            }
        );
        assert_eq!(
            parse_line("1serde_derive v1.0.0 (proc-macro)|")
                .unwrap()
                .licence,
            None
        );
        assert!(parse_line("serde v1.0.0|MIT").is_err());
    }

    /// A throw-away workspace of path crates (no registry needed):
    /// `lib` and `chain` are libraries; `app` turns on `dep`'s `gpl` feature.
    struct Fixture {
        root: PathBuf,
    }

    impl Fixture {
        fn new(name: &str) -> Self {
            let root = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            let fixture = Self { root };
            fixture.write(
                "Cargo.toml",
                "[workspace]\nresolver = \"3\"\nmembers = [\"lib\", \"chain\", \"app\", \"dep\", \"mid\", \"gpl\", \"nolicence\"]\n",
            );
            fixture.package("lib", "MIT OR Apache-2.0", "dep = { path = \"../dep\", default-features = false }\n[dev-dependencies]\ngpl = { path = \"../gpl\" }\n[build-dependencies]\ngpl = { path = \"../gpl\" }");
            fixture.package(
                "app",
                "MIT",
                "dep = { path = \"../dep\", features = [\"gpl\"] }\nlib = { path = \"../lib\" }",
            );
            fixture.package(
                "dep",
                "MIT",
                "gpl = { path = \"../gpl\", optional = true }\n[features]\ngpl = [\"dep:gpl\"]",
            );
            fixture.package(
                "chain",
                "MIT",
                "mid = { path = \"../mid\" }\nnolicence = { path = \"../nolicence\" }",
            );
            fixture.package("mid", "MIT/Apache-2.0", "gpl = { path = \"../gpl\" }");
            fixture.package("gpl", "GPL-3.0-or-later", "");
            fixture.package("nolicence", "", "");
            fixture
        }

        fn package(&self, name: &str, licence: &str, dependencies: &str) {
            let licence = if licence.is_empty() {
                String::new()
            } else {
                format!("license = \"{licence}\"\n")
            };
            self.write(
                &format!("{name}/Cargo.toml"),
                &format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n{licence}\n[dependencies]\n{dependencies}\n"),
            );
            self.write(&format!("{name}/src/lib.rs"), "");
            self.write(&format!("{name}/build.rs"), "fn main() {}\n");
        }

        fn write(&self, relative: &str, text: &str) {
            let path = self.root.join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn a_feature_only_a_binary_enables_and_dev_or_build_deps_stay_out_of_a_library() {
        let fixture = Fixture::new("licence-unification");
        let report = check_crate(&fixture.root, "lib").unwrap();
        assert_eq!(report.offences, []);
        assert_eq!(report.packages, 2, "lib and dep, without gpl");
        // The binary itself does reach gpl: the fixture is not vacuous.
        let app = check_crate(&fixture.root, "app").unwrap();
        assert_eq!(app.offences.len(), 1, "{:?}", app.offences);
    }

    #[test]
    fn gpl_and_missing_licences_are_reported_with_the_path_that_pulls_them() {
        let fixture = Fixture::new("licence-path");
        let report = check_crate(&fixture.root, "chain").unwrap();
        let shown: Vec<String> = report.offences.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "gpl v0.1.0 is licensed `GPL-3.0-or-later`, pulled in by chain v0.1.0 -> mid v0.1.0 -> gpl v0.1.0",
                "nolicence v0.1.0 declares no `license` expression, pulled in by chain v0.1.0 -> nolicence v0.1.0",
            ]
        );
    }
}
