//! Wire encodings of Switchyard's records (job, result, usage event) on Kafka: UTF-8
//! JSON, Avro in the Confluent wire format (magic byte 0, 4-byte big-endian schema
//! id, datum) and Avro single-object encoding (C3 01, 8-byte little-endian Rabin
//! fingerprint of the schema, datum). The Avro schemas are the `.avsc` files in
//! `schemas/avro/`, compiled in. Decoding never panics on hostile bytes: every
//! failure is a [`DecodeError`] whose text becomes the dead-letter reason.

mod avro;
pub mod headers;
mod records;

use serde::Serialize;
use serde::de::DeserializeOwned;
use switchyard_core::config::{Encoding, TopicConfig, UnknownFields};
use switchyard_core::job::InvalidJob;

pub use avro::AvroRecord;

/// Why bytes could not become a record. Each is a dead-letter reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Over the topic's size limit.
    #[error("message is {size} bytes; the limit is {limit} (kafka.topics.jobs.max_message_bytes)")]
    TooLarge {
        /// Actual size.
        size: usize,
        /// Configured limit.
        limit: usize,
    },
    /// Empty value (a tombstone or a producer bug).
    #[error("message value is empty")]
    Empty,
    /// Not UTF-8.
    #[error("message is not valid UTF-8 (first bad byte at offset {offset})")]
    InvalidUtf8 {
        /// Byte offset.
        offset: usize,
    },
    /// JSON syntax, type or shape error.
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json {
        /// What serde said.
        message: String,
        /// 1-based.
        line: usize,
        /// 1-based.
        column: usize,
    },
    /// Avro framing or datum error.
    #[error("invalid Avro: {0}")]
    Avro(String),
    /// Decoded, but not a valid job.
    #[error("invalid job: {0}")]
    Invalid(#[from] InvalidJob),
}

impl DecodeError {
    /// Short machine-readable kind, for the DLQ header.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Empty => "empty",
            DecodeError::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeError::Json { .. } => "invalid_json",
            DecodeError::Avro(_) => "invalid_avro",
            DecodeError::Invalid(_) => "invalid_job",
        }
    }
}

/// Why a record could not be encoded (a schema mismatch is a bug, not bad input).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// JSON serialization failed.
    #[error("cannot encode as JSON: {0}")]
    Json(String),
    /// The value does not fit the Avro schema.
    #[error("cannot encode as Avro: {0}")]
    Avro(String),
    /// Confluent framing without an id.
    #[error("Confluent Avro needs a schema_id in the topic config")]
    MissingSchemaId,
}

/// Encoder/decoder for one topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Codec {
    encoding: Encoding,
    schema_id: Option<u32>,
    unknown_fields: UnknownFields,
    max_bytes: usize,
}

impl Codec {
    /// The codec a topic's config describes.
    pub fn for_topic(topic: &TopicConfig) -> Self {
        Self {
            encoding: topic.encoding,
            schema_id: topic.schema_id,
            unknown_fields: topic.unknown_fields,
            max_bytes: topic.max_message_bytes,
        }
    }

    /// Plain JSON, rejecting unknown fields, 1 MiB limit.
    pub fn json() -> Self {
        Self {
            encoding: Encoding::Json,
            schema_id: None,
            unknown_fields: UnknownFields::Reject,
            max_bytes: 1 << 20,
        }
    }

