//! The Kafka side of the worker: a consumer in the workers' group on the jobs
//! topic, up to `max_in_flight` jobs processed concurrently, results and usage
//! events produced and acknowledged before a job's offset counts as finished, and
//! per-partition commits of the lowest unfinished offset (at-least-once), with
//! the offsets finished above it in the commit's metadata so that nobody redoes
//! them. Poison messages go to the dead-letter topic with the reason and the
//! original bytes; the partition keeps moving. The consumer is polled even while
//! every slot is busy (its partitions paused), so a worker busy with long calls
//! keeps its place in the group. On shutdown the worker stops fetching, lets
//! in-flight jobs finish within the grace period, commits and leaves the group.

mod compacted;
mod gather;
mod job;
mod partitions;
mod publish;
mod release;

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::FutureProducer;
use switchyard_codec::{Codec, headers};
use switchyard_core::access::approval::{Decision, HeldFrom};
use switchyard_core::access::sign::{self, Signed};
use switchyard_core::audit::AuditEntry;
use switchyard_core::config::PipelineConfig;
use switchyard_core::config::{Compression, KafkaConfig};
use switchyard_kafka::audit::{AuditError, AuditLog};
use switchyard_kafka::client::{consumer_config, producer_config_with};
use switchyard_kafka::dead_letter::{DeadLetterTopic, max_record};
use switchyard_kafka::stats::{STATS_INTERVAL, STATS_INTERVAL_KEY};
use switchyard_kafka::{Arrival, Ticket, TopicFollower};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::engine::Engine;
use job::{JobContext, RunningIds};
use partitions::{Partitions, WorkerContext, regrouping};
use publish::{ApprovalsOut, Out, Publisher};

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Creating or subscribing the Kafka clients failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The audit log cannot be written.
    #[error("{0}")]
    Audit(#[from] AuditError),
}

/// What a run did, for logs and the demo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Messages taken from the jobs topic.
    pub received: u64,
    /// Jobs still running when the grace period ended (their offsets stay uncommitted).
    pub abandoned: u64,
}

/// The message as the job task needs it.
pub(crate) struct Incoming {
    payload: Vec<u8>,
    key: Option<Vec<u8>>,
    ticket: Ticket,
    /// The signature headers, when all three are present.
    signed: Option<Signed>,
    /// The release decision, when the message carries one that parses.
    released_by: Option<Decision>,
    /// The topic it was read from: the jobs topic, or the deferred topic (a
    /// deferred job's record, when the job runs live).
    from: HeldFrom,
}

impl Incoming {
    /// A record of a topic the worker reads but never commits (the deferred
    /// topic): where its outcome's dead letter, if any, says it came from.
    fn detached(partition: i32, offset: i64, key: &str, payload: Vec<u8>) -> Self {
        Self {
            payload,
            key: Some(key.as_bytes().to_vec()),
            ticket: Ticket::detached(partition, offset),
            signed: None,
            released_by: None,
            from: HeldFrom::Deferred,
        }
    }

    fn of(message: &BorrowedMessage<'_>, ticket: Ticket) -> Self {
        let (signed, released_by) = access_headers(message);
        Self {
            payload: message.payload().unwrap_or(&[]).to_vec(),
            key: message.key().map(<[u8]>::to_vec),
            ticket,
            signed,
            released_by,
            from: HeldFrom::Jobs,
        }
    }
}

/// The signature headers and release decision of a message. Headers that
/// are not UTF-8 count as absent (an unsigned job; a job not released).
fn access_headers(message: &BorrowedMessage<'_>) -> (Option<Signed>, Option<Decision>) {
    let Some(headers) = message.headers() else {
        return (None, None);
    };
    let text = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::to_owned)
    };
    let signed = match (text(sign::KEY_ID), text(sign::TS), text(sign::SIG)) {
        (Some(key_id), Some(ts), Some(sig)) => Some(Signed { key_id, ts, sig }),
        _ => None,
    };
    let released_by = text(headers::RELEASED_BY).and_then(|t| serde_json::from_str(&t).ok());
    (signed, released_by)
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

/// How often a worker still waiting for the budget snapshots says so.
const LEDGER_PATIENCE: Duration = Duration::from_secs(30);

