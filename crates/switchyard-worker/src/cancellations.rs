//! Batch cancellations: a reader of the batch registry (from its beginning, then
//! following) that tells the engine which batches are canceled, so their jobs not
//! yet started end as `canceled`. It runs on its own thread and stops with the worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// The running reader; stop it with [`CancellationWatch::stop`].
pub struct CancellationWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl CancellationWatch {
    /// Starts following the batches topic.
    pub fn start(engine: Arc<Engine>, config: &PipelineConfig) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
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
                        if !warned {
                            let error = found.err().map(|e| e.to_string()).unwrap_or_else(|| "no partitions".into());
                            warn!(topic = %topic, error = %error, "Cannot see the batch registry topic yet; batch cancellations reach this worker once it can (retrying every 2 s).");
                            warned = true;
                        }
                        std::thread::sleep(Duration::from_secs(2));
                    }
                }
                let mut tpl = TopicPartitionList::new();
                for p in partitions {
                    let _ = tpl.add_partition_offset(&topic, p, Offset::Beginning);
                }
                if let Err(e) = consumer.assign(&tpl) {
                    warn!(error = %e, "Cannot follow the batch registry.");
                    return;
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
                    let Some(payload) = m.payload() else { continue };
                    if let Ok(record) = serde_json::from_slice::<BatchRecord>(payload)
                        && record.state == BatchState::Canceled
                    {
                        info!(batch_id = %record.batch_id, "Batch canceled: its jobs not yet started will end as canceled.");
                        engine.cancel_batch(&record.batch_id);
                    }
                }
            })
            .ok();
        Self { stop, thread }
    }

    /// Stops the reader and waits for its thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