    /// The same codec, dropping unknown JSON fields whatever the topic's
    /// policy: for records only Switchyard writes, where a newer writer adding
    /// a field must not make an older reader discard the record (the usage
    /// sink reads usage events this way).
    pub fn ignoring_unknown_fields(self) -> Self {
        Self {
            unknown_fields: UnknownFields::Ignore,
            ..self
        }
    }

    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Encodes a record.
    pub fn encode<R: AvroRecord + Serialize>(&self, record: &R) -> Result<Vec<u8>, EncodeError> {
        match self.encoding {
            Encoding::Json => {
                serde_json::to_vec(record).map_err(|e| EncodeError::Json(e.to_string()))
            }
            Encoding::AvroConfluent => {
                let id = self.schema_id.ok_or(EncodeError::MissingSchemaId)?;
                let mut out = Vec::with_capacity(256);
                out.push(0u8);
                out.extend_from_slice(&id.to_be_bytes());
                avro::write::<R>(record, &mut out).map_err(EncodeError::Avro)?;
                Ok(out)
            }
            Encoding::AvroSingleObject => {
                let mut out = Vec::with_capacity(256);
                out.extend_from_slice(&[0xC3, 0x01]);
                out.extend_from_slice(&R::fingerprint());
                avro::write::<R>(record, &mut out).map_err(EncodeError::Avro)?;
                Ok(out)
            }
        }
    }

    /// Largest accepted message, bytes.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// Decodes a record, enforcing the topic's size limit and unknown-field policy.
    pub fn decode<R: AvroRecord + DeserializeOwned>(&self, bytes: &[u8]) -> Result<R, DecodeError> {
        if bytes.len() > self.max_bytes {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                limit: self.max_bytes,
            });
        }
        if bytes.is_empty() {
            return Err(DecodeError::Empty);
        }
        match self.encoding {
            Encoding::Json => self.decode_json(bytes),
            Encoding::AvroConfluent => {
                if bytes.len() < 5 || bytes[0] != 0 {
                    return Err(DecodeError::Avro(
                        "missing the Confluent header (magic byte 0 and a 4-byte schema id)".into(),
                    ));
                }
                let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                if Some(id) != self.schema_id {
                    return Err(DecodeError::Avro(format!(
                        "schema id {id} is not the configured one ({})",
                        self.schema_id.map_or("none".to_owned(), |s| s.to_string())
                    )));
                }
                avro::read::<R>(&bytes[5..]).map_err(DecodeError::Avro)
            }
            Encoding::AvroSingleObject => {
                if bytes.len() < 10 || bytes[0..2] != [0xC3, 0x01] {
                    return Err(DecodeError::Avro(
                        "missing the single-object header (C3 01 and an 8-byte fingerprint)".into(),
                    ));
                }
                if bytes[2..10] != R::fingerprint() {
                    return Err(DecodeError::Avro(format!(
                        "schema fingerprint {:02x?} is not {}'s",
                        &bytes[2..10],
                        R::NAME
                    )));
                }
                avro::read::<R>(&bytes[10..]).map_err(DecodeError::Avro)
            }
        }
    }

    fn decode_json<R: AvroRecord + DeserializeOwned>(
        &self,
        bytes: &[u8],
    ) -> Result<R, DecodeError> {
        if let Err(e) = std::str::from_utf8(bytes) {
            return Err(DecodeError::InvalidUtf8 {
                offset: e.valid_up_to(),
            });
        }
        let json_err = |e: serde_json::Error| DecodeError::Json {
            message: strip_position(&e.to_string()),
            line: e.line(),
            column: e.column(),
        };
        match serde_json::from_slice::<R>(bytes) {
            Ok(r) => Ok(r),
            Err(e)
                if self.unknown_fields == UnknownFields::Ignore
                    && e.to_string().starts_with("unknown field") =>
            {
                let mut value: serde_json::Value =
                    serde_json::from_slice(bytes).map_err(json_err)?;
                R::strip_unknown(&mut value);
                serde_json::from_value(value).map_err(json_err)
            }
            Err(e) => Err(json_err(e)),
        }
    }

    /// Decodes and validates a job.
    pub fn decode_job(&self, bytes: &[u8]) -> Result<switchyard_core::Job, DecodeError> {
        let job: switchyard_core::Job = self.decode(bytes)?;
        job.validate()?;
        Ok(job)
    }
}

/// serde_json appends " at line L column C"; the error carries them separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests;
