//! The Kafka side of the worker: a consumer in the workers' group on the jobs
//! topic, up to `max_in_flight` jobs processed concurrently, results and usage
//! events produced and acknowledged before a job's offset counts as finished, and
//! per-partition commits of the lowest unfinished offset (at-least-once). Poison
//! messages go to the dead-letter topic with the reason and the original bytes;
//! the partition keeps moving. On shutdown the worker stops fetching, lets
//! in-flight jobs finish within the grace period, commits and leaves the group.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use switchyard_codec::{Codec, headers};
use switchyard_core::config::PipelineConfig;
use switchyard_core::result::JobResult;
use switchyard_core::usage::UsageEvent;
use switchyard_kafka::client::{consumer_config, producer_config};
use switchyard_kafka::produce::publish;
use switchyard_kafka::{OffsetTracker, Ticket, TopicFollower};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::engine::{Engine, Outcome};

/// Counts a job in flight for as long as it lives (also when its task is aborted).
struct InFlight<'a>(&'a crate::metrics::Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.job_done();
    }
}

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Creating or subscribing the Kafka clients failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// What a run did, for logs and the demo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Messages taken from the jobs topic.
    pub received: u64,
    /// Jobs still running when the grace period ended (their offsets stay uncommitted).
    pub abandoned: u64,
}

/// Consumer context that commits finished work of partitions being revoked.
struct WorkerContext {
    tracker: Arc<Mutex<OffsetTracker>>,
    topic: String,
}

impl ClientContext for WorkerContext {}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let mut points = TopicPartitionList::new();
        if let Ok(mut t) = self.tracker.lock() {
            for e in tpl.elements_for_topic(&self.topic) {
                if let Some(commit) = t.revoke(e.partition()) {
                    let _ = points.add_partition_offset(
                        &self.topic,
                        e.partition(),
                        Offset::Offset(commit),
                    );
                }
            }
        }
        if points.count() > 0 {
            if let Err(e) = consumer.commit(&points, CommitMode::Sync) {
                warn!(error = %e, "Could not commit finished offsets of revoked partitions; they will be redone.");
            } else {
                info!(
                    partitions = points.count(),
                    "Committed finished work of revoked partitions."
                );
            }
        }
    }
}

/// The message as the job task needs it.
struct Incoming {
    payload: Vec<u8>,
    key: Option<Vec<u8>>,
    ticket: Ticket,
}

/// Produces results, usage events and dead letters, retrying until delivered.
#[derive(Clone)]
struct Publisher {
    producer: FutureProducer,
    results: (String, Codec),
    usage: (String, Codec),
    dlq: String,
    held: String,
    source_topic: String,
    stop: CancellationToken,
}

impl Publisher {
    /// Sends until the broker acknowledges; gives up only when the worker is stopping
    /// for good (the job's offset then stays uncommitted and the job is redone).
    async fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> bool {
        publish(
            &self.producer,
            topic,
            Some(key),
            payload,
            headers.as_ref(),
            &self.stop,
        )
        .await
        .is_ok()
    }

    async fn publish(&self, outcome: &Outcome, incoming: &Incoming) -> bool {
        match outcome {
            Outcome::Finished { result, usage } => self.finished(result, usage, incoming).await,
            Outcome::Held { reason } => {
                let headers = OwnedHeaders::new().insert(Header {
                    key: headers::HELD_REASON,
                    value: Some(reason.as_bytes()),
                });
                self.send(
                    &self.held,
                    incoming.key.as_deref().unwrap_or(&[]),
                    &incoming.payload,
                    Some(headers),
                )
                .await
            }
        }
    }

