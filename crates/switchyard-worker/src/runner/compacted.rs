//! Reading a compacted topic in a consumer group that never commits (the
//! releaser's approvals, the gatherer's deferred jobs): on assignment a
//! partition is read from its beginning, and its owner acts on it only once it
//! has read to the end the partition had then, so that what was done before is
//! not done again.

use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Offset};
use tracing::warn;

/// Rebalances seen by a consumer, handled by its owner's loop.
#[derive(Default)]
pub(super) struct Rebalances {
    events: Mutex<Vec<(bool, Vec<i32>)>>,
}

impl Rebalances {
    /// The rebalances since the last call: (assigned, partitions), in order.
    pub fn take(&self) -> Vec<(bool, Vec<i32>)> {
        std::mem::take(&mut *self.events.lock())
    }
}

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let ps = tpl.elements().iter().map(|e| e.partition()).collect();
            self.events.lock().push((false, ps));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let ps = tpl.elements().iter().map(|e| e.partition()).collect();
            self.events.lock().push((true, ps));
        }
    }
}

/// A consumer of a compacted topic.
pub(super) type CompactedConsumer = StreamConsumer<Rebalances>;

/// How far an assigned partition has been read.
#[derive(Debug, Default)]
pub(super) struct ReadState {
    /// The partition's end when it was assigned; `None` until looked up.
    end: Option<i64>,
    /// Read to that end: its owner may act.
    pub caught_up: bool,
}

/// Marks the partitions of `topic` read up to the end they had at
/// assignment; returns those that caught up just now.
pub(super) fn catch_up<'a>(
    consumer: &CompactedConsumer,
    topic: &str,
    states: impl Iterator<Item = (i32, &'a mut ReadState)>,
) -> Vec<i32> {
    let position = consumer.position().ok();
    let mut now_caught_up = Vec::new();
    for (p, state) in states.filter(|(_, s)| !s.caught_up) {
        let end = match state.end {
            Some(end) => end,
            None => match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok((_, high)) => *state.end.insert(high),
                Err(e) => {
                    warn!(topic, partition = p, error = %e, "Cannot read a partition's end; retrying.");
                    continue;
                }
            },
        };
        let at = position
            .as_ref()
            .and_then(|tpl| tpl.find_partition(topic, p))
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(0);
        if at >= end {
            state.caught_up = true;
            now_caught_up.push(p);
        }
    }
    now_caught_up
}
