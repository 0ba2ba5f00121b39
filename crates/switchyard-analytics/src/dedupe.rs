//! De-duplication by `event_id` over a recent window. A producer that published
//! an event twice (a retried send that had in fact succeeded) puts a second copy
//! at a new offset; the sink drops it here, before either store sees it, so the
//! ClickHouse rollups (which cannot de-duplicate) never add it twice. Copies
//! further apart than the window are still removed by readers (`FINAL` in
//! ClickHouse, by event_id in the Parquet reader).
//!
//! The window remembers where it saw each id: the same message read again (after
//! a rebalance or a restart, from an uncommitted offset) is not a copy, and goes
//! on to the stores, which skip what they already hold by offset.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

/// The last `capacity` event ids seen, as 128-bit keys (a UUID's own value, or
/// two independent hashes of other ids), with the Kafka position of each.
#[derive(Debug)]
pub struct RecentIds {
    capacity: usize,
    seen: HashMap<u128, (i32, i64)>,
    order: VecDeque<u128>,
}

impl RecentIds {
    /// A window of `capacity` ids (0 disables de-duplication).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: HashMap::with_capacity(capacity.min(1 << 20)),
            order: VecDeque::with_capacity(capacity.min(1 << 20)),
        }
    }

    /// Records `id` read at `partition`/`offset`; false when the window holds it
    /// from another position (a copy).
    pub fn insert(&mut self, id: &str, partition: i32, offset: i64) -> bool {
        self.insert_key(key(id), partition, offset)
    }

    /// As [`RecentIds::insert`], for an id already turned into its key ([`key`]).
    pub fn insert_key(&mut self, key: u128, partition: i32, offset: i64) -> bool {
        if self.capacity == 0 {
            return true;
        }
        match self.seen.entry(key) {
            Entry::Occupied(at) => return *at.get() == (partition, offset),
            Entry::Vacant(v) => {
                v.insert((partition, offset));
            }
        }
        self.order.push_back(key);
        if self.order.len() > self.capacity
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }

    /// Ids in the window.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// The 128-bit key of an event id: a UUID's own value, or two independent
/// hashes of any other text.
pub fn key(id: &str) -> u128 {
    if let Ok(u) = uuid::Uuid::try_parse(id) {
        return u.as_u128();
    }
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        id.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_id_is_a_duplicate_until_it_leaves_the_window() {
        let mut w = RecentIds::new(2);
        assert!(w.insert("a", 0, 1));
        assert!(!w.insert("a", 0, 2));
        assert!(w.insert("0190b2a4-7c1e-7000-8000-000000000001", 0, 3));
        assert!(
            !w.insert("0190B2A4-7C1E-7000-8000-000000000001", 1, 3),
            "UUIDs compare by value"
        );
        assert!(w.insert("b", 0, 4));
        assert_eq!(w.len(), 2);
        assert!(w.insert("a", 0, 5), "`a` left the window");
    }

    #[test]
    fn the_same_message_read_again_is_not_a_copy() {
        let mut w = RecentIds::new(10);
        assert!(w.insert("a", 3, 41));
        assert!(
            w.insert("a", 3, 41),
            "re-read after a rebalance: the stores decide by offset"
        );
        assert!(!w.insert("a", 3, 42), "published twice: a copy");
        assert!(!w.insert("a", 2, 41), "published twice: a copy");
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn a_zero_window_keeps_everything() {
        let mut w = RecentIds::new(0);
        assert!(w.insert("a", 0, 0));
        assert!(w.insert("a", 0, 1));
        assert!(w.is_empty());
    }
}
