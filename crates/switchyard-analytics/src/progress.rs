//! Where the sink stands per partition: what it consumed, what each store holds
//! for good, which dead letters await the broker's acknowledgement, and what
//! may be committed to Kafka: the lower of the two stores (an offset is
//! committed only once Parquet *and* ClickHouse have it), and never past a
//! message whose dead letter is not yet acknowledged.
//! Every position is a "next offset": everything below it is done.

use std::collections::{BTreeMap, BTreeSet};

/// Next offset per partition.
pub type Cut = BTreeMap<i32, i64>;

/// Per-partition progress of the sink.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    consumed: Cut,
    parquet: Cut,
    clickhouse: Option<Cut>,
    committed: Cut,
    /// Offsets per partition whose dead letter is sent but not acknowledged.
    letters: BTreeMap<i32, BTreeSet<i64>>,
}

impl Progress {
    /// Progress of a sink writing Parquet, and ClickHouse when `clickhouse` is true.
    pub fn new(clickhouse: bool) -> Self {
        Self {
            clickhouse: clickhouse.then(Cut::new),
            ..Self::default()
        }
    }

    /// Records a consumed message (written, skipped or undecodable alike).
    pub fn consumed(&mut self, partition: i32, offset: i64) {
        let next = self.consumed.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
    }

    /// Everything consumed so far: the cut a store reaches once it holds all of it.
    pub fn cut(&self) -> Cut {
        self.consumed.clone()
    }

    /// Parquet holds everything below `cut`.
    pub fn parquet_reached(&mut self, cut: &Cut) {
        advance(&mut self.parquet, cut);
    }

    /// ClickHouse holds everything below `cut`.
    pub fn clickhouse_reached(&mut self, cut: &Cut) {
        if let Some(ch) = &mut self.clickhouse {
            advance(ch, cut);
        }
    }

    /// The message at `offset` is not a usage event and its dead letter is on
    /// its way: no commit passes it until it is acknowledged.
    pub fn dead_letter_sent(&mut self, partition: i32, offset: i64) {
        self.letters.entry(partition).or_default().insert(offset);
    }

    /// The broker holds the dead letter of the message at `offset`.
    pub fn dead_letter_acknowledged(&mut self, partition: i32, offset: i64) {
        if let Some(pending) = self.letters.get_mut(&partition) {
            pending.remove(&offset);
            if pending.is_empty() {
                self.letters.remove(&partition);
            }
        }
    }

    /// Dead letters sent and not yet acknowledged, on every partition.
    pub fn dead_letters_pending(&self) -> usize {
        self.letters.values().map(BTreeSet::len).sum()
    }

    /// Whether any of `partitions` has a dead letter not yet acknowledged.
    pub fn dead_letters_pending_on(&self, partitions: &[i32]) -> bool {
        partitions.iter().any(|p| self.letters.contains_key(p))
    }

    /// The commit point of a partition: the lower of the two stores, and at
    /// most the first message whose dead letter is not yet acknowledged.
    pub fn commit_point(&self, partition: i32) -> Option<i64> {
        let pq = self.parquet.get(&partition).copied()?;
        let stores = match &self.clickhouse {
            None => pq,
            Some(ch) => pq.min(*ch.get(&partition)?),
        };
        let first_letter = self.letters.get(&partition).and_then(|l| l.first());
        Some(first_letter.map_or(stores, |o| stores.min(*o)))
    }

    /// Commit points that moved since the last call.
    pub fn take_commits(&mut self) -> Vec<(i32, i64)> {
        let partitions: Vec<i32> = self.consumed.keys().copied().collect();
        let mut out = Vec::new();
        for p in partitions {
            let Some(point) = self.commit_point(p) else {
                continue;
            };
            if self.committed.get(&p).is_none_or(|c| *c < point) {
                self.committed.insert(p, point);
                out.push((p, point));
            }
        }
        out
    }

    /// Every commit point reached so far.
    pub fn commit_points(&self) -> Vec<(i32, i64)> {
        self.consumed
            .keys()
            .filter_map(|p| self.commit_point(*p).map(|o| (*p, o)))
            .collect()
    }

    /// Forgets a partition (revoked in a rebalance).
    pub fn forget(&mut self, partition: i32) {
        self.consumed.remove(&partition);
        self.parquet.remove(&partition);
        self.committed.remove(&partition);
        self.letters.remove(&partition);
        if let Some(ch) = &mut self.clickhouse {
            ch.remove(&partition);
        }
    }
}

