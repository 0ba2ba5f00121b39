//! Usage rows as ClickHouse `RowBinary`, the body of an
//! `INSERT … FORMAT RowBinary` into `usage_events`: [`ClickHouseRows`] appends
//! rows straight from borrowed text, each row's Kafka position (and the
//! assignment epoch it was read in) kept beside its bytes, so that rows
//! ClickHouse already holds, or rows of a partition given up since, can be left
//! out without encoding anything again.

use crate::row::{RowRef, RowSink, UsageRow};

/// The columns of `usage_events` that a `RowBinary` row carries, in its order
/// (`inserted_at` takes its default).
pub const CLICKHOUSE_COLUMNS: &str = "event_id, job_id, batch_id, attempt, ts, ts_ms, day, org, \
     business_unit, team, project, workload, strategy, category, complexity, chosen_model, \
     routing_reason, provider, model, deployment, outcome, input_tokens, output_tokens, \
     cached_input_tokens, cost_usd, baseline_cost_usd, latency_ms, kafka_topic, kafka_partition, \
     kafka_offset, cache_write_input_tokens, mode, live_cost_usd";

/// Where a `RowBinary` row came from, and where it ends in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowPosition {
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// UTC day (days since the epoch): re-delivered rows are looked up by it.
    pub day: u16,
    /// The partition's assignment epoch when the row was read (0 outside the sink).
    pub epoch: u64,
    /// End of the row's bytes in [`ClickHouseRows::bytes`].
    end: usize,
}

/// Rows encoded as ClickHouse `RowBinary`, in the order they were appended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClickHouseRows {
    bytes: Vec<u8>,
    rows: Vec<RowPosition>,
}

