//! The usage sink's Kafka pipeline ([`run_sink`]): a consumer in the analytics
//! group on the usage topic, read by one thread, decoded by others, written by
//! one more, in offset order.
//!
//! - [`reader`] polls the consumer, copies messages into chunks, and hands each
//!   chunk to a decoder and its (future) result to the writer, in order. When
//!   the writer falls behind it waits; when the writer stays stuck it pauses
//!   the partitions and keeps polling, so the group never mistakes a slow store
//!   for a dead sink. Rebalances are handled on its thread, inside the poll.
//! - [`decoder`] threads run [`decode`](crate::decode) on each chunk, into the
//!   shape of each store: Arrow blocks and ClickHouse `RowBinary`.
//! - [`writer`] drops copies by event id and rows a store already holds, writes
//!   Parquet, hands rows to the ClickHouse task, and commits up to what both
//!   stores hold.
//! - [`clickhouse`] inserts batches, retrying with backoff while the server is
//!   down.
//! - [`dead_letters`] publishes what is not a usage event to the sink's
//!   dead-letter topic; an offset counts as done only once its letter is
//!   acknowledged. Usage events are decoded ignoring fields this sink does not
//!   know, so a newer worker's events are never taken for bad data.
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
mod dead_letters;
mod decoder;
mod options;
mod reader;
mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use switchyard_codec::Codec;
use switchyard_core::config::PipelineConfig;
use switchyard_kafka::client::{consumer_config, producer_config_with};
use switchyard_kafka::dead_letter::{DeadLetterTopic, max_record};
use switchyard_kafka::stats::{STATS_INTERVAL, STATS_INTERVAL_KEY};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::alerts::AlertTask;
use crate::error::{Error, Result};
use crate::sinks::clickhouse::ClickHouseConfig;
use crate::sinks::parquet::{ParquetConfig, ParquetSink};
use switchyard_core::backoff::Backoff;

pub use decoder::{DecodedChunk, decode_for_stores};
pub use options::SinkOptions;
pub use writer::SinkReport;

use clickhouse::{Batch, Done, Owned};
use dead_letters::DeadLetterStage;
use decoder::DecodeJob;
use reader::{CHUNKS_IN_FLIGHT, Control, Reader, SinkContext};
use writer::Writer;

/// librdkafka's prefetch bound, in KiB.
const PREFETCH: &str = "queued.max.messages.kbytes";
/// Messages per partition librdkafka keeps fetching towards.
const PREFETCH_MESSAGES: &str = "queued.min.messages";

