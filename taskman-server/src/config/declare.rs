//! The machinery behind the one declaration of every setting.
//!
//! A setting is declared once, in a [`section!`] (the server's own sections) or in the
//! library type that owns it (`breaker_core::settings!`, visited through [`CoreSettings`]).
//! Everything else is derived by walking those declarations with a [`Visit`]or: the parser
//! ([`Settings`](super::Settings)' `Deserialize`), `--print-config` ([`to_toml_table`]), the
//! reference table in `docs/configuration.md` ([`reference`]) and the names in error messages.
//! A setting's value type and rule live in its [`Codec`].

use std::fmt::Write as _;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::time::Duration;

use breaker_otel::{Setting, VisitSettings};
use serde::de::{self, DeserializeSeed, MapAccess};
use serde::{Deserialize, Deserializer};

use super::values::{Count, HumanDuration, Switch};
use super::{ENV_PREFIX, ENV_SEPARATOR};

/// How a setting's type is read, written back and named: the rule ("must be at least 1")
/// is part of reading, so a value that breaks it is refused with the key that holds it.
pub(crate) trait Codec<T> {
    /// How the reference names the type.
    const TYPE: &'static str;

    /// Reads a value from the merged configuration sources.
    fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<T, D::Error>;

    /// The value as `--print-config` writes it; `None` leaves the key out (unset options).
    fn to_toml(value: &T) -> Option<toml::Value>;
}

/// Walks every setting of [`Settings`](super::Settings), section by section, lending each
/// typed value.
pub(crate) trait Visit {
    /// The settings visited next belong to the section `name` (`server`, `breaker`, …).
    fn section(&mut self, name: &'static str, doc: &'static str);

    /// One setting of the current section, read and written with `C`.
    fn setting<T, C: Codec<T>>(&mut self, key: &'static str, doc: &'static str, value: &mut T);
}

/// Visits a library's settings (declared with `breaker_core::settings!`) as settings of the
/// current section, with the server's codecs for their types.
pub(crate) struct CoreSettings<'a, V>(pub(crate) &'a mut V);

impl<V: Visit> VisitSettings for CoreSettings<'_, V> {
    fn count(&mut self, setting: Setting, value: &mut NonZeroU32) {
        self.0
            .setting::<_, Count>(setting.name, setting.summary(), value);
    }

    fn duration(&mut self, setting: Setting, value: &mut Duration) {
        self.0
            .setting::<_, HumanDuration>(setting.name, setting.summary(), value);
    }

    fn flag(&mut self, setting: Setting, value: &mut bool) {
        self.0
            .setting::<_, Switch>(setting.name, setting.summary(), value);
    }
}

