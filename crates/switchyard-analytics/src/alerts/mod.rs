//! Alert delivery: with `[alerts] webhook_url` set, the sink reads the alerts
//! topic (`kafka.topics.alerts`) in a consumer group of its own
//! (`<analytics group>-alerts`), on its own task, and POSTs each transition to
//! the webhook exactly once per (key, state), so it never slows the usage path
//! and a failing webhook only delays alerts.
//!
//! What was delivered is read back from the compacted alerts topic itself:
//! when the sink gets a partition, it reads it from the beginning up to the
//! offset it resumes from and takes each key's newest state there as sent
//! (everything below the committed offset was sent or given up). From there,
//! a record whose key already has its state (a second worker reporting the
//! same crossing, or a copy read again) is skipped; another is POSTed, with
//! retries ([`webhook`]), and its offset committed once it is sent or given up.
//! docs/decisions.md says why the topic rather than a state of the sink's own.
//!
//! - [`transitions`] is the pure bookkeeping: the state sent per key.
//! - [`webhook`] is the HTTP side.

pub mod transitions;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::consumer::Rebalance;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use switchyard_core::alert::Alert;
use switchyard_core::backoff::Backoff;
use switchyard_core::config::{KafkaConfig, PipelineConfig};
use switchyard_kafka::client::consumer_config;
use switchyard_kafka::{Positions, ScanFrom, scan_to_end};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::Result;
use crate::metrics::SinkMetrics;
use transitions::Transitions;
use webhook::{Delivery, Webhook};

/// Longest read of a partition's history.
const HISTORY_TIMEOUT: Duration = Duration::from_secs(60);
/// Pauses between failed reads of the history or the topic.
const RETRY: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(10));

/// The consumer group that reads the alerts topic for sinks of `analytics_group`.
pub fn group_id(analytics_group: &str) -> String {
    format!("{analytics_group}-alerts")
}

/// Counts rebalances, so the follower forgets what it knew of partitions it
/// may have lost (another sink may have delivered more since).
#[derive(Default)]
struct AlertContext {
    generation: AtomicU64,
}

impl ClientContext for AlertContext {}

impl ConsumerContext for AlertContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, _: &Rebalance<'_>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// The running delivery task, owned by the sink.
pub struct AlertTask {
    handle: JoinHandle<()>,
    stop: CancellationToken,
}

impl AlertTask {
    /// Subscribes and starts delivering, when `[alerts] webhook_url` is set.
    pub fn start(
        config: &PipelineConfig,
        metrics: Option<Arc<SinkMetrics>>,
    ) -> Result<Option<Self>> {
        let Some(webhook) = Webhook::new(&config.alerts, metrics)? else {
            return Ok(None);
        };
        let group = group_id(&config.analytics.group_id);
        let topic = config.kafka.topics.alerts.clone();
        let mut settings = consumer_config(&config.kafka, &group, Duration::from_secs(5));
        settings
            .set("enable.auto.commit", "false")
            .set("client.id", format!("switchyard-alerts-{group}"));
        let consumer: StreamConsumer<AlertContext> =
            settings.create_with_context(AlertContext::default())?;
        consumer.subscribe(&[topic.as_str()])?;
        info!(topic = %topic, group = %group, webhook = %webhook.shown(), "Alert delivery started.");
        let follower = Follower {
            consumer,
            kafka: config.kafka.clone(),
            topic,
            webhook,
            known: HashMap::new(),
            generation: 0,
            handled: BTreeMap::new(),
        };
        let stop = CancellationToken::new();
        let handle = tokio::spawn(follower.run(stop.clone()));
        Ok(Some(Self { handle, stop }))
    }

