//! Dead letters, the one way every Switchyard consumer (the worker for jobs,
//! the usage sink for usage events) sets aside a message it cannot process:
//! the original bytes as the value, the original key, and why and where from
//! in headers (`switchyard_codec::headers`). Nothing a message carries can make
//! its dead letter unpublishable: an original too large for a record is cut to
//! fit, with its whole size and SHA-256 in headers, and if the topic still
//! refuses it, the headers alone are sent.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use sha2::{Digest, Sha256};
use switchyard_codec::headers;
use switchyard_core::config::KafkaConfig;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::produce::{PublishError, publish};

/// Room left in a record for its key, headers and the protocol's overhead.
pub const RECORD_SLACK: usize = 16 * 1024;

/// Longest original key a headers-only dead letter keeps.
const MAX_KEPT_KEY: usize = 1024;

/// librdkafka's default `message.max.bytes` for a producer.
const DEFAULT_MAX_RECORD: usize = 1_000_000;

/// The largest record value a producer of this cluster may send
/// (`kafka.client."message.max.bytes"`, else librdkafka's default).
pub fn max_record(kafka: &KafkaConfig) -> usize {
    kafka
        .client
        .get("message.max.bytes")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_RECORD)
}

/// A message that could not be processed, and where it came from.
#[derive(Debug, Clone, Copy)]
pub struct DeadLetter<'a> {
    /// The kind of fault (`invalid_json`, `too_large`, …), for the kind header.
    pub kind: &'a str,
    /// Why, as a sentence (the caller caps what it echoes).
    pub reason: &'a str,
    /// The topic the message was read from.
    pub topic: &'a str,
    /// Its partition there.
    pub partition: i32,
    /// Its offset there.
    pub offset: i64,
    /// Its key, `None` when it had none (a dead letter keeps a null key null).
    pub key: Option<&'a [u8]>,
    /// Its value, as read.
    pub payload: &'a [u8],
}

/// Where dead letters go: a producer, the topic, and the largest record value
/// it takes.
#[derive(Clone)]
pub struct DeadLetterTopic {
    /// The producer (its compression is the caller's choice).
    pub producer: FutureProducer,
    /// The dead-letter topic.
    pub name: String,
    /// Largest record value the producer may send (see [`max_record`]).
    pub max_record: usize,
}

impl DeadLetterTopic {
    /// Publishes `letter` until the broker acknowledges it; true once it has,
    /// false when `stop` was cancelled first (the caller leaves the original's
    /// offset uncommitted, so it is read and dead-lettered again).
    pub async fn send(&self, letter: &DeadLetter<'_>, stop: &CancellationToken) -> bool {
        let mut fields = vec![
            (headers::DLQ_REASON, letter.reason.to_owned()),
            (headers::DLQ_KIND, letter.kind.to_owned()),
            (headers::DLQ_TOPIC, letter.topic.to_owned()),
            (headers::DLQ_PARTITION, letter.partition.to_string()),
            (headers::DLQ_OFFSET, letter.offset.to_string()),
        ];
        let room = self.max_record.saturating_sub(RECORD_SLACK);
        let payload = if letter.payload.len() > room {
            fields.extend(original_digest(letter.payload));
            &letter.payload[..room]
        } else {
            letter.payload
        };
        match publish(
            &self.producer,
            &self.name,
            letter.key,
            payload,
            Some(&to_headers(&fields)),
            stop,
        )
        .await
        {
            Ok(()) => true,
            Err(PublishError::Stopped) => false,
            Err(PublishError::Refused(why)) => {
                // The smallest dead letter: no original, only why.
                error!(topic = %letter.topic, partition = letter.partition, offset = letter.offset, error = %why, "The dead-letter topic refused the original; sending its headers alone.");
                if !fields.iter().any(|(k, _)| *k == headers::DLQ_ORIGINAL_SIZE) {
                    fields.extend(original_digest(letter.payload));
                }
                // The original key stays (it is what consumers look letters up
                // by) unless it is itself too large to be sure of fitting.
                let key = letter.key.filter(|k| k.len() <= MAX_KEPT_KEY);
                publish(
                    &self.producer,
                    &self.name,
                    key,
                    &[],
                    Some(&to_headers(&fields)),
                    stop,
                )
                .await
                .is_ok()
            }
        }
    }
}

/// The size and SHA-256 headers of an original the dead letter carries only
/// part of (or none of).
fn original_digest(payload: &[u8]) -> [(&'static str, String); 2] {
    [
        (headers::DLQ_ORIGINAL_SIZE, payload.len().to_string()),
        (headers::DLQ_ORIGINAL_SHA256, hex(&Sha256::digest(payload))),
    ]
}

fn to_headers(fields: &[(&str, String)]) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    for (key, value) in fields {
        h = h.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    h
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_names_the_whole_original() {
        let [(size_key, size), (sha_key, sha)] = original_digest(b"abc");
        assert_eq!((size_key, size.as_str()), (headers::DLQ_ORIGINAL_SIZE, "3"));
        assert_eq!(sha_key, headers::DLQ_ORIGINAL_SHA256);
        assert_eq!(
            sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_record_limit_comes_from_the_client_settings() {
        let mut kafka = KafkaConfig {
            brokers: "localhost:9092".into(),
            group_id: "g".into(),
            topics: Default::default(),
            client: Default::default(),
            client_secret_env: Default::default(),
        };
        assert_eq!(max_record(&kafka), 1_000_000);
        kafka
            .client
            .insert("message.max.bytes".into(), "2000000".into());
        assert_eq!(max_record(&kafka), 2_000_000);
    }
}
