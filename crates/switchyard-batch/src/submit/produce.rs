//! The second pass of `submit`: which of a batch's jobs an earlier, interrupted
//! run already put on the jobs topic, and producing the others, one job per
//! accepted line, while checking that the file is the one validated.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use switchyard_codec::Codec;
use switchyard_core::batch::BatchRecord;
use switchyard_core::config::KafkaConfig;
use switchyard_kafka::{ScanFrom, scan_to_end};

use super::CLOCK_SKEW;
use super::claim::Lease;
use crate::bits::BitSet;
use crate::formats::{self, LineSettings, META_LINE};
use crate::lines::{Line, LineReader};
use crate::progress::{Progress, Unit};
use crate::sender::Sender;
use crate::validate::{Validation, max_line_bytes};
use crate::{Error, Result, ids};

/// Longest wait for the last acknowledgements.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(300);

/// Ordinals of `record`'s jobs already on the jobs topic.
pub(super) fn jobs_on_topic(
    kafka: &KafkaConfig,
    record: &BatchRecord,
    progress: &dyn Progress,
    lease: &Lease,
) -> Result<BitSet> {
    let mut seen = BitSet::with_capacity(record.jobs);
    let from = record.submitted_at.timestamp_millis() - CLOCK_SKEW.as_millis() as i64;
    progress.start("checking", Unit::Items, None);
    let mut n = 0u64;
    scan_to_end(
        kafka,
        &kafka.topics.jobs.name,
        ScanFrom::Time(from),
        &Default::default(),
        Duration::from_secs(3600),
        |m| {
            if let Some(o) = m.key.and_then(|k| ids::ordinal_of(&record.batch_id, k))
                && o < record.jobs
            {
                seen.insert(o);
            }
            n += 1;
            if n.is_multiple_of(4096) {
                progress.advance(n);
            }
        },
    )
    .map_err(Error::kafka("jobs topic scan"))?;
    progress.finish();
    lease.check()?;
    Ok(seen)
}

/// The second pass: produce every accepted line not yet on the topic, each
/// stamped with the batch's worst case when the record carries one.
#[allow(clippy::too_many_arguments)]
pub(super) fn produce(
    sender: &mut Sender,
    kafka: &KafkaConfig,
    path: &Path,
    settings: &LineSettings,
    validation: &Validation,
    record: &BatchRecord,
    already: &BitSet,
    progress: &dyn Progress,
    lease: &Lease,
) -> Result<u64> {
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let batch_id = &record.batch_id;
    let file = File::open(path).map_err(read_err)?;
    let topic = &kafka.topics.jobs;
    let codec = Codec::for_topic(topic);
    let mut reader = LineReader::new(file, max_line_bytes(topic));
    let mut ordinal = 0u64;
    let mut produced = 0u64;
    progress.start("submitting", Unit::Items, Some(validation.accepted));
    while let Some(line) = reader.next_line().map_err(read_err)? {
        let Line::Text { number, bytes } = line else {
            continue;
        };
        if validation.refused.contains(number) || bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let this = ordinal;
        ordinal += 1;
        if already.contains(this) {
            continue;
        }
        let mut job = formats::parse_line(validation.format, bytes, settings)
            .map_err(|_| Error::FileChanged {
                path: path.to_owned(),
            })?
            .job;
        job.job_id = ids::job_id(batch_id, this);
        job.batch_id = Some(batch_id.to_owned());
        job.metadata
            .insert(META_LINE.to_owned(), number.to_string());
        if let Some(usd) = record.worst_case_usd {
            job.stamp_batch_worst_case(usd);
        }
        let payload = codec
            .encode(&job)
            .map_err(|e| Error::Encode(e.to_string()))?;
        sender.send_job(&topic.name, job.job_id.as_bytes(), &payload)?;
        produced += 1;
        if ordinal.is_multiple_of(1024) {
            progress.advance(ordinal);
            lease.check()?;
        }
    }
    progress.advance(ordinal);
    let sha = reader.finish();
    if sha != validation.sha256 || ordinal != validation.accepted {
        return Err(Error::FileChanged {
            path: path.to_owned(),
        });
    }
    sender.flush(FLUSH_TIMEOUT)?;
    progress.finish();
    Ok(produced)
}
