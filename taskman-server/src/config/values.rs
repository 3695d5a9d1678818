//! Value types of the settings and their [`Codec`]s: how each is read from the configuration
//! sources, written back by `--print-config` and named in the reference.
//!
//! Each reader states its rule in its error message ("must be at least 1"), so the loader can
//! print `key = value: rule` without knowing which setting failed.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use breaker_otel::TelemetryPriority;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use telemetry_http::TrustedProxy;

use super::declare::Codec;
use crate::storage::StorageUrl;

/// Durations written the human way: `"30s"`, `"250ms"`, `"1m 30s"`. Zero is refused: every
/// duration in the configuration is a timeout or an interval, and zero would mean "never wait".
pub(crate) struct HumanDuration;

impl Codec<Duration> for HumanDuration {
    const TYPE: &'static str = "duration";

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        let value = humantime::parse_duration(text.trim()).map_err(|err| {
            D::Error::custom(format!(
                "expected a duration such as \"30s\" or \"250ms\" ({err})"
            ))
        })?;
        if value.is_zero() {
            return Err(D::Error::custom("must be longer than 0s"));
        }
        Ok(value)
    }

    fn to_toml(value: &Duration) -> Option<toml::Value> {
        Some(humantime::format_duration(*value).to_string().into())
    }
}

/// A whole number in `1..=max`, written as an integer or a string of digits. Booleans and
/// fractions are refused even though `config` would convert them (`true` to 1, 2.5 to 3).
struct Positive {
    max: u64,
}

impl Positive {
    fn check<E: serde::de::Error>(&self, n: i128) -> Result<u64, E> {
        if n < 1 {
            return Err(E::custom("must be at least 1"));
        }
        match u64::try_from(n) {
            Ok(n) if n <= self.max => Ok(n),
            _ => Err(E::custom(format!("must be at most {}", self.max))),
        }
    }
}

impl serde::de::Visitor<'_> for Positive {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a whole number from 1 to {}", self.max)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<u64, E> {
        self.check(i128::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<u64, E> {
        self.check(i128::from(v))
    }

    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<u64, E> {
        self.check(v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<u64, E> {
        match v.trim().parse::<i128>() {
            Ok(n) => self.check(n),
            Err(_) => Err(E::custom("expected a whole number")),
        }
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<u64, E> {
        Err(E::custom("expected a whole number"))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<u64, E> {
        Err(E::custom("expected a whole number"))
    }
}

fn positive<'de, D: Deserializer<'de>>(d: D, max: u64) -> Result<u64, D::Error> {
    d.deserialize_any(Positive { max })
}

fn integer(n: u64) -> toml::Value {
    i64::try_from(n).map_or_else(|_| n.to_string().into(), toml::Value::Integer)
}

/// A count: a whole number, at least 1.
pub(crate) struct Count;

impl Codec<NonZeroU32> for Count {
    const TYPE: &'static str = "count";

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NonZeroU32, D::Error> {
        let n = positive(d, u64::from(u32::MAX))?;
        u32::try_from(n)
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| D::Error::custom("must be at least 1"))
    }

    fn to_toml(value: &NonZeroU32) -> Option<toml::Value> {
        Some(integer(u64::from(value.get())))
    }
}

/// On or off: `true` or `false`, as a boolean (files) or as the words in any case
/// (environment variables, where every value is a string; `config` reads `False` as false
/// already). `1`, `yes`, `off` and the like are refused: a switch is read one way only.
pub(crate) struct Switch;

struct SwitchVisitor;

impl serde::de::Visitor<'_> for SwitchVisitor {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("true or false")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<bool, E> {
        Ok(v)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
        match v.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(E::custom("expected true or false")),
        }
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<bool, E> {
        Err(E::custom("expected true or false"))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<bool, E> {
        Err(E::custom("expected true or false"))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<bool, E> {
        Err(E::custom("expected true or false"))
    }
}

impl Codec<bool> for Switch {
    const TYPE: &'static str = "`true` or `false`";

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        d.deserialize_any(SwitchVisitor)
    }

    fn to_toml(value: &bool) -> Option<toml::Value> {
        Some(toml::Value::Boolean(*value))
    }
}

/// A size in bytes, at least 1.
pub(crate) struct Bytes;

impl Codec<NonZeroUsize> for Bytes {
    const TYPE: &'static str = "count, bytes";

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NonZeroUsize, D::Error> {
        let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
        let n = positive(d, max)?;
        usize::try_from(n)
            .ok()
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| D::Error::custom("must be at least 1"))
    }

    fn to_toml(value: &NonZeroUsize) -> Option<toml::Value> {
        Some(integer(u64::try_from(value.get()).unwrap_or(u64::MAX)))
    }
}

/// HTTP worker threads: 1 to [`Workers::MAX`], or unset for one per CPU core.
pub(crate) struct Workers;

impl Workers {
    /// The most workers actix-server supports; it panics above this.
    pub(crate) const MAX: u64 = 512;
}

impl Codec<Option<NonZeroUsize>> for Workers {
    const TYPE: &'static str = "count, at most 512";

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NonZeroUsize>, D::Error> {
        let n = positive(d, Self::MAX)?;
        Ok(usize::try_from(n).ok().and_then(NonZeroUsize::new))
    }

    fn to_toml(value: &Option<NonZeroUsize>) -> Option<toml::Value> {
        value.and_then(|n| Bytes::to_toml(&n))
    }
}

/// `host:port`, where host is an IP address or a name. Names are resolved when binding, so
/// this only checks the shape: a typo like `127.0.0.1` (no port) fails here, not at bind time.
pub(crate) struct BindAddress;

impl Codec<String> for BindAddress {
    const TYPE: &'static str = "string, `host:port`";

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        bind_address(String::deserialize(d)?).map_err(D::Error::custom)
    }

    fn to_toml(value: &String) -> Option<toml::Value> {
        Some(value.clone().into())
    }
}

