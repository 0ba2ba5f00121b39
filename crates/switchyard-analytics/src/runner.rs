//! The usage sink's Kafka loop ([`run_sink`]): a consumer in the analytics group
//! on the usage topic, handing messages in chunks to decoder threads (decoding
//! runs beside the loop, on another core) and taking the rows back in order,
//! dropping copies by event_id, writing Parquet on the loop and handing batches
//! to a ClickHouse writer task that retries with backoff while the server is
//! down. Offsets are committed only up to what both stores hold; when the rows
//! held for ClickHouse reach their bound the loop stops consuming instead of
//! dropping anything.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use switchyard_codec::Codec;
use switchyard_core::config::PipelineConfig;
use switchyard_core::usage::UsageEvent;
use switchyard_kafka::client::consumer_config;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::dedupe::RecentIds;
use crate::error::{Error, Result};
use crate::progress::{Cut, Progress};
use crate::row::UsageRow;
use crate::sinks::clickhouse::{ClickHouseConfig, ClickHouseSink};
use crate::sinks::parquet::{ParquetConfig, ParquetSink};

/// librdkafka's prefetch bound, in KiB.
const PREFETCH: &str = "queued.max.messages.kbytes";
/// Messages per partition librdkafka keeps fetching towards.
const PREFETCH_MESSAGES: &str = "queued.min.messages";

/// Knobs that are not in the pipeline config (tests and embedding).
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Event ids remembered for de-duplication.
    pub dedupe_window: usize,
    /// How long shutdown waits for ClickHouse to take the last rows.
    pub drain_grace: Duration,
    /// First pause after a ClickHouse failure.
    pub base_backoff: Duration,
    /// Counts the messages consumed, for callers that watch progress.
    pub consumed: Option<Arc<AtomicU64>>,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            dedupe_window: 1_000_000,
            drain_grace: Duration::from_secs(30),
            base_backoff: Duration::from_millis(200),
            consumed: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkReport {
    /// Messages read from the usage topic.
    pub consumed: u64,
    /// Messages that were not usage events (logged and skipped).
    pub undecodable: u64,
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

/// Runs the sink until `shutdown` resolves, then writes out what it holds,
/// commits and returns.
pub async fn run_sink(
    config: &PipelineConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<SinkReport> {
    run_sink_with(config, SinkOptions::default(), shutdown).await
}

/// A batch handed to the ClickHouse writer: its rows and the cut they complete.
struct ChBatch {
    rows: Vec<UsageRow>,
    cut: Cut,
}

/// The writer's answer: ClickHouse holds everything below `cut`.
struct ChDone {
    cut: Cut,
    rows: usize,
    inserted: u64,
    skipped: u64,
}

struct SinkContext {
    progress: Arc<Mutex<Progress>>,
    topic: String,
    /// Set on every new assignment: the loop re-reads the Parquet manifests.
    reassigned_parquet: Arc<AtomicBool>,
    /// Set on every new assignment: the ClickHouse writer re-learns its offsets.
    reassigned_clickhouse: Arc<AtomicBool>,
}

impl ClientContext for SinkContext {}

impl ConsumerContext for SinkContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            // Another sink of the group may have written these partitions further
            // than it committed: learn what the stores hold before writing.
            self.reassigned_parquet.store(true, Ordering::SeqCst);
            self.reassigned_clickhouse.store(true, Ordering::SeqCst);
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let mut points = TopicPartitionList::new();
        if let Ok(mut p) = self.progress.lock() {
            for e in tpl.elements_for_topic(&self.topic) {
                if let Some(o) = p.commit_point(e.partition()) {
                    let _ =
                        points.add_partition_offset(&self.topic, e.partition(), Offset::Offset(o));
                }
                p.forget(e.partition());
            }
        }
        if points.count() > 0
            && let Err(e) = consumer.commit(&points, CommitMode::Sync)
        {
            warn!(error = %e, "Could not commit the revoked partitions; their uncommitted events will be read again.");
        }
    }
}

