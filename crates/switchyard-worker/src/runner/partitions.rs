//! The partitions a worker holds: where each one's finished work stands, what
//! is committed (with the offsets finished above the commit point as the
//! commit's metadata), what happens in a rebalance, and which partitions are
//! paused.
//!
//! In a rebalance, the jobs in flight of a partition being taken away get
//! `worker.revoke_grace` to finish; what finished is committed, the rest is
//! abandoned without a result (the new owner runs it). A newly assigned
//! partition starts from its committed offset and skips the offsets its previous
//! owner listed as finished.
//!
//! A broker may refuse commits while the group rebalances (librdkafka's mock
//! broker answers REBALANCE_IN_PROGRESS; Kafka accepts them until the group
//! syncs). The revoked partitions' commit points are then kept and committed as
//! soon as the rebalance completes, before this worker reads its own new
//! assignment; every worker waits [`HANDOVER_DELAY`] before reading the
//! committed offsets of newly assigned partitions, so that a previous owner's
//! late hand-over is seen. The eager assignor stays: librdkafka's mock broker
//! does not run `cooperative-sticky` (a joining member is assigned nothing and
//! commits fail with IllegalGeneration), and the commit metadata already keeps a
//! rebalance from redoing finished work.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use switchyard_kafka::rebalance::start_unpaused;
use switchyard_kafka::stats::{PartitionOffsets, partition_offsets};
use switchyard_kafka::{Arrival, OffsetTracker, Ticket};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// State shared by the consume loop, the job tasks and the rebalance callbacks.
pub(super) struct Partitions {
    topic: String,
    tracker: Mutex<OffsetTracker>,
    /// Per partition: cancels its jobs when it is taken away.
    tokens: Mutex<HashMap<i32, CancellationToken>>,
    revoke_grace: Duration,
    max_pending: usize,
    /// Commit points of revoked partitions that the broker refused during
    /// the rebalance, to commit once it completes.
    handover: Mutex<Option<TopicPartitionList>>,
    /// Where each partition ended when librdkafka last reported it.
    ends: Mutex<HashMap<i32, PartitionOffsets>>,
    /// How many assignments this worker has received: the consume loop
    /// starts its pauses afresh on each (see [`Self::assign`]).
    assignments: AtomicU64,
}

/// How long a worker waits, after a rebalance, before reading the committed
/// offsets of its new partitions: time for their previous owners to commit a
/// hand-over the broker refused during the rebalance.
pub(super) const HANDOVER_DELAY: Duration = Duration::from_millis(400);

impl Partitions {
    pub fn new(topic: String, revoke_grace: Duration, max_pending: usize) -> Self {
        Self {
            topic,
            tracker: Mutex::new(OffsetTracker::new()),
            tokens: Mutex::new(HashMap::new()),
            revoke_grace,
            max_pending: max_pending.max(1),
            handover: Mutex::new(None),
            ends: Mutex::new(HashMap::new()),
            assignments: AtomicU64::new(0),
        }
    }

