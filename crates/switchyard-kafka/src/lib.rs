//! Kafka I/O for Switchyard: client settings, offset tracking for concurrent
//! at-least-once processing, publishing until acknowledged, dead letters, following a topic
//! on a thread, topic scanning helpers, partition offsets from librdkafka's
//! statistics, and the embedded broker (librdkafka's mock cluster) used by
//! `demo`, `dev` and the tests.

pub mod audit;
pub mod catch_up;
pub mod client;
pub mod dead_letter;
pub mod embedded;
pub mod follow;
pub mod offsets;
pub mod produce;
pub mod rebalance;
pub mod scan;
pub mod stats;

pub use catch_up::CatchUp;
pub use dead_letter::{DeadLetter, DeadLetterTopic};
pub use embedded::EmbeddedBroker;
pub use follow::{FollowSpec, TopicFollower};
pub use offsets::{Arrival, OffsetTracker, Ticket};
pub use scan::{Positions, ScanFrom, Scanned, group_lag, offsets_at_time, scan_to_end};
