//! What every consumer of Switchyard does when a rebalance assigns it
//! partitions, and a probe that checks it against the embedded broker.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, TopicPartitionList};

use crate::embedded::{EmbeddedBroker, EmbeddedError};

/// Resumes every partition the consumer holds once a rebalance has assigned
/// it partitions. librdkafka keeps an application's pause on a partition
/// across assignments (it resets only its own), so a consumer that paused a
/// partition, lost it in a rebalance and got it back in a later one would find
/// it still paused while believing it fetching. The whole assignment, not only
/// what was just added: with an incremental assignor the partitions kept
/// through the rebalance would stay paused too. Call it from `post_rebalance`
/// on an assignment; a consumer that wants to stay paused pauses again
/// afterwards.
pub fn start_unpaused<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> KafkaResult<()> {
    let held: TopicPartitionList = consumer.assignment()?;
    if held.count() == 0 {
        return Ok(());
    }
    consumer.resume(&held)
}

/// For tests of a consumer context: on an embedded broker whose `topic` has
/// two partitions of five messages each, a consumer with `context` takes both,
/// pauses them, and a second member joins; returns the partition the consumer
/// first fetched from once the rebalance left it one (none within 10 s: empty). A context that starts new
/// assignments unpaused fetches from that one; librdkafka alone, from none.
pub fn partitions_fetched_after_a_rebalance_while_paused<C: ConsumerContext + 'static>(
    topic: &str,
    context: C,
) -> Result<BTreeSet<i32>, EmbeddedError> {
    let broker = EmbeddedBroker::start(&[(topic, 2)])?;
    let failed = |e: rdkafka::error::KafkaError| EmbeddedError::Start(e.to_string());
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .map_err(failed)?;
    for partition in 0..2 {
        for _ in 0..5 {
            let record = BaseRecord::<(), str>::to(topic)
                .partition(partition)
                .payload("probe");
            producer.send(record).map_err(|(e, _)| failed(e))?;
        }
    }
    producer.flush(Duration::from_secs(10)).map_err(failed)?;

    let consumer = member(&broker, topic, context).map_err(failed)?;
    let assigned = |c: &BaseConsumer<C>| c.assignment().map_or(0, |a| a.count());
    let until = Instant::now() + Duration::from_secs(30);
    while assigned(&consumer) < 2 && Instant::now() < until {
        consumer.poll(Duration::from_millis(100));
    }
    consumer
        .pause(&consumer.assignment().map_err(failed)?)
        .map_err(failed)?;

    let other = member(&broker, topic, DefaultConsumerContext).map_err(failed)?;
    let mut fetched = BTreeSet::new();
    let mut rebalanced = None;
    let until = Instant::now() + Duration::from_secs(40);
    while Instant::now() < until
        && fetched.is_empty()
        && rebalanced.is_none_or(|at: Instant| at.elapsed() < SETTLE)
    {
        let polled = consumer.poll(Duration::from_millis(50));
        if rebalanced.is_none() && assigned(&consumer) == 1 {
            rebalanced = Some(Instant::now());
        }
        if let Some(Ok(m)) = polled
            && rebalanced.is_some()
        {
            fetched.insert(m.partition());
        }
        other.poll(Duration::from_millis(50));
    }
    Ok(fetched)
}

/// How long the probe waits for a message once the rebalance has left the
/// consumer one partition (a further rebalance may come meanwhile).
const SETTLE: Duration = Duration::from_secs(10);

fn member<C: ConsumerContext>(
    broker: &EmbeddedBroker,
    topic: &str,
    context: C,
) -> KafkaResult<BaseConsumer<C>> {
    let consumer: BaseConsumer<C> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "pause-probe")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create_with_context(context)?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

#[cfg(test)]
mod tests {
    use rdkafka::ClientContext;
    use rdkafka::consumer::{BaseConsumer, ConsumerContext, DefaultConsumerContext, Rebalance};

    use super::{partitions_fetched_after_a_rebalance_while_paused, start_unpaused};

    struct Unpausing;

    impl ClientContext for Unpausing {}

    impl ConsumerContext for Unpausing {
        fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
            if let Rebalance::Assign(_) = rebalance {
                start_unpaused(consumer).unwrap();
            }
        }
    }

    #[test]
    fn librdkafka_keeps_a_pause_across_assignments_and_start_unpaused_lifts_it() {
        let kept =
            partitions_fetched_after_a_rebalance_while_paused("jobs", DefaultConsumerContext)
                .unwrap();
        assert!(
            kept.is_empty(),
            "librdkafka no longer keeps the pause: {kept:?}"
        );
        let lifted = partitions_fetched_after_a_rebalance_while_paused("jobs", Unpausing).unwrap();
        assert_eq!(lifted.len(), 1);
    }
}