    /// Stops delivering (an alert being retried stays uncommitted and is
    /// sent at the next start), commits, and waits for the task.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}

/// The delivery task's state.
struct Follower {
    consumer: StreamConsumer<AlertContext>,
    kafka: KafkaConfig,
    topic: String,
    webhook: Webhook,
    /// Per partition read since the last rebalance: the state sent per key.
    known: HashMap<i32, Transitions>,
    generation: u64,
    /// Next offset per partition whose records are all handled.
    handled: BTreeMap<i32, i64>,
}

impl Follower {
    async fn run(mut self, stop: CancellationToken) {
        let mut backoff = Backoff::new(RETRY.0, RETRY.1);
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => break,
                m = self.consumer.recv() => m.map(|m| m.detach()),
            };
            match message {
                Ok(m) => {
                    backoff.reset();
                    if !self.handle(m, &stop).await {
                        break;
                    }
                }
                Err(e) => {
                    warn!(topic = %self.topic, error = %e, "Reading the alerts topic failed; retrying.");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            }
        }
        self.commit(CommitMode::Sync);
        info!(topic = %self.topic, "Alert delivery stopped.");
    }

    /// One record: skipped when its transition was sent, POSTed otherwise.
    /// False when stopped before it was handled.
    async fn handle(&mut self, m: OwnedMessage, stop: &CancellationToken) -> bool {
        let (partition, offset) = (m.partition(), m.offset());
        let generation = self.consumer.context().generation.load(Ordering::SeqCst);
        if generation != self.generation {
            self.generation = generation;
            self.known.clear();
        }
        if !self.known.contains_key(&partition) {
            let Some(history) = self.history(partition, offset, stop).await else {
                return false;
            };
            debug!(
                partition,
                keys = history.len(),
                below = offset,
                "Alert history read."
            );
            self.known.insert(partition, history);
        }
        let alert = match m.payload().map(serde_json::from_slice::<Alert>) {
            None => None,
            Some(Ok(alert)) => Some(alert),
            Some(Err(e)) => {
                warn!(partition, offset, error = %e, "Not an alert record; skipped.");
                None
            }
        };
        if let Some(alert) = alert {
            let key = alert.key();
            let is_new = self
                .known
                .get(&partition)
                .is_some_and(|t| t.is_new(&key, alert.state));
            if is_new {
                if self.webhook.deliver(&alert, stop).await == Delivery::Stopped {
                    return false;
                }
            } else {
                debug!(key = %key, state = %alert.state, partition, offset, "Alert transition already delivered; skipped.");
            }
            if let Some(t) = self.known.get_mut(&partition) {
                t.record(key, alert.state);
            }
        }
        self.handled.insert(partition, offset + 1);
        self.commit(CommitMode::Async);
        true
    }

    /// The state of each key below `until` on `partition`: what was sent
    /// before this sink got the partition. Retried until read or stopped.
    async fn history(
        &self,
        partition: i32,
        until: i64,
        stop: &CancellationToken,
    ) -> Option<Transitions> {
        let mut backoff = Backoff::new(RETRY.0, RETRY.1);
        loop {
            let (kafka, topic) = (self.kafka.clone(), self.topic.clone());
            let reading = tokio::task::spawn_blocking(move || {
                let mut t = Transitions::default();
                scan_to_end(
                    &kafka,
                    &topic,
                    ScanFrom::Beginning,
                    &Positions::new(),
                    HISTORY_TIMEOUT,
                    |m| {
                        if m.partition != partition || m.offset >= until {
                            return;
                        }
                        if let Ok(alert) = serde_json::from_slice::<Alert>(m.payload) {
                            t.record(alert.key(), alert.state);
                        }
                    },
                )
                .map(|_| t)
            });
            // Stopping does not wait for the read (it ends by its timeout).
            let read = tokio::select! {
                () = stop.cancelled() => return None,
                r = reading => r,
            };
            match read {
                Ok(Ok(t)) => return Some(t),
                Ok(Err(e)) => {
                    warn!(topic = %self.topic, partition, error = %e, "Reading the alerts delivered so far failed; retrying.");
                }
                Err(e) => warn!(error = %e, "The alert history reader stopped; retrying."),
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    fn commit(&self, mode: CommitMode) {
        if self.handled.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &self.handled {
            let _ = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o));
        }
        if let Err(e) = self.consumer.commit(&tpl, mode) {
            warn!(topic = %self.topic, error = %e, "Committing the alerts handled failed; a restart may send them again.");
        }
    }
}