/// How often finished offsets are stored and finished tasks reaped.
const TICK: Duration = Duration::from_millis(50);

/// How long every slot may stay busy before the worker pauses its partitions
/// and keeps polling: well inside librdkafka's `max.poll.interval.ms`.
const BUSY_BEFORE_PAUSE: Duration = Duration::from_secs(2);

type JobConsumer = StreamConsumer<WorkerContext>;

/// The worker's Kafka side.
struct Kafka {
    consumer: JobConsumer,
    /// One per compression in use.
    producers: Vec<FutureProducer>,
    /// Publishes this worker's budget snapshots.
    snapshot_producer: FutureProducer,
    partitions: Arc<Partitions>,
    jobs: JobContext,
    stop: CancellationToken,
}

/// Runs the worker until `shutdown` resolves, then drains.
pub async fn run(
    engine: Arc<Engine>,
    config: &PipelineConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, WorkerError> {
    tokio::pin!(shutdown);
    let (kafka, releaser, gatherer) = connect(engine.clone(), config)?;
    let audit = start_audit(&engine, config)?
        .map(|log| tokio::spawn(log.keep_checkpointing(kafka.stop.child_token())));
    let Some(followers) = catch_up(&engine, config, &mut shutdown).await else {
        info!("Stopped before the budgets were read; no job was taken.");
        return Ok(RunReport::default());
    };
    engine.metrics.set_budgets_caught_up();
    let snapshots = tokio::spawn(crate::ledger::publish(
        engine.clone(),
        kafka.snapshot_producer.clone(),
        config.kafka.topics.budgets.clone(),
        kafka.stop.child_token(),
    ));
    let alerts = crate::alerts::Alerts::start(
        engine.clone(),
        config,
        kafka.snapshot_producer.clone(),
        kafka.stop.child_token(),
    );
    let releaser = tokio::spawn(releaser.run());
    let gatherer = gatherer.map(|g| {
        // Jobs may be deferred from now on: this worker gathers the topic.
        engine.enable_deferral();
        tokio::spawn(g.run())
    });
    info!(worker = %worker_id(config), topic = %kafka.partitions.topic(), group = %config.kafka.group_id, max_in_flight = config.worker.max_in_flight, "Worker started.");
    let (mut report, tasks) = consume(&kafka, config, shutdown.as_mut()).await;
    // Before draining: the group's other members read the committed offsets
    // as soon as the rebalance completes, so a refused hand-over is committed
    // while they are still waiting, not after this worker's drain and flushes.
    complete_handover(&kafka).await;
    // Until the final commit, the consumer stays polled: a member that stops
    // polling holds up every rebalance of the group until it comes back (on
    // Kafka up to `max.poll.interval.ms`, the others idle meanwhile), and its
    // commits then meet a generation it has not seen. A rebalance while the
    // worker stops goes through the callbacks as while consuming: what
    // finished in revoked partitions is committed there.
    let stopped = CancellationToken::new();
    let (abandoned, ()) = tokio::join!(
        async {
            let abandoned = drain(tasks, config.worker.drain_grace, &kafka.stop).await;
            kafka.stop.cancel();
            let _ = snapshots.await;
            alerts.stop().await;
            let _ = releaser.await;
            if let Some(gatherer) = gatherer {
                let _ = gatherer.await;
            }
            if let Some(audit) = audit {
                let _ = audit.await;
            }
            flush_producers(&kafka.producers).await;
            stopped.cancel();
            abandoned
        },
        keep_polled(&kafka, &stopped),
    );
    report.abandoned = abandoned;
    final_commit(&kafka).await;
    kafka.consumer.unsubscribe();
    engine.metrics.set_group_joined(false);
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
fn connect(
    engine: Arc<Engine>,
    config: &PipelineConfig,
) -> Result<(Kafka, release::Releaser, Option<gather::Gatherer>), WorkerError> {
    let topics = &config.kafka.topics;
    let worker = &config.worker;
    let partitions = Arc::new(Partitions::new(
        topics.jobs.name.clone(),
        worker.revoke_grace,
        worker.max_pending_offsets,
    ));
    let context = WorkerContext {
        partitions: partitions.clone(),
        metrics: engine.metrics.clone(),
    };
    let mut consumer_settings = consumer_config(
        &config.kafka,
        &config.kafka.group_id,
        worker.commit_interval,
    );
    consumer_settings.set("client.id", worker_id(config));
    if !config.kafka.client.contains_key(STATS_INTERVAL_KEY) {
        // Where the partitions end, for the consumer lag.
        let every = STATS_INTERVAL.as_millis().to_string();
        consumer_settings.set(STATS_INTERVAL_KEY, every);
    }
    let consumer: JobConsumer = consumer_settings.create_with_context(context)?;
    consumer.subscribe(&[topics.jobs.name.as_str()])?;
    let producers = Producers::new(&config.kafka);
    let out = |name: &str, compression| -> Result<Out, KafkaError> {
        Ok(Out {
            name: name.to_owned(),
            producer: producers.for_codec(compression)?,
        })
    };
    let stop = CancellationToken::new();
    let max_record = max_record(&config.kafka);
    let publisher = Publisher {
        results: (
            out(&topics.results.name, topics.results.compression)?,
            Codec::for_topic(&topics.results),
        ),
        usage: (
            out(&topics.usage.name, topics.usage.compression)?,
            Codec::for_topic(&topics.usage),
        ),
        dlq: DeadLetterTopic {
            producer: producers.for_codec(topics.jobs.compression)?,
            name: topics.dlq.clone(),
            max_record,
        },
        held: out(&topics.held, topics.jobs.compression)?,
        approvals: ApprovalsOut::new(out(&topics.approvals, Compression::Lz4)?),
        deferred: out(&topics.deferred, Compression::Lz4)?,
        source_topic: topics.jobs.name.clone(),
        stop: stop.clone(),
        max_record,
        max_echo: worker.max_echo_bytes,
        metrics: engine.metrics.clone(),
    };
    let jobs = JobContext {
        engine,
        publisher,
        codec: Codec::for_topic(&topics.jobs),
        partitions: partitions.clone(),
        running: Arc::new(RunningIds::default()),
    };
    let snapshot_producer = producers.for_codec(Compression::Lz4)?;
    let releaser = releaser(
        &jobs,
        config,
        out(&topics.jobs.name, topics.jobs.compression)?,
    )?;
    let gatherer = match jobs.engine.deployments().iter().any(|d| d.batch.is_some()) {
        true => Some(gatherer(
            &jobs,
            config,
            out(&topics.deferred, Compression::Lz4)?,
        )?),
        false => None,
    };
    Ok((
        Kafka {
            consumer,
            snapshot_producer,
            producers: producers.all(),
            partitions,
            jobs,
            stop,
        },
        releaser,
        gatherer,
    ))
}

/// The worker's audit chain, when access control or the audit log is
/// configured; its first record is the configuration the worker starts with.
fn start_audit(
    engine: &Arc<Engine>,
    config: &PipelineConfig,
) -> Result<Option<Arc<AuditLog>>, AuditError> {
    if config.access.is_none() && !config.audit.enabled {
        return Ok(None);
    }
    let name = worker_id(config);
    let log = AuditLog::new(
        &config.kafka,
        &config.kafka.topics,
        &config.audit,
        AuditLog::writer_name("worker", &name),
    )?;
    log.record(AuditEntry {
        kind: "config".into(),
        subject: name,
        node: None,
        principal: None,
        outcome: "started".into(),
        detail: serde_json::to_value(config).unwrap_or_default(),
    });
    engine.set_audit(log.clone(), config.audit.enabled);
    Ok(Some(log))
}

/// The releaser of held work (see `release`), in a consumer group of its own
/// on the approvals topic.
fn releaser(
    jobs: &JobContext,
    config: &PipelineConfig,
    jobs_out: Out,
) -> Result<release::Releaser, KafkaError> {
    let mut settings = consumer_config(
        &config.kafka,
        &format!("{}.approvals", config.kafka.group_id),
        config.worker.commit_interval,
    );
    settings
        .set("enable.auto.commit", "false")
        .set("client.id", format!("{}-releaser", worker_id(config)));
    let consumer: compacted::CompactedConsumer =
        settings.create_with_context(compacted::Rebalances::default())?;
    consumer.subscribe(&[config.kafka.topics.approvals.as_str()])?;
    Ok(release::Releaser {
        engine: jobs.engine.clone(),
        consumer,
        jobs: jobs_out,
        deferred: jobs.publisher.deferred.clone(),
        job_codec: jobs.codec.clone(),
        results: jobs.publisher.results.clone(),
        approvals: jobs.publisher.approvals.clone(),
        ttl: config.approval_ttl(),
        stop: jobs.publisher.stop.child_token(),
    })
}

/// The gatherer of deferred jobs (see `gather`), in a consumer group of its
/// own on the deferred topic: for a worker with a deployment whose batch API
/// Switchyard speaks.
fn gatherer(
    jobs: &JobContext,
    config: &PipelineConfig,
    deferred: Out,
) -> Result<gather::Gatherer, KafkaError> {
    let mut settings = consumer_config(
        &config.kafka,
        &format!("{}.deferred", config.kafka.group_id),
        config.worker.commit_interval,
    );
    settings
        .set("enable.auto.commit", "false")
        .set("client.id", format!("{}-gatherer", worker_id(config)));
    let consumer: compacted::CompactedConsumer =
        settings.create_with_context(compacted::Rebalances::default())?;
    consumer.subscribe(&[config.kafka.topics.deferred.as_str()])?;
    let mut publisher = jobs.publisher.clone();
    publisher.source_topic = config.kafka.topics.deferred.clone();
    Ok(gather::Gatherer {
        engine: jobs.engine.clone(),
        consumer,
        out: deferred,
        publisher,
        settings: config.deferred,
        drain_grace: config.worker.drain_grace,
        stop: jobs.publisher.stop.child_token(),
    })
}

/// Knows every batch canceled so far, and what every worker has spent this
/// month, before taking jobs: a canceled batch's jobs must not run, and budgets
/// must count what was spent before this worker started. The budgets are not
/// optional: until their snapshots are read, no job is taken (a worker that
/// cannot read them says so every 30 s). Returns the followers, which keep both
/// up to date while the worker runs; `None` when asked to stop meanwhile.
async fn catch_up(
    engine: &Arc<Engine>,
    config: &PipelineConfig,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<Vec<TopicFollower>> {
    let (cancellations, registry_read) = crate::cancellations::follow(engine.clone(), config);
    let (ledger, ledger_read) = crate::ledger::follow(engine.clone(), config);
    let ledger_read = Arc::new(std::sync::Mutex::new(ledger_read));
    loop {
        let rx = ledger_read.clone();
        let waited = tokio::task::spawn_blocking(move || {
            rx.lock()
                .map(|r| r.recv_timeout(LEDGER_PATIENCE))
                .unwrap_or(Err(std::sync::mpsc::RecvTimeoutError::Disconnected))
        });
        tokio::select! {
            _ = shutdown.as_mut() => {
                for f in [cancellations, ledger] {
                    let _ = tokio::task::spawn_blocking(move || f.stop()).await;
                }
                return None;
            }
            read = waited => match read {
                Ok(Ok(_)) => break,
                Ok(Err(std::sync::mpsc::RecvTimeoutError::Timeout)) => {
                    warn!(topic = %config.kafka.topics.budgets, waited = ?LEDGER_PATIENCE, "Still reading the budget snapshots; no job is taken until every budget is known (check that the brokers are reachable).");
                }
                _ => break,
            },
        }
    }
    let read =
        tokio::task::spawn_blocking(move || registry_read.recv_timeout(REGISTRY_CATCH_UP)).await;
    if !matches!(read, Ok(Ok(_))) {
        warn!(topic = %config.kafka.topics.batches, waited = ?REGISTRY_CATCH_UP, "The batch registry could not be read before taking jobs; jobs of batches canceled so far may run until it can (check that the topic exists and the brokers are reachable).");
    }
    Some(vec![cancellations, ledger])
}

/// Which partitions the worker has paused, and why, in one assignment (a new
/// assignment starts with every partition fetching).
#[derive(Default)]
struct Pauses {
    /// The assignment these pauses belong to (see `Partitions::assignments`).
    assignment: u64,
    /// Every slot stayed busy: all partitions are paused while polling goes on.
    busy: bool,
    /// Partitions whose window of pending offsets is full.
    full: BTreeSet<i32>,
}

/// The consume loop's state.
struct Intake<'a> {
    kafka: &'a Kafka,
    permits: Arc<Semaphore>,
    tasks: JoinSet<()>,
    /// Messages taken while every slot was busy, in arrival order.
    stash: VecDeque<Incoming>,
    pauses: Pauses,
    report: RunReport,
    /// When the consumer lag was last measured.
    lag_measured: Option<std::time::Instant>,
    /// When stale hand-off reservations were last released.
    handoffs_swept: Option<std::time::Instant>,
}

/// Takes jobs until `shutdown`, at most `max_in_flight` at a time, each on a
/// task of its own; returns what was received and the tasks still running.
async fn consume(
    kafka: &Kafka,
    config: &PipelineConfig,
    shutdown: impl Future<Output = ()>,
) -> (RunReport, JoinSet<()>) {
    let mut intake = Intake {
        kafka,
        permits: Arc::new(Semaphore::new(config.worker.max_in_flight)),
        tasks: JoinSet::new(),
        stash: VecDeque::new(),
        pauses: Pauses::default(),
        report: RunReport::default(),
        lag_measured: None,
        handoffs_swept: None,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    'consume: loop {
        // A slot first; while none frees up, keep the consumer polled.
        let busy_since = tokio::time::Instant::now();
        let permit = loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break 'consume,
                p = intake.permits.clone().acquire_owned() => match p {
                    Ok(p) => break p,
                    Err(_) => break 'consume,
                },
                _ = tick.tick() => {
                    intake.housekeeping();
                    if busy_since.elapsed() >= BUSY_BEFORE_PAUSE {
                        intake.poll_while_busy();
                    }
                }
            }
        };
        // Then a message: a stashed one, else the next from Kafka.
        if let Some(incoming) = intake.stash.pop_front() {
            intake.start(incoming, permit);
            continue;
        }
        intake.set_busy(false);
        let message = loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break 'consume,
                _ = tick.tick() => intake.housekeeping(),
                m = kafka.consumer.recv() => break m,
            }
        };
        match message {
            Ok(m) => {
                if let Some(incoming) = intake.take(&m) {
                    drop(m);
                    intake.start(incoming, permit);
                }
            }
            Err(e) => warn!(error = %e, "Consumer error; continuing."),
        }
    }
    (intake.report, intake.tasks)
}