    /// How many assignments this worker has received.
    pub fn assignments(&self) -> u64 {
        self.assignments.load(Ordering::Acquire)
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Registers a received message.
    pub fn arrive(&self, partition: i32, offset: i64) -> Arrival {
        self.tracker.lock().arrive(partition, offset)
    }

    /// Marks a job's outcome published.
    pub fn completed(&self, ticket: Ticket) {
        self.tracker.lock().completed(ticket);
    }

    /// Marks a job started, when its partition is still held (false: it was
    /// taken away while the job waited for a slot, and is left to its new owner).
    pub fn start(&self, ticket: Ticket) -> bool {
        let mut tracker = self.tracker.lock();
        if !tracker.is_current(&ticket) {
            return false;
        }
        tracker.started(ticket);
        true
    }

    /// The token that cancels the jobs of a partition when it is taken away.
    pub fn token(&self, partition: i32) -> CancellationToken {
        self.tokens.lock().entry(partition).or_default().clone()
    }

    /// Partitions whose window of pending offsets is full.
    pub fn full(&self) -> BTreeSet<i32> {
        let tracker = self.tracker.lock();
        self.tokens
            .lock()
            .keys()
            .copied()
            .filter(|p| tracker.pending_in(*p) >= self.max_pending)
            .collect()
    }

    /// Partitions whose window has room again (half empty).
    pub fn roomy(&self, partitions: &BTreeSet<i32>) -> BTreeSet<i32> {
        let tracker = self.tracker.lock();
        partitions
            .iter()
            .copied()
            .filter(|p| tracker.pending_in(*p) < self.max_pending / 2 + 1)
            .collect()
    }

    /// Commit points (with their metadata) that changed since the last call.
    pub fn changed_points(&self) -> TopicPartitionList {
        let mut tracker = self.tracker.lock();
        let changes = tracker.take_changes();
        self.points(&tracker, changes.into_iter().map(|(p, _)| p))
    }

    /// Every partition's commit point, with its metadata.
    pub fn all_points(&self) -> TopicPartitionList {
        let tracker = self.tracker.lock();
        let partitions: Vec<i32> = tracker
            .commit_points()
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        self.points(&tracker, partitions)
    }

    fn points(
        &self,
        tracker: &OffsetTracker,
        partitions: impl IntoIterator<Item = i32>,
    ) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            let Some(commit) = tracker.commit_point(p) else {
                continue;
            };
            if tpl
                .add_partition_offset(&self.topic, p, Offset::Offset(commit))
                .is_ok()
                && let Some(mut e) = tpl.find_partition(&self.topic, p)
            {
                e.set_metadata(tracker.metadata(p));
            }
        }
        tpl
    }

    /// Per partition held now, the messages between its commit point and
    /// its end as librdkafka last reported it (partitions whose end is not
    /// known yet are left out).
    pub fn lag(&self) -> Vec<(i32, i64)> {
        let ends = self.ends.lock().clone();
        let tracker = self.tracker.lock();
        let mut lag: Vec<(i32, i64)> = self
            .tokens
            .lock()
            .keys()
            .filter_map(|p| {
                let e = ends.get(p)?;
                let from = tracker.commit_point(*p).unwrap_or(e.low);
                Some((*p, (e.end - from).max(0)))
            })
            .collect();
        lag.sort_unstable();
        lag
    }

    /// Whether the commit points of partitions revoked in a rebalance are
    /// still waiting for it to complete.
    pub fn handover_pending(&self) -> bool {
        self.handover.lock().is_some()
    }

    /// Jobs of these partitions being processed now.
    fn running_in(&self, partitions: &[i32]) -> usize {
        let tracker = self.tracker.lock();
        partitions.iter().map(|p| tracker.running_in(*p)).sum()
    }

    /// A rebalance takes `partitions` away: their jobs in flight get the grace
    /// to finish, what finished is committed, the rest is cancelled.
    fn revoke<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, partitions: &[i32]) {
        info!(
            ?partitions,
            running = self.running_in(partitions),
            "Partitions revoked; letting their running jobs finish."
        );
        let until = Instant::now() + self.revoke_grace;
        blocking(|| {
            while self.running_in(partitions) > 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let points = {
            let tracker = self.tracker.lock();
            self.points(&tracker, partitions.iter().copied())
        };
        if points.count() > 0 {
            match consumer.commit(&points, CommitMode::Sync) {
                Ok(()) => info!(
                    partitions = points.count(),
                    "Committed finished work of revoked partitions."
                ),
                Err(e) => {
                    debug!(error = %e, "The broker refused the commit during the rebalance; committing the hand-over once it completes.");
                    *self.handover.lock() = Some(points);
                }
            }
        }
        let abandoned = self.running_in(partitions);
        if abandoned > 0 {
            warn!(abandoned, grace = ?self.revoke_grace, "Jobs of revoked partitions still running after the grace period are abandoned without a result; their new owner runs them.");
        }
        let mut tracker = self.tracker.lock();
        let mut tokens = self.tokens.lock();
        for p in partitions {
            if let Some(t) = tokens.remove(p) {
                t.cancel();
            }
            tracker.revoke(*p);
        }
    }

    /// A rebalance gives `partitions` to this worker: each starts from its
    /// committed offset, skipping what its previous owner finished above it.
    ///
    /// Each starts unpaused (see [`start_unpaused`]): a partition this worker
    /// paused (every slot busy, or its window full) and lost in a rebalance
    /// would otherwise come back paused in a later one, while the consume
    /// loop, which starts its pauses afresh on each assignment, believed it
    /// fetching: its jobs would wait forever.
    fn assign<C: ConsumerContext>(&self, consumer: &BaseConsumer<C>, partitions: &[i32]) {
        let handover = self.handover.lock().take();
        if let Some(points) = handover.map(|p| still_ahead(consumer, p))
            && points.count() > 0
        {
            match commit_with_retries(consumer, &points) {
                Ok(()) => info!(
                    partitions = points.count(),
                    "Committed the hand-over of partitions revoked in the rebalance."
                ),
                // The group is rebalancing again: kept for the next
                // assignment (never moving a commit point back, see
                // `still_ahead`), and a stopping worker waits for it.
                Err(e) if regrouping(&e) => {
                    info!(error = %e, "The hand-over commit was refused by a new rebalance; committing it after that one.");
                    *self.handover.lock() = Some(points);
                }
                Err(e) => {
                    warn!(error = %e, "Could not commit finished work of revoked partitions; what finished since the last commit will be redone.")
                }
            }
        }
        info!(?partitions, "Partitions assigned.");
        if partitions.is_empty() {
            self.assignments.fetch_add(1, Ordering::AcqRel);
            return;
        }
        blocking(|| std::thread::sleep(HANDOVER_DELAY));
        let mut asked = TopicPartitionList::new();
        for p in partitions {
            asked.add_partition(&self.topic, *p);
        }
        let committed = consumer.committed_offsets(asked, Duration::from_secs(10));
        let mut tracker = self.tracker.lock();
        let mut tokens = self.tokens.lock();
        match committed {
            Ok(tpl) => {
                for e in tpl.elements_for_topic(&self.topic) {
                    let offset = match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    };
                    tracker.assign(e.partition(), offset, e.metadata());
                }
            }
            Err(e) => {
                warn!(error = %e, "Could not read the committed offsets of assigned partitions; work finished above them by their previous owner may be redone.");
                for p in partitions {
                    tracker.assign(*p, None, "");
                }
            }
        }
        for p in partitions {
            tokens.insert(*p, CancellationToken::new());
        }
        drop((tracker, tokens));
        if let Err(e) = start_unpaused(consumer) {
            warn!(error = %e, "Could not resume newly assigned partitions.");
        }
        self.assignments.fetch_add(1, Ordering::AcqRel);
    }
}

