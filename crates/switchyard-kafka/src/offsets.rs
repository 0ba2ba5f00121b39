//! Offset tracking for concurrent at-least-once processing. Jobs of one partition
//! finish out of order; the offset committed for a partition is the lowest offset
//! whose job is not finished (or one past the last received when all are), so a
//! restart redoes only unfinished jobs and never skips one. The offsets finished
//! above that point travel with the commit as its metadata ([`encode_finished`]),
//! so the next owner of the partition skips them instead of running them again.

use std::collections::{BTreeSet, HashMap, VecDeque};

/// Proof that a message was registered; handed back on completion. The epoch
/// makes completions from before a revocation harmless after a re-assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    epoch: u64,
}

impl Ticket {
    /// A ticket for a message no [`OffsetTracker`] tracks (read from a topic
    /// its reader never commits): it names where the message was read, for
    /// dead letters, and is never handed back to a tracker.
    pub fn detached(partition: i32, offset: i64) -> Self {
        Self {
            partition,
            offset,
            epoch: 0,
        }
    }
}

/// What a received message is to the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// New work: process it and hand the ticket back when its outcome is out.
    New(Ticket),
    /// At or below an offset already received (a re-fetch): skip it.
    Refetched,
    /// Finished by the partition's previous owner (it said so in its commit's
    /// metadata): counted as done, not to be run again.
    DoneBefore,
}

/// Where a received message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Received, waiting for a slot.
    Waiting,
    /// Being processed.
    Running,
    /// Its outcome is published (or it was finished before).
    Done,
}

/// One partition's received-but-uncommitted offsets, in arrival (ascending) order.
#[derive(Debug, Default)]
struct Partition {
    epoch: u64,
    pending: VecDeque<(i64, Phase)>,
    /// Next offset to commit, once anything was received.
    commit: Option<i64>,
    /// Highest offset received.
    last: Option<i64>,
    /// Offsets the previous owner finished above its commit point.
    done_before: BTreeSet<i64>,
    /// The committed offset at assignment: everything below it is done, even
    /// when the consumer fetches from an older commit (a hand-over committed
    /// after the consumer looked).
    start: Option<i64>,
    dirty: bool,
}

impl Partition {
    /// Pops finished offsets off the front; the commit point follows.
    fn advance(&mut self) {
        while let Some(&(o, Phase::Done)) = self.pending.front() {
            self.pending.pop_front();
            self.commit = Some(o + 1);
        }
        if let Some(&(o, _)) = self.pending.front() {
            self.commit = Some(o);
        }
        self.dirty = true;
    }
}

/// Tracks every assigned partition of one topic.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, Partition>,
    next_epoch: u64,
}

/// Longest commit metadata written: Kafka's default `offset.metadata.max.bytes`
/// is 4096.
pub const MAX_METADATA: usize = 4000;

/// Prefix of Switchyard's commit metadata (its format version).
const METADATA_PREFIX: &str = "sy1:";

/// Offsets finished above `commit`, as commit metadata: `sy1:` then ranges of
/// distances from the commit point (`sy1:3-5,9`). At most [`MAX_METADATA`]
/// bytes: offsets that do not fit are left out (their jobs would be redone,
/// never skipped).
pub fn encode_finished(commit: i64, finished: impl IntoIterator<Item = i64>) -> String {
    let mut out = String::from(METADATA_PREFIX);
    let mut run: Option<(i64, i64)> = None;
    let push = |out: &mut String, (a, b): (i64, i64)| {
        let part = if a == b {
            format!("{a}")
        } else {
            format!("{a}-{b}")
        };
        let sep = usize::from(out.len() > METADATA_PREFIX.len());
        if out.len() + sep + part.len() > MAX_METADATA {
            return false;
        }
        if sep == 1 {
            out.push(',');
        }
        out.push_str(&part);
        true
    };
    for o in finished {
        let d = o - commit;
        if d <= 0 {
            continue;
        }
        run = match run {
            Some((a, b)) if d == b + 1 => Some((a, d)),
            Some(r) => {
                if !push(&mut out, r) {
                    return out;
                }
                Some((d, d))
            }
            None => Some((d, d)),
        };
    }
    if let Some(r) = run {
        push(&mut out, r);
    }
    out
}

