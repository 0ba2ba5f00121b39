//! Where the jobs partitions end, as librdkafka last saw them: its statistics
//! (`statistics.interval.ms`, every [`STATS_INTERVAL`]) carry each fetched
//! partition's offsets, so the worker learns them without asking the broker.
//! The consumer lag is then each held partition's end minus its commit point
//! (`Partitions::lag`), measured in the consume loop's housekeeping.

use std::time::Duration;

/// How often librdkafka reports its statistics, and the lag is measured.
pub(super) const STATS_INTERVAL: Duration = Duration::from_secs(5);

/// One partition's offsets from the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PartitionEnds {
    /// The oldest offset still on the broker.
    pub low: i64,
    /// The offset after the last message a consumer may read (the last stable
    /// offset when librdkafka reports one, else the high watermark).
    pub end: i64,
}

/// The partitions of `topic` in a librdkafka statistics document, with their
/// offsets (those librdkafka does not know yet are left out).
pub(super) fn ends_from_stats(json: &[u8], topic: &str) -> Vec<(i32, PartitionEnds)> {
    let Ok(stats) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let Some(partitions) = stats["topics"][topic]["partitions"].as_object() else {
        return Vec::new();
    };
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
            Some((partition, PartitionEnds { low, end }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ends_of_the_topics_partitions_are_read() {
        let json = br#"{"name":"c#consumer-1","topics":{
            "switchyard.jobs":{"topic":"switchyard.jobs","partitions":{
                "0":{"partition":0,"lo_offset":0,"hi_offset":120,"ls_offset":118},
                "1":{"partition":1,"lo_offset":7,"hi_offset":40,"ls_offset":-1001},
                "2":{"partition":2,"lo_offset":-1001,"hi_offset":-1001,"ls_offset":-1001},
                "-1":{"partition":-1,"lo_offset":-1001,"hi_offset":-1001,"ls_offset":-1001}}},
            "other":{"topic":"other","partitions":{"0":{"partition":0,"hi_offset":5,"ls_offset":5}}}}}"#;
        let mut ends = ends_from_stats(json, "switchyard.jobs");
        ends.sort_by_key(|(p, _)| *p);
        assert_eq!(
            ends,
            [
                (0, PartitionEnds { low: 0, end: 118 }),
                (1, PartitionEnds { low: 7, end: 40 }),
            ]
        );
        assert!(ends_from_stats(b"not json", "switchyard.jobs").is_empty());
        assert!(ends_from_stats(br#"{"topics":{}}"#, "switchyard.jobs").is_empty());
    }
}
