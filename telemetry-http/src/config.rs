//! Settings for the telemetry routes. Their types admit only valid values,
//! so building [`TelemetryHttp`](crate::TelemetryHttp) has nothing left to
//! reject in them.

use std::num::NonZeroU32;

use governor::Quota;

use crate::TrustedProxy;

/// Settings of [`TelemetryHttp`](crate::TelemetryHttp).
///
/// The defaults are the contract's: 10 requests per minute per client IP on
/// `/metrics`, a burst of 10, no trusted proxies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryHttpConfig {
    /// Sustained rate of `/metrics` requests per client IP: one request is
    /// earned back every `60 s / requests_per_minute`.
    pub requests_per_minute: NonZeroU32,
    /// How many `/metrics` requests a client may make at once before the
    /// sustained rate applies.
    pub burst: NonZeroU32,
    /// Proxies whose `X-Forwarded-For` header is believed. Requests from any
    /// other peer are keyed by the peer address.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// The `service.instance.id` of the process's spans (for instance
    /// `TracingPipelineBuilder::resolved_service_instance_id`), shown as
    /// `service_instance_id` in `/health/telemetry` so that an operator can find a
    /// replica's spans; `None` leaves the field out. Not a setting: the host knows it.
    pub service_instance_id: Option<String>,
}

/// Zero fails the build: these are evaluated as constants.
const fn non_zero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => panic!("a non-zero default is zero"),
    }
}

impl TelemetryHttpConfig {
    /// `requests_per_minute` unless set otherwise.
    pub const DEFAULT_REQUESTS_PER_MINUTE: NonZeroU32 = non_zero(10);
    /// `burst` unless set otherwise.
    pub const DEFAULT_BURST: NonZeroU32 = non_zero(10);

    /// The limiter quota: `burst` at once, one more every
    /// `60 s / requests_per_minute` (never zero: 60 s / `u32::MAX` is about 14 ns).
    pub(crate) fn quota(&self) -> Quota {
        Quota::per_minute(self.requests_per_minute).allow_burst(self.burst)
    }
}

impl Default for TelemetryHttpConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: Self::DEFAULT_REQUESTS_PER_MINUTE,
            burst: Self::DEFAULT_BURST,
            trusted_proxies: Vec::new(),
            service_instance_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn default_quota_is_ten_at_once_then_one_every_six_seconds() {
        let quota = TelemetryHttpConfig::default().quota();
        assert_eq!(quota.burst_size().get(), 10);
        assert_eq!(quota.replenish_interval(), Duration::from_secs(6));
    }

    #[test]
    fn rate_and_burst_are_independent() {
        let quota = TelemetryHttpConfig {
            requests_per_minute: non_zero(2),
            burst: non_zero(3),
            ..TelemetryHttpConfig::default()
        }
        .quota();
        assert_eq!(quota.burst_size().get(), 3);
        assert_eq!(quota.replenish_interval(), Duration::from_secs(30));
    }

    #[test]
    fn the_highest_rate_still_has_a_nonzero_period() {
        let quota = TelemetryHttpConfig {
            requests_per_minute: NonZeroU32::MAX,
            ..TelemetryHttpConfig::default()
        }
        .quota();
        assert!(quota.replenish_interval() > Duration::ZERO);
    }
}