/// The offsets [`encode_finished`] wrote for a commit at `commit`; nothing for
/// metadata written by anything else.
pub fn decode_finished(commit: i64, metadata: &str) -> BTreeSet<i64> {
    let mut out = BTreeSet::new();
    let Some(ranges) = metadata.strip_prefix(METADATA_PREFIX) else {
        return out;
    };
    for part in ranges.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i64>(), b.parse::<i64>()),
            None => (part.parse::<i64>(), part.parse::<i64>()),
        };
        let (Ok(a), Ok(b)) = (a, b) else {
            return BTreeSet::new();
        };
        if a <= 0 || b < a || b - a > 1_000_000 {
            return BTreeSet::new();
        }
        out.extend((a..=b).map(|d| commit + d));
    }
    out
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a partition afresh on assignment: its committed offset and the
    /// offsets its previous owner finished above it (the commit's metadata).
    pub fn assign(&mut self, partition: i32, committed: Option<i64>, metadata: &str) {
        self.next_epoch += 1;
        let done_before = committed.map_or_else(BTreeSet::new, |c| decode_finished(c, metadata));
        self.partitions.insert(
            partition,
            Partition {
                epoch: self.next_epoch,
                done_before,
                start: committed,
                ..Partition::default()
            },
        );
    }

    /// Registers a received message (see [`Arrival`]).
    pub fn arrive(&mut self, partition: i32, offset: i64) -> Arrival {
        let next_epoch = &mut self.next_epoch;
        let p = self.partitions.entry(partition).or_insert_with(|| {
            *next_epoch += 1;
            Partition {
                epoch: *next_epoch,
                ..Partition::default()
            }
        });
        if p.last.is_some_and(|last| offset <= last) {
            return Arrival::Refetched;
        }
        p.last = Some(offset);
        if p.start.is_some_and(|start| offset < start) {
            if p.pending.is_empty() {
                p.commit = p.start;
            }
            return Arrival::DoneBefore;
        }
        let done = p.done_before.remove(&offset);
        if p.pending.is_empty() {
            p.commit = Some(offset);
            p.dirty = true;
        }
        p.pending
            .push_back((offset, if done { Phase::Done } else { Phase::Waiting }));
        if done {
            p.advance();
            return Arrival::DoneBefore;
        }
        Arrival::New(Ticket {
            partition,
            offset,
            epoch: p.epoch,
        })
    }

    /// Registers a received message. Returns `None` for an offset at or below one
    /// already received on the partition (a re-fetch), which the caller should
    /// skip, and for one the previous owner finished.
    pub fn received(&mut self, partition: i32, offset: i64) -> Option<Ticket> {
        match self.arrive(partition, offset) {
            Arrival::New(t) => Some(t),
            Arrival::Refetched | Arrival::DoneBefore => None,
        }
    }

    /// Marks a message finished (its result produced). Returns true when the
    /// partition's commit point moved.
    pub fn completed(&mut self, ticket: Ticket) -> bool {
        let Ticket {
            partition,
            offset,
            epoch,
        } = ticket;
        let Some(p) = self
            .partitions
            .get_mut(&partition)
            .filter(|p| p.epoch == epoch)
        else {
            return false;
        };
        let Ok(i) = p.pending.binary_search_by_key(&offset, |(o, _)| *o) else {
            return false;
        };
        p.pending[i].1 = Phase::Done;
        if i != 0 {
            p.dirty = true;
            return false;
        }
        p.advance();
        true
    }

    /// Whether the ticket's partition is still the one it was issued for (not
    /// revoked, or revoked and assigned again, since).
    pub fn is_current(&self, ticket: &Ticket) -> bool {
        self.partitions
            .get(&ticket.partition)
            .is_some_and(|p| p.epoch == ticket.epoch)
    }

    /// The offset to commit for a partition (the next one to consume after a restart).
    pub fn commit_point(&self, partition: i32) -> Option<i64> {
        self.partitions.get(&partition).and_then(|p| p.commit)
    }

    /// The commit metadata of a partition: the offsets finished above its
    /// commit point, encoded by [`encode_finished`].
    pub fn metadata(&self, partition: i32) -> String {
        let Some(p) = self.partitions.get(&partition) else {
            return String::new();
        };
        let Some(commit) = p.commit else {
            return String::new();
        };
        let finished = p
            .pending
            .iter()
            .filter(|(_, phase)| *phase == Phase::Done)
            .map(|(o, _)| *o)
            .chain(p.done_before.iter().copied());
        let mut all: Vec<i64> = finished.collect();
        all.sort_unstable();
        encode_finished(commit, all)
    }

    /// Commit points that moved (or whose finished set changed) since the last call.
    pub fn take_changes(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&id, p) in &mut self.partitions {
            if p.dirty {
                p.dirty = false;
                if let Some(c) = p.commit {
                    out.push((id, c));
                }
            }
        }
        out.sort_unstable();
        out
    }

    /// Forgets a partition (revoked in a rebalance), returning its commit point.
    pub fn revoke(&mut self, partition: i32) -> Option<i64> {
        self.partitions.remove(&partition).and_then(|p| p.commit)
    }

    /// Marks a received message as being processed (see [`Self::running_in`]).
    pub fn started(&mut self, ticket: Ticket) {
        let Some(p) = self
            .partitions
            .get_mut(&ticket.partition)
            .filter(|p| p.epoch == ticket.epoch)
        else {
            return;
        };
        if let Ok(i) = p.pending.binary_search_by_key(&ticket.offset, |(o, _)| *o)
            && p.pending[i].1 == Phase::Waiting
        {
            p.pending[i].1 = Phase::Running;
        }
    }

    /// Messages received and not yet finished, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions
            .values()
            .map(|p| {
                p.pending
                    .iter()
                    .filter(|(_, ph)| *ph != Phase::Done)
                    .count()
            })
            .sum()
    }

    /// Messages of one partition received and not yet finished.
    pub fn in_flight_in(&self, partition: i32) -> usize {
        self.partitions.get(&partition).map_or(0, |p| {
            p.pending
                .iter()
                .filter(|(_, ph)| *ph != Phase::Done)
                .count()
        })
    }

    /// Messages of one partition being processed now (started, not finished):
    /// what a rebalance waits for, unlike messages still waiting for a slot.
    pub fn running_in(&self, partition: i32) -> usize {
        self.partitions.get(&partition).map_or(0, |p| {
            p.pending
                .iter()
                .filter(|(_, ph)| *ph == Phase::Running)
                .count()
        })
    }

    /// Offsets of one partition held between its commit point and the last
    /// received (finished or not): the window a bounded worker pauses on.
    pub fn pending_in(&self, partition: i32) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, |p| p.pending.len())
    }

    /// Commit points of every partition.
    pub fn commit_points(&self) -> Vec<(i32, i64)> {
        let mut v: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .filter_map(|(&id, p)| p.commit.map(|c| (id, c)))
            .collect();
        v.sort_unstable();
        v
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_commit_point_waits_for_the_oldest_unfinished_job() {
        let mut t = OffsetTracker::new();
        let tickets: Vec<Ticket> = (10..15).map(|o| t.received(0, o).unwrap()).collect();
        assert_eq!(t.commit_point(0), Some(10));
        assert!(!t.completed(tickets[2]));
        assert_eq!(t.commit_point(0), Some(10));
        assert!(t.completed(tickets[0]));
        assert_eq!(t.commit_point(0), Some(11));
        assert!(t.completed(tickets[1]));
        assert_eq!(t.commit_point(0), Some(13), "12 was already done");
        t.completed(tickets[3]);
        t.completed(tickets[4]);
        assert_eq!(t.commit_point(0), Some(15));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn refetched_offsets_are_flagged_and_revocation_forgets() {
        let mut t = OffsetTracker::new();
        let old = t.received(1, 5).unwrap();
        assert!(t.received(1, 5).is_none());
        assert!(t.received(1, 4).is_none());
        assert_eq!(t.take_changes(), vec![(1, 5)]);
        assert_eq!(t.take_changes(), vec![]);
        assert_eq!(t.revoke(1), Some(5));
        let new = t.received(1, 5).unwrap();
        assert!(
            !t.completed(old),
            "a completion from before the revoke must not count"
        );
        assert_eq!(t.commit_point(1), Some(5));
        assert!(t.completed(new));
        assert_eq!(t.commit_point(1), Some(6));
    }

    #[test]
    fn finished_offsets_above_the_commit_point_travel_in_the_metadata() {
        let mut t = OffsetTracker::new();
        let tickets: Vec<Ticket> = (10..20).map(|o| t.received(0, o).unwrap()).collect();
        for i in [2, 3, 4, 7] {
            t.completed(tickets[i]);
        }
        assert_eq!(t.commit_point(0), Some(10));
        let meta = t.metadata(0);
        assert_eq!(meta, "sy1:2-4,7");
        // The next owner skips what was finished and runs the rest.
        let mut next = OffsetTracker::new();
        next.assign(0, Some(10), &meta);
        let arrivals: Vec<Arrival> = (10..20).map(|o| next.arrive(0, o)).collect();
        let done: Vec<i64> = (10..20)
            .zip(&arrivals)
            .filter(|(_, a)| **a == Arrival::DoneBefore)
            .map(|(o, _)| o)
            .collect();
        assert_eq!(done, vec![12, 13, 14, 17]);
        for a in arrivals {
            if let Arrival::New(t) = a {
                next.completed(t);
            }
        }
        assert_eq!(next.commit_point(0), Some(20));
    }

    #[test]
    fn offsets_below_the_committed_start_are_done() {
        let mut t = OffsetTracker::new();
        t.assign(0, Some(100), "sy1:2");
        // The consumer fetched from an older commit.
        assert_eq!(t.arrive(0, 98), Arrival::DoneBefore);
        assert_eq!(t.arrive(0, 99), Arrival::DoneBefore);
        assert_eq!(t.commit_point(0), Some(100));
        assert!(matches!(t.arrive(0, 100), Arrival::New(_)));
        assert!(matches!(t.arrive(0, 101), Arrival::New(_)));
        assert_eq!(t.arrive(0, 102), Arrival::DoneBefore);
        assert_eq!(t.commit_point(0), Some(100));
    }

    #[test]
    fn metadata_is_bounded_and_foreign_metadata_is_ignored() {
        let every_other: Vec<i64> = (0..20_000).filter(|o| o % 2 == 0).collect();
        let m = encode_finished(-1, every_other);
        assert!(m.len() <= MAX_METADATA, "{}", m.len());
        let back = decode_finished(-1, &m);
        assert!(!back.is_empty() && back.iter().all(|o| o % 2 == 0));
        assert!(decode_finished(5, "written by another tool").is_empty());
        assert!(decode_finished(5, "sy1:3-1").is_empty());
        assert!(decode_finished(5, "sy1:x").is_empty());
    }

    proptest! {
        /// Whatever finished before a hand-over, the next owner runs exactly
        /// the rest.
        #[test]
        fn a_hand_over_runs_exactly_what_was_not_finished(
            finished in proptest::collection::btree_set(0i64..300, 0..300),
        ) {
            let mut t = OffsetTracker::new();
            let tickets: Vec<Ticket> = (0..300).map(|o| t.received(0, o).unwrap()).collect();
            for &o in &finished {
                t.completed(tickets[o as usize]);
            }
            let commit = t.commit_point(0).unwrap();
            let mut next = OffsetTracker::new();
            next.assign(0, Some(commit), &t.metadata(0));
            let rerun: std::collections::BTreeSet<i64> = (commit..300)
                .filter(|&o| matches!(next.arrive(0, o), Arrival::New(_)))
                .collect();
            let expected: std::collections::BTreeSet<i64> =
                (commit..300).filter(|o| !finished.contains(o)).collect();
            prop_assert_eq!(rerun, expected);
        }
    }

    proptest! {
        /// For any completion order: the commit point never passes an unfinished
        /// offset, never moves backwards, and reaches one past the last offset once
        /// everything is done.
        #[test]
        fn commit_points_are_safe_and_complete(
            offsets in proptest::collection::btree_set(0i64..10_000, 1..200),
            seed in any::<u64>(),
        ) {
            let offsets: Vec<i64> = offsets.into_iter().collect();
            let mut t = OffsetTracker::new();
            let mut tickets = std::collections::HashMap::new();
            for &o in &offsets { tickets.insert(o, t.received(3, o).unwrap()); }
            let mut order = offsets.clone();
            // Deterministic shuffle from the seed.
            let mut s = seed | 1;
            for i in (1..order.len()).rev() {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                order.swap(i, (s % (i as u64 + 1)) as usize);
            }
            let mut done = std::collections::BTreeSet::new();
            let mut last_commit = i64::MIN;
            for o in order {
                t.completed(tickets[&o]);
                done.insert(o);
                let c = t.commit_point(3).unwrap();
                prop_assert!(c >= last_commit);
                last_commit = c;
                for &p in &offsets {
                    if p < c { prop_assert!(done.contains(&p), "commit {c} passed unfinished {p}"); }
                }
            }
            prop_assert_eq!(t.commit_point(3), Some(offsets[offsets.len() - 1] + 1));
        }
    }
}