impl ClickHouseRows {
    /// An empty buffer sized for about `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(rows * 400),
            rows: Vec::with_capacity(rows),
        }
    }

    /// Encodes flat rows (tests, benchmarks), each at the epoch 0.
    pub fn from_rows(rows: &[UsageRow]) -> Self {
        let mut out = Self::with_capacity(rows.len());
        for r in rows {
            out.append(&RowRef::of_row(r), 0);
        }
        out
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Positions of the rows, in order.
    pub fn positions(&self) -> &[RowPosition] {
        &self.rows
    }

    /// The `RowBinary` body of every row.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes of row `i`.
    fn row_bytes(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.rows[i - 1].end };
        &self.bytes[start..self.rows[i].end]
    }

    /// Moves every row of `other` to the end of this buffer.
    pub fn extend(&mut self, other: ClickHouseRows) {
        if self.rows.is_empty() {
            *self = other;
            return;
        }
        let base = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.rows.extend(other.rows.into_iter().map(|mut p| {
            p.end += base;
            p
        }));
    }

    /// The rows for which `keep` (given each row's index) is true, in order.
    pub fn select(&self, mut keep: impl FnMut(usize, &RowPosition) -> bool) -> ClickHouseRows {
        let mut out = ClickHouseRows::default();
        for (i, p) in self.rows.iter().enumerate() {
            if keep(i, p) {
                out.bytes.extend_from_slice(self.row_bytes(i));
                out.rows.push(RowPosition {
                    end: out.bytes.len(),
                    ..*p
                });
            }
        }
        out
    }

    /// The rows in consecutive parts of at most `max` rows.
    pub fn split(&self, max: usize) -> Vec<ClickHouseRows> {
        let max = max.max(1);
        self.rows
            .chunks(max)
            .enumerate()
            .map(|(part, rows)| {
                let start = if part == 0 {
                    0
                } else {
                    self.rows[part * max - 1].end
                };
                let end = rows.last().map_or(start, |r| r.end);
                ClickHouseRows {
                    bytes: self.bytes[start..end].to_vec(),
                    rows: rows
                        .iter()
                        .map(|r| RowPosition {
                            end: r.end - start,
                            ..*r
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

/// The ClickHouse store's shape of decoded rows: each row encoded as it comes.
impl RowSink for ClickHouseRows {
    fn append(&mut self, r: &RowRef<'_>, epoch: u64) {
        let b = &mut self.bytes;
        put_str(b, r.event_id);
        put_str(b, r.job_id);
        put_str(b, r.batch_id);
        b.extend_from_slice(&r.attempt.to_le_bytes());
        b.extend_from_slice(&r.ts_secs().to_le_bytes());
        b.extend_from_slice(&r.ts_ms.to_le_bytes());
        let day = r.day();
        b.extend_from_slice(&day.to_le_bytes());
        for s in [
            r.org,
            r.business_unit,
            r.team,
            r.project,
            r.workload,
            r.strategy,
            r.category,
        ] {
            put_str(b, s);
        }
        b.extend_from_slice(&r.complexity.to_le_bytes());
        for s in [
            r.chosen_model,
            r.routing_reason,
            r.provider,
            r.model,
            r.deployment,
            r.outcome,
        ] {
            put_str(b, s);
        }
        for n in [r.input_tokens, r.output_tokens, r.cached_input_tokens] {
            b.extend_from_slice(&n.to_le_bytes());
        }
        b.extend_from_slice(&r.cost_usd.to_le_bytes());
        b.extend_from_slice(&r.baseline_cost_usd.to_le_bytes());
        b.extend_from_slice(&r.latency_ms.to_le_bytes());
        put_str(b, r.kafka_topic);
        b.extend_from_slice(&r.kafka_partition.to_le_bytes());
        b.extend_from_slice(&r.kafka_offset.to_le_bytes());
        b.extend_from_slice(&r.cache_write_input_tokens.to_le_bytes());
        put_str(b, r.mode);
        b.extend_from_slice(&r.live_cost_usd.to_le_bytes());
        self.rows.push(RowPosition {
            partition: r.kafka_partition,
            offset: r.kafka_offset,
            day,
            epoch,
            end: b.len(),
        });
    }
}

/// A `RowBinary` string: LEB128 length, then the bytes.
fn put_str(b: &mut Vec<u8>, s: &str) {
    let mut n = s.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            b.push(byte);
            break;
        }
        b.push(byte | 0x80);
    }
    b.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::row::tests::event;
    use crate::sinks::conformance::{ReadBack, row_sink_conformance};

    impl ReadBack for ClickHouseRows {
        fn empty(rows: usize) -> Self {
            ClickHouseRows::with_capacity(rows)
        }

        fn read_back(self, _topic: &str) -> Vec<UsageRow> {
            let mut at = RowBinary(self.bytes());
            self.positions()
                .iter()
                .map(|p| {
                    let row = at.row();
                    assert_eq!(
                        self.bytes().len() - at.0.len(),
                        p.end,
                        "row ends where noted"
                    );
                    assert_eq!(
                        (p.partition, p.offset, p.day),
                        (row.kafka_partition, row.kafka_offset, row.day)
                    );
                    row
                })
                .collect()
        }
    }

    /// Reads `RowBinary` of `usage_events` as ClickHouse would.
    struct RowBinary<'a>(&'a [u8]);

    impl RowBinary<'_> {
        fn take<const N: usize>(&mut self) -> [u8; N] {
            let (head, rest) = self.0.split_at(N);
            self.0 = rest;
            head.try_into().unwrap()
        }

        fn text(&mut self) -> String {
            let (mut len, mut shift) = (0usize, 0);
            loop {
                let [byte] = self.take::<1>();
                len |= usize::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    break;
                }
            }
            let (text, rest) = self.0.split_at(len);
            self.0 = rest;
            String::from_utf8(text.to_vec()).unwrap()
        }

        fn row(&mut self) -> UsageRow {
            UsageRow {
                event_id: self.text(),
                job_id: self.text(),
                batch_id: self.text(),
                attempt: u32::from_le_bytes(self.take()),
                ts: u32::from_le_bytes(self.take()),
                ts_ms: u64::from_le_bytes(self.take()),
                day: u16::from_le_bytes(self.take()),
                org: self.text(),
                business_unit: self.text(),
                team: self.text(),
                project: self.text(),
                workload: self.text(),
                strategy: self.text(),
                category: self.text(),
                complexity: f64::from_le_bytes(self.take()),
                chosen_model: self.text(),
                routing_reason: self.text(),
                provider: self.text(),
                model: self.text(),
                deployment: self.text(),
                outcome: self.text(),
                input_tokens: u64::from_le_bytes(self.take()),
                output_tokens: u64::from_le_bytes(self.take()),
                cached_input_tokens: u64::from_le_bytes(self.take()),
                cost_usd: f64::from_le_bytes(self.take()),
                baseline_cost_usd: f64::from_le_bytes(self.take()),
                latency_ms: u64::from_le_bytes(self.take()),
                kafka_topic: self.text(),
                kafka_partition: i32::from_le_bytes(self.take()),
                kafka_offset: i64::from_le_bytes(self.take()),
                cache_write_input_tokens: u64::from_le_bytes(self.take()),
                mode: self.text(),
                live_cost_usd: f64::from_le_bytes(self.take()),
            }
        }
    }

    row_sink_conformance!(ClickHouseRows);

    #[test]
    fn a_string_carries_its_length_as_leb128() {
        let mut b = Vec::new();
        put_str(&mut b, "ab");
        assert_eq!(b, [2, b'a', b'b']);
        let long = "x".repeat(300);
        let mut b = Vec::new();
        put_str(&mut b, &long);
        assert_eq!(&b[..2], &[0xAC, 0x02], "300 = 0b10_0101100");
        assert_eq!(b.len(), 302);
    }

    #[test]
    fn a_row_is_the_columns_of_usage_events_in_order() {
        let row =
            UsageRow::from_event(event("e1", "acme", "t", 86_400_000 + 1500, 0.25), "u", 3, 7);
        let rows = ClickHouseRows::from_rows(std::slice::from_ref(&row));
        let b = rows.bytes();
        let mut expected = Vec::new();
        for s in ["e1", "job-e1", ""] {
            put_str(&mut expected, s);
        }
        expected.extend_from_slice(&0u32.to_le_bytes());
        expected.extend_from_slice(&86_401u32.to_le_bytes());
        expected.extend_from_slice(&86_401_500u64.to_le_bytes());
        expected.extend_from_slice(&1u16.to_le_bytes());
        assert_eq!(&b[..expected.len()], &expected[..]);
        let mut tail = Vec::new();
        put_str(&mut tail, "u");
        tail.extend_from_slice(&3i32.to_le_bytes());
        tail.extend_from_slice(&7i64.to_le_bytes());
        tail.extend_from_slice(&row.cache_write_input_tokens.to_le_bytes());
        put_str(&mut tail, "live");
        tail.extend_from_slice(&0.25f64.to_le_bytes());
        assert_eq!(&b[b.len() - tail.len()..], &tail[..]);
        assert_eq!(
            CLICKHOUSE_COLUMNS.split(',').count(),
            33,
            "every usage_events column but inserted_at and failed_cost_usd (materialized)"
        );
    }

    #[test]
    fn selecting_rows_keeps_their_bytes_whole() {
        let rows: Vec<UsageRow> = (0..5)
            .map(|i| {
                UsageRow::from_event(event(&format!("e{i}"), "acme", "t", 1000, 0.1), "u", 0, i)
            })
            .collect();
        let all = ClickHouseRows::from_rows(&rows);
        let odd = all.select(|_, p| p.offset % 2 == 1);
        assert_eq!(
            odd,
            ClickHouseRows::from_rows(&[rows[1].clone(), rows[3].clone()])
        );
        let mut joined = ClickHouseRows::from_rows(&rows[..2]);
        joined.extend(ClickHouseRows::from_rows(&rows[2..]));
        assert_eq!(joined, all);
        let parts = all.split(2);
        assert_eq!(
            parts.iter().map(ClickHouseRows::len).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        let mut again = ClickHouseRows::default();
        for p in parts {
            again.extend(p);
        }
        assert_eq!(again, all);
    }
}
