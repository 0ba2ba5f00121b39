//! Batch cancellations: a reader of the batch registry (from its beginning, then
//! following) that tells the engine which batches are canceled, so their jobs not
//! yet started end as `canceled`. It runs on its own thread and stops with the
//! worker. It says when it has read the registry up to where it ended at start,
//! so that the worker takes no job before it knows every cancel made until then.

use std::sync::Arc;
use std::sync::mpsc;

use rdkafka::message::Message;
use switchyard_core::batch::{BatchRecord, BatchState};
use switchyard_core::config::PipelineConfig;
use switchyard_kafka::{FollowSpec, ScanFrom, TopicFollower};
use tracing::info;

use crate::Engine;

/// Starts following the batches topic. The receiver yields the number of
/// canceled batches once the registry has been read to the end offsets it had
/// when the reader started (at once when the topic is empty or missing).
pub fn follow(
    engine: Arc<Engine>,
    config: &PipelineConfig,
) -> (TopicFollower, mpsc::Receiver<u64>) {
    let spec = FollowSpec {
        name: "batch registry",
        topic: config.kafka.topics.batches.clone(),
        from: ScanFrom::Beginning,
    };
    TopicFollower::start(&config.kafka, spec, move |m| {
        let canceled = m
            .payload()
            .and_then(|p| serde_json::from_slice::<BatchRecord>(p).ok())
            .filter(|r| r.state == BatchState::Canceled);
        if let Some(record) = &canceled {
            info!(batch_id = %record.batch_id, "Batch canceled: its jobs not yet started will end as canceled.");
            engine.cancel_batch(&record.batch_id);
        }
        canceled.is_some()
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use chrono::Utc;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    use switchyard_core::batch::BatchFormat;
    use switchyard_core::config::LoadedPipeline;
    use switchyard_kafka::EmbeddedBroker;
    use switchyard_kafka::client::producer_config;

    fn pipeline(broker: &EmbeddedBroker) -> LoadedPipeline {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut p =
            switchyard_loader::load_pipeline(&root.join("pipelines/demo.toml"), &[]).unwrap();
        p.config.kafka.brokers = broker.bootstrap().to_owned();
        p
    }

    fn record(i: usize, state: BatchState) -> BatchRecord {
        BatchRecord {
            mode: None,
            batch_id: format!("batch_{i:024x}"),
            project: "acme/retail/support/ticket-triage".into(),
            format: BatchFormat::Openai,
            state,
            jobs: 10,
            source_sha256: "0".repeat(64),
            file_name: "requests.jsonl".into(),
            strategy: None,
            workload: None,
            submitted_at: Utc::now(),
            canceled_at: (state == BatchState::Canceled).then(Utc::now),
            refused: 0,
            submitter: None,
            worst_case_usd: None,
        }
    }

    #[test]
    fn says_it_caught_up_only_once_every_earlier_cancel_is_known() {
        let topic = switchyard_core::config::Topics::default().batches;
        let broker = EmbeddedBroker::start(&[(topic.as_str(), 1)]).unwrap();
        let p = pipeline(&broker);
        // An empty registry holds no cancel: caught up at once.
        let engine = Arc::new(Engine::new(&p, Vec::new()).unwrap());
        let (watch, caught_up) = follow(engine, &p.config);
        assert_eq!(caught_up.recv_timeout(Duration::from_secs(30)), Ok(0));
        watch.stop();

        // A long history, one batch in seven canceled, the last record a cancel.
        let producer: ThreadedProducer<DefaultProducerContext> =
            producer_config(&p.config.kafka).create().unwrap();
        let n = 20_000;
        let mut canceled = 0;
        for i in 0..n {
            let state = if i % 7 == 0 || i == n - 1 {
                canceled += 1;
                BatchState::Canceled
            } else {
                BatchState::Submitted
            };
            let r = record(i, state);
            let payload = serde_json::to_vec(&r).unwrap();
            let mut m = BaseRecord::to(&topic).key(&r.batch_id).payload(&payload);
            loop {
                match producer.send(m) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        m = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(60)).unwrap();
        let engine = Arc::new(Engine::new(&p, Vec::new()).unwrap());
        let (watch, caught_up) = follow(engine, &p.config);
        assert_eq!(
            caught_up.recv_timeout(Duration::from_secs(60)),
            Ok(canceled),
            "the signal came before every cancel was read"
        );
        watch.stop();
    }
}
