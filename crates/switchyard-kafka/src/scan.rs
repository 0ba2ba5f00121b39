//! Reading a topic from a point in time up to its end as of now, without a
//! consumer group: rebuilding the budget ledger from usage events, following a
//! batch's results, reading the batch registry.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use switchyard_core::config::KafkaConfig;

use crate::client::reader_config;

/// One message seen by a scan.
pub struct Scanned<'a> {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, if any.
    pub key: Option<&'a [u8]>,
    /// Value (empty for tombstones).
    pub payload: &'a [u8],
    /// Broker timestamp, ms since the epoch.
    pub timestamp_ms: Option<i64>,
}

/// Where a scan starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanFrom {
    /// The oldest retained message.
    Beginning,
    /// The first message at or after this time (ms since the epoch).
    Time(i64),
}

/// Positions reached by a scan, to resume from.
pub type Positions = HashMap<i32, i64>;

/// Reads `topic` from `from` (or from `resume` positions) up to the end offsets it
/// has when the scan starts, calling `visit` for each message. Returns the
/// positions reached. Blocking: run it on a blocking thread.
pub fn scan_to_end(
    kafka: &KafkaConfig,
    topic: &str,
    from: ScanFrom,
    resume: &Positions,
    timeout: Duration,
    mut visit: impl FnMut(Scanned<'_>),
) -> Result<Positions, KafkaError> {
    let consumer: BaseConsumer = reader_config(kafka).create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for &p in &partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        ends.insert(p, high);
    }
    let mut start = TopicPartitionList::new();
    for &p in &partitions {
        let offset = match (from, resume.get(&p)) {
            (_, Some(o)) => Offset::Offset(*o),
            (ScanFrom::Time(ms), None) => Offset::Offset(ms),
            _ => Offset::Beginning,
        };
        start.add_partition_offset(topic, p, offset)?;
    }
    // Messages older than this are skipped when the broker could not seek by time.
    let mut not_before: Option<i64> = None;
    if let ScanFrom::Time(ms) = from {
        let fresh: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !resume.contains_key(p))
            .collect();
        let (offsets, exact) = offsets_at_time(&consumer, topic, &fresh, ms)?;
        for (p, o) in offsets {
            start.set_partition_offset(topic, p, o)?;
        }
        if !exact {
            not_before = Some(ms);
        }
    }
    let mut positions: Positions = HashMap::new();
    let mut pending: Vec<i32> = Vec::new();
    for e in start.elements() {
        let end = ends.get(&e.partition()).copied().unwrap_or(0);
        let begin = match e.offset() {
            Offset::Offset(o) => o,
            Offset::End => end,
            _ => 0,
        };
        positions.insert(e.partition(), begin.min(end));
        if begin < end {
            pending.push(e.partition());
        }
    }
    if pending.is_empty() {
        return Ok(positions);
    }
    consumer.assign(&start)?;
    let deadline = Instant::now() + timeout;
    while !pending.is_empty() {
        if Instant::now() > deadline {
            return Err(KafkaError::Global(
                rdkafka::types::RDKafkaErrorCode::OperationTimedOut,
            ));
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = match result {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                if positions.get(&p).copied().unwrap_or(0) >= ends.get(&p).copied().unwrap_or(0) {
                    pending.retain(|x| *x != p);
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let p = m.partition();
        let end = ends.get(&p).copied().unwrap_or(0);
        let too_old =
            not_before.is_some_and(|ms| m.timestamp().to_millis().is_some_and(|t| t < ms));
        if m.offset() < end && !too_old {
            visit(Scanned {
                partition: p,
                offset: m.offset(),
                key: m.key(),
                payload: m.payload().unwrap_or(&[]),
                timestamp_ms: m.timestamp().to_millis(),
            });
        }
        positions.insert(p, m.offset() + 1);
        if m.offset() + 1 >= end {
            pending.retain(|x| *x != p);
        }
    }
    Ok(positions)
}

/// Start offsets of `partitions` for messages at or after `ms` (ms since the
/// epoch), and whether they are exact. A broker that cannot look offsets up by
/// time (librdkafka's mock cluster answers "end" for every timestamp) gets the
/// beginning instead, and the caller must skip older messages itself.
pub fn offsets_at_time(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    ms: i64,
) -> Result<(Vec<(i32, Offset)>, bool), KafkaError> {
    if partitions.is_empty() {
        return Ok((Vec::new(), true));
    }
    let lookup = |at: i64| -> Result<Vec<(i32, Offset)>, KafkaError> {
        let mut tpl = TopicPartitionList::new();
        for &p in partitions {
            tpl.add_partition_offset(topic, p, Offset::Offset(at))?;
        }
        let resolved = consumer.offsets_for_times(tpl, Duration::from_secs(10))?;
        Ok(resolved
            .elements()
            .iter()
            .map(|e| (e.partition(), e.offset()))
            .collect())
    };
    // Probe: on a non-empty partition, time 0 must resolve to an offset.
    let mut probe_partition = None;
    for &p in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if high > low {
            probe_partition = Some(p);
            break;
        }
    }
    if let Some(p) = probe_partition {
        let supported = lookup(0)?
            .iter()
            .any(|(q, o)| *q == p && matches!(o, Offset::Offset(_)));
        if !supported {
            return Ok((
                partitions.iter().map(|&p| (p, Offset::Beginning)).collect(),
                false,
            ));
        }
    }
    Ok((lookup(ms)?, true))
}

/// How far consumer group `group` is behind on `topic`: per partition, the end
/// offset minus the group's committed offset (the whole partition when the group
/// has committed nothing there), summed. Blocking.
pub fn group_lag(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<i64, KafkaError> {
    let mut config = reader_config(kafka);
    config.set("group.id", group);
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    let mut lag = 0;
    for e in committed.elements() {
        let (low, high) = consumer.fetch_watermarks(topic, e.partition(), timeout)?;
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => low,
        };
        lag += (high - at).max(0);
    }
    Ok(lag)
}
