//! Settings for the telemetry routes, and their validation into the forms
//! the rate limiter uses (a governor quota, parsed proxy networks).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::str::FromStr;
use std::time::Duration;

use governor::Quota;

/// Settings of [`TelemetryHttp`](crate::TelemetryHttp).
///
/// The defaults are the contract's: 10 requests per minute per client IP on
/// `/metrics`, a burst of 10, no trusted proxies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryHttpConfig {
    /// Sustained rate of `/metrics` requests per client IP: one request is
    /// earned back every `60 s / requests_per_minute`. At least 1.
    pub requests_per_minute: NonZeroU32,
    /// How many `/metrics` requests a client may make at once before the
    /// sustained rate applies. At least 1.
    pub burst: NonZeroU32,
    /// Proxies whose `X-Forwarded-For` header is believed, as IP addresses
    /// (`10.0.0.7`, `::1`) or CIDR blocks (`10.0.0.0/8`, `fd00::/8`).
    /// Requests from any other peer are keyed by the peer address.
    pub trusted_proxies: Vec<TrustedProxy>,
}

impl Default for TelemetryHttpConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: NonZeroU32::MIN.saturating_add(9),
            burst: NonZeroU32::MIN.saturating_add(9),
            trusted_proxies: Vec::new(),
        }
    }
}

/// Why a [`TelemetryHttpConfig`] was refused. Each message names the setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `requests_per_minute` was 0.
    #[error("requests_per_minute must be at least 1, got 0")]
    ZeroRequestsPerMinute,
    /// `burst` was 0.
    #[error("burst must be at least 1, got 0")]
    ZeroBurst,
    /// An entry of `trusted_proxies` is not an IP address or CIDR block.
    #[error("trusted_proxies entry `{value}` is invalid: {reason}")]
    TrustedProxy {
        /// The entry as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The metrics could not be registered in the instance's own registry.
    #[error("registering the telemetry metrics failed: {0}")]
    MetricRegistration(#[from] prometheus::Error),
}

impl TelemetryHttpConfig {
    /// The limiter quota: `burst` at once, one more every
    /// `60 s / requests_per_minute`.
    pub(crate) fn quota(&self) -> Result<Quota, ConfigError> {
        let per_minute = self.requests_per_minute;
        let burst = self.burst;
        // 60 s / u32::MAX is still about 14 ns, so the period is never zero.
        let period = Duration::from_secs(60) / per_minute.get();
        let quota = Quota::with_period(period).ok_or(ConfigError::ZeroRequestsPerMinute)?;
        Ok(quota.allow_burst(burst))
    }

    pub(crate) fn trusted_proxies(&self) -> Result<TrustedProxies, ConfigError> {
        let blocks = self.trusted_proxies.iter().map(|p| p.0).collect();
        Ok(TrustedProxies { blocks })
    }
}

/// The set of peers whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug, Default)]
pub(crate) struct TrustedProxies {
    blocks: Vec<IpBlock>,
}

impl TrustedProxies {
    pub(crate) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.blocks.iter().any(|block| block.contains(ip))
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket
/// reports for an IPv4 peer) is the IPv4 address it carries.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        IpAddr::V4(_) => ip,
    }
}

/// One `trusted_proxies` entry: an IP address or a CIDR block (a network
/// address with no host bits set, and a prefix length). Parse it with
/// [`str::parse`]; `Display` writes it back in the same syntax. Hosts that
/// validate their configuration early (before building [`TelemetryHttp`](crate::TelemetryHttp))
/// use this type, so the rules are written once.
///
/// ```
/// use telemetry_http::TrustedProxy;
///
/// let block: TrustedProxy = "10.0.0.0/8".parse().unwrap();
/// assert_eq!(block.to_string(), "10.0.0.0/8");
/// let typo = "10.0.0.1/8".parse::<TrustedProxy>().unwrap_err();
/// assert_eq!(typo.to_string(), "host bits are set; the network is 10.0.0.0/8");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedProxy(IpBlock);

/// Why a `trusted_proxies` entry is not an IP address or CIDR block.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TrustedProxyError(String);

impl FromStr for TrustedProxy {
    type Err = TrustedProxyError;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        entry.parse().map(Self).map_err(TrustedProxyError)
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpBlock::V4 {
                network,
                prefix: 32,
            } => write!(f, "{}", Ipv4Addr::from(network)),
            IpBlock::V4 { network, prefix } => write!(f, "{}/{prefix}", Ipv4Addr::from(network)),
            IpBlock::V6 {
                network,
                prefix: 128,
            } => write!(f, "{}", Ipv6Addr::from(network)),
            IpBlock::V6 { network, prefix } => write!(f, "{}/{prefix}", Ipv6Addr::from(network)),
        }
    }
}

/// A CIDR block: a network address with no host bits set, and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IpBlock {
    V4 { network: u32, prefix: u8 },
    V6 { network: u128, prefix: u8 },
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl IpBlock {
    fn contains(self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Self::V4 { network, prefix }, IpAddr::V4(v4)) => {
                u32::from(v4) & mask_v4(prefix) == network
            }
            (Self::V6 { network, prefix }, IpAddr::V6(v6)) => {
                u128::from(v6) & mask_v6(prefix) == network
            }
            _ => false,
        }
    }
}

