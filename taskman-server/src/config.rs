//! Typed configuration, layered: built-in defaults < TOML file < `TASKMAN__SECTION__KEY`
//! environment variables.
//!
//! [`Settings::load`] takes the file path and the environment as plain inputs, so tests never
//! touch the process environment. Every failure is one [`ConfigError`] whose message names the
//! key and the value that was wrong, and where it came from. The OTLP exporter is configured by
//! the standard `OTEL_*` variables: they are checked here but read by the exporter pipeline.

mod declare;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use breaker_otel::{ExporterConfig, TelemetryPriority};
use config::{Environment, FileFormat, Source as _, Value, ValueKind};
use serde::{Deserialize, Deserializer};
use serde_path_to_error::Segment;
use telemetry_http::TelemetryHttpConfig;

use self::declare::{CoreSettings, Visit, Walk, section};
pub use self::values::LogFormat;
use self::values::{
    BindAddress, Bytes, Count, DatabasePath, Format, HumanDuration, Priority, Proxies, Url, Workers,
};
use crate::storage::{PoolOptions, StorageUrl};

/// Environment variables by name: the process environment, or a test's own.
pub type Env = BTreeMap<String, String>;

/// Prefix of the variables that override file keys: `TASKMAN__SERVER__BIND` sets `server.bind`.
pub const ENV_PREFIX: &str = "TASKMAN";
/// Separator between prefix, section and key in those variables.
pub const ENV_SEPARATOR: &str = "__";
/// Variable naming the configuration file when `--config` is not given.
pub const CONFIG_FILE_VAR: &str = "TASKMAN_CONFIG";

/// Every setting of the server, section by section. The server's own sections are declared
/// here; `breaker` and `metrics` are the library crates' own configuration types, not copies.
/// Unknown keys are errors in every section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    /// The HTTP listener.
    pub server: ServerSettings,
    /// The circuit breaker in front of the span exporter, with its own defaults.
    pub breaker: ExporterConfig,
    /// The `/metrics` endpoint's per-client rate limit.
    pub metrics: TelemetryHttpConfig,
    /// Where tasks are kept.
    pub storage: StorageSettings,
    /// Log output.
    pub log: LogSettings,
    /// How telemetry shares the machine with requests.
    pub telemetry: TelemetrySettings,
}

impl Walk for Settings {
    fn walk(&mut self, v: &mut impl Visit) {
        self.server.visit(v);
        v.section(
            "breaker",
            "the circuit breaker in front of the span exporter",
        );
        self.breaker.visit_settings(&mut CoreSettings(v));
        v.section("metrics", "the `/metrics` rate limit");
        let metrics = &mut self.metrics;
        v.setting::<_, Count>(
            "requests_per_minute",
            "Sustained `/metrics` requests per minute per client IP; over the limit the answer is `429` with a `Retry-After` header.",
            &mut metrics.requests_per_minute,
        );
        v.setting::<_, Count>(
            "burst",
            "`/metrics` requests a client may make at once before the sustained rate applies.",
            &mut metrics.burst,
        );
        v.setting::<_, Proxies>(
            "trusted_proxies",
            "Peers whose `X-Forwarded-For` header names the client (comma-separated in the environment); from any other peer the client is the TCP peer.",
            &mut metrics.trusted_proxies,
        );
        self.storage.visit(v);
        self.log.visit(v);
        self.telemetry.visit(v);
    }
}

impl<'de> Deserialize<'de> for Settings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut settings = Self::default();
        declare::deserialize_into(d, &mut settings)?;
        Ok(settings)
    }
}

