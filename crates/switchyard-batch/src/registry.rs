//! The batch registry: [`BatchRecord`]s as JSON on the compacted batches topic,
//! keyed by batch id; the last record of a key is the batch's state. Reading it
//! needs nothing but the cluster, so any machine can follow, collect or cancel a
//! batch. Workers follow the same topic to learn cancellations.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use switchyard_core::batch::{BatchRecord, BatchState};
use switchyard_core::config::KafkaConfig;
use switchyard_kafka::client::reader_config;

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
        Ok(self.history(batch_id)?.pop())
    }

    /// Every record of `batch_id` still in the registry, oldest first (since the
    /// last tombstone): what `submit` checks to let a cancel that raced its last
    /// record win.
    pub fn history(&self, batch_id: &str) -> Result<Vec<BatchRecord>> {
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
        let mut history: Vec<BatchRecord> = Vec::new();
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
                Ok(r) if r.batch_id == batch_id => history.push(r),
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

/// After `submit` published a batch's `submitted` record: if a `canceled`
/// record reached the registry before it (a cancel racing the end of the
/// submit), publishes that cancel again so it stays the batch's state, since a
/// canceled batch is never run again. Returns the batch's final state.
pub fn keep_cancel(
    reader: &RegistryReader,
    sender: &mut Sender,
    kafka: &KafkaConfig,
    batch_id: &str,
) -> Result<Option<BatchState>> {
    let history = reader.history(batch_id)?;
    let canceled = history
        .iter()
        .rev()
        .find(|r| r.state == BatchState::Canceled)
        .cloned();
    match (canceled, history.last()) {
        (Some(c), Some(last)) if last.state != BatchState::Canceled => {
            tracing::info!(
                batch_id,
                "A cancel arrived while the batch was being submitted; it stands."
            );
            publish_with(sender, kafka, &c)?;
            Ok(Some(BatchState::Canceled))
        }
        (_, last) => Ok(last.map(|r| r.state)),
    }
}

/// Publishes `record` as the batch's new state and waits for the acknowledgement.
pub fn publish(kafka: &KafkaConfig, record: &BatchRecord) -> Result<()> {
    publish_with(&mut Sender::new(kafka)?, kafka, record)
}

/// As [`publish`], on a producer the caller already has (and warmed up).
pub fn publish_with(sender: &mut Sender, kafka: &KafkaConfig, record: &BatchRecord) -> Result<()> {
    let payload =
        serde_json::to_vec(record).map_err(|e| Error::Encode(format!("batch record: {e}")))?;
    sender.send(&kafka.topics.batches, record.batch_id.as_bytes(), &payload)?;
    sender.flush(REGISTRY_TIMEOUT)?;
    tracing::debug!(batch_id = %record.batch_id, state = ?record.state, "Batch record published.");
    Ok(())
}