    /// A final result and its usage events. The billed attempts are published
    /// whatever becomes of the result, so that their cost reaches analytics and
    /// budgets.
    async fn finished(
        &self,
        result: &JobResult,
        usage: &[UsageEvent],
        incoming: &Incoming,
    ) -> bool {
        let mut sends = Vec::with_capacity(usage.len() + 1);
        for event in usage {
            match self.usage.1.encode(event) {
                Ok(bytes) => sends.push((self.usage.0.as_str(), event.job_id.as_bytes(), bytes)),
                Err(e) => {
                    error!(job_id = %event.job_id, event_id = %event.event_id, cost_usd = event.cost_usd, input_tokens = event.usage.input_tokens, output_tokens = event.usage.output_tokens, error = %e, "Usage event does not fit the usage topic's schema; its cost is only in this log line.");
                }
            }
        }
        let delivered = match self.results.1.encode(result) {
            Ok(bytes) => {
                sends.push((self.results.0.as_str(), result.job_id.as_bytes(), bytes));
                true
            }
            Err(e) => {
                // A job without a result would look lost: it goes to
                // the dead-letter topic, saying what it already cost.
                let reason = format!(
                    "the job ran (status {}, cost ${:.6}, billed attempts on `{}`) but its result does not fit the schema of `{}`: {e}; fix the schema or the topic's encoding; replaying this message runs the job again",
                    result.status.as_str(),
                    result.cost_usd,
                    self.usage.0,
                    self.results.0
                );
                error!(job_id = %result.job_id, error = %e, "Result does not fit its schema; dead-lettering the job.");
                self.dead_letter(incoming, "unencodable_outcome", &reason)
                    .await
            }
        };
        let all =
            futures::future::join_all(sends.iter().map(|(t, k, v)| self.send(t, k, v, None))).await;
        delivered && all.into_iter().all(|ok| ok)
    }

    async fn dead_letter(&self, incoming: &Incoming, kind: &str, reason: &str) -> bool {
        let partition = incoming.ticket.partition.to_string();
        let offset = incoming.ticket.offset.to_string();
        let mut h = OwnedHeaders::new();
        for (key, value) in [
            (headers::DLQ_REASON, reason),
            (headers::DLQ_KIND, kind),
            (headers::DLQ_TOPIC, self.source_topic.as_str()),
            (headers::DLQ_PARTITION, partition.as_str()),
            (headers::DLQ_OFFSET, offset.as_str()),
        ] {
            h = h.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        self.send(
            &self.dlq,
            incoming.key.as_deref().unwrap_or(&[]),
            &incoming.payload,
            Some(h),
        )
        .await
    }
}

/// The worker's name: `worker.worker_id`, else the host name, else "switchyard".
fn worker_id(config: &PipelineConfig) -> String {
    config
        .worker
        .worker_id
        .clone()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "switchyard".to_owned())
}

/// Longest a starting worker waits to have read the batch registry.
const REGISTRY_CATCH_UP: Duration = Duration::from_secs(30);

/// Longest a starting worker waits to have replayed this month's spend.
const LEDGER_CATCH_UP: Duration = Duration::from_secs(60);

type JobConsumer = StreamConsumer<WorkerContext>;

/// The worker's Kafka side: its consumer, where finished offsets are tracked,
/// and how outcomes are published.
struct Kafka {
    consumer: JobConsumer,
    producer: FutureProducer,
    tracker: Arc<Mutex<OffsetTracker>>,
    publisher: Publisher,
    jobs: (String, Codec),
    stop: CancellationToken,
}