section! {
    /// the HTTP listener
    #[section = "server"]
    #[derive(Debug, Clone, PartialEq)]
    pub struct ServerSettings {
        /// `host:port` to listen on; port `0` picks a free port, named by the log line `listening on http://…`.
        bind: String as BindAddress = "127.0.0.1:8080".to_owned(),
        /// After SIGTERM, SIGINT or SIGHUP, how long requests in flight may take to finish; queued spans are then flushed within what is left of it.
        shutdown_timeout: Duration as HumanDuration = Duration::from_secs(10),
        /// HTTP worker threads; unset: one per CPU core.
        workers: Option<NonZeroUsize> as Workers = None,
        /// Largest request body accepted; a larger one is answered `413` (`payload_too_large`).
        max_body_bytes: NonZeroUsize as Bytes = NonZeroUsize::MIN.saturating_add(64 * 1024 - 1),
        /// How long a client may take to send a request's head (request line and headers) once it has connected or its previous request was answered; a slower client is answered `408` and disconnected.
        request_head_timeout: Duration as HumanDuration = Duration::from_secs(5),
        /// How long a client may take to send a task request's whole body, counted from the end of its head; a slower one is answered `408` (`request_timeout`) and disconnected.
        request_body_timeout: Duration as HumanDuration = Duration::from_secs(10),
        /// How long an idle keep-alive connection stays open waiting for the next request.
        keep_alive: Duration as HumanDuration = Duration::from_secs(5),
        /// After the server has closed its side of a connection, how long it waits for the client to close its own before dropping the connection.
        client_disconnect_timeout: Duration as HumanDuration = Duration::from_secs(1),
    }
}

section! {
    /// where tasks are kept
    #[section = "storage"]
    #[derive(Debug, Clone, PartialEq)]
    pub struct StorageSettings {
        /// Where tasks are kept: `"sqlite:<path>"` (one process) or `"postgres://user:password@host:port/database"` (several replicas on one database; the password is masked in every message). Unset: `storage.path`, else `"sqlite:taskman.db"`. Setting both keys is an error.
        url: Option<StorageUrl> as Url = None,
        /// Shorthand for `storage.url = "sqlite:<path>"`: an SQLite file, created if missing, relative to the working directory; `":memory:"` keeps tasks in memory only.
        path: Option<PathBuf> as DatabasePath = None,
        /// PostgreSQL connections per server process; keep replicas × `pool_size` below the server's `max_connections`. Ignored for SQLite.
        pool_size: NonZeroU32 as Count = PoolOptions::default().pool_size,
        /// How long a PostgreSQL call waits for a pooled connection (or a new one to connect) before it is answered `503` (`storage_unavailable`); also the connect timeout. Ignored for SQLite.
        acquire_timeout: Duration as HumanDuration = PoolOptions::default().acquire_timeout,
        /// How long a PostgreSQL call's statements may run once it has a connection (enforced by the server and the client) before it is answered `503`. Ignored for SQLite.
        statement_timeout: Duration as HumanDuration = PoolOptions::default().statement_timeout,
    }
}

/// Which key chose the store, for start-up errors (`storage.path = …: …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageChoice {
    /// `storage.url` or `storage.path`.
    pub key: &'static str,
    /// The store.
    pub url: StorageUrl,
}

impl StorageSettings {
    /// The default when neither `storage.url` nor `storage.path` is set.
    pub const DEFAULT_PATH: &'static str = "taskman.db";

    /// The store chosen by `storage.url`, or `storage.path`, or the default file.
    /// [`Settings::load`] has refused settings that set both.
    #[must_use]
    pub fn choice(&self) -> StorageChoice {
        match (&self.url, &self.path) {
            (Some(url), _) => StorageChoice {
                key: "storage.url",
                url: url.clone(),
            },
            (None, Some(path)) => StorageChoice {
                key: "storage.path",
                url: StorageUrl::Sqlite(path.clone()),
            },
            (None, None) => StorageChoice {
                key: "storage.url",
                url: StorageUrl::Sqlite(PathBuf::from(Self::DEFAULT_PATH)),
            },
        }
    }

    /// The pool's bounds.
    #[must_use]
    pub fn pool(&self) -> PoolOptions {
        PoolOptions {
            pool_size: self.pool_size,
            acquire_timeout: self.acquire_timeout,
            statement_timeout: self.statement_timeout,
        }
    }
}

section! {
    /// log output
    #[section = "log"]
    #[derive(Debug, Clone, PartialEq)]
    pub struct LogSettings {
        /// Log lines on stderr: `"text"` for people, `"json"` (one object per line) for a log collector. The level comes from `RUST_LOG`.
        format: LogFormat as Format = LogFormat::Text,
    }
}