fn bind_address(text: String) -> Result<String, &'static str> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(text);
    }
    let well_formed = text.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == '/')
            && port.parse::<u16>().is_ok()
    });
    if well_formed {
        Ok(text)
    } else {
        Err("expected host:port such as \"127.0.0.1:8080\" or \"[::1]:8080\"")
    }
}

/// A database file path, optional. Empty is refused: SQLite would keep the tasks in a
/// temporary file and lose them all at restart.
pub(crate) struct DatabasePath;

impl Codec<Option<PathBuf>> for DatabasePath {
    const TYPE: &'static str = "path";

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().is_empty() {
            return Err(D::Error::custom(
                "must not be empty (use \":memory:\" to keep tasks in memory only)",
            ));
        }
        Ok(Some(PathBuf::from(text)))
    }

    fn to_toml(value: &Option<PathBuf>) -> Option<toml::Value> {
        value.as_ref().map(|path| path.display().to_string().into())
    }
}

/// `storage.url`: `sqlite:<path>` or a PostgreSQL URL, checked by the driver's parser.
pub(crate) struct Url;

impl Codec<Option<StorageUrl>> for Url {
    const TYPE: &'static str = "string, URL";

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<StorageUrl>, D::Error> {
        String::deserialize(d)?
            .parse()
            .map(Some)
            .map_err(D::Error::custom)
    }

    /// Masked: `--print-config` output gets pasted into tickets. A password belongs in the
    /// environment (`TASKMAN__STORAGE__URL`) or a file only the server reads.
    fn to_toml(value: &Option<StorageUrl>) -> Option<toml::Value> {
        value.as_ref().map(|url| url.to_string().into())
    }
}

/// `X-Forwarded-For` sources: telemetry-http's own parser, so the server refuses at start-up
/// exactly what the routes would, with the same message.
pub(crate) struct Proxies;

impl Codec<Vec<TrustedProxy>> for Proxies {
    const TYPE: &'static str = "list of IP addresses or CIDR networks";

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TrustedProxy>, D::Error> {
        Vec::<TrustedProxy>::deserialize(d)
    }

    fn to_toml(value: &Vec<TrustedProxy>) -> Option<toml::Value> {
        Some(toml::Value::Array(
            value.iter().map(|p| p.to_string().into()).collect(),
        ))
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `"text"` or `"json"`.
pub(crate) struct Format;

impl Codec<LogFormat> for Format {
    const TYPE: &'static str = "`\"text\"` or `\"json\"`";

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LogFormat, D::Error> {
        LogFormat::deserialize(d)
    }

    fn to_toml(value: &LogFormat) -> Option<toml::Value> {
        Some(value.as_str().into())
    }
}

impl LogFormat {
    /// The name in the configuration.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "json",
        }
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.to_ascii_lowercase().as_str() {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(D::Error::custom("expected \"text\" or \"json\"")),
        }
    }
}

/// `"background"` or `"normal"`: the telemetry threads' priority.
pub(crate) struct Priority;

impl Codec<TelemetryPriority> for Priority {
    const TYPE: &'static str = "`\"background\"` or `\"normal\"`";

    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TelemetryPriority, D::Error> {
        let text = String::deserialize(d)?;
        text.parse()
            .map_err(|_| D::Error::custom("expected \"background\" or \"normal\""))
    }

    fn to_toml(value: &TelemetryPriority) -> Option<toml::Value> {
        Some(value.as_str().into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::io::Write as _;

    use crate::config::{Env, Settings};

    fn env(key: &str, value: &str) -> Env {
        Env::from([(key.to_owned(), value.to_owned())])
    }

    const IDLE: &str = "TASKMAN__BREAKER__IDLE_PROBES";

    #[test]
    fn a_switch_is_read_from_the_environment_as_true_or_false() {
        assert!(
            Settings::load(None, &Env::new())
                .unwrap()
                .breaker
                .idle_probes
        );
        for (text, expected) in [
            ("false", false),
            ("true", true),
            (" false ", false),
            ("FALSE", false),
            ("True", true),
        ] {
            let s = Settings::load(None, &env(IDLE, text)).unwrap();
            assert_eq!(s.breaker.idle_probes, expected, "{text:?}");
        }
    }

    #[test]
    fn a_switch_is_read_from_a_file_as_a_boolean() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"[breaker]\nidle_probes = false\n").unwrap();
        let s = Settings::load(Some(file.path()), &Env::new()).unwrap();
        assert!(!s.breaker.idle_probes);
    }

    #[test]
    fn anything_else_is_refused_with_the_key() {
        for text in ["yes", "1", "off", "0"] {
            let err = Settings::load(None, &env(IDLE, text))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("breaker.idle_probes") && err.contains(IDLE),
                "{text:?}: {err}"
            );
            assert!(err.ends_with("expected true or false"), "{text:?}: {err}");
        }
    }
}