/// Runs the worker until `shutdown` resolves, then drains.
pub async fn run(
    engine: Arc<Engine>,
    config: &PipelineConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, WorkerError> {
    let kafka = connect(config)?;
    let followers = catch_up(&engine, config).await;
    info!(worker = %worker_id(config), topic = %kafka.jobs.0, group = %config.kafka.group_id, max_in_flight = config.worker.max_in_flight, "Worker started.");
    let (mut report, tasks) = consume(&engine, &kafka, config, shutdown).await;
    report.abandoned = drain(tasks, config.worker.drain_grace, &kafka.stop).await;
    if let Err(e) = producer_flush(&kafka.producer) {
        warn!(error = %e, "Producer flush failed.");
    }
    final_commit(&kafka);
    kafka.consumer.unsubscribe();
    let _ = tokio::task::spawn_blocking(move || {
        for f in followers {
            f.stop();
        }
    })
    .await;
    info!(received = report.received, "Worker stopped.");
    Ok(report)
}

/// Subscribes the consumer and builds the producer.
fn connect(config: &PipelineConfig) -> Result<Kafka, WorkerError> {
    let topics = &config.kafka.topics;
    let tracker = Arc::new(Mutex::new(OffsetTracker::new()));
    let context = WorkerContext {
        tracker: tracker.clone(),
        topic: topics.jobs.name.clone(),
    };
    let mut consumer_settings = consumer_config(
        &config.kafka,
        &config.kafka.group_id,
        config.worker.commit_interval,
    );
    consumer_settings.set("client.id", worker_id(config));
    let consumer: JobConsumer = consumer_settings.create_with_context(context)?;
    consumer.subscribe(&[topics.jobs.name.as_str()])?;
    let producer: FutureProducer = producer_config(&config.kafka).create()?;
    let stop = CancellationToken::new();
    let publisher = Publisher {
        producer: producer.clone(),
        results: (
            topics.results.name.clone(),
            Codec::for_topic(&topics.results),
        ),
        usage: (topics.usage.name.clone(), Codec::for_topic(&topics.usage)),
        dlq: topics.dlq.clone(),
        held: topics.held.clone(),
        source_topic: topics.jobs.name.clone(),
        stop: stop.clone(),
    };
    Ok(Kafka {
        consumer,
        producer,
        tracker,
        publisher,
        jobs: (topics.jobs.name.clone(), Codec::for_topic(&topics.jobs)),
        stop,
    })
}

/// Knows every batch canceled so far, and replays this month's spend, before
/// taking jobs: a canceled batch's jobs must not run, and budgets must count
/// what was spent before this worker started. Returns the followers, which keep
/// both up to date while the worker runs.
async fn catch_up(engine: &Arc<Engine>, config: &PipelineConfig) -> Vec<TopicFollower> {
    let (cancellations, registry_read) = crate::cancellations::follow(engine.clone(), config);
    let (ledger, ledger_read) = crate::ledger::follow(engine.clone(), config);
    let _ = tokio::task::spawn_blocking(move || ledger_read.recv_timeout(LEDGER_CATCH_UP)).await;
    let read =
        tokio::task::spawn_blocking(move || registry_read.recv_timeout(REGISTRY_CATCH_UP)).await;
    if !matches!(read, Ok(Ok(_))) {
        warn!(topic = %config.kafka.topics.batches, waited = ?REGISTRY_CATCH_UP, "The batch registry could not be read before taking jobs; jobs of batches canceled so far may run until it can (check that the topic exists and the brokers are reachable).");
    }
    vec![cancellations, ledger]
}

/// Takes jobs until `shutdown`, at most `max_in_flight` at a time, each on a
/// task of its own; returns what was received and the tasks still running.
async fn consume(
    engine: &Arc<Engine>,
    kafka: &Kafka,
    config: &PipelineConfig,
    shutdown: impl Future<Output = ()>,
) -> (RunReport, JoinSet<()>) {
    let permits = Arc::new(Semaphore::new(config.worker.max_in_flight));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut report = RunReport::default();
    tokio::pin!(shutdown);
    'consume: loop {
        let permit = tokio::select! {
            biased;
            _ = &mut shutdown => break 'consume,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break 'consume },
        };
        let message = loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break 'consume,
                _ = tick.tick() => {
                    store_offsets(&kafka.consumer, &kafka.tracker, &kafka.jobs.0);
                    while let Some(joined) = tasks.try_join_next() {
                        if let Err(e) = joined {
                            error!(error = %e, "A job task ended abnormally; its offset stays uncommitted.");
                        }
                    }
                }
                m = kafka.consumer.recv() => break m,
            }
        };
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                warn!(error = %e, "Consumer error; continuing.");
                continue;
            }
        };
        let Some(ticket) = kafka
            .tracker
            .lock()
            .ok()
            .and_then(|mut t| t.received(message.partition(), message.offset()))
        else {
            debug!(
                partition = message.partition(),
                offset = message.offset(),
                "Already-seen offset skipped."
            );
            continue;
        };
        report.received += 1;
        let incoming = Incoming {
            payload: message.payload().unwrap_or(&[]).to_vec(),
            key: message.key().map(<[u8]>::to_vec),
            ticket,
        };
        drop(message);
        engine.metrics.job_started();
        tasks.spawn(job_task(engine.clone(), kafka, incoming, permit));
    }
    (report, tasks)
}