impl FromStr for IpBlock {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let entry = entry.trim();
        let (addr, prefix) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 or IPv6 address"))?;
        let prefix = match prefix {
            None => None,
            Some(p) => Some(
                p.parse::<u8>()
                    .map_err(|_| format!("prefix length `{p}` is not a number"))?,
            ),
        };
        match addr {
            IpAddr::V4(v4) => block_v4(v4, prefix.unwrap_or(32)),
            IpAddr::V6(v6) => match (v6.to_ipv4_mapped(), prefix) {
                // Peers are compared in their IPv4 form, so mapped blocks are too.
                (Some(v4), None) => block_v4(v4, 32),
                (Some(v4), Some(p)) if p >= 96 => block_v4(v4, p - 96),
                _ => block_v6(v6, prefix.unwrap_or(128)),
            },
        }
    }
}

fn block_v4(addr: Ipv4Addr, prefix: u8) -> Result<IpBlock, String> {
    if prefix > 32 {
        return Err(format!("prefix length {prefix} exceeds 32"));
    }
    let bits = u32::from(addr);
    let network = bits & mask_v4(prefix);
    if network != bits {
        // A typo such as 10.0.0.1/8 for 10.0.0.1/32 would trust a whole network.
        return Err(format!(
            "host bits are set; the network is {}/{prefix}",
            Ipv4Addr::from(network)
        ));
    }
    Ok(IpBlock::V4 { network, prefix })
}

fn block_v6(addr: Ipv6Addr, prefix: u8) -> Result<IpBlock, String> {
    if prefix > 128 {
        return Err(format!("prefix length {prefix} exceeds 128"));
    }
    let bits = u128::from(addr);
    let network = bits & mask_v6(prefix);
    if network != bits {
        return Err(format!(
            "host bits are set; the network is {}/{prefix}",
            Ipv6Addr::from(network)
        ));
    }
    Ok(IpBlock::V6 { network, prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(entries: &[&str]) -> TrustedProxies {
        TelemetryHttpConfig {
            trusted_proxies: entries.iter().map(|e| e.parse().unwrap()).collect(),
            ..TelemetryHttpConfig::default()
        }
        .trusted_proxies()
        .unwrap()
    }

    fn check_contains(entries: &[&str], ip: &str, expected: bool) {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(
            proxies(entries).contains(ip),
            expected,
            "{ip} in {entries:?}"
        );
    }

    #[test]
    fn membership_follows_prefixes() {
        check_contains(&["10.0.0.0/8"], "10.255.1.2", true);
        check_contains(&["10.0.0.0/8"], "11.0.0.1", false);
        check_contains(&["192.168.1.7"], "192.168.1.7", true);
        check_contains(&["192.168.1.7"], "192.168.1.8", false);
        check_contains(&["0.0.0.0/0"], "203.0.113.9", true);
        check_contains(&["0.0.0.0/0"], "::1", false);
        check_contains(&["fd00::/8"], "fd12:3456::1", true);
        check_contains(&["fd00::/8"], "fe80::1", false);
        check_contains(&["::1"], "::1", true);
        check_contains(&[" 127.0.0.1 "], "127.0.0.1", true);
        check_contains(&[], "127.0.0.1", false);
    }

    #[test]
    fn ipv4_mapped_addresses_match_ipv4_blocks_both_ways() {
        check_contains(&["10.0.0.0/8"], "::ffff:10.1.2.3", true);
        check_contains(&["::ffff:10.0.0.0/104"], "10.1.2.3", true);
        check_contains(&["::ffff:10.0.0.1"], "10.0.0.1", true);
    }

    fn reason(entry: &str) -> String {
        let err = entry.parse::<TrustedProxy>().unwrap_err();
        format!("trusted_proxies entry `{entry}` is invalid: {err}")
    }

    #[test]
    fn bad_entries_are_refused_with_the_setting_and_value_named() {
        assert_eq!(
            reason("10.0.0.0/33"),
            "trusted_proxies entry `10.0.0.0/33` is invalid: prefix length 33 exceeds 32"
        );
        assert_eq!(
            reason("10.0.0.1/8"),
            "trusted_proxies entry `10.0.0.1/8` is invalid: host bits are set; the network is 10.0.0.0/8"
        );
        assert_eq!(
            reason("proxy.local"),
            "trusted_proxies entry `proxy.local` is invalid: `proxy.local` is not an IPv4 or IPv6 address"
        );
        assert_eq!(
            reason("fd00::/x"),
            "trusted_proxies entry `fd00::/x` is invalid: prefix length `x` is not a number"
        );
        assert!(reason("::/129").contains("exceeds 128"));
    }

    #[test]
    fn default_quota_is_ten_at_once_then_one_every_six_seconds() {
        let quota = TelemetryHttpConfig::default().quota().unwrap();
        assert_eq!(quota.burst_size().get(), 10);
        assert_eq!(quota.replenish_interval(), Duration::from_secs(6));
    }
}