impl Intake<'_> {
    /// Registers a message; `None` when it is not new work (a re-fetch, or an
    /// offset the partition's previous owner finished).
    fn take(&mut self, m: &BorrowedMessage<'_>) -> Option<Incoming> {
        match self.kafka.partitions.arrive(m.partition(), m.offset()) {
            Arrival::New(ticket) => {
                self.report.received += 1;
                Some(Incoming::of(m, ticket))
            }
            Arrival::Refetched => {
                debug!(
                    partition = m.partition(),
                    offset = m.offset(),
                    "Already-seen offset skipped."
                );
                None
            }
            Arrival::DoneBefore => {
                debug!(
                    partition = m.partition(),
                    offset = m.offset(),
                    "Finished by the partition's previous owner; skipped."
                );
                None
            }
        }
    }

    fn start(&mut self, incoming: Incoming, permit: OwnedSemaphorePermit) {
        if !self.kafka.partitions.start(incoming.ticket) {
            // Its partition was taken away while it waited in the stash.
            return;
        }
        self.kafka.jobs.engine.metrics.job_started();
        self.tasks
            .spawn(self.kafka.jobs.clone().run(incoming, permit));
    }

    /// Every slot is busy and has been for a while: pause every partition (so
    /// nothing more is fetched) and poll once, so that the consumer keeps its
    /// place in the group; what still arrives waits in the stash.
    fn poll_while_busy(&mut self) {
        self.set_busy(true);
        while let Some(Some(m)) = self.kafka.consumer.recv().now_or_never().map(Result::ok) {
            if let Some(incoming) = self.take(&m) {
                self.stash.push_back(incoming);
            }
        }
    }

    /// Stores moved commit points, reaps finished tasks, and pauses or resumes
    /// partitions whose window of pending offsets filled or emptied.
    fn housekeeping(&mut self) {
        let assignment = self.kafka.partitions.assignments();
        if self.pauses.assignment != assignment {
            self.pauses = Pauses {
                assignment,
                ..Pauses::default()
            };
        }
        store_offsets(&self.kafka.consumer, &self.kafka.partitions);
        self.measure_lag();
        if due(&mut self.handoffs_swept, Duration::from_secs(1)) {
            let now = std::time::Instant::now();
            self.kafka.jobs.engine.release_stale_handoffs(now);
        }
        while let Some(joined) = self.tasks.try_join_next() {
            if let Err(e) = joined {
                error!(error = %e, "A job task ended abnormally; its offset stays uncommitted.");
            }
        }
        let full = self.kafka.partitions.full();
        let mut wanted: BTreeSet<i32> = self.kafka.partitions.roomy(&self.pauses.full);
        wanted = self.pauses.full.difference(&wanted).copied().collect();
        wanted.extend(full);
        if wanted != self.pauses.full {
            let (paused, resumed): (Vec<i32>, Vec<i32>) = (
                wanted.difference(&self.pauses.full).copied().collect(),
                self.pauses.full.difference(&wanted).copied().collect(),
            );
            if !paused.is_empty() {
                warn!(partitions = ?paused, "The window of pending offsets is full; pausing these partitions until their oldest jobs finish.");
            }
            self.pauses.full = wanted;
            if !self.pauses.busy {
                self.apply(&paused, true);
                self.apply(&resumed, false);
            }
        }
    }

    /// At most every few seconds, the consumer lag per held partition into
    /// the metrics (from offsets the worker already has: no broker request).
    fn measure_lag(&mut self) {
        if !due(&mut self.lag_measured, STATS_INTERVAL) {
            return;
        }
        let partitions = &self.kafka.partitions;
        self.kafka
            .jobs
            .engine
            .metrics
            .set_consumer_lag(partitions.topic(), partitions.lag());
    }

    /// Pauses (or resumes) every assigned partition for busy slots, leaving
    /// partitions paused for a full window as they are.
    fn set_busy(&mut self, busy: bool) {
        if self.pauses.busy == busy {
            return;
        }
        self.pauses.busy = busy;
        let assigned: Vec<i32> = self
            .kafka
            .consumer
            .assignment()
            .map(|tpl| tpl.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        let affected: Vec<i32> = assigned
            .into_iter()
            .filter(|p| !self.pauses.full.contains(p))
            .collect();
        if busy {
            info!(
                partitions = affected.len(),
                "Every slot is busy; pausing fetches and polling until one frees up."
            );
        }
        self.apply(&affected, busy);
    }

    fn apply(&self, partitions: &[i32], pause: bool) {
        if partitions.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition(self.kafka.partitions.topic(), *p);
        }
        let done = if pause {
            self.kafka.consumer.pause(&tpl)
        } else {
            self.kafka.consumer.resume(&tpl)
        };
        if let Err(e) = done {
            warn!(error = %e, pause, "Could not pause or resume partitions.");
        }
    }
}