section! {
    /// how telemetry shares the machine with requests
    #[section = "telemetry"]
    #[derive(Debug, Clone, PartialEq)]
    pub struct TelemetrySettings {
        /// Operating-system priority of the threads that batch, encode and send spans: `"background"` (the lowest there is: under CPU saturation telemetry waits and sheds spans, counted as `queue_full`, instead of slowing requests) or `"normal"` (it competes with requests for the CPU).
        priority: TelemetryPriority as Priority = TelemetryPriority::Background,
    }
}

/// Why the configuration was rejected. Each message is one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read or is not valid TOML.
    #[error("cannot read config file {}: {reason}", path.display())]
    File {
        /// The file that was named by `--config` or `TASKMAN_CONFIG`.
        path: PathBuf,
        /// What went wrong, on one line.
        reason: String,
    },
    /// A key that no section has, usually a typo.
    #[error("unknown key {key}{origin}")]
    UnknownKey {
        /// Dotted key, such as `server.bnd`.
        key: String,
        /// Where it was set.
        origin: Origin,
    },
    /// A key whose value is of the wrong type or out of range.
    #[error("{key} = {value}{origin}: {reason}")]
    InvalidValue {
        /// Dotted key, such as `breaker.failure_threshold`.
        key: String,
        /// The value as written, strings quoted.
        value: String,
        /// Where it was set.
        origin: Origin,
        /// The rule it breaks.
        reason: String,
    },
    /// Two keys that must not both be set.
    #[error("{first} and {second} are both set{origin}: {reason}")]
    Conflict {
        /// The first key, dotted.
        first: &'static str,
        /// The second key, dotted.
        second: &'static str,
        /// Where the configuration came from.
        origin: Origin,
        /// Which one to keep.
        reason: &'static str,
    },
    /// A standard environment variable (`OTEL_*`, `RUST_LOG`) with an unusable value.
    #[error("{var} = {value:?}: {reason}")]
    InvalidEnv {
        /// The variable's name.
        var: String,
        /// Its value, with secrets masked.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
    /// The sources could not be merged (only a malformed file is known to cause this).
    #[error("cannot merge the configuration sources: {reason}")]
    Merge {
        /// What went wrong, on one line.
        reason: String,
    },
    /// A relevant environment variable that is not valid UTF-8.
    #[error("{var}: value is not valid UTF-8")]
    NotUnicode {
        /// The variable's name.
        var: String,
    },
}

/// Where a configuration value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// The configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// Not known.
    Unknown,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, " (in {})", path.display()),
            Self::Env(var) => write!(f, " (from {var})"),
            Self::Unknown => Ok(()),
        }
    }
}

