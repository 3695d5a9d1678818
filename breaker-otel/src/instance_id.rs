//! The `service.instance.id` of a process that was given none: a random UUID (version 4),
//! made once per process, as the resource semantic conventions recommend when nothing
//! better (a pod name, a host and port) names the instance.
//!
//! Written here rather than taken from the `uuid` crate: a v4 UUID is 16 random bytes with
//! six bits set and printed as hex, and the random bytes come from `getrandom`, which the
//! SDK's `rand` already brings into the tree (`uuid`'s own `v4` feature uses it too).

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The resource attribute's key.
pub(crate) const SERVICE_INSTANCE_ID: &str = "service.instance.id";

/// This process's generated id: the same for every pipeline it builds, since one process is
/// one instance of the service.
pub(crate) fn of_this_process() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(random_uuid_v4)
}

/// A new random UUID v4, lowercase and hyphenated (`8-4-4-4-12` hex digits).
fn random_uuid_v4() -> String {
    let mut bytes = [0_u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = fallback_bytes();
    }
    format_v4(bytes)
}

/// `bytes` as a UUID of version 4 and the RFC 9562 variant.
fn format_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut text = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Without an OS random source (Linux, macOS and Windows always have one): the time, the
/// process id and a counter, mixed. Not random, but still one id per process on a host,
/// which is all an instance id needs; better than no id or a panic.
fn fallback_bytes() -> [u8; 16] {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64);
    let first = splitmix64(nanos ^ (u64::from(std::process::id()) << 32));
    let second = splitmix64(first ^ CALLS.fetch_add(1, Ordering::Relaxed));
    let mut bytes = [0; 16];
    bytes[..8].copy_from_slice(&first.to_le_bytes());
    bytes[8..].copy_from_slice(&second.to_le_bytes());
    bytes
}

/// Sebastiano Vigna's SplitMix64 finalizer: every input bit moves every output bit.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Version nibble `4`, variant bits `10`, 32 lowercase hex digits in 8-4-4-4-12.
    fn assert_v4(id: &str) {
        let groups: Vec<&str> = id.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12],
            "{id}"
        );
        assert!(
            id.chars()
                .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "{id}"
        );
        assert!(groups[2].starts_with('4'), "{id}");
        assert!(groups[3].starts_with(['8', '9', 'a', 'b']), "{id}");
    }

    #[test]
    fn ids_are_random_v4_uuids() {
        let (a, b) = (random_uuid_v4(), random_uuid_v4());
        assert_v4(&a);
        assert_v4(&b);
        assert_ne!(a, b);
    }

    #[test]
    fn the_bits_of_version_and_variant_are_set_whatever_the_bytes() {
        assert_eq!(format_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
        assert_eq!(
            format_v4([0xff; 16]),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
    }

    #[test]
    fn the_fallback_differs_from_call_to_call_and_is_a_v4_uuid() {
        let (a, b) = (format_v4(fallback_bytes()), format_v4(fallback_bytes()));
        assert_v4(&a);
        assert_ne!(a, b);
    }

    #[test]
    fn one_process_has_one_id() {
        assert_eq!(of_this_process(), of_this_process());
        assert_v4(of_this_process());
    }
}
