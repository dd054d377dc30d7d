//! Which shard owns a user.
//!
//! The hash must be stable across processes and restarts (so a user's state is always loaded
//! where its requests are served) and cheap: FNV-1a over the id bytes. `std`'s `SipHash` is
//! randomly keyed per process, so it cannot be used here.

/// The index of the shard that owns `user_id`, among `shards` shards.
pub fn shard_of(user_id: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user_id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_in_range() {
        assert_eq!(shard_of("13800000001", 4), shard_of("13800000001", 4));
        assert_eq!(shard_of("x", 1), 0);
        for i in 0..1000 {
            assert!(shard_of(&i.to_string(), 3) < 3);
        }
    }

    #[test]
    fn spreads_users() {
        let mut counts = [0usize; 4];
        for i in 0..10_000u64 {
            counts[shard_of(&(13_800_000_000 + i).to_string(), 4)] += 1;
        }
        for c in counts {
            assert!(c > 2000 && c < 3000, "{counts:?}");
        }
    }
}
