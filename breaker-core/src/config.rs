//! Breaker settings, each declared once: its name, type, default and doc.
//!
//! The types make nonsense unrepresentable (a threshold is a [`NonZeroU32`]),
//! so building a breaker cannot fail. The same declaration describes the
//! settings to whoever loads, prints or documents them ([`VisitSettings`]):
//! a configuration front-end learns a new setting without being edited.

use std::num::NonZeroU32;
use std::time::Duration;

/// One setting as a configuration front-end sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The field's name, which front-ends use as the key (`failure_threshold`).
    pub name: &'static str,
    /// The first line of the field's doc comment.
    pub doc: &'static str,
}

impl Setting {
    /// The doc line without the blank a `///` comment leaves in front of it.
    #[must_use]
    pub fn summary(&self) -> &'static str {
        self.doc.trim()
    }
}

/// Walks the settings of a configuration type declared with [`settings!`](crate::settings!),
/// lending each typed value: a loader assigns it, a printer reads it, a
/// documentation generator reads its default.
///
/// One method per value type, so that every front-end handles every type.
pub trait VisitSettings {
    /// A count, at least 1.
    fn count(&mut self, setting: Setting, value: &mut NonZeroU32);
    /// A length of time. Zero is representable; front-ends that take
    /// durations from people usually refuse it.
    fn duration(&mut self, setting: Setting, value: &mut Duration);
    /// A switch: on (`true`) or off.
    fn flag(&mut self, setting: Setting, value: &mut bool);
}

