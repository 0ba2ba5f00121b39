//! Where a topic's partitions stand, from librdkafka's statistics
//! (`statistics.interval.ms`): each fetched partition's oldest and end offsets
//! and the consumer's committed offset, so that a consumer measures its lag
//! without a request to the broker.

use std::time::Duration;

/// How often Switchyard's consumers ask librdkafka for its statistics (unless
/// `kafka.client` sets `statistics.interval.ms`), and so how fresh a lag is.
pub const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// The librdkafka setting for [`STATS_INTERVAL`].
pub const STATS_INTERVAL_KEY: &str = "statistics.interval.ms";

/// One partition's offsets from the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The oldest offset still on the broker (0 when not known yet).
    pub low: i64,
    /// The offset after the last message a consumer may read (the last stable
    /// offset when librdkafka reports one, else the high watermark).
    pub end: i64,
    /// The consumer group's committed offset, as this client knows it.
    pub committed: Option<i64>,
}

impl PartitionOffsets {
    /// Messages between the committed offset (or, with none, the oldest
    /// offset) and the end.
    pub fn lag(&self) -> i64 {
        (self.end - self.committed.unwrap_or(self.low)).max(0)
    }
}

/// The partitions of `topic` in a librdkafka statistics document whose end is
/// known, with their offsets (anything unreadable gives nothing).
pub fn partition_offsets(json: &[u8], topic: &str) -> Vec<(i32, PartitionOffsets)> {
    let Ok(stats) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let Some(partitions) = stats["topics"][topic]["partitions"].as_object() else {
        return Vec::new();
    };
    // librdkafka writes -1001 for an offset it does not know.
    let offset = |p: &serde_json::Value, key: &str| p[key].as_i64().filter(|o| *o >= 0);
    partitions
        .values()
        .filter_map(|p| {
            let partition = i32::try_from(p["partition"].as_i64()?).ok()?;
            if partition < 0 {
                // librdkafka's internal "unassigned" partition.
                return None;
            }
            let end = offset(p, "ls_offset").or_else(|| offset(p, "hi_offset"))?;
            let low = offset(p, "lo_offset").unwrap_or(0);
            let committed = offset(p, "committed_offset");
            Some((
                partition,
                PartitionOffsets {
                    low,
                    end,
                    committed,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offsets_of_the_topics_partitions_are_read() {
        let json = br#"{"name":"c#consumer-1","topics":{
            "switchyard.jobs":{"topic":"switchyard.jobs","partitions":{
                "0":{"partition":0,"lo_offset":0,"hi_offset":120,"ls_offset":118,"committed_offset":100},
                "1":{"partition":1,"lo_offset":7,"hi_offset":40,"ls_offset":-1001,"committed_offset":-1001},
                "2":{"partition":2,"lo_offset":-1001,"hi_offset":-1001,"ls_offset":-1001},
                "-1":{"partition":-1,"lo_offset":-1001,"hi_offset":-1001,"ls_offset":-1001}}},
            "other":{"topic":"other","partitions":{"0":{"partition":0,"hi_offset":5,"ls_offset":5}}}}}"#;
        let mut offsets = partition_offsets(json, "switchyard.jobs");
        offsets.sort_by_key(|(p, _)| *p);
        let first = PartitionOffsets {
            low: 0,
            end: 118,
            committed: Some(100),
        };
        let second = PartitionOffsets {
            low: 7,
            end: 40,
            committed: None,
        };
        assert_eq!(offsets, [(0, first), (1, second)]);
        assert_eq!((first.lag(), second.lag()), (18, 33));
        assert!(partition_offsets(b"not json", "switchyard.jobs").is_empty());
        assert!(partition_offsets(br#"{"topics":{}}"#, "switchyard.jobs").is_empty());
    }
}
