//! Following a topic on a thread of its own, without a consumer group: read it
//! from a starting point, say once when everything that was on it at the start
//! has been read (the "catch-up"), then keep reading new messages. The worker
//! follows the batch registry (cancellations) and the usage topic (budgets) this
//! way. A follower that cannot see its topic yet, or loses its position, keeps
//! trying with backoff until it is stopped: it never gives up for the life of
//! the process.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use switchyard_core::backoff::Backoff;
use switchyard_core::config::KafkaConfig;
use tracing::{info, warn};

use crate::catch_up::CatchUp;
use crate::client::reader_config;
use crate::scan::{ScanFrom, offsets_at_time};

/// What to follow.
#[derive(Debug, Clone)]
pub struct FollowSpec {
    /// The thread's name, and what logs call the topic ("batch registry").
    pub name: &'static str,
    /// The topic.
    pub topic: String,
    /// Where reading starts.
    pub from: ScanFrom,
}

/// A running follower; stop it with [`TopicFollower::stop`].
pub struct TopicFollower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Why a follower could not position itself (it retries).
enum Position {
    /// The cluster answered, without the topic: nothing to catch up with.
    NoTopic,
    /// The brokers did not answer, or a lookup failed.
    Failed(KafkaError),
}

/// Longest pause between two positioning attempts.
const MAX_RETRY: Duration = Duration::from_secs(10);

impl TopicFollower {
    /// Starts following. `on_message` sees every message and says whether it
    /// counts towards the figure sent on the returned receiver once the topic has
    /// been read to the end it had when reading began (at once when there was
    /// nothing to read, or when the topic does not exist yet).
    pub fn start(
        kafka: &KafkaConfig,
        spec: FollowSpec,
        mut on_message: impl FnMut(&BorrowedMessage<'_>) -> bool + Send + 'static,
    ) -> (Self, mpsc::Receiver<u64>) {
        let stop = Arc::new(AtomicBool::new(false));
        let (caught_up, caught_up_rx) = mpsc::channel();
        let flag = stop.clone();
        let kafka = kafka.clone();
        let thread = std::thread::Builder::new()
            .name(spec.name.into())
            .spawn(move || {
                let mut signal = Some(caught_up);
                let mut send = |n: u64| {
                    if let Some(s) = signal.take() {
                        let _ = s.send(n);
                    }
                };
                let Some((consumer, mut pending)) = position_until_done(&kafka, &spec, &flag, &mut send) else {
                    return;
                };
                let mut counted = 0u64;
                if pending.done() {
                    send(0);
                }
                while !flag.load(Ordering::Relaxed) {
                    let m = match consumer.poll(Duration::from_millis(250)) {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            warn!(topic = %spec.topic, error = %e, "Error reading the {}; continuing.", spec.name);
                            continue;
                        }
                        None => continue,
                    };
                    if on_message(&m) && !pending.done() {
                        counted += 1;
                    }
                    if pending.seen(m.partition(), m.offset()) {
                        info!(topic = %spec.topic, counted, "Read the {} to where it ended at start; following it.", spec.name);
                        send(counted);
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

impl Drop for TopicFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Positions a reader on the topic, retrying with backoff until it succeeds or
/// the follower is stopped. A topic that does not exist yet has nothing to catch
/// up with: the catch-up is signalled (once) and the follower keeps looking.
fn position_until_done(
    kafka: &KafkaConfig,
    spec: &FollowSpec,
    stop: &AtomicBool,
    caught_up: &mut impl FnMut(u64),
) -> Option<(BaseConsumer, CatchUp)> {
    let mut backoff = Backoff::new(Duration::from_millis(500), MAX_RETRY);
    let mut warned = false;
    while !stop.load(Ordering::Relaxed) {
        let attempt = reader_config(kafka)
            .set("enable.partition.eof", "false")
            .create::<BaseConsumer>()
            .map_err(Position::Failed)
            .and_then(|c| position(&c, spec).map(|p| (c, p)));
        match attempt {
            Ok(found) => {
                if warned {
                    info!(topic = %spec.topic, "The {} is readable again.", spec.name);
                }
                return Some(found);
            }
            Err(why) => {
                let error = match why {
                    Position::NoTopic => {
                        caught_up(0);
                        "the topic does not exist yet".to_owned()
                    }
                    Position::Failed(e) => e.to_string(),
                };
                if !warned {
                    warn!(topic = %spec.topic, error = %error, "Cannot read the {} yet; retrying until it can.", spec.name);
                    warned = true;
                }
                sleep_unless_stopped(backoff.next_delay(), stop);
            }
        }
    }
    None
}

/// Assigns every partition at the starting point; returns where each
/// partition with something to read ended at this moment.
fn position(consumer: &BaseConsumer, spec: &FollowSpec) -> Result<CatchUp, Position> {
    let topic = spec.topic.as_str();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(Position::Failed)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(Position::NoTopic);
    }
    let starts: Vec<(i32, Offset)> = match spec.from {
        ScanFrom::Beginning => partitions.iter().map(|&p| (p, Offset::Beginning)).collect(),
        ScanFrom::Time(ms) => {
            offsets_at_time(consumer, topic, &partitions, ms)
                .map_err(Position::Failed)?
                .0
        }
    };
    let mut tpl = TopicPartitionList::new();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for (p, offset) in starts {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(Position::Failed)?;
        let from = match offset {
            Offset::Offset(o) => o,
            Offset::Beginning => low,
            _ => high,
        };
        tpl.add_partition_offset(topic, p, offset)
            .map_err(Position::Failed)?;
        if from < high {
            ends.insert(p, high);
        }
    }
    consumer.assign(&tpl).map_err(Position::Failed)?;
    Ok(CatchUp::new(ends))
}

fn sleep_unless_stopped(pause: Duration, stop: &AtomicBool) {
    let step = Duration::from_millis(100);
    let mut left = pause;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(left.min(step));
        left = left.saturating_sub(step);
    }
}