/// Declares a settings struct once: each field with its doc, type and
/// default. From that one declaration come the struct (public fields, marked
/// `#[non_exhaustive]` so that new settings are not breaking changes), a
/// `DEFAULT` constant and [`Default`], a chainable `const` setter named after
/// each field, and `visit_settings`, which lends each field to a
/// [`VisitSettings`].
///
/// A field's kind says how it is visited: `count` ([`NonZeroU32`]),
/// `duration` ([`Duration`]), `flag` ([`bool`]), or `nested` (another type declared with this
/// macro, whose settings are visited in line, as if they were this type's).
///
/// ```
/// use std::time::Duration;
/// use breaker_core::BreakerConfig;
///
/// breaker_core::settings! {
///     /// Settings of a component that embeds the breaker.
///     #[derive(Debug, Clone, Copy, PartialEq, Eq)]
///     pub struct GuardConfig {
///         /// The breaker's own settings.
///         breaker: nested BreakerConfig = BreakerConfig::DEFAULT,
///         /// How long one call may take.
///         call_timeout: duration Duration = Duration::from_secs(2),
///         /// Whether failed calls are logged.
///         log_failures: flag bool = true,
///     }
/// }
///
/// let config = GuardConfig::DEFAULT.call_timeout(Duration::from_secs(5));
/// assert_eq!(config.breaker.failure_threshold.get(), 3);
/// assert_eq!(config.call_timeout, Duration::from_secs(5));
/// assert!(config.log_failures);
/// ```
#[macro_export]
macro_rules! settings {
    (
        $(#[$attr:meta])*
        $vis:vis struct $name:ident {
            $(
                #[doc = $summary:literal]
                $(#[doc = $more:literal])*
                $field:ident : $kind:ident $ty:ty = $default:expr
            ),* $(,)?
        }
    ) => {
        $(#[$attr])*
        #[non_exhaustive]
        $vis struct $name {
            $(
                #[doc = $summary]
                $(#[doc = $more])*
                pub $field: $ty,
            )*
        }

        impl $name {
            /// Every setting at its default.
            pub const DEFAULT: Self = Self { $($field: $default,)* };

            $(
                #[doc = concat!("Sets `", stringify!($field), "`:", $summary)]
                #[must_use]
                pub const fn $field(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )*

            /// Lends every setting, in declaration order, to `visitor`.
            pub fn visit_settings(&mut self, visitor: &mut impl $crate::VisitSettings) {
                $(
                    $crate::settings!(@visit $kind, visitor, stringify!($field), $summary, &mut self.$field);
                )*
            }
        }

        impl ::core::default::Default for $name {
            fn default() -> Self {
                Self::DEFAULT
            }
        }
    };
    (@visit count, $visitor:ident, $name:expr, $doc:expr, $slot:expr) => {
        $visitor.count($crate::Setting { name: $name, doc: $doc }, $slot)
    };
    (@visit duration, $visitor:ident, $name:expr, $doc:expr, $slot:expr) => {
        $visitor.duration($crate::Setting { name: $name, doc: $doc }, $slot)
    };
    (@visit flag, $visitor:ident, $name:expr, $doc:expr, $slot:expr) => {
        $visitor.flag($crate::Setting { name: $name, doc: $doc }, $slot)
    };
    (@visit nested, $visitor:ident, $name:expr, $doc:expr, $slot:expr) => {
        ($slot).visit_settings($visitor)
    };
}

/// A non-zero constant; a zero fails the build, since the defaults are constants.
const fn non_zero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => panic!("a count setting's default is zero"),
    }
}

settings! {
    /// The settings of a [`CircuitBreaker`](crate::CircuitBreaker).
    ///
    /// Every value is valid by its type, so nothing is checked at run time.
    /// Start from [`BreakerConfig::DEFAULT`] (or [`Default`]) and chain the
    /// setters:
    ///
    /// ```
    /// use std::num::NonZeroU32;
    /// use std::time::Duration;
    /// use breaker_core::BreakerConfig;
    ///
    /// let config = BreakerConfig::DEFAULT
    ///     .failure_threshold(NonZeroU32::new(5).unwrap())
    ///     .probe_after(Duration::from_secs(10));
    /// assert_eq!(config.probe_every.get(), 10);
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct BreakerConfig {
        /// Consecutive failed calls, while closed, that open the circuit.
        failure_threshold: count NonZeroU32 = non_zero(3),
        /// While open, attempt number `k` (counted from 0 when the circuit opened) is a probe when `k` is a multiple of this.
        probe_every: count NonZeroU32 = non_zero(10),
        /// While open, the next attempt is a probe whatever its number once this long has passed since the last probe started or failed (or the circuit opened).
        ///
        /// Zero makes every attempt a probe while no probe is in flight.
        probe_after: duration Duration = Duration::from_secs(30),
        /// While open, no probe starts sooner than this after the previous probe ended (or the circuit opened), whatever the attempt's number.
        ///
        /// After each consecutive failed probe the wait doubles, with equal
        /// jitter (half fixed, half random), up to `probe_after`; it returns
        /// to this value when the circuit closes. Zero turns the floor off:
        /// probes are then paced by `probe_every` and `probe_after` alone.
        min_probe_interval: duration Duration = Duration::from_secs(1),
        /// Probes allowed to be in flight at once while half-open.
        max_probes_in_flight: count NonZeroU32 = non_zero(1),
        /// A probe that has not reported back after this long is abandoned and counted as failed.
        ///
        /// Zero abandons a probe at the first timeout check after it started.
        probe_timeout: duration Duration = Duration::from_secs(15),
        /// The longest a backend's request to hold off (throttling) is honoured; a longer request is cut to this.
        ///
        /// See [`Outcome::Throttled`](crate::Outcome::Throttled). The cap keeps a hostile or broken backend from silencing the caller for
        /// good. Zero ignores throttles: they are counted and hold nothing off.
        max_throttle: duration Duration = Duration::from_secs(300),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names and docs, as a visitor sees them.
    #[derive(Default)]
    struct Names(Vec<(&'static str, &'static str, String)>);

    impl VisitSettings for Names {
        fn count(&mut self, setting: Setting, value: &mut NonZeroU32) {
            self.0
                .push((setting.name, setting.summary(), value.to_string()));
        }

        fn duration(&mut self, setting: Setting, value: &mut Duration) {
            self.0
                .push((setting.name, setting.summary(), format!("{value:?}")));
        }

        fn flag(&mut self, setting: Setting, value: &mut bool) {
            self.0
                .push((setting.name, setting.summary(), value.to_string()));
        }
    }

    #[test]
    fn every_setting_is_visited_with_its_default() {
        let mut names = Names::default();
        BreakerConfig::default().visit_settings(&mut names);
        let seen: Vec<(&str, String)> = names.0.iter().map(|(n, _, v)| (*n, v.clone())).collect();
        assert_eq!(
            seen,
            [
                ("failure_threshold", "3".to_owned()),
                ("probe_every", "10".to_owned()),
                ("probe_after", "30s".to_owned()),
                ("min_probe_interval", "1s".to_owned()),
                ("max_probes_in_flight", "1".to_owned()),
                ("probe_timeout", "15s".to_owned()),
                ("max_throttle", "300s".to_owned()),
            ]
        );
        for (name, doc, _) in names.0 {
            assert!(!doc.is_empty() && !doc.starts_with(' '), "{name}: {doc:?}");
        }
    }

    /// A visitor can assign, which is how a configuration loader uses it.
    #[test]
    fn a_visitor_can_assign() {
        struct Double;
        impl VisitSettings for Double {
            fn count(&mut self, _: Setting, value: &mut NonZeroU32) {
                *value = value.saturating_mul(non_zero(2));
            }
            fn duration(&mut self, _: Setting, value: &mut Duration) {
                *value *= 2;
            }
            fn flag(&mut self, _: Setting, value: &mut bool) {
                *value = !*value;
            }
        }
        let mut config = BreakerConfig::DEFAULT;
        config.visit_settings(&mut Double);
        assert_eq!(config.failure_threshold.get(), 6);
        assert_eq!(config.probe_timeout, Duration::from_secs(30));
    }

    #[test]
    fn setters_chain() {
        let config = BreakerConfig::DEFAULT
            .probe_every(non_zero(2))
            .probe_after(Duration::from_secs(1));
        assert_eq!(config.probe_every.get(), 2);
        assert_eq!(config.probe_after, Duration::from_secs(1));
        assert_eq!(config.failure_threshold.get(), 3);
    }
}
