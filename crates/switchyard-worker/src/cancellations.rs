//! Batch cancellations: a reader of the batch registry (from its beginning, then
//! following) that tells the engine which batches are canceled, so their jobs not
//! yet started end as `canceled`. It runs on its own thread and stops with the
//! worker. It says when it has read the registry up to where it ended at start,
//! so that the worker takes no job before it knows every cancel made until then.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use switchyard_core::batch::{BatchRecord, BatchState};
use switchyard_core::config::PipelineConfig;
use switchyard_kafka::client::reader_config;
use tracing::{info, warn};

use crate::Engine;
use crate::catch_up::CatchUp;

/// The running reader; stop it with [`CancellationWatch::stop`].
pub struct CancellationWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CancellationWatch {
    /// Starts following the batches topic. The receiver yields the number of
    /// canceled batches once the registry has been read to the end offsets it had
    /// when the reader started (at once when the topic is empty).
    pub fn start(engine: Arc<Engine>, config: &PipelineConfig) -> (Self, mpsc::Receiver<usize>) {
        let stop = Arc::new(AtomicBool::new(false));
        let (caught_up, caught_up_rx) = mpsc::channel();
        let flag = stop.clone();
        let kafka = config.kafka.clone();
        let topic = config.kafka.topics.batches.clone();
        let thread = std::thread::Builder::new()
            .name("batch-cancellations".into())
            .spawn(move || {
                let consumer: BaseConsumer = match reader_config(&kafka).set("enable.partition.eof", "false").create() {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(error = %e, "Cannot read the batch registry; batch cancellations will not reach this worker.");
                        return;
                    }
                };
                // Until the registry's partitions are known, no cancel can be seen:
                // keep asking (and say so) rather than follow nothing.
                let mut partitions = Vec::new();
                let mut warned = false;
                let mut told = false;
                while partitions.is_empty() && !flag.load(Ordering::Relaxed) {
                    let found = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10));
                    if let Ok(m) = &found {
                        partitions = m
                            .topics()
                            .iter()
                            .filter(|t| t.name() == topic)
                            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                            .collect();
                    }
                    if partitions.is_empty() {
                        // The cluster answered, without the topic: no batch was
                        // ever registered, so none is canceled yet.
                        if found.is_ok() && !told {
                            let _ = caught_up.send(0);
                            told = true;
                        }
                        if !warned {
                            let error = found.err().map(|e| e.to_string()).unwrap_or_else(|| "no partitions".into());
                            warn!(topic = %topic, error = %error, "Cannot see the batch registry topic yet; batch cancellations reach this worker once it can (retrying every 2 s).");
                            warned = true;
                        }
                        std::thread::sleep(Duration::from_secs(2));
                    }
                }
                let mut tpl = TopicPartitionList::new();
                // Where the registry ended at start, per partition with records.
                let mut pending: HashMap<i32, i64> = HashMap::new();
                for p in partitions {
                    let _ = tpl.add_partition_offset(&topic, p, Offset::Beginning);
                    match consumer.fetch_watermarks(&topic, p, Duration::from_secs(10)) {
                        Ok((low, high)) if high > low => {
                            pending.insert(p, high);
                        }
                        Ok(_) => {}
                        Err(e) => warn!(partition = p, error = %e, "Cannot read where the batch registry ends; reading it without waiting for it."),
                    }
                }
                if let Err(e) = consumer.assign(&tpl) {
                    warn!(error = %e, "Cannot follow the batch registry.");
                    return;
                }
                let mut canceled = 0usize;
                let mut pending = CatchUp::new(pending);
                if pending.done() {
                    let _ = caught_up.send(0);
                }
                while !flag.load(Ordering::Relaxed) {
                    let m = match consumer.poll(Duration::from_millis(250)) {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            warn!(error = %e, "Error reading the batch registry; continuing.");
                            continue;
                        }
                        None => continue,
                    };
                    if let Some(payload) = m.payload()
                        && let Ok(record) = serde_json::from_slice::<BatchRecord>(payload)
                        && record.state == BatchState::Canceled
                    {
                        info!(batch_id = %record.batch_id, "Batch canceled: its jobs not yet started will end as canceled.");
                        engine.cancel_batch(&record.batch_id);
                        canceled += 1;
                    }
                    if pending.seen(m.partition(), m.offset()) {
                        info!(canceled, "Batch registry read; following it.");
                        let _ = caught_up.send(canceled);
                    }
                }
            })
            .ok();
        (Self { stop, thread }, caught_up_rx)
    }

    /// Stops the reader and waits for its thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
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
        }
    }

    #[test]
    fn says_it_caught_up_only_once_every_earlier_cancel_is_known() {
        let topic = switchyard_core::config::Topics::default().batches;
        let broker = EmbeddedBroker::start(&[(topic.as_str(), 1)]).unwrap();
        let p = pipeline(&broker);
        // An empty registry holds no cancel: caught up at once.
        let engine = Arc::new(Engine::new(&p, Vec::new()).unwrap());
        let (watch, caught_up) = CancellationWatch::start(engine, &p.config);
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
        let (watch, caught_up) = CancellationWatch::start(engine, &p.config);
        assert_eq!(
            caught_up.recv_timeout(Duration::from_secs(60)),
            Ok(canceled),
            "the signal came before every cancel was read"
        );
        watch.stop();
    }
}