/// Declares one of the server's own sections: a struct whose fields are its settings, each
/// with its doc (the first line goes into the reference), type, codec and default.
macro_rules! section {
    (
        $(#[doc = $doc:literal])*
        #[section = $section:literal]
        $(#[$attr:meta])*
        pub struct $name:ident {
            $(
                #[doc = $summary:literal]
                $(#[doc = $more:literal])*
                $(#[$field_attr:meta])*
                $field:ident : $ty:ty as $codec:ty = $default:expr
            ),* $(,)?
        }
    ) => {
        $(#[doc = $doc])*
        $(#[$attr])*
        pub struct $name {
            $(
                #[doc = $summary]
                $(#[doc = $more])*
                $(#[$field_attr])*
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl $name {
            /// The section's name in the file and in `TASKMAN__SECTION__KEY`.
            pub const SECTION: &'static str = $section;

            pub(crate) fn visit(&mut self, visitor: &mut impl $crate::config::declare::Visit) {
                visitor.section($section, concat!($($doc),*));
                $(
                    visitor.setting::<_, $codec>(stringify!($field), $summary.trim(), &mut self.$field);
                )*
            }
        }
    };
}

pub(crate) use section;

/// `server.bind` → `TASKMAN__SERVER__BIND`; list indices are dropped.
pub(crate) fn env_var_for(key: &str) -> String {
    let base = key.split('[').next().unwrap_or(key);
    let mut var = String::from(ENV_PREFIX);
    for part in base.split('.') {
        var.push_str(ENV_SEPARATOR);
        var.push_str(&part.to_ascii_uppercase());
    }
    var
}

/// Reads a map of sections into `settings`, which holds the defaults. Unknown sections and
/// keys are errors; keys that are absent keep their defaults.
pub(crate) fn deserialize_into<'de, D, S>(deserializer: D, settings: &mut S) -> Result<(), D::Error>
where
    D: Deserializer<'de>,
    S: Walk,
{
    deserializer.deserialize_map(Sections { settings })
}

/// A tree of sections that a [`Visit`]or can walk: [`Settings`](super::Settings).
pub(crate) trait Walk {
    /// Lends every setting of every section to `visitor`.
    fn walk(&mut self, visitor: &mut impl Visit);
}

struct Sections<'a, S> {
    settings: &'a mut S,
}

impl<'de, S: Walk> de::Visitor<'de> for Sections<'_, S> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a table of sections")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(section) = map.next_key::<String>()? {
            let mut names = Names::default();
            self.settings.walk(&mut names);
            if names.sections.contains(&section.as_str()) {
                map.next_value_seed(SectionSeed {
                    settings: &mut *self.settings,
                    section: &section,
                })?;
            } else {
                map.next_value_seed(Unknown(&section))?;
            }
        }
        Ok(())
    }
}

struct SectionSeed<'a, S> {
    settings: &'a mut S,
    section: &'a str,
}

impl<'de, S: Walk> DeserializeSeed<'de> for SectionSeed<'_, S> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, S: Walk> de::Visitor<'de> for SectionSeed<'_, S> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a table of settings")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            let mut assign = Assign {
                section: self.section,
                key: &key,
                current: "",
                map: &mut map,
                outcome: None,
                _de: PhantomData,
            };
            self.settings.walk(&mut assign);
            let outcome = assign.outcome;
            match outcome {
                Some(result) => result?,
                None => map.next_value_seed(Unknown(&key))?,
            }
        }
        Ok(())
    }
}

/// Refuses the value of an unknown key or section, so that the error carries its path.
struct Unknown<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for Unknown<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        // Consume the value, then refuse it: serde's own "unknown field" wording, which
        // the loader turns into "unknown key …".
        de::IgnoredAny::deserialize(d)?;
        Err(de::Error::unknown_field(self.0, &[]))
    }
}

/// Assigns the value of `section.key`, when the walk reaches it, from `map`.
struct Assign<'a, 'de, A: MapAccess<'de>> {
    section: &'a str,
    key: &'a str,
    current: &'static str,
    map: &'a mut A,
    outcome: Option<Result<(), A::Error>>,
    _de: PhantomData<&'de ()>,
}

impl<'de, A: MapAccess<'de>> Assign<'_, 'de, A> {
    fn matches(&self, key: &str) -> bool {
        self.outcome.is_none() && self.current == self.section && key == self.key
    }
}

impl<'de, A: MapAccess<'de>> Visit for Assign<'_, 'de, A> {
    fn section(&mut self, name: &'static str, _doc: &'static str) {
        self.current = name;
    }

    fn setting<T, C: Codec<T>>(&mut self, key: &'static str, _doc: &'static str, value: &mut T) {
        if !self.matches(key) {
            return;
        }
        let result = self.map.next_value_seed(CodecSeed::<T, C>(PhantomData));
        self.outcome = Some(result.map(|read| *value = read));
    }
}

struct CodecSeed<T, C>(PhantomData<(T, C)>);

impl<'de, T, C: Codec<T>> DeserializeSeed<'de> for CodecSeed<T, C> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        C::deserialize(d)
    }
}

/// The names of the sections, in order.
#[derive(Default)]
struct Names {
    sections: Vec<&'static str>,
}

impl Visit for Names {
    fn section(&mut self, name: &'static str, _doc: &'static str) {
        self.sections.push(name);
    }