/// Runs `f`, which blocks, telling the tokio runtime (when it has worker
/// threads to spare) to move this thread's other tasks elsewhere meanwhile: the
/// rebalance callbacks run inside the consume loop's poll and wait for job tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The hand-over points not behind what the group has committed (at the same
/// offset, the hand-over's metadata still names the work finished above it): a
/// hand-over that comes late (its worker was slow to poll) never moves a
/// partition's commit point back over what a new owner committed meanwhile.
/// When the committed offsets cannot be read, all of them.
fn still_ahead<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    points: TopicPartitionList,
) -> TopicPartitionList {
    let Ok(committed) = consumer.committed_offsets(points.clone(), Duration::from_secs(5)) else {
        return points;
    };
    let mut ahead = TopicPartitionList::new();
    for e in points.elements() {
        let Offset::Offset(ours) = e.offset() else {
            continue;
        };
        let theirs = committed
            .find_partition(e.topic(), e.partition())
            .and_then(|c| match c.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        if theirs.is_some_and(|t| t > ours) {
            debug!(
                partition = e.partition(),
                ours, theirs, "A hand-over behind the group's commit point is dropped."
            );
            continue;
        }
        if ahead
            .add_partition_offset(e.topic(), e.partition(), e.offset())
            .is_ok()
            && let Some(mut a) = ahead.find_partition(e.topic(), e.partition())
        {
            a.set_metadata(e.metadata());
        }
    }
    ahead
}

/// Whether the broker refused a commit because the group is rebalancing, or
/// has moved to a generation (or membership) this worker has not caught up
/// with: polling lets the worker take part in the rebalance, after which the
/// commit goes through or the work is handed over.
pub(super) fn regrouping(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
        )
    )
}

