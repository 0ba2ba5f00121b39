//! The batch registry: [`BatchRecord`]s as JSON on the compacted batches topic,
//! keyed by batch id. A batch's state is its records folded in log order
//! ([`log::fold`]), and its newest record is kept equal to that state, since it
//! is what compaction leaves. Reading it needs nothing but the cluster, so any
//! machine can follow, collect or cancel a batch. Workers follow the same topic
//! to learn cancellations.

pub mod log;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use switchyard_core::batch::{BatchRecord, BatchState};
use switchyard_core::config::KafkaConfig;
use switchyard_kafka::client::reader_config;

pub use self::log::{BatchView, Holder, fold};
use crate::sender::Sender;
use crate::{Error, Result};

/// Longest a registry read or write may take.
pub const REGISTRY_TIMEOUT: Duration = Duration::from_secs(60);

/// The current record of `batch_id`, if any.
pub fn read(kafka: &KafkaConfig, batch_id: &str) -> Result<Option<BatchRecord>> {
    RegistryReader::new(kafka)?.read(batch_id)
}

/// A reader of the registry that keeps its connection, for commands that read
/// it more than once (submit reads it before producing and again after).
pub struct RegistryReader {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
}

impl RegistryReader {
    /// Connects and learns the registry's partitions.
    pub fn new(kafka: &KafkaConfig) -> Result<Self> {
        let consumer: BaseConsumer = reader_config(kafka)
            .create()
            .map_err(Error::kafka("registry reader setup"))?;
        let topic = kafka.topics.batches.clone();
        let metadata = consumer
            .fetch_metadata(Some(&topic), REGISTRY_TIMEOUT)
            .map_err(Error::kafka("registry metadata"))?;
        let partitions = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        Ok(Self {
            consumer,
            topic,
            partitions,
        })
    }

    /// The current record of `batch_id`, if any: the registry read to its end as of now.
    pub fn read(&self, batch_id: &str) -> Result<Option<BatchRecord>> {
        Ok(self.view(batch_id)?.map(|v| v.record))
    }

    /// What the registry says about `batch_id` as of now: its state, the submit
    /// run holding it, and its newest record.
    pub fn view(&self, batch_id: &str) -> Result<Option<BatchView>> {
        Ok(fold(&self.history(batch_id)?))
    }

    /// Every record of `batch_id` still in the registry with its offset, oldest
    /// first (since the last tombstone), read to the registry's end as of now.
    pub fn history(&self, batch_id: &str) -> Result<Vec<(i64, BatchRecord)>> {
        let deadline = Instant::now() + REGISTRY_TIMEOUT;
        let mut ends: HashMap<i32, i64> = HashMap::new();
        let mut tpl = TopicPartitionList::new();
        for &p in &self.partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, p, REGISTRY_TIMEOUT)
                .map_err(Error::kafka("registry watermarks"))?;
            if high > low {
                ends.insert(p, high);
                tpl.add_partition_offset(&self.topic, p, Offset::Offset(low))
                    .map_err(Error::kafka("registry assign"))?;
            }
        }
        let mut history: Vec<(i64, BatchRecord)> = Vec::new();
        if ends.is_empty() {
            return Ok(history);
        }
        self.consumer
            .assign(&tpl)
            .map_err(Error::kafka("registry assign"))?;
        while !ends.is_empty() {
            if Instant::now() > deadline {
                return Err(Error::kafka("registry read")(KafkaError::Global(
                    RDKafkaErrorCode::OperationTimedOut,
                )));
            }
            let m = match self.consumer.poll(Duration::from_millis(100)) {
                None | Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(Err(e)) => return Err(Error::kafka("registry read")(e)),
                Some(Ok(m)) => m,
            };
            let p = m.partition();
            if ends.get(&p).is_some_and(|end| m.offset() + 1 >= *end) {
                ends.remove(&p);
            }
            if m.key() != Some(batch_id.as_bytes()) {
                continue;
            }
            let payload = m.payload().unwrap_or_default();
            if payload.is_empty() {
                // A tombstone: the batch was removed from the registry.
                history.clear();
                continue;
            }
            match serde_json::from_slice::<BatchRecord>(payload) {
                Ok(r) if r.batch_id == batch_id => history.push((m.offset(), r)),
                Ok(_) | Err(_) => tracing::warn!(
                    batch_id,
                    partition = p,
                    offset = m.offset(),
                    "Registry record that is not a batch record skipped."
                ),
            }
        }
        let _ = self.consumer.unassign();
        Ok(history)
    }
}

/// Like [`read`], failing when the batch is unknown.
pub fn get(kafka: &KafkaConfig, batch_id: &str) -> Result<BatchRecord> {
    read(kafka, batch_id)?.ok_or_else(|| Error::UnknownBatch {
        batch_id: batch_id.to_owned(),
        topic: kafka.topics.batches.clone(),
    })
}

/// Keeps the newest record of a batch equal to its state. A record written after
/// the batch became final (a `submitted` racing a cancel, a heartbeat or claim of
/// a run that had not yet noticed) would otherwise be all that compaction leaves;
/// when the newest record disagrees with the folded state, the state is
/// published again. Returns the batch's state.
pub fn restore_final_state(
    reader: &RegistryReader,
    sender: &mut Sender,
    kafka: &KafkaConfig,
    batch_id: &str,
) -> Result<Option<BatchState>> {
    let Some(view) = reader.view(batch_id)? else {
        return Ok(None);
    };
    restore_from(&view, sender, kafka).map(Some)
}

/// As [`restore_final_state`], from a view of the batch the caller has just read.
pub fn restore_from(
    view: &BatchView,
    sender: &mut Sender,
    kafka: &KafkaConfig,
) -> Result<BatchState> {
    let state = view.record.state;
    if state != BatchState::Submitting && view.last_state != state {
        tracing::info!(
            batch_id = %view.record.batch_id,
            state = ?state,
            "A record landed after the batch's final state; publishing the state again."
        );
        publish_with(sender, kafka, &view.record)?;
    }
    Ok(state)
}

/// Publishes `record` as the batch's new state and waits for the acknowledgement.
pub fn publish(kafka: &KafkaConfig, record: &BatchRecord) -> Result<()> {
    publish_with(&mut Sender::new(kafka)?, kafka, record).map(drop)
}

/// As [`publish`], on a producer the caller already has (and warmed up).
/// Returns the record's offset in the registry.
pub fn publish_with(sender: &mut Sender, kafka: &KafkaConfig, record: &BatchRecord) -> Result<i64> {
    let payload =
        serde_json::to_vec(record).map_err(|e| Error::Encode(format!("batch record: {e}")))?;
    sender.send(&kafka.topics.batches, record.batch_id.as_bytes(), &payload)?;
    sender.flush(REGISTRY_TIMEOUT)?;
    let offset = sender.last_registry_offset();
    tracing::debug!(batch_id = %record.batch_id, state = ?record.state, offset, "Batch record published.");
    Ok(offset)
}