/// The worker's producers, one per compression its topics ask for.
struct Producers<'a> {
    kafka: &'a KafkaConfig,
    made: std::cell::RefCell<Vec<(Compression, FutureProducer)>>,
}

impl<'a> Producers<'a> {
    fn new(kafka: &'a KafkaConfig) -> Self {
        Self {
            kafka,
            made: std::cell::RefCell::new(Vec::new()),
        }
    }

    fn for_codec(&self, compression: Compression) -> Result<FutureProducer, KafkaError> {
        let mut made = self.made.borrow_mut();
        if let Some((_, p)) = made.iter().find(|(c, _)| *c == compression) {
            return Ok(p.clone());
        }
        let p: FutureProducer = producer_config_with(self.kafka, compression).create()?;
        made.push((compression, p.clone()));
        Ok(p)
    }

    fn all(self) -> Vec<FutureProducer> {
        self.made.into_inner().into_iter().map(|(_, p)| p).collect()
    }
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

/// Whether `every` has passed since `last` (or it never happened); if so,
/// `last` becomes now.
fn due(last: &mut Option<std::time::Instant>, every: Duration) -> bool {
    if last.is_some_and(|at| at.elapsed() < every) {
        return false;
    }
    *last = Some(std::time::Instant::now());
    true
}

/// Polls the consumer (see [`poll_and_drop`]) until `stopped`.
async fn keep_polled(kafka: &Kafka, stopped: &CancellationToken) {
    while !stopped.is_cancelled() {
        tokio::select! {
            () = stopped.cancelled() => break,
            () = poll_and_drop(kafka) => {}
        }
    }
}

/// How long a stopping worker keeps taking part in a rebalance that refused
/// the commit of its revoked partitions, so that it can commit them.
const HANDOVER_PATIENCE: Duration = Duration::from_secs(15);

/// When a rebalance refused the commit of the partitions it took away (the
/// broker answers REBALANCE_IN_PROGRESS until the group has synced), keeps
/// polling until the rebalance completes and the hand-over is committed (see
/// `partitions`): stopping before that would leave the others to redo what
/// this worker finished. Messages polled meanwhile are left unread: they are
/// not registered, so nothing commits past them.
async fn complete_handover(kafka: &Kafka) {
    if !kafka.partitions.handover_pending() {
        return;
    }
    info!("Completing the rebalance to hand over the finished work of revoked partitions.");
    let until = tokio::time::Instant::now() + HANDOVER_PATIENCE;
    while kafka.partitions.handover_pending() && tokio::time::Instant::now() < until {
        poll_and_drop(kafka).await;
    }
    if kafka.partitions.handover_pending() {
        warn!(waited = ?HANDOVER_PATIENCE, "The rebalance did not complete; what revoked partitions finished since their last commit will be redone by their new owners.");
    }
}

/// Commits every partition's finished work before leaving the group. A
/// rebalance refuses the commit (REBALANCE_IN_PROGRESS while it runs,
/// ILLEGAL_GENERATION once it completed without this worker having polled):
/// the worker then takes part in it, polling, and commits again, or hands the
/// work over when the rebalance takes its partitions (see
/// [`complete_handover`]), for at most [`HANDOVER_PATIENCE`]; leaving at the
/// first refusal left everything it finished since the last auto-commit to be
/// redone.
async fn final_commit(kafka: &Kafka) {
    let until = tokio::time::Instant::now() + HANDOVER_PATIENCE;
    loop {
        store_offsets(&kafka.consumer, &kafka.partitions);
        let points = kafka.partitions.all_points();
        if points.count() == 0 {
            break;
        }
        match kafka.consumer.commit(&points, CommitMode::Sync) {
            Ok(()) => {
                info!(partitions = points.count(), "Committed finished offsets.");
                break;
            }
            Err(e) if regrouping(&e) && tokio::time::Instant::now() < until => {
                info!(error = %e, "The final commit was refused by a rebalance; taking part in it and committing again.");
                poll_and_drop(kafka).await;
            }
            Err(e) => {
                warn!(error = %e, "Final commit failed; uncommitted jobs will be redone.");
                break;
            }
        }
    }
    complete_handover(kafka).await;
}

/// Polls the consumer once (for at most a tick), so that a rebalance under way
/// can go on; a message polled is left unread: it is not registered, so
/// nothing commits past it, and its partition is paused, so that a stopping
/// worker does not fetch a backlog only to drop it.
async fn poll_and_drop(kafka: &Kafka) {
    tokio::select! {
        m = kafka.consumer.recv() => if let Ok(m) = m {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(m.topic(), m.partition());
            drop(m);
            if let Err(e) = kafka.consumer.pause(&tpl) {
                debug!(error = %e, "Could not pause a partition while stopping.");
            }
        },
        () = tokio::time::sleep(TICK) => {}
    }
}

/// Flushes every producer, on a blocking thread, so that the consumer can
/// be polled meanwhile.
async fn flush_producers(producers: &[FutureProducer]) {
    use rdkafka::producer::Producer;
    let producers = producers.to_vec();
    let _ = tokio::task::spawn_blocking(move || {
        for producer in &producers {
            if let Err(e) = producer.flush(Duration::from_secs(30)) {
                warn!(error = %e, "Producer flush failed.");
            }
        }
    })
    .await;
}

/// Stores the commit points (and metadata) that changed; librdkafka's
/// auto-commit sends them.
fn store_offsets(consumer: &JobConsumer, partitions: &Partitions) {
    let tpl = partitions.changed_points();
    if tpl.count() == 0 {
        return;
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        debug!(error = %e, "Storing offsets failed (partition revoked?).");
    }
}
