//! The sink's reader thread: polls the consumer, copies messages into chunks
//! stamped with their partition's assignment epoch, and hands each chunk to the
//! decoders and its result slot to the writer, in order. When the writer is
//! CHUNKS_IN_FLIGHT chunks behind, it waits for it; if the writer stays stuck,
//! it pauses the partitions and keeps polling so that rebalances are served.
//! The rebalance callbacks ([`SinkContext`]) run here, inside the poll.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use switchyard_kafka::rebalance::start_unpaused;
use switchyard_kafka::stats::partition_offsets;
use tracing::{debug, warn};

use super::decoder::{DecodeJob, DecodedChunk};
use crate::decode::RawChunk;
use crate::metrics::SinkMetrics;

/// Messages per chunk handed to a decoder thread.
pub(super) const DECODE_CHUNK: usize = 4096;
/// Chunks between the reader and the writer; beyond it the reader pauses.
pub(super) const CHUNKS_IN_FLIGHT: usize = 4;

/// What the reader tells the writer, outside the flow of chunks.
pub(super) enum Control {
    /// Partitions assigned, with their new epoch.
    Assigned {
        partitions: Vec<(i32, u64)>,
        at: std::time::Instant,
    },
    /// Partitions revoked: write out what is held of them and answer with the
    /// offsets to commit.
    Revoke {
        partitions: Vec<i32>,
        reply: mpsc::SyncSender<Vec<(i32, i64)>>,
    },
}

/// A partial chunk waits at most this long for more messages.
const CHUNK_WAIT: Duration = Duration::from_millis(2);
/// How long the reader waits, without polling, for the writer to take a chunk
/// before it pauses the partitions. Pausing makes librdkafka drop what it
/// prefetched, so it is kept for a writer that is stuck (ClickHouse down at its
/// bound), not one that is merely a few chunks behind; the wait also bounds how
/// late a rebalance is served.
const PAUSE_AFTER: Duration = Duration::from_secs(1);
/// How often the waiting reader tries again.
const RETRY: Duration = Duration::from_micros(200);
/// Poll timeout when nothing is waiting.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// At most one consumer error is logged per this period.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// Rebalance handling, shared with librdkafka's callbacks.
pub(super) struct SinkContext {
    topic: String,
    control: mpsc::Sender<Control>,
    revoke_grace: Duration,
    /// Epoch of each assigned partition.
    epochs: Mutex<HashMap<i32, u64>>,
    next_epoch: AtomicU64,
    /// Bumped on every rebalance, so the reader re-reads `epochs`.
    generation: AtomicU64,
    /// Takes the lag of the held partitions from librdkafka's statistics.
    metrics: Arc<SinkMetrics>,
}

impl SinkContext {
    pub(super) fn new(
        topic: String,
        control: mpsc::Sender<Control>,
        revoke_grace: Duration,
        metrics: Arc<SinkMetrics>,
    ) -> Self {
        Self {
            topic,
            control,
            revoke_grace,
            epochs: Mutex::new(HashMap::new()),
            next_epoch: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            metrics,
        }
    }

    fn partitions(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect()
    }
}

impl ClientContext for SinkContext {
    /// The lag: per held partition, its end minus the group's committed
    /// offset, as librdkafka last saw them.
    fn stats_raw(&self, statistics: &[u8]) {
        let offsets = partition_offsets(statistics, &self.topic);
        let Ok(epochs) = self.epochs.lock() else {
            return;
        };
        let lag = offsets
            .iter()
            .filter(|(p, _)| epochs.contains_key(p))
            .map(|(_, o)| o.lag())
            .sum();
        self.metrics.set_lag(lag);
    }
}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions = self.partitions(tpl);
        if partitions.is_empty() {
            return;
        }
        if let Ok(mut epochs) = self.epochs.lock() {
            for p in &partitions {
                epochs.remove(p);
            }
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        // The writer rolls Parquet, lets ClickHouse take its rows, ends the
        // partitions' epoch and answers with what both stores hold.
        let (reply, answer) = mpsc::sync_channel(1);
        let sent = self.control.send(Control::Revoke {
            partitions: partitions.clone(),
            reply,
        });
        if sent.is_err() {
            return;
        }
        let Ok(points) = answer.recv_timeout(self.revoke_grace + Duration::from_secs(5)) else {
            warn!(partitions = ?partitions, "The sink's writer did not answer the revocation in time; their uncommitted events will be read again.");
            return;
        };
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &points {
            let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o));
        }
        if tpl.count() > 0
            && let Err(e) = consumer.commit(&tpl, CommitMode::Sync)
        {
            warn!(error = %e, "Could not commit the revoked partitions; their uncommitted events will be read again.");
        }
        debug!(partitions = ?partitions, committed = ?points, "Partitions given up.");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        // The reader pauses them again if the writer is still behind.
        if let Err(e) = start_unpaused(consumer) {
            warn!(error = %e, "Could not resume newly assigned usage partitions.");
        }
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        let partitions: Vec<(i32, u64)> = self
            .partitions(tpl)
            .into_iter()
            .map(|p| (p, epoch))
            .collect();
        if let Ok(mut epochs) = self.epochs.lock() {
            epochs.extend(partitions.iter().copied());
        }
        // Sent before any message of the new epoch is polled, so the writer
        // knows the epoch before it sees one.
        let _ = self.control.send(Control::Assigned {
            partitions,
            at: Instant::now(),
        });
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// The reader thread's state.
pub(super) struct Reader {
    pub(super) consumer: Arc<BaseConsumer<SinkContext>>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) work: mpsc::Sender<DecodeJob>,
    pub(super) ordered: mpsc::SyncSender<mpsc::Receiver<DecodedChunk>>,
    /// Set by the writer when it takes no more chunks.
    pub(super) writer_left: Arc<AtomicBool>,
}