/// Commits synchronously, trying again briefly when the group is rebalancing.
fn commit_with_retries<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    points: &TopicPartitionList,
) -> KafkaResult<()> {
    let mut last = Ok(());
    for _ in 0..3 {
        last = consumer.commit(points, CommitMode::Sync);
        if last.is_ok() {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

/// The consumer's context: rebalances go through [`Partitions`] (and say
/// whether the worker holds an assignment), librdkafka's statistics tell
/// where the partitions end.
pub(super) struct WorkerContext {
    pub partitions: std::sync::Arc<Partitions>,
    pub metrics: std::sync::Arc<Metrics>,
}

impl ClientContext for WorkerContext {
    fn stats_raw(&self, statistics: &[u8]) {
        let ends = partition_offsets(statistics, self.partitions.topic());
        self.partitions.ends.lock().extend(ends);
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked: Vec<i32> = tpl
                .elements_for_topic(self.partitions.topic())
                .iter()
                .map(|e| e.partition())
                .collect();
            self.metrics.set_group_joined(false);
            self.partitions.revoke(consumer, &revoked);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned: Vec<i32> = tpl
                .elements_for_topic(self.partitions.topic())
                .iter()
                .map(|e| e.partition())
                .collect();
            self.partitions.assign(consumer, &assigned);
            self.metrics.set_group_joined(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    use switchyard_kafka::embedded::EmbeddedBroker;

    use super::{Partitions, WorkerContext, still_ahead};

    fn points(offsets: &[(i32, i64, &str)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &(p, o, meta) in offsets {
            tpl.add_partition_offset("jobs", p, Offset::Offset(o))
                .unwrap();
            tpl.find_partition("jobs", p).unwrap().set_metadata(meta);
        }
        tpl
    }

    #[test]
    fn a_late_hand_over_never_moves_a_commit_point_back() {
        let broker = EmbeddedBroker::start(&[("jobs", 3)]).unwrap();
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap())
            .set("group.id", "handover")
            .create()
            .unwrap();
        // A new owner committed partition 0 at 300 and partition 1 at 50.
        consumer
            .commit(
                &points(&[(0, 300, "new"), (1, 50, "new")]),
                CommitMode::Sync,
            )
            .unwrap();
        let late = still_ahead(
            &consumer,
            points(&[(0, 228, "old"), (1, 50, "229,230"), (2, 10, "")]),
        );
        let kept: Vec<(i32, Offset, String)> = late
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset(), e.metadata().to_owned()))
            .collect();
        assert_eq!(
            kept,
            vec![
                // Same offset: its metadata still names finished work above it.
                (1, Offset::Offset(50), "229,230".to_owned()),
                // Nothing committed yet.
                (2, Offset::Offset(10), String::new()),
            ]
        );
    }

    #[test]
    fn a_partition_paused_before_a_rebalance_is_fetched_after_it() {
        let context = WorkerContext {
            partitions: std::sync::Arc::new(Partitions::new(
                "jobs".to_owned(),
                std::time::Duration::from_secs(1),
                64,
            )),
            metrics: Default::default(),
        };
        let fetched =
            switchyard_kafka::rebalance::partitions_fetched_after_a_rebalance_while_paused(
                "jobs", context,
            )
            .unwrap();
        assert_eq!(
            fetched.len(),
            1,
            "the partition the worker got back stayed paused"
        );
    }
}
