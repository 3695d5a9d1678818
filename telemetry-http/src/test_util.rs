//! A reader of the Prometheus text exposition that `/metrics` renders, for
//! tests: this crate's own, and end-to-end tests that scrape a real server.
//!
//! Only built with the non-default `test-util` feature. It reads what the
//! `prometheus` crate's `TextEncoder` writes (one sample per line, no
//! timestamps expected but tolerated), not every exposition a scraper accepts.

/// The value of the sample `series` in `text`: the metric name with its
/// labels exactly as rendered, e.g. `circuit_state` or
/// `spans_processed_total{outcome="failed"}`. `None` when no line has that
/// series or its value is not a number.
///
/// ```
/// use telemetry_http::test_util::sample;
///
/// let text = "# TYPE up gauge\nup 1\nhits_total{route=\"/a b\"} 3 1700000000\n";
/// assert_eq!(sample(text, "up"), Some(1.0));
/// assert_eq!(sample(text, r#"hits_total{route="/a b"}"#), Some(3.0));
/// assert_eq!(sample(text, "hits_total"), None);
/// ```
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, rest) = split_series(line)?;
            (name == series).then(|| rest.split_whitespace().next()?.parse().ok())?
        })
}

/// Every metric family that `text` declares in a `# TYPE` line, as
/// `(name, type)` in the order written (`type` is `counter`, `gauge`,
/// `histogram`, ...).
///
/// ```
/// use telemetry_http::test_util::families;
///
/// let text = "# HELP up Whether it is up.\n# TYPE up gauge\nup 1\n";
/// assert_eq!(families(text), [("up".to_owned(), "gauge".to_owned())]);
/// ```
pub fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// Splits a sample line into its series (name and label set) and the rest.
/// Label values may hold spaces and braces, so the label set ends at the
/// first `}` outside quotes.
fn split_series(line: &str) -> Option<(&str, &str)> {
    let Some(open) = line.find('{') else {
        return line.split_once(' ');
    };
    if line[..open].contains(' ') {
        return line.split_once(' ');
    }
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in line.char_indices().skip_while(|&(i, _)| i <= open) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(line.split_at(i + 1)),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_may_hold_spaces_braces_and_escaped_quotes() {
        let text = concat!(
            "plain 1\n",
            "a{route=\"/tasks/{id}\"} 2\n",
            "b{msg=\"x } \\\" y\"} 3\n",
            "c{le=\"+Inf\"} 4 1700000000\n",
            "d{x=\"1\"} NaN-ish\n",
        );
        assert_eq!(sample(text, "plain"), Some(1.0));
        assert_eq!(sample(text, r#"a{route="/tasks/{id}"}"#), Some(2.0));
        assert_eq!(sample(text, r#"b{msg="x } \" y"}"#), Some(3.0));
        assert_eq!(sample(text, r#"c{le="+Inf"}"#), Some(4.0));
        assert_eq!(sample(text, r#"d{x="1"}"#), None);
        assert_eq!(sample(text, "a"), None);
    }
}
