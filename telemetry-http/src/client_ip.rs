//! Which client a request counts against: the TCP peer, or — only when the
//! peer is a trusted proxy — the rightmost `X-Forwarded-For` hop that is not
//! itself a trusted proxy. Everything left of that hop was written by the
//! client and is ignored, so a client cannot choose its own key.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use actix_web::HttpRequest;
use actix_web::http::header::{HeaderMap, HeaderName};

use crate::TrustedProxy;
use crate::trusted_proxy::canonical;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The rate-limiting key of a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum ClientKey {
    V4(Ipv4Addr),
    /// The /64 an IPv6 client sits in: one host usually owns a whole /64
    /// and could otherwise rotate addresses to escape the limit.
    V6Net(u64),
    /// No peer address is known (e.g. a request that never came through a
    /// socket); all such requests share one budget.
    Unknown,
}

impl ClientKey {
    fn from_ip(ip: IpAddr) -> Self {
        match canonical(ip) {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => {
                let bits = u128::from(v6) >> 64;
                // The shift leaves 64 bits; the fallback is never taken.
                Self::V6Net(u64::try_from(bits).unwrap_or(u64::MAX))
            }
        }
    }
}

/// The key `req` is limited under.
pub(crate) fn client_key(req: &HttpRequest, trusted: &[TrustedProxy]) -> ClientKey {
    match req.peer_addr() {
        Some(peer) => ClientKey::from_ip(client_ip(peer.ip(), req.headers(), trusted)),
        None => ClientKey::Unknown,
    }
}

/// The client behind a request from `peer` with `headers`: the peer itself
/// unless it is a trusted proxy, else the client it forwarded for.
pub(crate) fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[TrustedProxy]) -> IpAddr {
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let forwarded = headers.get_all(X_FORWARDED_FOR).map(|value| {
        // A non-UTF-8 header cannot name an address; it stops the walk below.
        value.to_str().unwrap_or("\u{0}")
    });
    forwarded_client(peer, forwarded, trusted)
}

fn is_trusted(trusted: &[TrustedProxy], ip: IpAddr) -> bool {
    trusted.iter().any(|proxy| proxy.contains(ip))
}

/// Walks the hops right to left from a trusted `peer`. Each trusted hop
/// vouches for the one to its left; the first hop that is not trusted is the
/// client. A hop that is no address stops the walk at the last address a
/// trusted party vouched for.
fn forwarded_client<'a>(
    peer: IpAddr,
    header_values: impl Iterator<Item = &'a str>,
    trusted: &[TrustedProxy],
) -> IpAddr {
    // Several X-Forwarded-For headers form one list, in order.
    let hops: Vec<&str> = header_values.flat_map(|value| value.split(',')).collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = parse_hop(hop) else {
            return client;
        };
        client = ip;
        if !is_trusted(trusted, ip) {
            return client;
        }
    }
    client
}

/// `1.2.3.4`, `::1`, and the forms with a port some proxies write:
/// `1.2.3.4:80`, `[::1]:80`, `[::1]`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(entries: &[&str]) -> Vec<TrustedProxy> {
        entries.iter().map(|e| e.parse().unwrap()).collect()
    }

    /// The client chosen for a trusted `peer` forwarding `headers`.
    fn check(peer: &str, headers: &[&str], expected: &str) {
        let proxies = trusted(&["10.0.0.0/8", "fd00::/8"]);
        let got = forwarded_client(peer.parse().unwrap(), headers.iter().copied(), &proxies);
        assert_eq!(got, expected.parse::<IpAddr>().unwrap(), "{headers:?}");
    }

    #[test]
    fn rightmost_untrusted_hop_is_the_client() {
        check("10.0.0.1", &["203.0.113.5"], "203.0.113.5");
        check("10.0.0.1", &["198.51.100.1, 203.0.113.5"], "203.0.113.5");
        check("10.0.0.1", &["203.0.113.5, 10.0.0.2"], "203.0.113.5");
        check(
            "10.0.0.1",
            &["198.51.100.1", "203.0.113.5, 10.9.9.9"],
            "203.0.113.5",
        );
        check("fd00::1", &["2001:db8::7"], "2001:db8::7");
    }

    #[test]
    fn missing_or_all_trusted_hops_fall_back_to_the_furthest_trusted_address() {
        check("10.0.0.1", &[], "10.0.0.1");
        check("10.0.0.1", &["10.0.0.3, 10.0.0.2"], "10.0.0.3");
    }

    #[test]
    fn garbage_stops_at_the_last_vouched_address() {
        check("10.0.0.1", &["unknown"], "10.0.0.1");
        check("10.0.0.1", &["203.0.113.5, "], "10.0.0.1");
        check("10.0.0.1", &["203.0.113.5, 10.0.0.2, nonsense"], "10.0.0.1");
        check("10.0.0.1", &["nonsense, 203.0.113.5"], "203.0.113.5");
    }

    #[test]
    fn hops_with_ports_and_brackets_are_understood() {
        check("10.0.0.1", &["203.0.113.5:4711"], "203.0.113.5");
        check("10.0.0.1", &["[2001:db8::7]:443"], "2001:db8::7");
        check("10.0.0.1", &["[2001:db8::7]"], "2001:db8::7");
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64_and_mapped_ipv4_is_ipv4() {
        let a = ClientKey::from_ip("2001:db8:1:2::1".parse().unwrap());
        let b = ClientKey::from_ip("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = ClientKey::from_ip("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            ClientKey::from_ip("::ffff:192.0.2.1".parse().unwrap()),
            ClientKey::V4(Ipv4Addr::new(192, 0, 2, 1))
        );
    }
}
