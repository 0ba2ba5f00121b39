//! Kafka header names Switchyard writes: part of the wire contract, like the
//! schemas. Dead letters carry why a message could not be processed and where
//! it came from; held copies carry why they wait for approval.

/// Why the message could not be processed (a sentence).
pub const DLQ_REASON: &str = "switchyard.dlq.reason";
/// The kind of fault (`invalid_json`, `invalid_avro`, `unencodable_outcome`, …).
pub const DLQ_KIND: &str = "switchyard.dlq.kind";
/// The topic the message was read from.
pub const DLQ_TOPIC: &str = "switchyard.dlq.topic";
/// Its partition there.
pub const DLQ_PARTITION: &str = "switchyard.dlq.partition";
/// Its offset there.
pub const DLQ_OFFSET: &str = "switchyard.dlq.offset";
/// The original's size in bytes, when the dead letter carries only its start.
pub const DLQ_ORIGINAL_SIZE: &str = "switchyard.dlq.original_size";
/// The SHA-256 (hex) of the whole original, when the dead letter carries only its start.
pub const DLQ_ORIGINAL_SHA256: &str = "switchyard.dlq.original_sha256";
/// Why a job was held for approval.
pub const HELD_REASON: &str = "switchyard.held.reason";
/// A held job's approval id.
pub const HELD_APPROVAL_ID: &str = "switchyard.held.approval_id";
/// On a job published again after approval: the approver's signed decision
/// (JSON), which the worker checks before it lets the job past the hold.
pub const RELEASED_BY: &str = "switchyard.released_by";
