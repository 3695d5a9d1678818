//! Value types and field (de)serializers for [`Settings`](super::Settings).
//!
//! Each deserializer states its rule in its error message ("must be at least 1"), so the
//! loader can print `key = value: rule` without knowing which field failed.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

/// Durations written the human way: `"30s"`, `"250ms"`, `"1m 30s"`. Zero is rejected: every
/// duration in the configuration is a timeout or an interval, and zero would mean "never wait".
pub(super) mod duration {
    use std::time::Duration;

    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
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

pub(super) fn non_zero_u32<'de, D: Deserializer<'de>>(d: D) -> Result<NonZeroU32, D::Error> {
    let n = positive(d, u64::from(u32::MAX))?;
    u32::try_from(n)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| D::Error::custom("must be at least 1"))
}

pub(super) fn non_zero_usize<'de, D: Deserializer<'de>>(d: D) -> Result<NonZeroUsize, D::Error> {
    let max = u64::try_from(usize::MAX).unwrap_or(u64::MAX);
    let n = positive(d, max)?;
    usize::try_from(n)
        .ok()
        .and_then(NonZeroUsize::new)
        .ok_or_else(|| D::Error::custom("must be at least 1"))
}

pub(super) fn optional_non_zero_usize<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<NonZeroUsize>, D::Error> {
    non_zero_usize(d).map(Some)
}

/// A boolean: `true` or `false` in the file; in the environment, where every value is text,
/// `true` or `false` in any case. Numbers and words such as `on` or `yes` are refused, although
/// `config` would convert them.
pub(super) fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct Strict;

    impl serde::de::Visitor<'_> for Strict {
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

    d.deserialize_any(Strict)
}

/// `host:port`, where host is an IP address or a name. Names are resolved when binding, so
/// this only checks the shape: a typo like `127.0.0.1` (no port) fails here, not at bind time.
pub(super) fn bind_address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let text = String::deserialize(d)?;
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
        Err(D::Error::custom(
            "expected host:port such as \"127.0.0.1:8080\" or \"[::1]:8080\"",
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
