//! Keeping the budget ledger true across workers and restarts: a reader of the
//! usage topic (no consumer group) that first replays the current month, so a
//! restarted worker does not forget what was spent, then follows the topic, so
//! spend by other workers counts against the same budgets. The worker's own events
//! are already in its ledger and are skipped. Runs on its own thread.

use std::sync::Arc;
use std::sync::mpsc;

use chrono::{Datelike, TimeZone, Utc};
use rdkafka::message::Message;
use switchyard_codec::Codec;
use switchyard_core::config::PipelineConfig;
use switchyard_core::usage::UsageEvent;
use switchyard_kafka::{FollowSpec, ScanFrom, TopicFollower};

use crate::Engine;

/// Starts replaying this month's usage, then following it. The returned
/// receiver yields the number of events replayed once the replay has reached
/// the end offsets of the start.
pub fn follow(
    engine: Arc<Engine>,
    config: &PipelineConfig,
) -> (TopicFollower, mpsc::Receiver<u64>) {
    let now = Utc::now();
    let month_start = Utc
        .with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0)
        .single()
        .map_or(0, |t| t.timestamp_millis());
    let topic = config.kafka.topics.usage.clone();
    let codec = Codec::for_topic(&topic);
    let spec = FollowSpec {
        name: "usage topic",
        topic: topic.name,
        from: ScanFrom::Time(month_start),
    };
    TopicFollower::start(&config.kafka, spec, move |m| {
        let this_month = m.timestamp().to_millis().is_none_or(|t| t >= month_start);
        m.payload()
            .filter(|_| this_month)
            .and_then(|p| codec.decode::<UsageEvent>(p).ok())
            .is_some_and(|e| engine.record_foreign_spend(&e))
    })
}