/// The configuration file to read: `--config` wins over `TASKMAN_CONFIG`; none is fine.
pub fn config_file(cli: Option<&Path>, env: &Env) -> Option<PathBuf> {
    cli.map(Path::to_path_buf).or_else(|| {
        env.get(CONFIG_FILE_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

/// The process environment. Non-UTF-8 values are an error only for variables we read.
pub fn process_env() -> Result<Env, ConfigError> {
    let mut env = Env::new();
    for (var, value) in std::env::vars_os() {
        let Ok(var) = var.into_string() else { continue };
        match value.into_string() {
            Ok(value) => {
                env.insert(var, value);
            }
            Err(_)
                if var.to_ascii_uppercase().starts_with(ENV_PREFIX) || var.starts_with("OTEL_") =>
            {
                return Err(ConfigError::NotUnicode { var });
            }
            Err(_) => {}
        }
    }
    Ok(env)
}

impl Settings {
    /// Merges defaults, the TOML `file` (if any) and the `TASKMAN__*` variables of `env`, and
    /// checks the `OTEL_*` variables of `env`.
    pub fn load(file: Option<&Path>, env: &Env) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|err| ConfigError::File {
                path: path.to_path_buf(),
                reason: err.to_string(),
            })?;
            builder = builder.add_source(config::File::from_str(&text, FileFormat::Toml));
        }
        let environment = Environment::with_prefix(ENV_PREFIX)
            .prefix_separator(ENV_SEPARATOR)
            .separator(ENV_SEPARATOR)
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("metrics.trusted_proxies")
            .ignore_empty(true)
            .source(Some(
                env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            ));
        let merged = builder.add_source(environment).build().map_err(|err| {
            let reason = one_line(&err.to_string());
            match file {
                Some(path) => ConfigError::File {
                    path: path.to_path_buf(),
                    reason,
                },
                None => ConfigError::Merge { reason },
            }
        })?;
        // Keep the raw tree: serde errors carry the key but not the value or its origin.
        let raw = merged.collect().unwrap_or_default();
        let settings: Self = serde_path_to_error::deserialize(merged)
            .map_err(|err| describe_error(&err, &raw, file))?;
        if settings.storage.url.is_some() && settings.storage.path.is_some() {
            return Err(ConfigError::Conflict {
                first: "storage.url",
                second: "storage.path",
                origin: file.map_or(Origin::Unknown, |f| Origin::File(f.to_path_buf())),
                reason: "storage.path is shorthand for storage.url = \"sqlite:<path>\"; keep one",
            });
        }
        otel_env(env)
            .validate()
            .map_err(|err| ConfigError::InvalidEnv {
                var: err.name().to_owned(),
                value: err.masked_value().to_owned(),
                reason: err.reason().to_owned(),
            })?;
        Ok(settings)
    }

    /// The effective configuration as TOML that `--config` accepts back, followed by the
    /// `OTEL_*` exporter variables as comments with secrets masked.
    pub fn to_toml(&self, file: Option<&Path>, env: &Env) -> Result<String, toml::ser::Error> {
        let sources = match file {
            Some(path) => format!("built-in defaults < {} < ", path.display()),
            None => "built-in defaults < ".to_owned(),
        };
        let mut out = format!(
            "# Effective taskman-server configuration.\n# Sources: {sources}{ENV_PREFIX}{ENV_SEPARATOR}SECTION{ENV_SEPARATOR}KEY environment variables.\n\n"
        );
        out.push_str(&toml::to_string(&declare::to_toml_table(
            &mut self.clone(),
        ))?);
        // Comments: the `OTEL_*` variables are not keys of the configuration file.
        out.push_str(
            "\n# OpenTelemetry exporter: standard OTEL_* environment variables (not file keys).\n",
        );
        out.push_str(&otel_env(env).describe());
        Ok(out)
    }

    /// The reference tables of `docs/configuration.md`, generated from the declarations: a
    /// table per section with each key's type, default, environment variable and doc.
    #[must_use]
    pub fn reference() -> String {
        declare::reference(&mut Self::default())
    }

    /// Every key, dotted (`server.bind`), in declaration order.
    #[must_use]
    pub fn keys() -> Vec<String> {
        declare::keys(&mut Self::default())
    }
}

/// The `OTEL_*` variables of `env`, read with the exporter pipeline's own rules.
pub fn otel_env(env: &Env) -> breaker_otel::OtlpEnv {
    breaker_otel::OtlpEnv::from_vars(
        env.iter()
            .filter(|(var, _)| var.starts_with("OTEL_"))
            .map(|(var, value)| (var.clone(), value.clone())),
    )
}

fn describe_error(
    err: &serde_path_to_error::Error<config::ConfigError>,
    raw: &config::Map<String, Value>,
    file: Option<&Path>,
) -> ConfigError {
    let key = err.path().to_string();
    let found = lookup(raw, err.path());
    let origin = found.map_or_else(
        || file.map_or(Origin::Unknown, |f| Origin::File(f.to_path_buf())),
        |value| origin_of(&key, value, file),
    );
    let reason = reason(err.inner());
    // serde's `deny_unknown_fields` reports through a plain message; this prefix is its format.
    if reason.starts_with("unknown field") {
        return ConfigError::UnknownKey { key, origin };
    }
    let mut value = found.map_or_else(|| "(missing)".to_owned(), render);
    if key == "storage.url" {
        // A URL may carry a password; no message shows it.
        value = crate::storage::mask_password(&value);
    }
    ConfigError::InvalidValue {
        key,
        value,
        origin,
        reason,
    }
}

fn lookup<'a>(
    raw: &'a config::Map<String, Value>,
    path: &serde_path_to_error::Path,
) -> Option<&'a Value> {
    let mut segments = path.iter();
    let mut current = match segments.next()? {
        Segment::Map { key } => raw.get(key)?,
        _ => return None,
    };
    for segment in segments {
        current = match (segment, &current.kind) {
            (Segment::Map { key }, ValueKind::Table(table)) => table.get(key)?,
            (Segment::Seq { index }, ValueKind::Array(items)) => items.get(*index)?,
            _ => return None,
        };
    }
    Some(current)
}