/// One job from its bytes to its published outcome; marks its offset finished
/// once the broker has acknowledged everything it produced.
fn job_task(
    engine: Arc<Engine>,
    kafka: &Kafka,
    incoming: Incoming,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send + 'static {
    let publisher = kafka.publisher.clone();
    let codec = kafka.jobs.1.clone();
    let tracker = kafka.tracker.clone();
    async move {
        let _permit = permit;
        let _in_flight = InFlight(&engine.metrics);
        let delivered = match codec.decode_job(&incoming.payload) {
            Ok(job) => match AssertUnwindSafe(engine.process(job)).catch_unwind().await {
                Ok(outcome) => {
                    if let Outcome::Held { .. } = &outcome {
                        engine.metrics.job_held();
                    }
                    publisher.publish(&outcome, &incoming).await
                }
                Err(panic) => {
                    // The job still ends in one result: failed, saying why.
                    let why = panic_message(panic.as_ref());
                    error!(partition = incoming.ticket.partition, offset = incoming.ticket.offset, reason = %why, "A job's processing panicked; it ends failed.");
                    match codec.decode_job(&incoming.payload) {
                        Ok(job) => {
                            let outcome = engine.failed_internally(job, &why);
                            publisher.publish(&outcome, &incoming).await
                        }
                        Err(e) => {
                            publisher
                                .dead_letter(&incoming, e.kind(), &e.to_string())
                                .await
                        }
                    }
                }
            },
            Err(e) => {
                warn!(partition = incoming.ticket.partition, offset = incoming.ticket.offset, kind = e.kind(), reason = %e, "Dead-lettering a message.");
                engine.metrics.dead_lettered();
                publisher
                    .dead_letter(&incoming, e.kind(), &e.to_string())
                    .await
            }
        };
        if delivered && let Ok(mut t) = tracker.lock() {
            t.completed(incoming.ticket);
        }
    }
}

/// The text a panic carried.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Lets in-flight jobs finish within the grace period; aborts the rest (their
/// offsets stay uncommitted and they are redone). Returns how many were aborted.
async fn drain(mut tasks: JoinSet<()>, grace: Duration, stop: &CancellationToken) -> u64 {
    info!(
        in_flight = tasks.len(),
        ?grace,
        "Draining: no new jobs; finishing those in flight."
    );
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_ok() {
        return 0;
    }
    let abandoned = tasks.len() as u64;
    warn!(
        abandoned,
        "Grace period over; unfinished jobs stay uncommitted and will be redone."
    );
    stop.cancel();
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    abandoned
}

/// Commits every partition's finished work before leaving the group.
fn final_commit(kafka: &Kafka) {
    let topic = &kafka.jobs.0;
    store_offsets(&kafka.consumer, &kafka.tracker, topic);
    let points = kafka
        .tracker
        .lock()
        .map(|t| t.commit_points())
        .unwrap_or_default();
    if points.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in &points {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*o));
    }
    match kafka.consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => info!(partitions = points.len(), "Committed finished offsets."),
        Err(e) => warn!(error = %e, "Final commit failed; uncommitted jobs will be redone."),
    }
}

fn producer_flush(producer: &FutureProducer) -> Result<(), KafkaError> {
    use rdkafka::producer::Producer;
    producer.flush(Duration::from_secs(30))
}

/// Stores the commit points that moved; librdkafka's auto-commit sends them.
fn store_offsets(consumer: &JobConsumer, tracker: &Mutex<OffsetTracker>, topic: &str) {
    let changes = tracker
        .lock()
        .map(|mut t| t.take_changes())
        .unwrap_or_default();
    if changes.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in changes {
        let _ = tpl.add_partition_offset(topic, p, Offset::Offset(o));
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        debug!(error = %e, "Storing offsets failed (partition revoked?).");
    }
}
