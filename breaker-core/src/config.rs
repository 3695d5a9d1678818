//! Breaker settings: every value that reaches the machine has been checked,
//! so the machine itself never meets a zero threshold or a zero timeout.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

/// The settings of a [`CircuitBreaker`](crate::CircuitBreaker).
///
/// Built with [`BreakerConfig::builder`], which rejects nonsense with a
/// [`ConfigError`] naming the setting; [`Default`] gives the contract's
/// defaults (threshold 3, probe every 10th attempt or after 30 s, one probe in
/// flight, probes abandoned after 15 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    failure_threshold: NonZeroU32,
    probe_every: NonZeroU32,
    probe_after: Duration,
    max_probes_in_flight: NonZeroU32,
    probe_timeout: Duration,
}

impl BreakerConfig {
    /// Default consecutive failures that open the circuit.
    pub const DEFAULT_FAILURE_THRESHOLD: u32 = 3;
    /// Default probe period, in attempts, while open.
    pub const DEFAULT_PROBE_EVERY: u32 = 10;
    /// Default time after the last probe when the next attempt probes anyway.
    pub const DEFAULT_PROBE_AFTER: Duration = Duration::from_secs(30);
    /// Default number of probes allowed at once.
    pub const DEFAULT_MAX_PROBES_IN_FLIGHT: u32 = 1;
    /// Default time after which a probe that never reported is abandoned.
    pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(15);

    /// Starts from the defaults.
    pub fn builder() -> BreakerConfigBuilder {
        BreakerConfigBuilder::default()
    }

    /// Consecutive failures in closed state that open the circuit.
    #[must_use]
    pub fn failure_threshold(&self) -> NonZeroU32 {
        self.failure_threshold
    }

    /// While open, attempt `k` is a probe when `k % probe_every == 0`.
    #[must_use]
    pub fn probe_every(&self) -> NonZeroU32 {
        self.probe_every
    }

    /// While open, the next attempt is a probe once this much time has passed
    /// since the last probe started (or the circuit opened) and since the last
    /// probe failed, whatever its number.
    #[must_use]
    pub fn probe_after(&self) -> Duration {
        self.probe_after
    }

    /// Probes allowed to be outstanding at once.
    #[must_use]
    pub fn max_probes_in_flight(&self) -> NonZeroU32 {
        self.max_probes_in_flight
    }

    /// A probe that has not reported back after this long counts as failed.
    #[must_use]
    pub fn probe_timeout(&self) -> Duration {
        self.probe_timeout
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfigBuilder::default()
            .build()
            .unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

/// Collects settings as plain numbers and checks them all in [`build`](Self::build).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct BreakerConfigBuilder {
    failure_threshold: u32,
    probe_every: u32,
    probe_after: Duration,
    max_probes_in_flight: u32,
    probe_timeout: Duration,
}

impl Default for BreakerConfigBuilder {
    fn default() -> Self {
        Self {
            failure_threshold: BreakerConfig::DEFAULT_FAILURE_THRESHOLD,
            probe_every: BreakerConfig::DEFAULT_PROBE_EVERY,
            probe_after: BreakerConfig::DEFAULT_PROBE_AFTER,
            max_probes_in_flight: BreakerConfig::DEFAULT_MAX_PROBES_IN_FLIGHT,
            probe_timeout: BreakerConfig::DEFAULT_PROBE_TIMEOUT,
        }
    }
}

impl BreakerConfigBuilder {
    /// See [`BreakerConfig::failure_threshold`]. Must be at least 1.
    pub fn failure_threshold(mut self, value: u32) -> Self {
        self.failure_threshold = value;
        self
    }

    /// See [`BreakerConfig::probe_every`]. Must be at least 1.
    pub fn probe_every(mut self, value: u32) -> Self {
        self.probe_every = value;
        self
    }

    /// See [`BreakerConfig::probe_after`]. Must be more than zero.
    pub fn probe_after(mut self, value: Duration) -> Self {
        self.probe_after = value;
        self
    }

    /// See [`BreakerConfig::max_probes_in_flight`]. Must be at least 1.
    pub fn max_probes_in_flight(mut self, value: u32) -> Self {
        self.max_probes_in_flight = value;
        self
    }

    /// See [`BreakerConfig::probe_timeout`]. Must be more than zero.
    pub fn probe_timeout(mut self, value: Duration) -> Self {
        self.probe_timeout = value;
        self
    }

    /// Checks every setting; the error names the first one that makes no sense.
    ///
    /// ```
    /// use breaker_core::BreakerConfig;
    ///
    /// let err = BreakerConfig::builder().failure_threshold(0).build().unwrap_err();
    /// assert_eq!(err.setting(), "failure_threshold");
    /// ```
    pub fn build(self) -> Result<BreakerConfig, ConfigError> {
        let non_zero = |setting, value| {
            NonZeroU32::new(value).ok_or(ConfigError {
                setting,
                problem: "must be at least 1",
            })
        };
        let positive = |setting, value: Duration| {
            if value.is_zero() {
                Err(ConfigError {
                    setting,
                    problem: "must be longer than zero",
                })
            } else {
                Ok(value)
            }
        };
        Ok(BreakerConfig {
            failure_threshold: non_zero("failure_threshold", self.failure_threshold)?,
            probe_every: non_zero("probe_every", self.probe_every)?,
            probe_after: positive("probe_after", self.probe_after)?,
            max_probes_in_flight: non_zero("max_probes_in_flight", self.max_probes_in_flight)?,
            probe_timeout: positive("probe_timeout", self.probe_timeout)?,
        })
    }
}

/// A setting that makes no sense, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigError {
    setting: &'static str,
    problem: &'static str,
}

impl ConfigError {
    /// The name of the offending setting, as spelled by the builder method.
    #[must_use]
    pub fn setting(&self) -> &'static str {
        self.setting
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.setting, self.problem)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_contract_defaults() {
        let config = BreakerConfig::default();
        assert_eq!(config.failure_threshold().get(), 3);
        assert_eq!(config.probe_every().get(), 10);
        assert_eq!(config.probe_after(), Duration::from_secs(30));
        assert_eq!(config.max_probes_in_flight().get(), 1);
        assert_eq!(config.probe_timeout(), Duration::from_secs(15));
    }

    #[test]
    fn every_nonsense_setting_is_named() {
        let cases: [(BreakerConfigBuilder, &str); 5] = [
            (
                BreakerConfig::builder().failure_threshold(0),
                "failure_threshold",
            ),
            (BreakerConfig::builder().probe_every(0), "probe_every"),
            (
                BreakerConfig::builder().probe_after(Duration::ZERO),
                "probe_after",
            ),
            (
                BreakerConfig::builder().max_probes_in_flight(0),
                "max_probes_in_flight",
            ),
            (
                BreakerConfig::builder().probe_timeout(Duration::ZERO),
                "probe_timeout",
            ),
        ];
        for (builder, setting) in cases {
            let err = builder.build().unwrap_err();
            assert_eq!(err.setting(), setting);
            assert!(err.to_string().starts_with(setting), "{err}");
        }
    }
}
