//! Producing without holding borrows across awaits: enqueue now (waiting politely
//! while librdkafka's local queue is full), await the broker's acknowledgement
//! later; and the one "publish until acknowledged" loop every at-least-once
//! writer uses.

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use switchyard_core::backoff::Backoff;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Hands a message to the producer; the returned future resolves on acknowledgement.
pub async fn enqueue(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<&OwnedHeaders>,
) -> Result<DeliveryFuture, KafkaError> {
    enqueue_to(producer, (topic, None), key, payload, headers).await
}

/// [`enqueue`] to a chosen partition (`None`: the key's, as the partitioner says).
pub async fn enqueue_at(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<&OwnedHeaders>,
) -> Result<DeliveryFuture, KafkaError> {
    enqueue_to(producer, (topic, partition), key, payload, headers).await
}

/// [`enqueue`] to a chosen partition (`None`: the partitioner's, by key).
/// A `None` payload is a tombstone.
pub async fn enqueue_to(
    producer: &FutureProducer,
    (topic, partition): (&str, Option<i32>),
    key: Option<&[u8]>,
    payload: impl Into<Option<&[u8]>>,
    headers: Option<&OwnedHeaders>,
) -> Result<DeliveryFuture, KafkaError> {
    let payload = payload.into();
    loop {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(h) = headers {
            record = record.headers(h.clone());
        }
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Waits for an acknowledgement, turning every failure into a `KafkaError`.
pub async fn acknowledged(delivery: DeliveryFuture) -> Result<(), KafkaError> {
    acknowledged_at(delivery).await.map(|_| ())
}

/// [`acknowledged`], with where the record landed: (partition, offset).
pub async fn acknowledged_at(delivery: DeliveryFuture) -> Result<(i32, i64), KafkaError> {
    match delivery.await {
        Ok(Ok(d)) => Ok((d.partition, d.offset)),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

/// Why [`publish`] gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Stopped while the broker had not acknowledged: the caller must not count
    /// the record as delivered.
    #[error("stopped before the broker acknowledged the record")]
    Stopped,
    /// The record can never be accepted as it is (too large for the producer
    /// or the topic): retrying would wedge its partition; the caller must send
    /// something smaller instead.
    #[error("the record is refused as it is: {0}")]
    Refused(KafkaError),
}

/// Whether an error refuses this record for good (retrying cannot help).
fn refuses_record(e: &KafkaError) -> bool {
    let KafkaError::MessageProduction(code) = e else {
        return false;
    };
    matches!(
        code,
        RDKafkaErrorCode::MessageSizeTooLarge
            | RDKafkaErrorCode::MessageBatchTooLarge
            | RDKafkaErrorCode::InvalidRecord
            | RDKafkaErrorCode::InvalidMessageSize
    )
}

/// First and longest pause between two attempts of [`publish`].
const PUBLISH_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Sends a record until the broker acknowledges it, retrying with backoff;
/// gives up when `stop` is cancelled (the caller then leaves its input
/// uncommitted, so the work is redone) or when the record itself is refused
/// (too large: the caller sends a smaller one). A missing or unauthorised topic
/// is retried, loudly: it is the operator's to fix, not a reason to drop work.
pub async fn publish(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<&OwnedHeaders>,
    stop: &CancellationToken,
) -> Result<(), PublishError> {
    publish_to(producer, (topic, None), key, Some(payload), headers, stop)
        .await
        .map(|_| ())
}

/// [`publish`] to a chosen partition.
pub async fn publish_at(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<&OwnedHeaders>,
    stop: &CancellationToken,
) -> Result<(), PublishError> {
    publish_to(
        producer,
        (topic, partition),
        key,
        Some(payload),
        headers,
        stop,
    )
    .await
    .map(|_| ())
}

/// [`publish`] to a chosen partition (`None`: by key), of a record or a
/// tombstone (`payload` none); says where it landed: (partition, offset).
pub async fn publish_to(
    producer: &FutureProducer,
    to: (&str, Option<i32>),
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    headers: Option<&OwnedHeaders>,
    stop: &CancellationToken,
) -> Result<(i32, i64), PublishError> {
    let topic = to.0;
    let mut backoff = Backoff::new(PUBLISH_BACKOFF.0, PUBLISH_BACKOFF.1);
    loop {
        let sent = match enqueue_to(producer, to, key, payload, headers).await {
            Ok(delivery) => acknowledged_at(delivery).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(at) => return Ok(at),
            Err(e) if refuses_record(&e) => return Err(PublishError::Refused(e)),
            Err(e) => {
                warn!(topic, error = %e, attempt = backoff.failures() + 1, "Publish failed; retrying.");
                tokio::select! {
                    _ = stop.cancelled() => return Err(PublishError::Stopped),
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

/// How many partitions `topic` has (0 when the cluster does not know it).
/// Blocking: run it on a blocking thread.
pub fn partition_count(producer: &FutureProducer, topic: &str) -> Result<usize, KafkaError> {
    use rdkafka::producer::Producer;
    let metadata = producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .map(|t| t.partitions().len())
        .sum())
}