    fn setting<T, C: Codec<T>>(&mut self, _: &'static str, _: &'static str, _: &mut T) {}
}

/// The settings as a TOML table of sections, as `--print-config` writes them.
pub(crate) fn to_toml_table(settings: &mut impl Walk) -> toml::Table {
    struct Collect {
        table: toml::Table,
        current: &'static str,
    }

    impl Visit for Collect {
        fn section(&mut self, name: &'static str, _doc: &'static str) {
            self.current = name;
            self.table
                .insert(name.to_owned(), toml::Value::Table(toml::Table::new()));
        }

        fn setting<T, C: Codec<T>>(&mut self, key: &'static str, _: &'static str, value: &mut T) {
            if let (Some(value), Some(toml::Value::Table(section))) =
                (C::to_toml(value), self.table.get_mut(self.current))
            {
                section.insert(key.to_owned(), value);
            }
        }
    }

    let mut collect = Collect {
        table: toml::Table::new(),
        current: "",
    };
    settings.walk(&mut collect);
    collect.table
}

/// The reference tables of `docs/configuration.md`: one per section, a row per setting with
/// its key, type, default, environment variable and doc, from `defaults`.
pub(crate) fn reference(defaults: &mut impl Walk) -> String {
    struct Tables {
        out: String,
        current: &'static str,
    }

    impl Visit for Tables {
        fn section(&mut self, name: &'static str, doc: &'static str) {
            self.current = name;
            let _ = write!(
                self.out,
                "\n### `[{name}]`: {}\n\n| key | type | default | environment variable | effect |\n|---|---|---|---|---|\n",
                doc.trim()
            );
        }

        fn setting<T, C: Codec<T>>(&mut self, key: &'static str, doc: &'static str, value: &mut T) {
            let dotted = format!("{}.{key}", self.current);
            let default = C::to_toml(value)
                .map_or_else(|| "unset".to_owned(), |v| format!("`{}`", inline(&v)));
            let _ = writeln!(
                self.out,
                "| `{dotted}` | {} | {default} | `{}` | {} |",
                C::TYPE,
                env_var_for(&dotted),
                doc.trim().replace('|', "\\|"),
            );
        }
    }

    let mut tables = Tables {
        out: String::new(),
        current: "",
    };
    defaults.walk(&mut tables);
    tables.out.push_str(
        "\n### OpenTelemetry variables\n\nRead by `breaker-otel`'s one reader of the OTLP environment and checked at start-up: a bad value stops the server with one line naming the variable. A `_TRACES_` variable wins over its general twin.\n\n| variable | default | effect |\n|---|---|---|\n",
    );
    for var in breaker_otel::OtlpEnv::VARIABLES {
        let default = if var.default.starts_with("OTEL_") {
            format!("as `{}`", var.default)
        } else if var.default == "none" || var.default.contains(' ') {
            var.default.to_owned()
        } else {
            format!("`{}`", var.default)
        };
        let _ = writeln!(
            tables.out,
            "| `{}` | {default} | {} |",
            var.name,
            var.doc.replace('|', "\\|"),
        );
    }
    tables.out
}

/// Every key, dotted, in declaration order.
pub(crate) fn keys(settings: &mut impl Walk) -> Vec<String> {
    struct Keys {
        keys: Vec<String>,
        current: &'static str,
    }

    impl Visit for Keys {
        fn section(&mut self, name: &'static str, _: &'static str) {
            self.current = name;
        }

        fn setting<T, C: Codec<T>>(&mut self, key: &'static str, _: &'static str, _: &mut T) {
            self.keys.push(format!("{}.{key}", self.current));
        }
    }

    let mut keys = Keys {
        keys: Vec::new(),
        current: "",
    };
    settings.walk(&mut keys);
    keys.keys
}

/// A TOML value on one line, as in a file: `"30s"`, `3`, `[]`.
fn inline(value: &toml::Value) -> String {
    value.to_string()
}
