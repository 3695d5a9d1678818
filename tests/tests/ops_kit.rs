//! The operations kit in `docs/` checked against the service it documents.
//!
//! The Grafana dashboard and the alert rules may only query metric names
//! that `/metrics` really exports: a renamed metric would otherwise leave an
//! empty panel or an alert that can never fire, and nobody would notice
//! until an outage. The exported names are read from `telemetry-http`'s
//! snapshots of its `/metrics` text (what CI verifies the service serves),
//! plus Prometheus' own `up`.
//!
//! With `promtool` on `PATH` (Debian's `prometheus` package; `PROMTOOL` may
//! name another binary) the alert rules
//! are also checked and unit-tested (`docs/alerts.test.yml`), and every
//! dashboard query is parsed as PromQL. Without it those tests say so and
//! pass, unless `TASKMAN_REQUIRE_PROMTOOL=1` (as `cargo xtask ci` sets).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The metric families the contract (`docs/contract.md` section 5) and
/// `telemetry-http`'s HTTP middleware promise, which the docs rely on.
const DOCUMENTED_FAMILIES: [&str; 5] = [
    "circuit_state",
    "spans_processed_total",
    "circuit_transitions_total",
    "http_server_requests_total",
    "http_server_request_duration_seconds",
];

/// Series Prometheus adds to every scrape by itself.
const PROMETHEUS_SERIES: [&str; 1] = ["up"];

const DASHBOARD_UID: &str = "taskman-telemetry";

const REQUIRE_PROMTOOL: &str = "TASKMAN_REQUIRE_PROMTOOL";

/// The promtool binary: `PROMTOOL` if set, else `promtool` on `PATH`.
fn promtool_program() -> String {
    std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_owned())
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// What /metrics exports
// ---------------------------------------------------------------------------

/// `(family, type)` from every `# TYPE` line of telemetry-http's `/metrics`
/// snapshots.
fn exported_families() -> BTreeSet<(String, String)> {
    let dir = root().join("telemetry-http/tests/http/snapshots");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut families = BTreeSet::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "snap") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        families.extend(telemetry_http::test_util::families(&text));
    }
    assert!(
        !families.is_empty(),
        "no `# TYPE` line in any snapshot under {}: the /metrics snapshot moved",
        dir.display()
    );
    families
}

