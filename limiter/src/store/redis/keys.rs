//! Redis key names and Redis Cluster slots.
//!
//! A counter's key is `sluice:{<namespace>/<policy>/<limit>/<window ms>/<hex>}`
//! where `<hex>` is the 128-bit digest of the limit and the partition values
//! (user id, endpoint). User input never shapes a key beyond that digest,
//! and the whole name is a hash tag, so a counter lives in one slot.

use std::fmt::Write;

use crate::policy::CounterKey;

/// The Redis key of a counter.
pub fn counter_key(prefix: &str, digest: &CounterKey) -> String {
    let mut key = String::with_capacity(8 + prefix.len() + 1 + 32 + 1);
    key.push_str("sluice:{");
    key.push_str(prefix);
    key.push('/');
    for byte in digest {
        let _ = write!(key, "{byte:02x}");
    }
    key.push('}');
    key
}

/// The sorted set of a policy's live limiter replicas, scored by their
/// last heartbeat; it shares the multiplier key's slot.
pub fn limiters_key(policy_key: &str) -> String {
    format!("sluice:{{{policy_key}}}:limiters")
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag (the
/// text between the first `{` and the next `}`, when not empty), or of the
/// whole key, modulo 16384.
pub fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(bytes)) % 16384
}

fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster() {
        // Values from `CLUSTER KEYSLOT` on a real server.
        assert_eq!(slot("foo"), 12182);
        assert_eq!(slot("bar"), 5061);
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("foo{}{bar}"), slot("foo{}{bar}"));
        assert_eq!(slot("{}foo"), crc16(b"{}foo") % 16384);
    }

    #[test]
    fn counter_keys_are_fixed_length_whatever_the_user_id() {
        let a = counter_key("ns/p/l/1000", &[0; 16]);
        let b = counter_key("ns/p/l/1000", &[255; 16]);
        assert_eq!(a, "sluice:{ns/p/l/1000/00000000000000000000000000000000}");
        assert_eq!(a.len(), b.len());
    }
}