/// As [`run_sink`], with options.
pub async fn run_sink_with(
    config: &PipelineConfig,
    options: SinkOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<SinkReport> {
    let analytics = &config.analytics;
    let topic = config.kafka.topics.usage.name.clone();
    let codec = Codec::for_topic(&config.kafka.topics.usage);
    let parquet_config = ParquetConfig::from_analytics(analytics, &topic)?;
    let clickhouse_config = ClickHouseConfig::from_analytics(analytics)?;
    let flush_max = analytics.flush_max_events.max(1);
    let sink_id = parquet_config.sink_id.clone();
    let mut parquet = ParquetSink::open(parquet_config)?;

    let progress = Arc::new(Mutex::new(Progress::new(clickhouse_config.is_some())));
    let mut settings =
        consumer_config(&config.kafka, &analytics.group_id, analytics.flush_interval);
    settings
        .set("enable.auto.commit", "false")
        .set("client.id", format!("switchyard-sink-{sink_id}"));
    // Unlike a worker, the sink turns events into rows as fast as they come: a
    // deep prefetch keeps it fed (librdkafka's defaults held it to a third of
    // its speed). `kafka.client` may still set either.
    for (key, value) in [(PREFETCH, "131072"), (PREFETCH_MESSAGES, "1000000")] {
        if !config.kafka.client.contains_key(key) {
            settings.set(key, value);
        }
    }
    let reassigned_parquet = Arc::new(AtomicBool::new(false));
    let reassigned_clickhouse = Arc::new(AtomicBool::new(false));
    let consumer: StreamConsumer<SinkContext> = settings.create_with_context(SinkContext {
        progress: progress.clone(),
        topic: topic.clone(),
        reassigned_parquet: reassigned_parquet.clone(),
        reassigned_clickhouse: reassigned_clickhouse.clone(),
    })?;
    consumer.subscribe(&[topic.as_str()])?;

    let stop_writer = CancellationToken::new();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<ChDone>();
    let (mut batch_tx, writer, max_pending) = match clickhouse_config {
        Some(ch) => {
            let (tx, rx) = mpsc::unbounded_channel::<ChBatch>();
            let max_pending = ch.max_pending_events;
            let backoff = Backoff::new(options.base_backoff, ch.max_backoff);
            let writer = tokio::spawn(clickhouse_writer(
                ch,
                topic.clone(),
                rx,
                done_tx,
                backoff,
                stop_writer.clone(),
                reassigned_clickhouse.clone(),
            ));
            (Some(tx), Some(writer), max_pending)
        }
        None => (None, None, usize::MAX),
    };

    let mut report = SinkReport::default();
    let mut ids = RecentIds::new(options.dedupe_window);
    let mut pending_ch: Vec<UsageRow> = Vec::new();
    let mut ch_in_flight = 0usize;
    let mut last_handoff = Cut::new();
    let mut since_flush = 0usize;
    let mut tick = tokio::time::interval(analytics.flush_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    info!(topic = %topic, group = %analytics.group_id, sink_id = %sink_id, clickhouse = batch_tx.is_some(), "Usage sink started.");

    let codec = Arc::new(codec);
    let row_topic: Arc<str> = topic.as_str().into();
    let dispatch = |chunk: &mut Vec<Raw>, decoding: &mut VecDeque<JoinHandle<Vec<Decoded>>>| {
        let taken = std::mem::replace(chunk, Vec::with_capacity(DECODE_CHUNK));
        let (codec, topic) = (codec.clone(), row_topic.clone());
        decoding.push_back(tokio::task::spawn_blocking(move || {
            decode_chunk(&codec, &topic, taken)
        }));
    };
    let mut chunk: Vec<Raw> = Vec::with_capacity(DECODE_CHUNK);
    let mut chunk_due = Instant::now();
    let mut decoding: VecDeque<JoinHandle<Vec<Decoded>>> = VecDeque::new();

    // After the stop, what was already read is decoded and written too.
    let mut stopping = false;
    tokio::pin!(shutdown);
    loop {
        if stopping && chunk.is_empty() && decoding.is_empty() {
            break;
        }
        let room = !stopping
            && ch_in_flight + pending_ch.len() < max_pending
            && decoding.len() < DECODING_MAX;
        tokio::select! {
            biased;
            _ = &mut shutdown, if !stopping => {
                stopping = true;
                if !chunk.is_empty() {
                    dispatch(&mut chunk, &mut decoding);
                }
            }
            Some(done) = done_rx.recv() => {
                ch_in_flight -= done.rows;
                report.clickhouse_rows += done.inserted;
                report.clickhouse_skipped += done.skipped;
                if let Ok(mut p) = progress.lock() {
                    p.clickhouse_reached(&done.cut);
                }
                commit(&consumer, &progress, &topic, CommitMode::Async, &mut report);
            }
            decoded = async {
                match decoding.front_mut() {
                    Some(handle) => handle.await,
                    None => std::future::pending().await,
                }
            }, if !decoding.is_empty() => {
                decoding.pop_front();
                let decoded = decoded.map_err(|e| Error::Invalid(format!("a usage decoder thread failed: {e}")))?;
                since_flush += decoded.len();
                if reassigned_parquet.swap(false, Ordering::SeqCst) {
                    parquet.reload_held()?;
                }
                Intake {
                    parquet: &mut parquet,
                    pending_ch: &mut pending_ch,
                    ids: &mut ids,
                    report: &mut report,
                    progress: &progress,
                    clickhouse: batch_tx.is_some(),
                    consumed: options.consumed.as_deref(),
                }
                .absorb(decoded)?;
                if since_flush >= flush_max {
                    flush(&mut parquet, &progress, &mut pending_ch, &mut ch_in_flight, &mut last_handoff, batch_tx.as_ref(), &mut report)?;
                    since_flush = 0;
                    commit(&consumer, &progress, &topic, CommitMode::Async, &mut report);
                }
            }
            _ = tick.tick() => {
                flush(&mut parquet, &progress, &mut pending_ch, &mut ch_in_flight, &mut last_handoff, batch_tx.as_ref(), &mut report)?;
                since_flush = 0;
                commit(&consumer, &progress, &topic, CommitMode::Async, &mut report);
            }
            _ = tokio::time::sleep_until(chunk_due), if !chunk.is_empty() => {
                dispatch(&mut chunk, &mut decoding);
            }
            message = consumer.recv(), if room => {
                let m = match message {
                    Ok(m) => m,
                    Err(e) => {
                        warn!(error = %e, "Consumer error; continuing.");
                        continue;
                    }
                };
                if chunk.is_empty() {
                    chunk_due = Instant::now() + CHUNK_WAIT;
                }
                chunk.push(Raw {
                    partition: m.partition(),
                    offset: m.offset(),
                    payload: m.payload().unwrap_or(&[]).to_vec(),
                });
                if chunk.len() >= DECODE_CHUNK {
                    dispatch(&mut chunk, &mut decoding);
                }
            }
        }
    }

    info!("Usage sink stopping: writing out what it holds.");
    let cut = progress.lock().map(|p| p.cut()).unwrap_or_default();
    let rolled = parquet.roll(&cut)?;
    report.parquet_files += rolled.files;
    report.parquet_rows += rolled.rows;
    if let Ok(mut p) = progress.lock() {
        p.parquet_reached(&cut);
    }
    if let Some(tx) = batch_tx.take() {
        if !pending_ch.is_empty() || cut != last_handoff {
            ch_in_flight += pending_ch.len();
            let _ = tx.send(ChBatch {
                rows: std::mem::take(&mut pending_ch),
                cut,
            });
        }
        drop(tx);
        let deadline = Instant::now() + options.drain_grace;
        while ch_in_flight > 0 {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(done)) => {
                    ch_in_flight -= done.rows;
                    report.clickhouse_rows += done.inserted;
                    report.clickhouse_skipped += done.skipped;
                    if let Ok(mut p) = progress.lock() {
                        p.clickhouse_reached(&done.cut);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    warn!(
                        rows = ch_in_flight,
                        "ClickHouse did not take the last rows in time; their offsets stay uncommitted and are read again next start."
                    );
                    break;
                }
            }
        }
    }
    stop_writer.cancel();
    if let Some(w) = writer {
        let _ = w.await;
    }
    commit(&consumer, &progress, &topic, CommitMode::Sync, &mut report);
    consumer.unsubscribe();
    info!(
        consumed = report.consumed,
        parquet_rows = report.parquet_rows,
        clickhouse_rows = report.clickhouse_rows,
        duplicates = report.duplicates,
        "Usage sink stopped."
    );
    Ok(report)
}

/// Messages per chunk handed to a decoder thread: the loop keeps consuming and
/// writing Parquet while another core decodes.
const DECODE_CHUNK: usize = 4096;
/// Chunks being decoded at once; the loop stops fetching beyond it.
const DECODING_MAX: usize = 3;
/// A partial chunk waits at most this long for more messages.
const CHUNK_WAIT: Duration = Duration::from_millis(2);

/// A message as read, waiting for a decoder.
struct Raw {
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
}

/// A message decoded into a row, or why it is not a usage event.
struct Decoded {
    partition: i32,
    offset: i64,
    row: std::result::Result<UsageRow, String>,
}

/// Decodes a chunk in order (runs on a blocking thread).
fn decode_chunk(codec: &Codec, topic: &str, chunk: Vec<Raw>) -> Vec<Decoded> {
    chunk
        .into_iter()
        .map(|m| Decoded {
            partition: m.partition,
            offset: m.offset,
            row: codec
                .decode::<UsageEvent>(&m.payload)
                .map(|e| UsageRow::from_event(e, topic, m.partition, m.offset))
                .map_err(|e| e.to_string()),
        })
        .collect()
}

/// What the loop does with decoded messages, in offset order: drop copies by
/// event id, queue rows for the stores that do not hold them yet, and record the
/// messages as consumed.
struct Intake<'a> {
    parquet: &'a mut ParquetSink,
    pending_ch: &'a mut Vec<UsageRow>,
    ids: &'a mut RecentIds,
    report: &'a mut SinkReport,
    progress: &'a Mutex<Progress>,
    clickhouse: bool,
    consumed: Option<&'a AtomicU64>,
}

