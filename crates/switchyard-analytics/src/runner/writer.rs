//! The sink's writer thread: takes decoded chunks in offset order, drops rows of
//! ended epochs, copies of an event already seen and rows a store already
//! holds, writes Parquet, gathers rows for ClickHouse and hands them to its
//! task by size or time, sends what is not a usage event to the dead-letter
//! stage, and commits what both stores hold (never past a dead letter the
//! broker has not acknowledged). Revocations are answered here (see the
//! runner's module documentation).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::clickhouse::{Batch, Done, Owned};
use super::dead_letters::{Acknowledged, Letter};
use super::decoder::DecodedChunk;
use super::options::SinkOptions;
use super::reader::{Control, SinkContext};
use crate::decode::{Decoded, Undecodable};
use crate::dedupe::RecentIds;
use crate::error::{Error, Result};
use crate::progress::{Cut, Progress};
use crate::sinks::clickhouse::ClickHouseRows;
use crate::sinks::parquet::ParquetSink;

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkReport {
    /// Messages read from the usage topic.
    pub consumed: u64,
    /// Messages that were not usage events (sent to the dead-letter topic).
    pub undecodable: u64,
    /// Dead letters the broker acknowledged.
    pub dead_lettered: u64,
    /// Copies of an event already seen (same event_id), dropped.
    pub duplicates: u64,
    /// Rows written to Parquet files.
    pub parquet_rows: u64,
    /// Parquet files made visible.
    pub parquet_files: u64,
    /// Re-delivered rows the Parquet files already held.
    pub parquet_skipped: u64,
    /// Rows inserted into ClickHouse.
    pub clickhouse_rows: u64,
    /// Re-delivered rows ClickHouse already held.
    pub clickhouse_skipped: u64,
    /// Last committed offset per partition.
    pub committed: Vec<(i32, i64)>,
}

/// Longest the writer sleeps before looking at its controls again.
const WAKE: Duration = Duration::from_millis(50);
/// Dead letters awaiting acknowledgement before the writer stops taking chunks
/// (the dead-letter topic is missing or down: hold, never drop).
const MAX_PENDING_LETTERS: usize = 10_000;

/// What the writer is built from.
pub(super) struct Setup {
    pub(super) parquet: ParquetSink,
    pub(super) consumer: Arc<BaseConsumer<SinkContext>>,
    pub(super) topic: String,
    pub(super) options: SinkOptions,
    pub(super) flush_interval: Duration,
    pub(super) flush_max: usize,
    pub(super) max_pending: usize,
    pub(super) clickhouse: Option<tokio::sync::mpsc::UnboundedSender<Batch>>,
    pub(super) done: mpsc::Receiver<Done>,
    /// Where undecodable messages go, and their acknowledgements.
    pub(super) dead_letters: tokio::sync::mpsc::UnboundedSender<Letter>,
    pub(super) acknowledged: mpsc::Receiver<Acknowledged>,
    pub(super) owned: Owned,
    pub(super) stop_clickhouse: CancellationToken,
    /// Set when the sink is asked to stop.
    pub(super) stop: Arc<AtomicBool>,
    /// Set by the writer when it takes no more chunks.
    pub(super) left_loop: Arc<AtomicBool>,
}

/// The writer thread's state.
pub(super) struct Writer {
    s: Setup,
    progress: Progress,
    ids: RecentIds,
    report: SinkReport,
    /// Assigned partitions and their epoch, as the writer has seen them.
    epochs: HashMap<i32, u64>,
    pending: ClickHouseRows,
    in_flight: usize,
    last_handoff: Cut,
    since_flush: usize,
    /// The Parquet manifests must be re-read (partitions were assigned).
    reload_manifests: bool,
    /// ClickHouse must re-learn what it holds, after inserts begun before this.
    relearn: Option<Instant>,
}

impl Writer {
    pub(super) fn new(s: Setup) -> Self {
        let clickhouse = s.clickhouse.is_some();
        Self {
            progress: Progress::new(clickhouse),
            ids: RecentIds::new(s.options.dedupe_window),
            report: SinkReport::default(),
            epochs: HashMap::new(),
            pending: ClickHouseRows::default(),
            in_flight: 0,
            last_handoff: Cut::new(),
            since_flush: 0,
            reload_manifests: false,
            relearn: None,
            s,
        }
    }

