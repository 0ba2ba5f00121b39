//! De-duplication by `event_id` over a recent window. A producer that published
//! an event twice (a retried send that had in fact succeeded) puts a second copy
//! at a new offset; the sink drops it here, before either store sees it, so the
//! ClickHouse rollups (which cannot de-duplicate) never add it twice. Copies
//! further apart than the window are still removed by readers (`FINAL` in
//! ClickHouse, by event_id in the Parquet reader).

use std::collections::{HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

/// The last `capacity` event ids seen, as 128-bit keys (a UUID's own value, or
/// two independent hashes of other ids).
#[derive(Debug)]
pub struct RecentIds {
    capacity: usize,
    seen: HashSet<u128>,
    order: VecDeque<u128>,
}

impl RecentIds {
    /// A window of `capacity` ids (0 disables de-duplication).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            seen: HashSet::with_capacity(capacity.min(1 << 20)),
            order: VecDeque::with_capacity(capacity.min(1 << 20)),
        }
    }

    /// Records `id`; false when it was already in the window (a duplicate).
    pub fn insert(&mut self, id: &str) -> bool {
        if self.capacity == 0 {
            return true;
        }
        let key = key(id);
        if !self.seen.insert(key) {
            return false;
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

fn key(id: &str) -> u128 {
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
        assert!(w.insert("a"));
        assert!(!w.insert("a"));
        assert!(w.insert("0190b2a4-7c1e-7000-8000-000000000001"));
        assert!(
            !w.insert("0190B2A4-7C1E-7000-8000-000000000001"),
            "UUIDs compare by value"
        );
        assert!(w.insert("b"));
        assert_eq!(w.len(), 2);
        assert!(w.insert("a"), "`a` left the window");
    }

    #[test]
    fn a_zero_window_keeps_everything() {
        let mut w = RecentIds::new(0);
        assert!(w.insert("a"));
        assert!(w.insert("a"));
        assert!(w.is_empty());
    }
}
