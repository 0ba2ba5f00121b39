//! Reading a batch's results from the results topic: from the batch's
//! `submitted_at` (minus clock skew, looked up by time) to the topic's end, then
//! on from where the last read stopped. Results of other batches are skipped by
//! their key (the job id) before anything is decoded.

use std::time::Duration;

use switchyard_codec::Codec;
use switchyard_core::batch::BatchRecord;
use switchyard_core::config::KafkaConfig;
use switchyard_core::result::JobResult;
use switchyard_kafka::{Positions, ScanFrom, scan_to_end};

use crate::submit::CLOCK_SKEW;
use crate::{Error, Result, ids};

/// Longest one read to the end may take.
const SCAN_TIMEOUT: Duration = Duration::from_secs(3600);

/// A reader of one batch's results that remembers where it stopped.
pub struct ResultFollower {
    kafka: KafkaConfig,
    codec: Codec,
    batch_id: String,
    jobs: u64,
    from_ms: i64,
    positions: Positions,
    /// Copies on the topic that could not be decoded.
    pub undecodable: u64,
}

impl ResultFollower {
    /// Follows the results of `record`.
    pub fn new(kafka: &KafkaConfig, record: &BatchRecord) -> Self {
        let mut kafka = kafka.clone();
        // Bound librdkafka's prefetch: memory must not depend on the topic's size.
        kafka
            .client
            .entry("queued.max.messages.kbytes".into())
            .or_insert_with(|| "16384".into());
        Self {
            codec: Codec::for_topic(&kafka.topics.results),
            kafka,
            batch_id: record.batch_id.clone(),
            jobs: record.jobs,
            from_ms: record.submitted_at.timestamp_millis() - CLOCK_SKEW.as_millis() as i64,
            positions: Positions::new(),
            undecodable: 0,
        }
    }

    /// Reads what arrived since the last call, up to the topic's end now; calls
    /// `visit` with each result of the batch and its job's ordinal.
    pub fn read_new(&mut self, mut visit: impl FnMut(u64, JobResult)) -> Result<()> {
        let topic = self.kafka.topics.results.name.clone();
        let mut undecodable = 0u64;
        let (batch_id, jobs, codec) = (&self.batch_id, self.jobs, &self.codec);
        // Resume after the last message *visited* in each partition: the scan
        // may also read past the end offsets it fixed at its start without
        // visiting those messages, so its own positions are not used.
        let positions = &mut self.positions;
        let resume = positions.clone();
        scan_to_end(
            &self.kafka,
            &topic,
            ScanFrom::Time(self.from_ms),
            &resume,
            SCAN_TIMEOUT,
            |m| {
                positions.insert(m.partition, m.offset + 1);
                let Some(ordinal) = m.key.and_then(|k| ids::ordinal_of(batch_id, k)) else {
                    return;
                };
                if ordinal >= jobs {
                    return;
                }
                match codec.decode::<JobResult>(m.payload) {
                    Ok(r) if r.batch_id.as_deref() == Some(batch_id.as_str()) => visit(ordinal, r),
                    Ok(_) => {}
                    Err(e) => {
                        undecodable += 1;
                        tracing::warn!(partition = m.partition, offset = m.offset, error = %e, "Result that cannot be decoded skipped.");
                    }
                }
            },
        )
        .map_err(Error::kafka("results topic scan"))?;
        self.undecodable += undecodable;
        Ok(())
    }
}