impl Intake<'_> {
    fn absorb(self, decoded: Vec<Decoded>) -> Result<()> {
        let n = decoded.len() as u64;
        let mut positions = Vec::with_capacity(decoded.len());
        for Decoded {
            partition,
            offset,
            row,
        } in decoded
        {
            positions.push((partition, offset));
            match row {
                Err(reason) => {
                    self.report.undecodable += 1;
                    warn!(partition, offset, reason = %reason, "Not a usage event; skipped.");
                }
                Ok(row) if !self.ids.insert(&row.event_id) => {
                    self.report.duplicates += 1;
                    debug!(partition, offset, event_id = %row.event_id, "Copy of an event already written; skipped.");
                }
                Ok(row) => {
                    let in_parquet = self.parquet.holds(partition, offset);
                    if in_parquet {
                        self.report.parquet_skipped += 1;
                    }
                    match (self.clickhouse, in_parquet) {
                        (true, false) => {
                            self.parquet.push(row.clone())?;
                            self.pending_ch.push(row);
                        }
                        (true, true) => self.pending_ch.push(row),
                        (false, false) => self.parquet.push(row)?,
                        (false, true) => {}
                    }
                }
            }
        }
        if let Ok(mut p) = self.progress.lock() {
            for (partition, offset) in positions {
                p.consumed(partition, offset);
            }
        }
        self.report.consumed += n;
        if let Some(c) = self.consumed {
            c.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Writes queued rows to the open Parquet files, rolls them when due, and hands
/// the rows gathered for ClickHouse to the writer.
fn flush(
    parquet: &mut ParquetSink,
    progress: &Mutex<Progress>,
    pending_ch: &mut Vec<UsageRow>,
    ch_in_flight: &mut usize,
    last_handoff: &mut Cut,
    batch_tx: Option<&mpsc::UnboundedSender<ChBatch>>,
    report: &mut SinkReport,
) -> Result<()> {
    let cut = progress.lock().map(|p| p.cut()).unwrap_or_default();
    parquet.flush()?;
    if parquet.should_roll(Instant::now())
        || (parquet.open_rows() == 0 && cut != parquet.manifest().offsets)
    {
        let rolled = parquet.roll(&cut)?;
        report.parquet_files += rolled.files;
        report.parquet_rows += rolled.rows;
        if let Ok(mut p) = progress.lock() {
            p.parquet_reached(&cut);
        }
    }
    if let Some(tx) = batch_tx
        && (!pending_ch.is_empty() || cut != *last_handoff)
    {
        let rows = std::mem::take(pending_ch);
        *ch_in_flight += rows.len();
        if tx
            .send(ChBatch {
                rows,
                cut: cut.clone(),
            })
            .is_err()
        {
            error!("The ClickHouse writer has stopped; rows stay uncommitted.");
        }
        *last_handoff = cut;
    }
    Ok(())
}

fn commit(
    consumer: &StreamConsumer<SinkContext>,
    progress: &Mutex<Progress>,
    topic: &str,
    mode: CommitMode,
    report: &mut SinkReport,
) {
    let changes = match progress.lock() {
        Ok(mut p) => {
            let changes = p.take_commits();
            report.committed = p.commit_points();
            if matches!(mode, CommitMode::Sync) {
                p.commit_points()
            } else {
                changes
            }
        }
        Err(_) => return,
    };
    if changes.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &changes {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
    }
    match consumer.commit(&tpl, mode) {
        Ok(()) => debug!(
            partitions = changes.len(),
            "Committed offsets both stores hold."
        ),
        Err(e) => {
            warn!(error = %e, "Commit failed; the events will be read again and skipped by offset.")
        }
    }
}

/// Takes batches in order and writes each to ClickHouse, retrying with backoff
/// until it succeeds or the sink gives up at shutdown.
async fn clickhouse_writer(
    config: ClickHouseConfig,
    topic: String,
    mut batches: mpsc::UnboundedReceiver<ChBatch>,
    done: mpsc::UnboundedSender<ChDone>,
    mut backoff: Backoff,
    stop: CancellationToken,
    reassigned: Arc<AtomicBool>,
) {
    let mut sink = loop {
        match ClickHouseSink::connect(config.clone(), &topic).await {
            Ok(s) => break s,
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(error = %e, retry_in = ?delay, "ClickHouse is not ready; Parquet goes on and rows wait.");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    backoff.reset();
    while let Some(mut batch) = batches.recv().await {
        // Catching up: take what queued behind this batch into one insert.
        while batch.rows.len() < 200_000 {
            match batches.try_recv() {
                Ok(next) => {
                    batch.rows.extend(next.rows);
                    batch.cut = next.cut;
                }
                Err(_) => break,
            }
        }
        loop {
            if reassigned.swap(false, Ordering::SeqCst) {
                sink.forget_partitions();
            }
            match sink.write(&batch.rows).await {
                Ok(outcome) => {
                    backoff.reset();
                    let _ = done.send(ChDone {
                        cut: std::mem::take(&mut batch.cut),
                        rows: batch.rows.len(),
                        inserted: outcome.inserted,
                        skipped: outcome.skipped,
                    });
                    break;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(rows = batch.rows.len(), error = %e, retry_in = ?delay, "ClickHouse insert failed; holding the rows and retrying.");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}