/// Every series name a query may use: the exported families (a histogram
/// as its `_bucket`, `_sum` and `_count` series) and Prometheus' own.
fn queryable_names() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = PROMETHEUS_SERIES.iter().map(|s| (*s).to_owned()).collect();
    for (name, kind) in exported_families() {
        match kind.as_str() {
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            "summary" => {
                names.insert(format!("{name}_sum"));
                names.insert(format!("{name}_count"));
                names.insert(name);
            }
            _ => {
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn every_documented_metric_family_is_exported() {
    let exported: BTreeSet<String> = exported_families().into_iter().map(|(n, _)| n).collect();
    for family in DOCUMENTED_FAMILIES {
        assert!(
            exported.contains(family),
            "docs/ rely on `{family}`, but /metrics (telemetry-http's snapshots) has only {exported:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// A small PromQL scanner: which identifiers are metric names
// ---------------------------------------------------------------------------

/// Keywords that take a parenthesised label list, which holds no metric names.
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Words that are neither metrics nor followed by a parenthesis.
const BARE_KEYWORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Index just past the string literal that starts at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// Index just past the bracket closing the one at `start`, ignoring
/// brackets inside string literals (a label value such as "/tasks/{id}").
fn skip_group(chars: &[char], start: usize, close: char) -> usize {
    let open = chars[start];
    let mut depth = 0;
    let mut i = start;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The metric names a PromQL expression (possibly with Grafana `$variables`)
/// selects: identifiers outside label matchers, ranges, strings and label
/// lists, that are not functions, aggregations or keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '}');
        } else if c == '[' {
            i = skip_group(&chars, i, ']');
        } else if c == '$' {
            // A Grafana variable: `$name` or `${name}`.
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(&chars, i, '}');
            } else {
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration such as `0.99`, `1e3` or `5m`.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let before_paren = chars.get(next) == Some(&'(');
            // `sum by (le) (...)`: an aggregation whose grouping comes first.
            let mut after = next;
            while after < chars.len() && is_ident_char(chars[after]) {
                after += 1;
            }
            let next_word: String = chars[next..after].iter().collect();
            let before_grouping = matches!(next_word.as_str(), "by" | "without");
            let lower = word.to_ascii_lowercase();
            if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                if before_paren {
                    i = skip_group(&chars, next, ')');
                }
            } else if !before_paren && !before_grouping && !BARE_KEYWORDS.contains(&lower.as_str())
            {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_scanner_finds_metric_names_and_nothing_else() {
    let check = |expr: &str, expected: &[&str]| {
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(metric_names(expr), expected, "{expr}");
    };
    check("up{job=\"taskman\"} == 0", &["up"]);
    check("absent(up{job=\"taskman\"})", &["up"]);
    check(
        "histogram_quantile(0.99, sum by (le, route) (rate(http_server_request_duration_seconds_bucket{route=\"/tasks/{id}\", instance=~\"$instance\"}[$__rate_interval])))",
        &["http_server_request_duration_seconds_bucket"],
    );
    check(
        "sum(rate(a_total[5m])) by (job) / ignoring(outcome) group_left(x) b offset 1h > bool 0.5 unless on (job) c",
        &["a_total", "b", "c"],
    );
    check(
        "max_over_time(circuit_state[15m:1m]) > 0 and circuit_state == Inf",
        &["circuit_state"],
    );
    check(
        "label_replace(x, \"dst\", \"$1\", \"src\", \"(.*)\")",
        &["x"],
    );
    check("${datasource_var} 1e3 .5", &[]);
}

/// Names in `expr` that `/metrics` does not export, as an error message.
fn unknown_names(expr: &str, known: &BTreeSet<String>) -> Option<String> {
    let unknown: Vec<String> = metric_names(expr)
        .into_iter()
        .filter(|name| !known.contains(name))
        .collect();
    (!unknown.is_empty()).then(|| format!("{unknown:?} in `{expr}`"))
}

// ---------------------------------------------------------------------------
// The Grafana dashboard
// ---------------------------------------------------------------------------

fn dashboard() -> Value {
    serde_json::from_str(&read("docs/grafana-dashboard.json"))
        .unwrap_or_else(|e| panic!("docs/grafana-dashboard.json is not JSON: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            if let Some(nested) = panel.get("panels") {
                walk(nested, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// `(where, PromQL)` for every panel target and every query variable.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("untitled");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel `{title}` has a target without `expr`"));
            queries.push((format!("panel `{title}`"), expr.to_owned()));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or("?");
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap_or_else(|| panic!("variable `{name}` has no query"));
        // Grafana's `label_values(selector, label)`: only the selector is PromQL.
        let promql = match query.trim().strip_prefix("label_values(") {
            Some(args) => {
                let args = args.trim_end().trim_end_matches(')');
                match args.rsplit_once(',') {
                    Some((selector, _label)) => selector.trim().to_owned(),
                    None => String::new(),
                }
            }
            None => query.to_owned(),
        };
        if !promql.is_empty() {
            queries.push((format!("variable `{name}`"), promql));
        }
    }
    queries
}

#[test]
fn dashboard_is_importable_anywhere() {
    let dashboard = dashboard();
    assert_eq!(
        dashboard["id"],
        Value::Null,
        "`id` must be null so that importing creates the dashboard instead of overwriting another"
    );
    assert_eq!(
        dashboard["uid"], DASHBOARD_UID,
        "the `uid` is what links and provisioning point at: keep it stable"
    );
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating.list");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource" && v["query"] == "prometheus")
        .expect("a template variable of type `datasource` choosing a Prometheus data source");
    let var_ref = format!(
        "${{{}}}",
        datasource["name"].as_str().expect("variable name")
    );

    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or("untitled");
        if let Some(id) = panel["id"].as_u64()
            && !ids.insert(id)
        {
            problems.push(format!("panel `{title}`: duplicate id {id}"));
        }
        let sources = std::iter::once(&panel["datasource"]).chain(
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| &t["datasource"]),
        );
        for source in sources.filter(|s| !s.is_null()) {
            if source["uid"] != var_ref.as_str() {
                problems.push(format!(
                    "panel `{title}`: data source {source} is not the variable {var_ref}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(
        !dashboard_queries(&dashboard).is_empty(),
        "the dashboard has no queries"
    );
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let known = queryable_names();
    let dashboard = dashboard();
    let problems: Vec<String> = dashboard_queries(&dashboard)
        .into_iter()
        .filter_map(|(place, expr)| unknown_names(&expr, &known).map(|e| format!("{place}: {e}")))
        .collect();
    assert!(
        problems.is_empty(),
        "docs/grafana-dashboard.json queries metrics that /metrics does not export \
         (known: {known:?}):\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// The alert rules
// ---------------------------------------------------------------------------

/// The number of spaces a line starts with.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// `(rule name, expr)` of every rule in a Prometheus rule file, read as text:
/// `expr:` as a one-line plain or quoted scalar, or a `|`/`>` block.
fn rule_exprs(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut rules = Vec::new();
    let mut current = String::from("?");
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ").trim_start();
        for key in ["alert:", "record:"] {
            if let Some(name) = trimmed.strip_prefix(key) {
                current = name.trim().to_owned();
            }
        }
        let Some(value) = trimmed.strip_prefix("expr:") else {
            i += 1;
            continue;
        };
        let key_indent = indent(line);
        let value = value.trim();
        let continues = |j: usize| {
            lines
                .get(j)
                .is_some_and(|l| l.trim().is_empty() || indent(l) > key_indent)
        };
        let expr = if value.starts_with('|') || value.starts_with('>') {
            let mut block = Vec::new();
            while continues(i + 1) {
                i += 1;
                block.push(lines[i].trim());
            }
            block.join("\n")
        } else {
            assert!(
                !lines
                    .get(i + 1)
                    .is_some_and(|l| !l.trim().is_empty() && indent(l) > key_indent),
                "rule `{current}`: a multi-line plain `expr:` is not understood here; use `expr: |`"
            );
            if let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                inner.replace("\\\"", "\"").replace("\\\\", "\\")
            } else if let Some(inner) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\''))
            {
                inner.replace("''", "'")
            } else {
                value.to_owned()
            }
        };
        rules.push((current.clone(), expr));
        i += 1;
    }
    rules
}

#[test]
fn the_rule_reader_understands_every_form_of_expr() {
    let text = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n        for: 1m\n      - record: r:b\n        expr: \"sum(x{a=\\\"b\\\"})\"\n      - alert: C\n        expr: |\n          rate(y[5m])\n            > 0\n        labels:\n          severity: warning\n";
    assert_eq!(
        rule_exprs(text),
        [
            ("A".to_owned(), "up == 0".to_owned()),
            ("r:b".to_owned(), "sum(x{a=\"b\"})".to_owned()),
            ("C".to_owned(), "rate(y[5m])\n> 0".to_owned()),
        ]
    );
}

#[test]
fn alert_rules_query_only_exported_metrics() {
    let text = read("docs/alerts.yml");
    let rules = rule_exprs(&text);
    let declared = text
        .lines()
        .filter(|l| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with("alert:") || t.starts_with("record:")
        })
        .count();
    assert_eq!(
        rules.len(),
        declared,
        "found {} `expr:` for {declared} rules in docs/alerts.yml",
        rules.len()
    );
    let known = queryable_names();
    let problems: Vec<String> = rules
        .iter()
        .filter_map(|(name, expr)| unknown_names(expr, &known).map(|e| format!("{name}: {e}")))
        .collect();
    assert!(
        problems.is_empty(),
        "docs/alerts.yml queries metrics that /metrics does not export (known: {known:?}):\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// promtool
// ---------------------------------------------------------------------------

/// Whether promtool can run; panics instead of skipping when CI requires it.
fn promtool_available() -> bool {
    let works = Command::new(promtool_program())
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !works && std::env::var(REQUIRE_PROMTOOL).is_ok_and(|v| v == "1") {
        panic!(
            "promtool not found and {REQUIRE_PROMTOOL}=1: install Debian's `prometheus` package \
             (apt-get install -y --no-install-recommends prometheus) or set PROMTOOL to its path"
        );
    }
    works
}

fn promtool(args: &[&str], dir: &Path) -> Output {
    Command::new(promtool_program())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running promtool {args:?}: {e}"))
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    if !promtool_available() {
        eprintln!("promtool not on PATH: docs/alerts.yml and docs/alerts.test.yml NOT checked");
        return;
    }
    let docs = root().join("docs");
    assert_success(
        &promtool(&["check", "rules", "alerts.yml"], &docs),
        "promtool check rules docs/alerts.yml",
    );
    assert_success(
        &promtool(&["test", "rules", "alerts.test.yml"], &docs),
        "promtool test rules docs/alerts.test.yml",
    );
}

/// Grafana's variables replaced by values PromQL accepts.
fn without_grafana_variables(expr: &str) -> String {
    let mut out = expr.to_owned();
    for interval in ["$__rate_interval", "$__interval", "$__range"] {
        out = out.replace(interval, "5m");
    }
    let chars: Vec<char> = out.chars().collect();
    let mut plain = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' {
            plain.push('x');
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(&chars, i, '}');
            } else {
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
            }
        } else {
            plain.push(chars[i]);
            i += 1;
        }
    }
    plain
}

#[test]
fn dashboard_queries_are_valid_promql() {
    if !promtool_available() {
        eprintln!("promtool not on PATH: the dashboard's PromQL NOT parsed");
        return;
    }
    // promtool parses PromQL in rule files only: one recording rule per query.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let queries = dashboard_queries(&dashboard());
    for (n, (_, expr)) in queries.iter().enumerate() {
        let quoted = serde_json::to_string(&without_grafana_variables(expr)).unwrap();
        writeln!(
            rules,
            "      - record: dashboard:query_{n}\n        expr: {quoted}"
        )
        .unwrap();
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ops_kit");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard-rules.yml"), &rules).unwrap();
    let output = promtool(&["check", "rules", "dashboard-rules.yml"], &dir);
    let listing: String = queries
        .iter()
        .enumerate()
        .map(|(n, (place, expr))| format!("dashboard:query_{n} = {place}: {expr}\n"))
        .collect();
    assert!(
        output.status.success(),
        "a dashboard query is not valid PromQL:\n{}{}\n{listing}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// The collector example and the server environment that goes with it
// ---------------------------------------------------------------------------

/// The `OTEL_*` variables the SDK reads by itself, beside the pipeline's own
/// (`breaker_otel::OtlpEnv::VARIABLES`).
const SDK_OTEL_VARIABLES: [&str; 3] = [
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_EXPORTER_OTLP_INSECURE",
];

/// Whether the pipeline or the SDK reads `name`.
fn known_otel_variable(name: &str) -> bool {
    breaker_otel::OtlpEnv::VARIABLES
        .iter()
        .any(|var| var.name == name)
        || SDK_OTEL_VARIABLES.contains(&name)
}

/// The server keys `docs/contract.md` section 7 guarantees (a test checks it
/// names them all).
const CONTRACT_KEYS: [&str; 9] = [
    "server.bind",
    "server.shutdown_timeout",
    "breaker.failure_threshold",
    "breaker.probe_every",
    "breaker.probe_after",
    "breaker.export_timeout",
    "metrics.requests_per_minute",
    "metrics.trusted_proxies",
    "storage.path",
];

#[test]
fn the_contract_names_every_key_the_kit_may_set() {
    let contract = read("docs/contract.md");
    let missing: Vec<&str> = CONTRACT_KEYS
        .iter()
        .copied()
        .filter(|key| !contract.contains(&format!("`{key}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/contract.md does not name {missing:?}"
    );
}

/// `KEY=VALUE` pairs of an env file, comment lines (`#`) and blanks skipped.
fn env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (key, value) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("`{l}` is not KEY=VALUE"));
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

#[test]
fn collector_environment_names_real_variables_and_the_collectors_port() {
    let env = env_file(&read("docs/otel-collector.env"));
    for (key, _) in &env {
        if let Some(path) = key.strip_prefix("TASKMAN__") {
            let dotted = path.to_ascii_lowercase().replace("__", ".");
            assert!(
                CONTRACT_KEYS.contains(&dotted.as_str()),
                "docs/otel-collector.env sets {key} ({dotted}), which is no contract key"
            );
        } else {
            assert!(
                known_otel_variable(key),
                "docs/otel-collector.env sets {key}, which nothing reads"
            );
        }
    }
    let value = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("docs/otel-collector.env does not set {name}"))
    };
    let protocol = value("OTEL_EXPORTER_OTLP_PROTOCOL");
    let receiver = match protocol {
        "grpc" => "grpc:",
        "http/protobuf" => "http:",
        other => panic!("OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported by taskman"),
    };
    let endpoint = value("OTEL_EXPORTER_OTLP_ENDPOINT");
    let port = endpoint
        .trim_end_matches('/')
        .rsplit_once(':')
        .map(|(_, port)| port)
        .filter(|port| port.parse::<u16>().is_ok())
        .unwrap_or_else(|| panic!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint} names no port"));

    // The receiver protocol's `endpoint:` is the next setting after its key.
    let collector = read("docs/otel-collector.yaml");
    let mut lines = collector
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .skip_while(|l| *l != receiver);
    assert_eq!(
        lines.next(),
        Some(receiver),
        "no `{receiver}` receiver protocol"
    );
    let listen = lines.next().unwrap_or_default();
    assert!(
        listen.starts_with("endpoint:") && listen.ends_with(&format!(":{port}")),
        "the server sends {protocol} to port {port}, the collector's `{receiver}` has `{listen}`"
    );
}

// ---------------------------------------------------------------------------
// Runbook links
// ---------------------------------------------------------------------------

/// The anchors GitHub gives a Markdown file's headings: lower case,
/// punctuation removed, spaces turned into hyphens. Fenced code is skipped.
fn heading_anchors(markdown: &str) -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut in_fence = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let anchor: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        anchors.insert(anchor);
    }
    anchors
}

#[test]
fn every_runbook_link_and_internal_link_lands_on_a_heading() {
    let operations = read("docs/operations.md");
    let anchors = heading_anchors(&operations);
    let mut problems = Vec::new();
    for line in read("docs/alerts.yml").lines() {
        let Some(url) = line.trim().strip_prefix("runbook_url:") else {
            continue;
        };
        let url = url.trim().trim_matches('"');
        match url.split_once("docs/operations.md#") {
            Some((_, anchor)) if anchors.contains(anchor) => {}
            _ => problems.push(format!("alerts.yml: {url}")),
        }
    }
    for (at, _) in operations.match_indices("](#") {
        let rest = &operations[at + 3..];
        let anchor = &rest[..rest.find(')').unwrap_or(rest.len())];
        if !anchors.contains(anchor) {
            problems.push(format!("operations.md: #{anchor}"));
        }
    }
    assert!(
        problems.is_empty(),
        "links to no heading of docs/operations.md (headings: {anchors:?}):\n{}",
        problems.join("\n")
    );
}