    /// Runs until the reader stops, then writes out, commits and reports.
    pub(super) fn run(
        mut self,
        ordered: mpsc::Receiver<mpsc::Receiver<DecodedChunk>>,
        control: mpsc::Receiver<Control>,
    ) -> Result<SinkReport> {
        let mut next_tick = Instant::now() + self.s.flush_interval;
        loop {
            self.controls(&control)?;
            self.take_done();
            if Instant::now() >= next_tick {
                self.tick()?;
                next_tick = Instant::now() + self.s.flush_interval;
            }
            let wait = next_tick
                .saturating_duration_since(Instant::now())
                .min(WAKE);
            if self.in_flight + self.pending.len() >= self.s.max_pending
                || self.progress.dead_letters_pending() >= MAX_PENDING_LETTERS
            {
                if self.s.stop.load(Ordering::SeqCst) {
                    // Stopping while ClickHouse (or the dead-letter topic)
                    // holds all it may (it is down or slow): chunks still
                    // queued are not taken, so not committed, and are read
                    // again on the next start.
                    break;
                }
                // ClickHouse holds as many rows as it may, or the dead-letter
                // topic as many letters: wait for it, and let the reader pause.
                if let Ok(done) = self.s.done.recv_timeout(wait) {
                    self.done(done);
                }
                continue;
            }
            match ordered.recv_timeout(wait) {
                Ok(result) => {
                    let decoded = result
                        .recv()
                        .map_err(|_| Error::Invalid("a usage decoder thread stopped".into()))?;
                    // Controls sent before the messages were polled come first.
                    self.controls(&control)?;
                    self.absorb(decoded)?;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.s.left_loop.store(true, Ordering::SeqCst);
        self.finish()
    }

    fn controls(&mut self, control: &mpsc::Receiver<Control>) -> Result<()> {
        while let Ok(c) = control.try_recv() {
            match c {
                Control::Assigned { partitions, at } => {
                    self.epochs.extend(partitions.iter().copied());
                    self.s
                        .owned
                        .blocking_lock()
                        .extend(partitions.iter().copied());
                    // Another sink may have written these partitions further
                    // than it committed: learn what the stores hold first.
                    self.reload_manifests = true;
                    self.relearn = Some(at);
                    debug!(partitions = ?partitions, "Partitions assigned.");
                }
                Control::Revoke { partitions, reply } => {
                    let points = self.revoke(&partitions)?;
                    let _ = reply.send(points);
                }
            }
        }
        Ok(())
    }

    /// Writes out everything held of `partitions`, ends their epoch and gives
    /// the offsets to commit.
    fn revoke(&mut self, partitions: &[i32]) -> Result<Vec<(i32, i64)>> {
        self.roll()?;
        let deadline = Instant::now() + self.s.options.revoke_grace;
        if self.s.clickhouse.is_some() {
            self.handoff();
            let cut = self.progress.cut();
            while partitions
                .iter()
                .any(|p| self.progress.commit_point(*p) != cut.get(p).copied())
            {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    warn!(partitions = ?partitions, "ClickHouse did not take the revoked partitions' rows in time; they are read again by their next owner.");
                    break;
                }
                if let Ok(done) = self.s.done.recv_timeout(left.min(WAKE)) {
                    self.done(done);
                }
            }
        }
        if !self.await_dead_letters(partitions, deadline) {
            warn!(partitions = ?partitions, "The dead-letter topic did not acknowledge the revoked partitions' letters in time; their next owner reads those messages again.");
        }
        // Under the ClickHouse task's insert lock: no insert of these
        // partitions runs now or starts later.
        {
            let mut owned = self.s.owned.blocking_lock();
            for p in partitions {
                owned.remove(p);
            }
        }
        let mut points = Vec::new();
        for p in partitions {
            self.epochs.remove(p);
            if let Some(o) = self.progress.commit_point(*p) {
                points.push((*p, o));
            }
            self.progress.forget(*p);
            self.last_handoff.remove(p);
        }
        self.report.committed = self.progress.commit_points();
        Ok(points)
    }

    /// Takes one decoded chunk, in offset order.
    fn absorb(&mut self, chunk: DecodedChunk) -> Result<()> {
        let DecodedChunk {
            messages,
            parquet,
            clickhouse: clickhouse_rows,
            error,
        } = chunk;
        if let Some(e) = error {
            return Err(Error::Invalid(e));
        }
        if std::mem::take(&mut self.reload_manifests) {
            self.s.parquet.reload_held()?;
        }
        let clickhouse = self.s.clickhouse.is_some();
        // One flag per row, in the order the rows were decoded.
        let mut parquet_keep: Vec<bool> = Vec::with_capacity(parquet.rows());
        let mut clickhouse_keep: Vec<bool> = Vec::with_capacity(parquet.rows());
        let mut consumed = 0u64;
        let count = messages.len();
        for m in messages {
            let current = self.epochs.get(&m.partition) == Some(&m.epoch);
            if current {
                self.progress.consumed(m.partition, m.offset);
                consumed += 1;
            }
            match m.decoded {
                Decoded::Invalid(undecodable) => {
                    if current {
                        self.s.options.metrics.undecodable();
                        self.dead_letter(m.partition, m.offset, m.epoch, undecodable);
                    }
                }
                Decoded::Row { id } => {
                    let (to_parquet, to_clickhouse) = if !current {
                        (false, false)
                    } else if !self.ids.insert_key(id, m.partition, m.offset) {
                        self.report.duplicates += 1;
                        self.s.options.metrics.duplicate();
                        debug!(
                            partition = m.partition,
                            offset = m.offset,
                            "Copy of an event already written; skipped."
                        );
                        (false, false)
                    } else if self.s.parquet.holds(m.partition, m.offset) {
                        self.report.parquet_skipped += 1;
                        (false, true)
                    } else {
                        (true, true)
                    };
                    parquet_keep.push(to_parquet);
                    clickhouse_keep.push(to_clickhouse);
                }
            }
        }
        let blocks = parquet
            .select(&parquet_keep)
            .map_err(|e| Error::Invalid(format!("filtering a usage block: {e}")))?;
        for block in blocks {
            self.s
                .parquet
                .write_batch(block.day, &block.org, &block.batch)?;
        }
        if clickhouse && let Some(mut rows) = clickhouse_rows {
            if !clickhouse_keep.iter().all(|k| *k) {
                rows = rows.select(|i, _| clickhouse_keep[i]);
            }
            self.pending.extend(rows);
        }
        self.report.consumed += consumed;
        self.s.options.metrics.consumed(consumed);
        if let Some(c) = &self.s.options.consumed {
            c.fetch_add(consumed, Ordering::Relaxed);
        }
        self.since_flush += count;
        if self.since_flush >= self.s.flush_max {
            self.since_flush = 0;
            self.handoff();
            self.commit(CommitMode::Async);
        }
        Ok(())
    }

    /// A message that is not a usage event: it goes to the dead-letter topic,
    /// and its offset waits for the broker's acknowledgement.
    fn dead_letter(&mut self, partition: i32, offset: i64, epoch: u64, u: Box<Undecodable>) {
        self.report.undecodable += 1;
        warn!(partition, offset, kind = u.kind, reason = %u.reason, "Not a usage event; sending it to the dead-letter topic.");
        self.progress.dead_letter_sent(partition, offset);
        let letter = Letter {
            partition,
            offset,
            epoch,
            undecodable: u,
        };
        if self.s.dead_letters.send(letter).is_err() {
            warn!(
                partition,
                offset, "The dead-letter task has stopped; the message stays uncommitted."
            );
        }
    }

    /// The broker holds a dead letter: its offset is done, if its epoch is.
    fn letter_acknowledged(&mut self, a: Acknowledged) {
        if self.epochs.get(&a.partition) == Some(&a.epoch) {
            self.progress
                .dead_letter_acknowledged(a.partition, a.offset);
            self.report.dead_lettered += 1;
            self.s.options.metrics.dead_lettered();
        }
    }

    /// Waits until `partitions` have no dead letter awaiting acknowledgement,
    /// or `deadline`; says whether they have none.
    fn await_dead_letters(&mut self, partitions: &[i32], deadline: Instant) -> bool {
        while self.progress.dead_letters_pending_on(partitions) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.s.acknowledged.recv_timeout(left.min(WAKE)) {
                Ok(a) => self.letter_acknowledged(a),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        true
    }

    /// Every flush interval: roll Parquet when due, hand rows to ClickHouse, commit.
    fn tick(&mut self) -> Result<()> {
        let cut = self.progress.cut();
        self.s.parquet.flush()?;
        if self.s.parquet.should_roll(tokio::time::Instant::now())
            || (self.s.parquet.open_rows() == 0 && cut != self.s.parquet.manifest().offsets)
        {
            self.roll()?;
        } else if self.s.parquet.open_rows() == 0 {
            // Nothing waits in an open file: Parquet holds everything consumed
            // (a restart reading again what its files already hold, because a
            // dead letter kept the commit behind, writes nothing new).
            self.progress.parquet_reached(&cut);
        }
        self.since_flush = 0;
        self.handoff();
        self.commit(CommitMode::Async);
        Ok(())
    }

    /// Makes everything consumed so far visible in Parquet.
    fn roll(&mut self) -> Result<()> {
        let cut = self.progress.cut();
        let rolled = self.s.parquet.roll(&cut)?;
        self.report.parquet_files += rolled.files;
        self.report.parquet_rows += rolled.rows;
        self.s.options.metrics.parquet_rolled(rolled.rows);
        self.progress.parquet_reached(&cut);
        Ok(())
    }

    /// Hands the gathered rows, and the cut they complete, to ClickHouse.
    fn handoff(&mut self) {
        let Some(tx) = &self.s.clickhouse else {
            return;
        };
        let cut = self.progress.cut();
        if self.pending.is_empty() && cut == self.last_handoff && self.relearn.is_none() {
            return;
        }
        let rows = std::mem::take(&mut self.pending);
        let epochs = cut
            .keys()
            .filter_map(|p| self.epochs.get(p).map(|e| (*p, *e)))
            .collect();
        self.in_flight += rows.len();
        let batch = Batch {
            rows,
            cut: cut.clone(),
            epochs,
            relearn: self.relearn.take(),
        };
        if tx.send(batch).is_err() {
            warn!("The ClickHouse task has stopped; rows stay uncommitted.");
        }
        self.last_handoff = cut;
    }

    fn take_done(&mut self) {
        while let Ok(done) = self.s.done.try_recv() {
            self.done(done);
        }
        while let Ok(a) = self.s.acknowledged.try_recv() {
            self.letter_acknowledged(a);
        }
    }

    /// ClickHouse holds a batch: advance its cut for the epochs still current.
    fn done(&mut self, done: Done) {
        self.in_flight = self.in_flight.saturating_sub(done.rows);
        self.report.clickhouse_rows += done.inserted;
        self.s.options.metrics.clickhouse_inserted(done.inserted);
        self.report.clickhouse_skipped += done.skipped;
        let cut: Cut = done
            .cut
            .into_iter()
            .filter(|(p, _)| {
                self.epochs.contains_key(p) && self.epochs.get(p) == done.epochs.get(p)
            })
            .collect();
        self.progress.clickhouse_reached(&cut);
        self.commit(CommitMode::Async);
    }

    fn commit(&mut self, mode: CommitMode) {
        let changes = self.progress.take_commits();
        self.report.committed = self.progress.commit_points();
        let points = if matches!(mode, CommitMode::Sync) {
            self.progress.commit_points()
        } else {
            changes
        };
        if points.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &points {
            let _ = tpl.add_partition_offset(&self.s.topic, *p, Offset::Offset(*o));
        }
        match self.s.consumer.commit(&tpl, mode) {
            Ok(()) => debug!(
                partitions = points.len(),
                "Committed offsets both stores hold."
            ),
            Err(e) => {
                warn!(error = %e, "Commit failed; the events will be read again and skipped by offset.")
            }
        }
    }

    /// The reader has stopped: roll, let ClickHouse take the rest within the
    /// grace period, commit.
    fn finish(mut self) -> Result<SinkReport> {
        self.roll()?;
        let deadline = Instant::now() + self.s.options.drain_grace;
        if self.s.clickhouse.is_some() {
            self.handoff();
            // No more batches: the task ends once it has written these.
            self.s.clickhouse = None;
            while self.in_flight > 0 || self.progress.commit_points() != self.cut_points() {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    warn!(
                        rows = self.in_flight,
                        "ClickHouse did not take the last rows in time; their offsets stay uncommitted and are read again next start."
                    );
                    break;
                }
                match self.s.done.recv_timeout(left.min(WAKE)) {
                    Ok(done) => self.done(done),
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
            self.s.stop_clickhouse.cancel();
        }
        let partitions: Vec<i32> = self.epochs.keys().copied().collect();
        if !self.await_dead_letters(&partitions, deadline) {
            warn!(
                letters = self.progress.dead_letters_pending(),
                "The dead-letter topic did not acknowledge every letter in time; those messages stay uncommitted and are read again next start."
            );
        }
        self.commit(CommitMode::Sync);
        info!(
            consumed = self.report.consumed,
            parquet_rows = self.report.parquet_rows,
            clickhouse_rows = self.report.clickhouse_rows,
            "Usage sink written out."
        );
        Ok(self.report)
    }

    fn cut_points(&self) -> Vec<(i32, i64)> {
        self.progress.cut().into_iter().collect()
    }
}
