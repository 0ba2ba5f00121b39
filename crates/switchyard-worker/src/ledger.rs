//! Keeping the budget ledger true across workers and restarts: a reader of the
//! usage topic (no consumer group) that first replays the current month, so a
//! restarted worker does not forget what was spent, then follows the topic, so
//! spend by other workers counts against the same budgets. The worker's own events
//! are already in its ledger and are skipped. Runs on its own thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use switchyard_codec::Codec;
use switchyard_core::config::PipelineConfig;
use switchyard_core::usage::UsageEvent;
use switchyard_kafka::client::reader_config;
use switchyard_kafka::offsets_at_time;
use tracing::{info, warn};

use crate::Engine;
use crate::catch_up::CatchUp;

/// The running follower; stop it with [`LedgerFollower::stop`].
pub struct LedgerFollower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LedgerFollower {
    /// Starts replaying this month's usage, then following it. The returned
    /// receiver yields once the replay has reached the end offsets of the start.
    pub fn start(engine: Arc<Engine>, config: &PipelineConfig) -> (Self, mpsc::Receiver<u64>) {
        let stop = Arc::new(AtomicBool::new(false));
        let (caught_up, caught_up_rx) = mpsc::channel();
        let flag = stop.clone();
        let kafka = config.kafka.clone();
        let topic = config.kafka.topics.usage.clone();
        let thread = std::thread::Builder::new()
            .name("budget-ledger".into())
            .spawn(move || {
                let consumer: BaseConsumer = match reader_config(&kafka).set("enable.partition.eof", "false").create() {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(error = %e, "Cannot read the usage topic; budgets count only this worker's spend.");
                        let _ = caught_up.send(0);
                        return;
                    }
                };
                let Some((month_start, ends)) = assign_from_month_start(&consumer, &topic.name) else {
                    warn!("Cannot position on the usage topic; budgets count only this worker's spend.");
                    let _ = caught_up.send(0);
                    return;
                };
                let codec = Codec::for_topic(&topic);
                let mut pending = CatchUp::new(ends);
                let mut replayed = 0u64;
                let mut spent = 0.0;
                if pending.done() {
                    let _ = caught_up.send(0);
                }
                while !flag.load(Ordering::Relaxed) {
                    let Some(Ok(m)) = consumer.poll(Duration::from_millis(250)) else {
                        continue;
                    };
                    let this_month = m.timestamp().to_millis().is_none_or(|t| t >= month_start);
                    if let Some(e) = m.payload().filter(|_| this_month).and_then(|p| codec.decode::<UsageEvent>(p).ok())
                        && engine.record_foreign_spend(&e)
                        && !pending.done()
                    {
                        replayed += 1;
                        spent += e.cost_usd;
                    }
                    if pending.seen(m.partition(), m.offset()) {
                        info!(events = replayed, spent_usd = spent, "Budget ledger rebuilt from the usage topic; following it.");
                        let _ = caught_up.send(replayed);
                    }
                }
            })
            .ok();
        (Self { stop, thread }, caught_up_rx)
    }

    /// Stops following and waits for the thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Assigns every partition at the first offset of this calendar month (or at the
/// beginning, when the broker cannot seek by time); returns the month's start in
/// ms and each partition with something to replay, with its end offset as of now.
fn assign_from_month_start(consumer: &BaseConsumer, topic: &str) -> Option<(i64, Vec<(i32, i64)>)> {
    let now = Utc::now();
    let month_start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()?
        .timestamp_millis();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .ok()?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let (offsets, _) = offsets_at_time(consumer, topic, &partitions, month_start).ok()?;
    let mut start = TopicPartitionList::new();
    let mut pending = Vec::new();
    for (p, offset) in offsets {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .ok()?;
        let from = match offset {
            Offset::Offset(o) => o,
            Offset::Beginning => low,
            _ => high,
        };
        start.add_partition_offset(topic, p, offset).ok()?;
        if from < high {
            pending.push((p, high));
        }
    }
    consumer.assign(&start).ok()?;
    Some((month_start, pending))
}