/// Where `value` (at `key`) was set. Tables made by the environment source carry no origin of
/// their own, so the first leaf below them speaks for them.
fn origin_of(key: &str, value: &Value, file: Option<&Path>) -> Origin {
    if let (None, ValueKind::Table(table)) = (value.origin(), &value.kind)
        && let Some((child_key, child)) = table.iter().next()
    {
        return origin_of(&format!("{key}.{child_key}"), child, file);
    }
    match value.origin() {
        // The environment source labels its values with this text.
        Some("the environment") => Origin::Env(declare::env_var_for(key)),
        Some(other) => Origin::File(PathBuf::from(other)),
        None => file.map_or(Origin::Unknown, |f| Origin::File(f.to_path_buf())),
    }
}

fn render(value: &Value) -> String {
    match &value.kind {
        ValueKind::String(s) => format!("{s:?}"),
        ValueKind::Array(items) => {
            let items: Vec<String> = items.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        ValueKind::Table(_) => "a table".to_owned(),
        ValueKind::Nil => "nothing".to_owned(),
        other => other.to_string(),
    }
}

fn reason(err: &config::ConfigError) -> String {
    match err {
        config::ConfigError::Type { expected, .. } => format!("expected {expected}"),
        config::ConfigError::At { error, .. } => reason(error),
        config::ConfigError::Message(message) => one_line(message),
        other => one_line(&other.to_string()),
    }
}

/// Multi-line messages (TOML parse errors quote the offending line) as `first: last`.
fn one_line(text: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().to_owned();
    match lines.next_back() {
        Some(last) => format!("{first}: {last}"),
        None => first,
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::storage::URL_SCHEMES;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn toml_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn defaults_need_no_input() {
        let s = Settings::load(None, &Env::new()).unwrap();
        assert_eq!(s.server.bind, "127.0.0.1:8080");
        assert_eq!(s.server.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(s.server.workers, None);
        assert_eq!(s.server.max_body_bytes.get(), 65_536);
        // The libraries' own defaults, not copies: they are pinned where they are defined.
        assert_eq!(s.breaker, ExporterConfig::DEFAULT);
        assert_eq!(s.metrics, TelemetryHttpConfig::default());
        assert_eq!(
            s.storage.choice(),
            StorageChoice {
                key: "storage.url",
                url: StorageUrl::Sqlite(PathBuf::from("taskman.db")),
            }
        );
        assert_eq!(s.storage.pool(), PoolOptions::default());
        assert_eq!(s.log.format, LogFormat::Text);
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn file_overrides_defaults_and_env_overrides_file() {
        let file = toml_file(
            r#"
            [server]
            bind = "0.0.0.0:9000"
            shutdown_timeout = "3s"
            workers = 4

            [breaker]
            failure_threshold = 5
            probe_after = "250ms"

            [metrics]
            trusted_proxies = ["10.0.0.0/8"]

            [log]
            format = "json"
            "#,
        );
        let env = env(&[
            ("TASKMAN__SERVER__BIND", "127.0.0.1:0"),
            ("TASKMAN__BREAKER__FAILURE_THRESHOLD", "7"),
            ("TASKMAN__METRICS__TRUSTED_PROXIES", "192.0.2.1, fd00::/8"),
            ("TASKMAN__STORAGE__PATH", ":memory:"),
            ("UNRELATED", "ignored"),
        ]);
        let s = Settings::load(Some(file.path()), &env).unwrap();
        // Environment wins over the file...
        assert_eq!(s.server.bind, "127.0.0.1:0");
        assert_eq!(s.breaker.breaker.failure_threshold.get(), 7);
        let proxies: Vec<String> = s
            .metrics
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(proxies, ["192.0.2.1", "fd00::/8"]);
        assert_eq!(s.storage.path, Some(PathBuf::from(":memory:")));
        // ...the file wins over defaults...
        assert_eq!(s.server.shutdown_timeout, Duration::from_secs(3));
        assert_eq!(s.server.workers.map(NonZeroUsize::get), Some(4));
        assert_eq!(s.breaker.breaker.probe_after, Duration::from_millis(250));
        assert_eq!(s.log.format, LogFormat::Json);
        // ...and untouched keys keep their defaults.
        assert_eq!(
            s.breaker.breaker.probe_every,
            ExporterConfig::DEFAULT.breaker.probe_every
        );
        assert_eq!(s.metrics.burst, TelemetryHttpConfig::default().burst);
    }

    #[test]
    fn storage_url_chooses_the_backend_and_conflicts_with_storage_path() {
        let s = Settings::load(
            None,
            &env(&[
                (
                    "TASKMAN__STORAGE__URL",
                    "postgres://app:s3cret@db:5433/tasks",
                ),
                ("TASKMAN__STORAGE__POOL_SIZE", "3"),
                ("TASKMAN__STORAGE__ACQUIRE_TIMEOUT", "750ms"),
            ]),
        )
        .unwrap();
        let choice = s.storage.choice();
        assert_eq!(choice.key, "storage.url");
        assert_eq!(choice.url.to_string(), "postgres://app:***@db:5433/tasks");
        assert_eq!(s.storage.pool().pool_size.get(), 3);
        assert_eq!(s.storage.pool().acquire_timeout, Duration::from_millis(750));
        let printed = s.to_toml(None, &Env::new()).unwrap();
        assert!(!printed.contains("s3cret"), "{printed}");

        let path = Settings::load(None, &env(&[("TASKMAN__STORAGE__PATH", "/data/t.db")]))
            .unwrap()
            .storage
            .choice();
        assert_eq!(
            (path.key, path.url),
            (
                "storage.path",
                StorageUrl::Sqlite(PathBuf::from("/data/t.db"))
            )
        );

        let both = toml_file("[storage]\nurl = \"sqlite:a.db\"\npath = \"b.db\"\n");
        let err = Settings::load(Some(both.path()), &Env::new())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err.replace(&both.path().display().to_string(), "FILE"),
            "storage.url and storage.path are both set (in FILE): storage.path is shorthand \
             for storage.url = \"sqlite:<path>\"; keep one"
        );

        for (url, reason) in [
            ("mysql://app:s3cret@db/tasks", URL_SCHEMES),
            (
                "postgres://app:s3cret@db:port/tasks",
                "not a PostgreSQL URL",
            ),
        ] {
            let err = Settings::load(None, &env(&[("TASKMAN__STORAGE__URL", url)]))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("storage.url = \""), "{err}");
            assert!(err.contains(reason), "{err}");
            assert!(err.contains("(from TASKMAN__STORAGE__URL)"), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn empty_environment_values_count_as_unset() {
        let s = Settings::load(
            None,
            &env(&[
                ("TASKMAN__SERVER__WORKERS", ""),
                ("TASKMAN__METRICS__TRUSTED_PROXIES", ""),
            ]),
        )
        .unwrap();
        assert_eq!(s.server.workers, None);
        assert!(s.metrics.trusted_proxies.is_empty());
    }

    #[test]
    fn config_file_choice() {
        let from_env = env(&[(CONFIG_FILE_VAR, "/etc/taskman.toml")]);
        assert_eq!(config_file(None, &Env::new()), None);
        assert_eq!(config_file(None, &env(&[(CONFIG_FILE_VAR, "")])), None);
        assert_eq!(
            config_file(None, &from_env),
            Some(PathBuf::from("/etc/taskman.toml"))
        );
        assert_eq!(
            config_file(Some(Path::new("cli.toml")), &from_env),
            Some(PathBuf::from("cli.toml"))
        );
    }

    /// Each bad input and the exact one-line message it must produce.
    #[test]
    fn environment_errors_name_key_value_and_variable() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "TASKMAN__SERVER__BND",
                "127.0.0.1:1",
                "unknown key server.bnd (from TASKMAN__SERVER__BND)",
            ),
            (
                "TASKMAN__SERVR__BIND",
                "127.0.0.1:1",
                "unknown key servr (from TASKMAN__SERVR__BIND)",
            ),
            (
                "TASKMAN__BREAKER__FAILURE_THRESHOLD",
                "0",
                "breaker.failure_threshold = 0 (from TASKMAN__BREAKER__FAILURE_THRESHOLD): must be at least 1",
            ),
            (
                "TASKMAN__BREAKER__FAILURE_THRESHOLD",
                "-2",
                "breaker.failure_threshold = -2 (from TASKMAN__BREAKER__FAILURE_THRESHOLD): must be at least 1",
            ),
            (
                "TASKMAN__BREAKER__PROBE_EVERY",
                "ten",
                "breaker.probe_every = \"ten\" (from TASKMAN__BREAKER__PROBE_EVERY): expected a whole number",
            ),
            (
                "TASKMAN__BREAKER__MAX_PROBES_IN_FLIGHT",
                "4294967296",
                "breaker.max_probes_in_flight = 4294967296 (from TASKMAN__BREAKER__MAX_PROBES_IN_FLIGHT): must be at most 4294967295",
            ),
            (
                "TASKMAN__SERVER__WORKERS",
                "513",
                "server.workers = 513 (from TASKMAN__SERVER__WORKERS): must be at most 512",
            ),
            (
                "TASKMAN__STORAGE__PATH",
                " ",
                "storage.path = \" \" (from TASKMAN__STORAGE__PATH): must not be empty",
            ),
            (
                "TASKMAN__METRICS__REQUESTS_PER_MINUTE",
                "0",
                "metrics.requests_per_minute = 0 (from TASKMAN__METRICS__REQUESTS_PER_MINUTE): must be at least 1",
            ),
            (
                "TASKMAN__METRICS__BURST",
                "0",
                "metrics.burst = 0 (from TASKMAN__METRICS__BURST): must be at least 1",
            ),
            (
                "TASKMAN__SERVER__WORKERS",
                "0",
                "server.workers = 0 (from TASKMAN__SERVER__WORKERS): must be at least 1",
            ),
            (
                "TASKMAN__SERVER__MAX_BODY_BYTES",
                "64KiB",
                "server.max_body_bytes = \"64KiB\" (from TASKMAN__SERVER__MAX_BODY_BYTES): expected a whole number",
            ),
            (
                "TASKMAN__SERVER__SHUTDOWN_TIMEOUT",
                "10",
                "server.shutdown_timeout = 10 (from TASKMAN__SERVER__SHUTDOWN_TIMEOUT): expected a duration such as \"30s\" or \"250ms\"",
            ),
            (
                "TASKMAN__BREAKER__PROBE_AFTER",
                "soon",
                "breaker.probe_after = \"soon\" (from TASKMAN__BREAKER__PROBE_AFTER): expected a duration such as \"30s\" or \"250ms\"",
            ),
            (
                "TASKMAN__BREAKER__EXPORT_TIMEOUT",
                "0s",
                "breaker.export_timeout = \"0s\" (from TASKMAN__BREAKER__EXPORT_TIMEOUT): must be longer than 0s",
            ),
            (
                "TASKMAN__BREAKER__PROBE_TIMEOUT",
                "5 parsecs",
                "breaker.probe_timeout = \"5 parsecs\" (from TASKMAN__BREAKER__PROBE_TIMEOUT): expected a duration",
            ),
            (
                "TASKMAN__SERVER__BIND",
                "127.0.0.1",
                "server.bind = \"127.0.0.1\" (from TASKMAN__SERVER__BIND): expected host:port",
            ),
            (
                "TASKMAN__SERVER__BIND",
                "localhost:http",
                "server.bind = \"localhost:http\" (from TASKMAN__SERVER__BIND): expected host:port",
            ),
            (
                "TASKMAN__METRICS__TRUSTED_PROXIES",
                "10.0.0.0/8,10.0.0.300",
                "metrics.trusted_proxies[1] = \"10.0.0.300\" (from TASKMAN__METRICS__TRUSTED_PROXIES): `10.0.0.300` is not an IPv4 or IPv6 address",
            ),
            (
                "TASKMAN__METRICS__TRUSTED_PROXIES",
                "10.1.2.3/8",
                "metrics.trusted_proxies[0] = \"10.1.2.3/8\" (from TASKMAN__METRICS__TRUSTED_PROXIES): host bits are set; the network is 10.0.0.0/8",
            ),
            (
                "TASKMAN__LOG__FORMAT",
                "xml",
                "log.format = \"xml\" (from TASKMAN__LOG__FORMAT): expected \"text\" or \"json\"",
            ),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "localhost 4317",
                "OTEL_EXPORTER_OTLP_ENDPOINT = \"localhost 4317\": expected an http:// or https:// URL",
            ),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "udp",
                "OTEL_EXPORTER_OTLP_PROTOCOL = \"udp\": expected \"grpc\" or \"http/protobuf\"",
            ),
        ];
        for (var, value, expected) in cases {
            let err = Settings::load(None, &env(&[(var, value)]))
                .expect_err(&format!("{var}={value} must be rejected"))
                .to_string();
            assert!(
                err.starts_with(expected),
                "{var}={value}:\n  got      {err}\n  expected {expected}"
            );
            assert!(!err.contains('\n'), "{var}={value}: not one line: {err:?}");
        }
    }

    #[test]
    fn file_errors_name_key_value_and_file() {
        let cases: &[(&str, &str)] = &[
            ("[server]\nbnd = \"x:1\"\n", "unknown key server.bnd (in "),
            ("[tracing]\nx = 1\n", "unknown key tracing (in "),
            (
                "[breaker]\nfailure_threshold = 0\n",
                "breaker.failure_threshold = 0 (in ",
            ),
            (
                "[breaker]\nfailure_threshold = \"three\"\n",
                "breaker.failure_threshold = \"three\" (in ",
            ),
            (
                "[breaker]\nprobe_every = true\n",
                "breaker.probe_every = true (in ",
            ),
            (
                "[breaker]\nprobe_every = 2.5\n",
                "breaker.probe_every = 2.5 (in ",
            ),
            (
                "[metrics]\ntrusted_proxies = \"10.0.0.0/8\"\n",
                "metrics.trusted_proxies = \"10.0.0.0/8\" (in ",
            ),
            (
                "[metrics]\ntrusted_proxies = [\"10.0.0.0/8\", \"nope\"]\n",
                "metrics.trusted_proxies[1] = \"nope\" (in ",
            ),
            (
                "[server]\nshutdown_timeout = 10\n",
                "server.shutdown_timeout = 10 (in ",
            ),
            ("server = 1\n", "server = 1 (in "),
        ];
        for (text, expected) in cases {
            let file = toml_file(text);
            let err = Settings::load(Some(file.path()), &Env::new())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(expected),
                "{text:?}:\n  got      {err}\n  expected {expected}"
            );
            assert!(err.contains(&file.path().display().to_string()), "{err}");
            assert!(!err.contains('\n'), "not one line: {err:?}");
        }
    }

    #[test]
    fn unreadable_or_malformed_file_is_one_line() {
        let missing = Settings::load(Some(Path::new("/nonexistent/taskman.toml")), &Env::new())
            .unwrap_err()
            .to_string();
        assert!(
            missing.starts_with("cannot read config file /nonexistent/taskman.toml: "),
            "{missing}"
        );

        let file = toml_file("[server]\nbind = 127.0.0.1:8080\n");
        let err = Settings::load(Some(file.path()), &Env::new())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot read config file"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        assert!(!err.contains('\n'), "not one line: {err:?}");
    }

    #[test]
    fn printed_config_round_trips_through_load() {
        let env = env(&[
            ("TASKMAN__SERVER__WORKERS", "3"),
            ("TASKMAN__BREAKER__PROBE_AFTER", "1m 30s"),
            ("TASKMAN__METRICS__TRUSTED_PROXIES", "10.0.0.0/8,::1"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer hunter2"),
        ]);
        let settings = Settings::load(None, &env).unwrap();
        let text = settings.to_toml(None, &env).unwrap();
        assert!(text.contains("bind = \"127.0.0.1:8080\""), "{text}");
        assert!(text.contains("probe_after = \"1m 30s\""), "{text}");
        assert!(
            text.contains("# OTEL_EXPORTER_OTLP_HEADERS = \"authorization=***\""),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");

        let file = toml_file(&text);
        let reloaded = Settings::load(Some(file.path()), &Env::new()).unwrap();
        assert_eq!(reloaded, settings);
    }
}