fn advance(store: &mut Cut, cut: &Cut) {
    for (p, o) in cut {
        let e = store.entry(*p).or_insert(*o);
        *e = (*e).max(*o);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn commits_wait_for_the_slower_store() {
        let mut p = Progress::new(true);
        for o in 0..10 {
            p.consumed(0, o);
        }
        let first = p.cut();
        assert_eq!(first.get(&0), Some(&10));
        p.consumed(0, 10);
        p.consumed(1, 5);
        p.parquet_reached(&first);
        assert!(p.take_commits().is_empty(), "ClickHouse has nothing yet");
        p.clickhouse_reached(&p.cut());
        assert_eq!(p.take_commits(), vec![(0, 10)], "Parquet only has up to 10");
        assert!(p.take_commits().is_empty(), "nothing moved");
        p.parquet_reached(&p.cut());
        assert_eq!(p.take_commits(), vec![(0, 11), (1, 6)]);
    }

    #[test]
    fn without_clickhouse_parquet_alone_decides() {
        let mut p = Progress::new(false);
        p.consumed(2, 7);
        p.clickhouse_reached(&p.cut());
        assert!(p.take_commits().is_empty());
        p.parquet_reached(&p.cut());
        assert_eq!(p.take_commits(), vec![(2, 8)]);
        p.forget(2);
        assert!(p.commit_points().is_empty());
    }

    #[test]
    fn commits_wait_for_dead_letters_to_be_acknowledged() {
        let mut p = Progress::new(false);
        for o in 0..10 {
            p.consumed(0, o);
        }
        p.dead_letter_sent(0, 3);
        p.dead_letter_sent(0, 6);
        assert_eq!(p.dead_letters_pending(), 2);
        assert!(p.dead_letters_pending_on(&[1, 0]));
        p.parquet_reached(&p.cut());
        assert_eq!(
            p.take_commits(),
            vec![(0, 3)],
            "the letter at 3 is not acknowledged"
        );
        p.dead_letter_acknowledged(0, 6);
        assert!(p.take_commits().is_empty(), "3 still waits");
        p.dead_letter_acknowledged(0, 3);
        assert_eq!(p.take_commits(), vec![(0, 10)]);
        assert_eq!(p.dead_letters_pending(), 0);
        assert!(!p.dead_letters_pending_on(&[0]));
        p.dead_letter_sent(0, 10);
        p.forget(0);
        assert_eq!(
            p.dead_letters_pending(),
            0,
            "a revoked partition's letters are its next owner's"
        );
    }

    proptest! {
        /// Whatever the order of cuts and acknowledgements, a commit point never
        /// passes a message whose dead letter is not acknowledged.
        #[test]
        fn commits_never_pass_an_unacknowledged_dead_letter(steps in proptest::collection::vec((0u8..4, 0i32..2, any::<prop::sample::Index>()), 1..200)) {
            let mut p = Progress::new(false);
            let mut next: BTreeMap<i32, i64> = BTreeMap::new();
            let mut pending: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
            for (action, part, pick) in steps {
                match action {
                    0 => {
                        let o = next.entry(part).or_insert(0);
                        p.consumed(part, *o);
                        *o += 1;
                    }
                    1 => {
                        let o = next.entry(part).or_insert(0);
                        p.consumed(part, *o);
                        p.dead_letter_sent(part, *o);
                        pending.entry(part).or_default().insert(*o);
                        *o += 1;
                    }
                    2 => {
                        let set = pending.entry(part).or_default();
                        if !set.is_empty() {
                            let o = *set.iter().nth(pick.index(set.len())).unwrap();
                            set.remove(&o);
                            p.dead_letter_acknowledged(part, o);
                        }
                    }
                    _ => { let c = p.cut(); p.parquet_reached(&c); }
                }
                for (part, point) in p.take_commits() {
                    if let Some(first) = pending.get(&part).and_then(|s| s.first()) {
                        prop_assert!(point <= *first, "commit {point} passes the letter at {first}");
                    }
                }
                prop_assert_eq!(p.dead_letters_pending(), pending.values().map(BTreeSet::len).sum::<usize>());
            }
        }

        /// Whatever the order of cuts, a commit point never passes what either
        /// store holds and never moves backwards.
        #[test]
        fn commits_never_pass_a_store(steps in proptest::collection::vec((0u8..3, 0i32..3), 1..200)) {
            let mut p = Progress::new(true);
            let mut next: BTreeMap<i32, i64> = BTreeMap::new();
            let (mut pq, mut ch): (Cut, Cut) = (Cut::new(), Cut::new());
            let mut last: BTreeMap<i32, i64> = BTreeMap::new();
            for (action, part) in steps {
                match action {
                    0 => {
                        let o = next.entry(part).or_insert(0);
                        p.consumed(part, *o);
                        *o += 1;
                    }
                    1 => { let c = p.cut(); p.parquet_reached(&c); advance(&mut pq, &c); }
                    _ => { let c = p.cut(); p.clickhouse_reached(&c); advance(&mut ch, &c); }
                }
                for (part, point) in p.take_commits() {
                    prop_assert!(point <= pq.get(&part).copied().unwrap_or(0));
                    prop_assert!(point <= ch.get(&part).copied().unwrap_or(0));
                    prop_assert!(last.get(&part).is_none_or(|l| *l < point));
                    last.insert(part, point);
                }
            }
        }
    }
}