/// Runs the sink until `shutdown` resolves, then writes out what it holds,
/// commits and returns.
pub async fn run_sink(
    config: &PipelineConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<SinkReport> {
    run_sink_with(config, SinkOptions::default(), shutdown).await
}

/// As [`run_sink`], with options: opens the stores, subscribes, starts the
/// ClickHouse task and the reader, decoder and writer threads, waits for
/// `shutdown` (or the writer to end on its own), then stops them in order.
pub async fn run_sink_with(
    config: &PipelineConfig,
    options: SinkOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<SinkReport> {
    let analytics = &config.analytics;
    let topic = config.kafka.topics.usage.name.clone();
    let parquet_config = ParquetConfig::from_analytics(analytics, &topic)?;
    let clickhouse_config = ClickHouseConfig::from_analytics(analytics)?;
    let sink_id = parquet_config.sink_id.clone();
    let parquet = ParquetSink::open(parquet_config)?;

    let (control_tx, control_rx) = mpsc::channel::<Control>();
    let context = SinkContext::new(
        topic.clone(),
        control_tx,
        options.revoke_grace,
        options.metrics.clone(),
    );
    let consumer = subscribe(config, &sink_id, context)?;
    let owned: Owned = Arc::new(tokio::sync::Mutex::new(HashMap::new()));
    let clickhouse = ClickHouseStage::start(clickhouse_config, &topic, &owned, &options);
    let with_clickhouse = clickhouse.batches.is_some();
    let dead_letters = DeadLetterStage::start(dead_letter_topic(config)?, topic.clone());
    let alerts = AlertTask::start(config, Some(options.metrics.clone()))?;
    let (work, decoders) = start_decoders(config, options.decoders, with_clickhouse)?;

    let stop = Arc::new(AtomicBool::new(false));
    let writer_left = Arc::new(AtomicBool::new(false));
    let (ordered_tx, ordered_rx) = mpsc::sync_channel(CHUNKS_IN_FLIGHT);
    let reader = Reader {
        consumer: consumer.clone(),
        stop: stop.clone(),
        work,
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
        max_pending: clickhouse.max_pending,
        // The task ends once the writer drops this, the only sender.
        clickhouse: clickhouse.batches,
        done: clickhouse.done,
        dead_letters: dead_letters.letters,
        acknowledged: dead_letters.acknowledged,
        owned,
        stop_clickhouse: clickhouse.stop.clone(),
        stop: stop.clone(),
        left_loop: writer_left,
    });
    let (finished_tx, finished) = oneshot::channel();
    let writer = spawn_thread("sink-writer", move || {
        let _ = finished_tx.send(writer.run(ordered_rx, control_rx));
    })?;
    info!(topic = %topic, group = %analytics.group_id, sink_id = %sink_id, clickhouse = with_clickhouse, dlq = %analytics.dlq_topic, decoders = decoders.len(), "Usage sink started.");

    let result = until_stopped(shutdown, finished, &stop).await;
    join(reader).await;
    join(writer).await;
    for d in decoders {
        join(d).await;
    }
    clickhouse.stop.cancel();
    if let Some(task) = clickhouse.task {
        let _ = task.await;
    }
    dead_letters.stop.cancel();
    let _ = dead_letters.task.await;
    if let Some(alerts) = alerts {
        alerts.stop().await;
    }
    consumer.unsubscribe();
    let report =
        result.map_err(|_| Error::Invalid("the sink's writer thread panicked".into()))??;
    info!(
        consumed = report.consumed,
        parquet_rows = report.parquet_rows,
        clickhouse_rows = report.clickhouse_rows,
        duplicates = report.duplicates,
        dead_lettered = report.dead_lettered,
        "Usage sink stopped."
    );
    Ok(report)
}

/// A consumer in the analytics group, subscribed to the usage topic, that
/// commits only what the sink says.
fn subscribe(
    config: &PipelineConfig,
    sink_id: &str,
    context: SinkContext,
) -> Result<Arc<BaseConsumer<SinkContext>>> {
    let analytics = &config.analytics;
    let mut settings =
        consumer_config(&config.kafka, &analytics.group_id, analytics.flush_interval);
    settings
        .set("enable.auto.commit", "false")
        .set("client.id", format!("switchyard-sink-{sink_id}"));
    // Unlike a worker, the sink turns events into rows as fast as they come: a
    // deep prefetch keeps it fed (librdkafka's defaults held it to a third of
    // its speed). `kafka.client` may still set either.
    // Statistics tell where the partitions end, for the sink's lag.
    let stats_every = STATS_INTERVAL.as_millis().to_string();
    for (key, value) in [
        (PREFETCH, "131072"),
        (PREFETCH_MESSAGES, "1000000"),
        (STATS_INTERVAL_KEY, stats_every.as_str()),
    ] {
        if !config.kafka.client.contains_key(key) {
            settings.set(key, value);
        }
    }
    let consumer: Arc<BaseConsumer<SinkContext>> = Arc::new(settings.create_with_context(context)?);
    consumer.subscribe(&[config.kafka.topics.usage.name.as_str()])?;
    Ok(consumer)
}

/// The sink's dead-letter topic, written with the usage topic's compression.
fn dead_letter_topic(config: &PipelineConfig) -> Result<DeadLetterTopic> {
    let producer: FutureProducer =
        producer_config_with(&config.kafka, config.kafka.topics.usage.compression).create()?;
    Ok(DeadLetterTopic {
        producer,
        name: config.analytics.dlq_topic.clone(),
        max_record: max_record(&config.kafka),
    })
}

/// The ClickHouse side of the sink: a task on the runtime, fed by the writer
/// thread (none when ClickHouse is not configured).
struct ClickHouseStage {
    batches: Option<tokio::sync::mpsc::UnboundedSender<Batch>>,
    done: mpsc::Receiver<Done>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Rows the writer may hold for ClickHouse before it stops taking chunks.
    max_pending: usize,
    stop: CancellationToken,
}

impl ClickHouseStage {
    fn start(
        config: Option<ClickHouseConfig>,
        topic: &str,
        owned: &Owned,
        options: &SinkOptions,
    ) -> Self {
        let stop = CancellationToken::new();
        let (done_tx, done) = mpsc::channel();
        let Some(config) = config else {
            return Self {
                batches: None,
                done,
                task: None,
                max_pending: usize::MAX,
                stop,
            };
        };
        let (batches, rx) = tokio::sync::mpsc::unbounded_channel();
        let max_pending = config.max_pending_events;
        let backoff = Backoff::new(options.base_backoff, config.max_backoff);
        let task = tokio::spawn(clickhouse::run(
            clickhouse::Task {
                config,
                topic: topic.to_owned(),
                owned: owned.clone(),
                backoff,
                stop: stop.clone(),
                metrics: options.metrics.clone(),
            },
            rx,
            done_tx,
        ));
        Self {
            batches: Some(batches),
            done,
            task: Some(task),
            max_pending,
            stop,
        }
    }
}

/// Starts the decoder threads on one shared queue of chunks; gives the queue's
/// sender (for the reader) and the threads.
fn start_decoders(
    config: &PipelineConfig,
    decoders: usize,
    clickhouse: bool,
) -> Result<(mpsc::Sender<DecodeJob>, Vec<JoinHandle<()>>)> {
    // Forward compatible whatever `unknown_fields` says: only Switchyard writes
    // usage events, and a field added by a newer worker must not make this
    // sink discard spend (docs/decisions.md).
    let codec = Arc::new(Codec::for_topic(&config.kafka.topics.usage).ignoring_unknown_fields());
    let topic: Arc<str> = config.kafka.topics.usage.name.as_str().into();
    let (work_tx, work_rx) = mpsc::channel::<DecodeJob>();
    let work_rx = Arc::new(Mutex::new(work_rx));
    let mut threads = Vec::new();
    for n in 0..decoders.max(1) {
        let (work_rx, codec, topic) = (work_rx.clone(), codec.clone(), topic.clone());
        threads.push(spawn_thread(&format!("sink-decode-{n}"), move || {
            decoder::run(&work_rx, &codec, &topic, clickhouse);
        })?);
    }
    Ok((work_tx, threads))
}

/// Waits for `shutdown` or for the writer to end on its own, tells every
/// thread to stop, and gives the writer's result.
async fn until_stopped<T>(
    shutdown: impl Future<Output = ()>,
    mut finished: oneshot::Receiver<T>,
    stop: &AtomicBool,
) -> std::result::Result<T, oneshot::error::RecvError> {
    tokio::pin!(shutdown);
    let early = tokio::select! {
        _ = &mut shutdown => None,
        r = &mut finished => Some(r),
    };
    if early.is_none() {
        info!("Usage sink stopping: writing out what it holds.");
    }
    stop.store(true, Ordering::SeqCst);
    match early {
        Some(r) => r,
        None => finished.await,
    }
}

fn spawn_thread(name: &str, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map_err(|e| Error::Invalid(format!("starting the sink's {name} thread: {e}")))
}

async fn join(handle: JoinHandle<()>) {
    let _ = tokio::task::spawn_blocking(move || handle.join()).await;
}
