//! Kafka I/O for Switchyard: client settings, offset tracking for concurrent
//! at-least-once processing, topic scanning helpers, and the embedded broker
//! (librdkafka's mock cluster) used by `demo`, `dev` and the tests.

pub mod client;
pub mod embedded;
pub mod offsets;
pub mod produce;
pub mod scan;

pub use embedded::EmbeddedBroker;
pub use offsets::{OffsetTracker, Ticket};
pub use scan::{Positions, ScanFrom, Scanned, group_lag, offsets_at_time, scan_to_end};
