//! Message ids, unique across shards and restarts without coordination.
//!
//! At start the engine learns the largest id ever stored; shard `i` of `n` then hands out
//! `base + 1 + i`, `base + 1 + i + n`, ... An id that was handed out but never committed
//! (the process died first) may be handed out again after a restart, which is harmless:
//! nothing refers to it.

#[derive(Debug, Clone)]
pub struct MessageIds {
    next: u64,
    step: u64,
}

impl MessageIds {
    pub fn new(max_stored: u64, shard: usize, shards: usize) -> Self {
        MessageIds {
            next: max_stored + 1 + shard as u64,
            step: shards.max(1) as u64,
        }
    }

    pub fn next_id(&mut self) -> u64 {
        let id = self.next;
        self.next += self.step;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn disjoint_across_shards_and_above_base() {
        let mut seen = HashSet::new();
        for s in 0..4 {
            let mut ids = MessageIds::new(100, s, 4);
            for _ in 0..100 {
                let id = ids.next_id();
                assert!(id > 100);
                assert!(seen.insert(id));
            }
        }
    }
}
