//! Keeping budgets and quotas true across workers and restarts. Every worker
//! publishes its own figures per budgeted or rationed node each second to the
//! compacted budgets topic ([`publish`]), and follows that topic from its
//! beginning ([`follow`]): at start it learns what every worker has spent this
//! month (so a restart forgets nothing, whatever the usage topic's retention),
//! then keeps adding the others' spend and in-flight reservations to its own.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use switchyard_core::budget::BudgetSnapshot;
use switchyard_core::config::PipelineConfig;
use switchyard_kafka::produce::{acknowledged, enqueue};
use switchyard_kafka::{FollowSpec, ScanFrom, TopicFollower};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::Engine;

/// How often a worker publishes its figures when nothing changes (so that a
/// new worker, and `org show`, see it alive).
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The least time between two publications: changes within it go out together.
pub const COALESCE: Duration = Duration::from_millis(50);

/// Starts reading every worker's snapshots, then following them. The receiver
/// yields the number of snapshots read once the topic has been read to where it
/// ended at start (at once when it is empty or missing).
pub fn follow(
    engine: Arc<Engine>,
    config: &PipelineConfig,
) -> (TopicFollower, mpsc::Receiver<u64>) {
    let spec = FollowSpec {
        name: "budget snapshots",
        topic: config.kafka.topics.budgets.clone(),
        from: ScanFrom::Beginning,
    };
    TopicFollower::start(&config.kafka, spec, move |m| {
        m.payload()
            .and_then(|p| serde_json::from_slice::<BudgetSnapshot>(p).ok())
            .map(|s| engine.observe_snapshot(s))
            .is_some()
    })
}

/// Publishes this worker's figures whenever they change (at most every
/// [`COALESCE`]) and every second regardless, until `stop`, and once more when
/// it stops (with nothing in flight by then).
pub async fn publish(
    engine: Arc<Engine>,
    producer: FutureProducer,
    topic: String,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(PUBLISH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tick.tick() => false,
            _ = engine.ledger_changed() => false,
        };
        send(&engine, &producer, &topic).await;
        if last {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(COALESCE) => {}
        }
    }
}

async fn send(engine: &Engine, producer: &FutureProducer, topic: &str) {
    let mut pending = Vec::new();
    for s in engine.snapshots() {
        let Ok(bytes) = serde_json::to_vec(&s) else {
            continue;
        };
        match enqueue(producer, topic, Some(s.key().as_bytes()), &bytes, None).await {
            Ok(delivery) => pending.push(delivery),
            Err(e) => {
                warn!(topic, error = %e, "Could not publish a budget snapshot; other workers see this one's spend a second later.")
            }
        }
    }
    for p in pending {
        if let Err(e) = acknowledged(p).await {
            warn!(topic, error = %e, "A budget snapshot was not acknowledged.");
        }
    }
}
