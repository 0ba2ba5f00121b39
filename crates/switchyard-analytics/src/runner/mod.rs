//! The usage sink's Kafka pipeline ([`run_sink`]): a consumer in the analytics
//! group on the usage topic, read by one thread, decoded by others, written by
//! one more, in offset order.
//!
//! - [`reader`] polls the consumer, copies messages into chunks, and hands each
//!   chunk to a decoder and its (future) result to the writer, in order. When
//!   the writer falls behind it waits; when the writer stays stuck it pauses
//!   the partitions and keeps polling, so the group never mistakes a slow store
//!   for a dead sink. Rebalances are handled on its thread, inside the poll.
//! - [`decode`](crate::decode) runs on the decoder threads: bytes into Arrow
//!   blocks and ClickHouse `RowBinary`.
//! - [`writer`] drops copies by event id and rows a store already holds, writes
//!   Parquet, hands rows to the ClickHouse task, and commits up to what both
//!   stores hold.
//! - [`clickhouse`] inserts batches, retrying with backoff while the server is
//!   down.
//!
//! Each partition's assignment has an epoch. A revoked partition's epoch ends
//! once the writer has rolled its Parquet files, ClickHouse has its rows (or the
//! grace period is over) and its commit point is committed; rows of an ended
//! epoch still in the pipeline are dropped, and the ClickHouse task checks the
//! epoch under the same lock the revocation takes, so a sink never writes a
//! partition after giving it up. The sink that takes it over reads the Parquet
//! manifests and, in ClickHouse, waits for inserts begun before its assignment
//! before it learns what is there.

mod clickhouse;
mod reader;
mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use switchyard_codec::Codec;
use switchyard_core::config::PipelineConfig;
use switchyard_kafka::client::consumer_config;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::backoff::Backoff;
use crate::decode::{DecodedChunk, RawChunk, decode_chunk};
use crate::error::{Error, Result};
use crate::sinks::clickhouse::ClickHouseConfig;
use crate::sinks::parquet::{ParquetConfig, ParquetSink};

use reader::{Reader, SinkContext};
use writer::Writer;

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
    /// How long giving up a partition in a rebalance waits for ClickHouse.
    pub revoke_grace: Duration,
    /// First pause after a ClickHouse failure.
    pub base_backoff: Duration,
    /// Decoder threads (at least one).
    pub decoders: usize,
    /// Counts the messages consumed, for callers that watch progress.
    pub consumed: Option<Arc<AtomicU64>>,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            dedupe_window: 1_000_000,
            drain_grace: Duration::from_secs(30),
            revoke_grace: Duration::from_secs(10),
            base_backoff: Duration::from_millis(200),
            decoders: std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4)),
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

/// Messages per chunk handed to a decoder thread.
const DECODE_CHUNK: usize = 4096;
/// Chunks between the reader and the writer; beyond it the reader pauses.
const CHUNKS_IN_FLIGHT: usize = 4;

