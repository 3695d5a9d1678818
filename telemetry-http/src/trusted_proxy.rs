//! `trusted_proxies` entries: IP addresses and CIDR blocks, parsed once into
//! the form the client-key walk compares peers against.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// One proxy whose `X-Forwarded-For` header is believed: an IP address
/// (`10.0.0.7`, `::1`) or a CIDR block (`10.0.0.0/8`, `fd00::/8`), that is a
/// network address with no host bits set and a prefix length.
///
/// Parse it with [`str::parse`]; `Display` writes it back in the same syntax.
/// With the `serde` feature it (de)serializes as that string, so a host's
/// configuration can hold this type and refuse a bad entry while loading.
///
/// ```
/// use telemetry_http::TrustedProxy;
///
/// let block: TrustedProxy = "10.0.0.0/8".parse().unwrap();
/// assert_eq!(block.to_string(), "10.0.0.0/8");
/// let typo = "10.0.0.1/8".parse::<TrustedProxy>().unwrap_err();
/// assert_eq!(typo.to_string(), "host bits are set; the network is 10.0.0.0/8");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TrustedProxy(IpBlock);

/// Why a string is not a [`TrustedProxy`]. The message is one line naming
/// the part at fault, written to follow the setting and its value, as in
/// ``trusted_proxies[1] = "10.0.0.300": `10.0.0.300` is not an IPv4 or IPv6 address``.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum IpBlock {
    V4 { network: u32, prefix: u8 },
    V6 { network: u128, prefix: u8 },
}

impl TrustedProxy {
    /// Whether `ip` lies in this block. IPv4-mapped IPv6 addresses count as
    /// the IPv4 address they carry.
    pub(crate) fn contains(self, ip: IpAddr) -> bool {
        match (self.0, canonical(ip)) {
            (IpBlock::V4 { network, prefix }, IpAddr::V4(v4)) => {
                u32::from(v4) & mask_v4(prefix) == network
            }
            (IpBlock::V6 { network, prefix }, IpAddr::V6(v6)) => {
                u128::from(v6) & mask_v6(prefix) == network
            }
            _ => false,
        }
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

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for TrustedProxy {
    type Err = ParseError;

    fn from_str(entry: &str) -> Result<Self, Self::Err> {
        let entry = entry.trim();
        let (addr, prefix) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| ParseError(format!("`{addr}` is not an IPv4 or IPv6 address")))?;
        let prefix = match prefix {
            None => None,
            Some(p) => Some(
                p.parse::<u8>()
                    .map_err(|_| ParseError(format!("prefix length `{p}` is not a number")))?,
            ),
        };
        let block = match addr {
            IpAddr::V4(v4) => block_v4(v4, prefix.unwrap_or(32)),
            IpAddr::V6(v6) => match (v6.to_ipv4_mapped(), prefix) {
                // Peers are compared in their IPv4 form, so mapped blocks are too.
                (Some(v4), None) => block_v4(v4, 32),
                (Some(v4), Some(p)) if p >= 96 => block_v4(v4, p - 96),
                _ => block_v6(v6, prefix.unwrap_or(128)),
            },
        };
        block.map(Self).map_err(ParseError)
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

#[cfg(feature = "serde")]
impl serde::Serialize for TrustedProxy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for TrustedProxy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entry;

        impl serde::de::Visitor<'_> for Entry {
            type Value = TrustedProxy;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP address or CIDR block such as \"10.0.0.0/8\"")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TrustedProxy, E> {
                v.parse().map_err(E::custom)
            }
        }

        d.deserialize_str(Entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_contains(entries: &[&str], ip: &str, expected: bool) {
        let ip: IpAddr = ip.parse().unwrap();
        let found = entries
            .iter()
            .any(|entry| entry.parse::<TrustedProxy>().unwrap().contains(ip));
        assert_eq!(found, expected, "{ip} in {entries:?}");
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

    #[test]
    fn entries_parse_and_print_back_or_say_what_is_wrong() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("10.0.0.0/8", Ok("10.0.0.0/8")),
            (" 192.0.2.7 ", Ok("192.0.2.7")),
            ("192.0.2.7/32", Ok("192.0.2.7")),
            ("0.0.0.0/0", Ok("0.0.0.0/0")),
            ("::1", Ok("::1")),
            ("fd00::/8", Ok("fd00::/8")),
            ("::ffff:10.0.0.0/104", Ok("10.0.0.0/8")),
            (
                "10.0.0.1/8",
                Err("host bits are set; the network is 10.0.0.0/8"),
            ),
            ("10.0.0.0/33", Err("prefix length 33 exceeds 32")),
            ("fd00::/129", Err("prefix length 129 exceeds 128")),
            (
                "10.0.0.300",
                Err("`10.0.0.300` is not an IPv4 or IPv6 address"),
            ),
            (
                "proxy.local",
                Err("`proxy.local` is not an IPv4 or IPv6 address"),
            ),
            ("10.0.0.0/x", Err("prefix length `x` is not a number")),
        ];
        for (input, expected) in cases {
            let got = input
                .parse::<TrustedProxy>()
                .map(|p| p.to_string())
                .map_err(|e| e.to_string());
            let expected = expected.map(str::to_owned).map_err(str::to_owned);
            assert_eq!(got, expected, "input {input:?}");
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serde_uses_the_string_form_and_the_parse_message() {
        let proxies: Vec<TrustedProxy> =
            serde_json::from_str(r#"["10.0.0.0/8", " fd00::/8 "]"#).unwrap();
        assert_eq!(
            serde_json::to_string(&proxies).unwrap(),
            r#"["10.0.0.0/8","fd00::/8"]"#
        );
        let bad = serde_json::from_str::<TrustedProxy>(r#""10.0.0.1/8""#).unwrap_err();
        assert!(
            bad.to_string()
                .starts_with("host bits are set; the network is 10.0.0.0/8"),
            "{bad}"
        );
        let number = serde_json::from_str::<TrustedProxy>("10").unwrap_err();
        assert!(
            number.to_string().contains("an IP address or CIDR block"),
            "{number}"
        );
    }
}