/// Why a chunk could not be handed on.
enum Handoff {
    /// The writer is CHUNKS_IN_FLIGHT chunks behind.
    Full(RawChunk),
    /// The writer or the decoders are gone.
    Closed,
}

impl Reader {
    /// Polls until stopped (or the writer is gone), then hands on what it read.
    pub(super) fn run(self) {
        let context = self.consumer.context();
        let mut epochs: HashMap<i32, u64> = HashMap::new();
        let mut generation = u64::MAX;
        let mut chunk = RawChunk::with_capacity(DECODE_CHUNK);
        let mut chunk_due = Instant::now();
        let mut held: Option<RawChunk> = None;
        let mut paused = false;
        let mut last_error_log: Option<Instant> = None;
        debug!(chunks_in_flight = CHUNKS_IN_FLIGHT, "Sink reader started.");
        while !self.stop.load(Ordering::SeqCst) {
            if let Some(full) = held.take() {
                let patience = if paused { Duration::ZERO } else { PAUSE_AFTER };
                let deadline = Instant::now() + patience;
                let give_up = || Instant::now() >= deadline || self.stop.load(Ordering::SeqCst);
                match self.hand_off(full, give_up) {
                    Ok(()) => {
                        if paused {
                            self.set_paused(false);
                            paused = false;
                        }
                    }
                    Err(Handoff::Full(full)) => {
                        held = Some(full);
                        if !paused {
                            self.set_paused(true);
                            paused = true;
                        }
                    }
                    Err(Handoff::Closed) => return,
                }
            }
            let timeout = if held.is_some() {
                CHUNK_WAIT
            } else if chunk.is_empty() {
                IDLE_POLL
            } else {
                chunk_due.saturating_duration_since(Instant::now())
            };
            let polled = self.consumer.poll(timeout);
            let now_generation = context.generation.load(Ordering::SeqCst);
            if now_generation != generation {
                generation = now_generation;
                if let Ok(e) = context.epochs.lock() {
                    epochs = e.clone();
                }
                if paused {
                    // A new assignment starts unpaused.
                    self.set_paused(true);
                }
            }
            match polled {
                Some(Ok(m)) => {
                    if chunk.is_empty() {
                        chunk_due = Instant::now() + CHUNK_WAIT;
                    }
                    let epoch = epochs.get(&m.partition()).copied().unwrap_or(0);
                    chunk.push_keyed(
                        m.partition(),
                        m.offset(),
                        epoch,
                        m.key(),
                        m.payload().unwrap_or(&[]),
                    );
                }
                Some(Err(e)) if last_error_log.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) => {
                    warn!(error = %e, "Consumer error; retrying (logged at most every 10 s).");
                    last_error_log = Some(Instant::now());
                }
                Some(Err(_)) | None => {}
            }
            if held.is_none()
                && !chunk.is_empty()
                && (chunk.len() >= DECODE_CHUNK || Instant::now() >= chunk_due)
            {
                held = Some(std::mem::replace(
                    &mut chunk,
                    RawChunk::with_capacity(DECODE_CHUNK),
                ));
            }
        }
        // Stopping: what was read is decoded and written too, unless the writer
        // has stopped taking chunks (those messages stay uncommitted).
        for last in [held, Some(chunk)].into_iter().flatten() {
            if last.is_empty() {
                continue;
            }
            if self
                .hand_off(last, || self.writer_left.load(Ordering::SeqCst))
                .is_err()
            {
                return;
            }
        }
    }

    /// Hands `chunk` on, waiting for the writer to make room until `give_up`.
    fn hand_off(&self, chunk: RawChunk, give_up: impl Fn() -> bool) -> Result<(), Handoff> {
        let (reply, result) = mpsc::sync_channel(1);
        let mut slot = result;
        loop {
            match self.ordered.try_send(slot) {
                Ok(()) => {
                    return self
                        .work
                        .send(DecodeJob { chunk, reply })
                        .map_err(|_| Handoff::Closed);
                }
                Err(mpsc::TrySendError::Full(back)) => {
                    if give_up() {
                        return Err(Handoff::Full(chunk));
                    }
                    slot = back;
                    std::thread::sleep(RETRY);
                }
                Err(mpsc::TrySendError::Disconnected(_)) => return Err(Handoff::Closed),
            }
        }
    }

    /// Pauses or resumes every assigned partition: paused, librdkafka drops
    /// what it prefetched and fetches nothing, and resumes from the next
    /// message not yet returned.
    fn set_paused(&self, pause: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        if assignment.count() == 0 {
            return;
        }
        let result = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        match result {
            Ok(()) => debug!(
                pause,
                partitions = assignment.count(),
                "Writer backpressure."
            ),
            Err(e) => warn!(error = %e, pause, "Could not pause or resume the usage partitions."),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, mpsc};
    use std::time::Duration;

    use super::SinkContext;
    use crate::metrics::SinkMetrics;

    #[test]
    fn a_partition_paused_before_a_rebalance_is_fetched_after_it() {
        // No writer: the revocation goes unanswered at once.
        let (control, _) = mpsc::channel();
        let context = SinkContext::new(
            "usage".to_owned(),
            control,
            Duration::from_secs(1),
            Arc::new(SinkMetrics::new("unused", false)),
        );
        let fetched =
            switchyard_kafka::rebalance::partitions_fetched_after_a_rebalance_while_paused(
                "usage", context,
            )
            .unwrap();
        assert_eq!(
            fetched.len(),
            1,
            "the partition the sink got back stayed paused"
        );
    }
}