/// What the reader tells the writer, outside the flow of chunks.
enum Control {
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

/// A chunk for a decoder, and where its result goes.
struct DecodeJob {
    chunk: RawChunk,
    reply: mpsc::SyncSender<DecodedChunk>,
}

/// As [`run_sink`], with options.
pub async fn run_sink_with(
    config: &PipelineConfig,
    options: SinkOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<SinkReport> {
    let analytics = &config.analytics;
    let topic = config.kafka.topics.usage.name.clone();
    let codec = Arc::new(Codec::for_topic(&config.kafka.topics.usage));
    let parquet_config = ParquetConfig::from_analytics(analytics, &topic)?;
    let clickhouse_config = ClickHouseConfig::from_analytics(analytics)?;
    let sink_id = parquet_config.sink_id.clone();
    let parquet = ParquetSink::open(parquet_config)?;

    let (control_tx, control_rx) = mpsc::channel::<Control>();
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
    let context = SinkContext::new(topic.clone(), control_tx, options.revoke_grace);
    let consumer: Arc<BaseConsumer<SinkContext>> = Arc::new(settings.create_with_context(context)?);
    consumer.subscribe(&[topic.as_str()])?;

    // ClickHouse: a task on the runtime, fed by the writer thread.
    let owned = Arc::new(tokio::sync::Mutex::new(HashMap::new()));
    let stop_clickhouse = CancellationToken::new();
    let (done_tx, done_rx) = mpsc::channel();
    let (batch_tx, clickhouse_task, max_pending) = match clickhouse_config {
        Some(ch) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let max_pending = ch.max_pending_events;
            let backoff = Backoff::new(options.base_backoff, ch.max_backoff);
            let task = tokio::spawn(clickhouse::run(
                clickhouse::Task {
                    config: ch,
                    topic: topic.clone(),
                    owned: owned.clone(),
                    backoff,
                    stop: stop_clickhouse.clone(),
                },
                rx,
                done_tx,
            ));
            (Some(tx), Some(task), max_pending)
        }
        None => (None, None, usize::MAX),
    };
    let with_clickhouse = batch_tx.is_some();

    // Decoders share one queue of jobs; their results reach the writer in order.
    let (work_tx, work_rx) = mpsc::channel::<DecodeJob>();
    let work_rx = Arc::new(Mutex::new(work_rx));
    let mut decoders = Vec::new();
    for n in 0..options.decoders.max(1) {
        let (work_rx, codec, topic) = (work_rx.clone(), codec.clone(), topic.clone());
        decoders.push(spawn_thread(&format!("sink-decode-{n}"), move || {
            loop {
                let job = match work_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                let decoded = decode_chunk(&codec, &topic, &job.chunk, with_clickhouse);
                let _ = job.reply.send(decoded);
            }
        })?);
    }
    let (ordered_tx, ordered_rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);

    let stop = Arc::new(AtomicBool::new(false));
    let writer_left = Arc::new(AtomicBool::new(false));
    let reader = Reader {
        consumer: consumer.clone(),
        stop: stop.clone(),
        work: work_tx,
        ordered: ordered_tx,
        writer_left: writer_left.clone(),
    };
    let reader = spawn_thread("sink-reader", move || reader.run())?;

    let writer = Writer::new(writer::Setup {
        parquet,
        consumer: consumer.clone(),
        topic: topic.clone(),
        options: options.clone(),
        flush_interval: analytics.flush_interval,
        flush_max: analytics.flush_max_events.max(1),
        max_pending,
        clickhouse: batch_tx,
        done: done_rx,
        owned,
        stop_clickhouse: stop_clickhouse.clone(),
        stop: stop.clone(),
        left_loop: writer_left,
    });
    let (finished_tx, mut finished) = tokio::sync::oneshot::channel();
    let writer = spawn_thread("sink-writer", move || {
        let _ = finished_tx.send(writer.run(ordered_rx, control_rx));
    })?;
    info!(topic = %topic, group = %analytics.group_id, sink_id = %sink_id, clickhouse = with_clickhouse, decoders = decoders.len(), "Usage sink started.");

    tokio::pin!(shutdown);
    let early = tokio::select! {
        _ = &mut shutdown => None,
        r = &mut finished => Some(r),
    };
    if early.is_none() {
        info!("Usage sink stopping: writing out what it holds.");
    }
    stop.store(true, Ordering::SeqCst);
    let result = match early {
        Some(r) => r,
        None => finished.await,
    };
    join(reader).await;
    join(writer).await;
    for d in decoders {
        join(d).await;
    }
    stop_clickhouse.cancel();
    if let Some(task) = clickhouse_task {
        let _ = task.await;
    }
    consumer.unsubscribe();
    let report =
        result.map_err(|_| Error::Invalid("the sink's writer thread panicked".into()))??;
    info!(
        consumed = report.consumed,
        parquet_rows = report.parquet_rows,
        clickhouse_rows = report.clickhouse_rows,
        duplicates = report.duplicates,
        "Usage sink stopped."
    );
    Ok(report)
}

fn spawn_thread(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| Error::Invalid(format!("starting the sink's {name} thread: {e}")))
}

async fn join(handle: std::thread::JoinHandle<()>) {
    let _ = tokio::task::spawn_blocking(move || handle.join()).await;
}
