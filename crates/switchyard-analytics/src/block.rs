//! Usage rows in the two shapes the stores take, built straight from borrowed
//! text without an owned row in between: [`BlockBuilder`] appends rows of one
//! day and org to Arrow column builders (a Parquet record batch when finished),
//! and [`ClickHouseRows`] appends the same rows as ClickHouse `RowBinary` (the
//! body of an `INSERT … FORMAT RowBinary`), each row's Kafka position beside it
//! so that rows ClickHouse already holds can be left out.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    StringDictionaryBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::Int32Type;

use crate::row::UsageRow;
use crate::sinks::parquet::schema;

/// One billed attempt, borrowed from whatever it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowRef<'a> {
    /// Unique per billed attempt.
    pub event_id: &'a str,
    /// The job the attempt served.
    pub job_id: &'a str,
    /// The job's batch, empty when none.
    pub batch_id: &'a str,
    /// Position of the attempt in the job.
    pub attempt: u32,
    /// When the attempt finished, milliseconds since the epoch (never negative).
    pub ts_ms: u64,
    /// Org path, level 1.
    pub org: &'a str,
    /// Org path, level 2.
    pub business_unit: &'a str,
    /// Org path, level 3.
    pub team: &'a str,
    /// Org path, level 4.
    pub project: &'a str,
    /// Workload name, empty when none.
    pub workload: &'a str,
    /// Strategy wire name.
    pub strategy: &'a str,
    /// Task category wire name.
    pub category: &'a str,
    /// Estimated complexity.
    pub complexity: f64,
    /// Model the routing ranked first.
    pub chosen_model: &'a str,
    /// The routing decision's reason.
    pub routing_reason: &'a str,
    /// Provider name.
    pub provider: &'a str,
    /// Catalog model name.
    pub model: &'a str,
    /// Deployment name.
    pub deployment: &'a str,
    /// Outcome wire name.
    pub outcome: &'a str,
    /// Prompt tokens at the full price.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Prompt tokens served from cache.
    pub cached_input_tokens: u64,
    /// Cost at list price, USD.
    pub cost_usd: f64,
    /// Cost on the baseline model, USD.
    pub baseline_cost_usd: f64,
    /// Wall time of the attempt.
    pub latency_ms: u64,
}

const MS_PER_DAY: u64 = 86_400_000;

impl RowRef<'_> {
    /// UTC day, days since the epoch.
    pub fn day(&self) -> u16 {
        day_of(self.ts_ms)
    }
}

impl<'a> RowRef<'a> {
    /// Borrows a flat row.
    pub fn of_row(r: &'a UsageRow) -> Self {
        Self {
            event_id: &r.event_id,
            job_id: &r.job_id,
            batch_id: &r.batch_id,
            attempt: r.attempt,
            ts_ms: r.ts_ms,
            org: &r.org,
            business_unit: &r.business_unit,
            team: &r.team,
            project: &r.project,
            workload: &r.workload,
            strategy: &r.strategy,
            category: &r.category,
            complexity: r.complexity,
            chosen_model: &r.chosen_model,
            routing_reason: &r.routing_reason,
            provider: &r.provider,
            model: &r.model,
            deployment: &r.deployment,
            outcome: &r.outcome,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_input_tokens: r.cached_input_tokens,
            cost_usd: r.cost_usd,
            baseline_cost_usd: r.baseline_cost_usd,
            latency_ms: r.latency_ms,
        }
    }
}

/// UTC day of a millisecond timestamp, days since the epoch (saturating).
pub fn day_of(ts_ms: u64) -> u16 {
    u16::try_from(ts_ms / MS_PER_DAY).unwrap_or(u16::MAX)
}

/// Arrow column builders for rows of one day and org.
pub struct BlockBuilder {
    event_id: StringBuilder,
    job_id: StringBuilder,
    batch_id: StringBuilder,
    attempt: UInt32Builder,
    ts: TimestampMillisecondBuilder,
    org: StringDictionaryBuilder<Int32Type>,
    business_unit: StringBuilder,
    team: StringBuilder,
    project: StringBuilder,
    workload: StringBuilder,
    strategy: StringBuilder,
    category: StringBuilder,
    complexity: Float64Builder,
    chosen_model: StringBuilder,
    routing_reason: StringBuilder,
    provider: StringBuilder,
    model: StringBuilder,
    deployment: StringBuilder,
    outcome: StringBuilder,
    input_tokens: UInt64Builder,
    output_tokens: UInt64Builder,
    cached_input_tokens: UInt64Builder,
    cost_usd: Float64Builder,
    baseline_cost_usd: Float64Builder,
    latency_ms: UInt64Builder,
    kafka_partition: Int32Builder,
    kafka_offset: Int64Builder,
    len: usize,
}

impl BlockBuilder {
    /// Builders sized for about `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        let text = |bytes_per_row: usize| StringBuilder::with_capacity(rows, rows * bytes_per_row);
        Self {
            event_id: text(36),
            job_id: text(24),
            batch_id: text(16),
            attempt: UInt32Builder::with_capacity(rows),
            ts: TimestampMillisecondBuilder::with_capacity(rows),
            org: StringDictionaryBuilder::new(),
            business_unit: text(12),
            team: text(12),
            project: text(16),
            workload: text(16),
            strategy: text(8),
            category: text(10),
            complexity: Float64Builder::with_capacity(rows),
            chosen_model: text(16),
            routing_reason: text(48),
            provider: text(8),
            model: text(16),
            deployment: text(24),
            outcome: text(9),
            input_tokens: UInt64Builder::with_capacity(rows),
            output_tokens: UInt64Builder::with_capacity(rows),
            cached_input_tokens: UInt64Builder::with_capacity(rows),
            cost_usd: Float64Builder::with_capacity(rows),
            baseline_cost_usd: Float64Builder::with_capacity(rows),
            latency_ms: UInt64Builder::with_capacity(rows),
            kafka_partition: Int32Builder::with_capacity(rows),
            kafka_offset: Int64Builder::with_capacity(rows),
            len: 0,
        }
    }

    /// Appends a row read at `partition`/`offset`.
    pub fn append(&mut self, r: &RowRef<'_>, partition: i32, offset: i64) {
        self.event_id.append_value(r.event_id);
        self.job_id.append_value(r.job_id);
        if r.batch_id.is_empty() {
            self.batch_id.append_null();
        } else {
            self.batch_id.append_value(r.batch_id);
        }
        self.attempt.append_value(r.attempt);
        self.ts
            .append_value(i64::try_from(r.ts_ms).unwrap_or(i64::MAX));
        // Appending to a dictionary fails only when its keys overflow i32,
        // which a block of one org cannot reach.
        let _ = self.org.append(r.org);
        self.business_unit.append_value(r.business_unit);
        self.team.append_value(r.team);
        self.project.append_value(r.project);
        self.workload.append_value(r.workload);
        self.strategy.append_value(r.strategy);
        self.category.append_value(r.category);
        self.complexity.append_value(r.complexity);
        self.chosen_model.append_value(r.chosen_model);
        self.routing_reason.append_value(r.routing_reason);
        self.provider.append_value(r.provider);
        self.model.append_value(r.model);
        self.deployment.append_value(r.deployment);
        self.outcome.append_value(r.outcome);
        self.input_tokens.append_value(r.input_tokens);
        self.output_tokens.append_value(r.output_tokens);
        self.cached_input_tokens.append_value(r.cached_input_tokens);
        self.cost_usd.append_value(r.cost_usd);
        self.baseline_cost_usd.append_value(r.baseline_cost_usd);
        self.latency_ms.append_value(r.latency_ms);
        self.kafka_partition.append_value(partition);
        self.kafka_offset.append_value(offset);
        self.len += 1;
    }

    /// Rows appended.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The rows as a record batch of the Parquet schema; the builders are empty after.
    pub fn finish(&mut self) -> Result<RecordBatch, arrow::error::ArrowError> {
        self.len = 0;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.event_id.finish()),
            Arc::new(self.job_id.finish()),
            Arc::new(self.batch_id.finish()),
            Arc::new(self.attempt.finish()),
            Arc::new(self.ts.finish().with_timezone("UTC")),
            Arc::new(self.org.finish()),
            Arc::new(self.business_unit.finish()),
            Arc::new(self.team.finish()),
            Arc::new(self.project.finish()),
            Arc::new(self.workload.finish()),
            Arc::new(self.strategy.finish()),
            Arc::new(self.category.finish()),
            Arc::new(self.complexity.finish()),
            Arc::new(self.chosen_model.finish()),
            Arc::new(self.routing_reason.finish()),
            Arc::new(self.provider.finish()),
            Arc::new(self.model.finish()),
            Arc::new(self.deployment.finish()),
            Arc::new(self.outcome.finish()),
            Arc::new(self.input_tokens.finish()),
            Arc::new(self.output_tokens.finish()),
            Arc::new(self.cached_input_tokens.finish()),
            Arc::new(self.cost_usd.finish()),
            Arc::new(self.baseline_cost_usd.finish()),
            Arc::new(self.latency_ms.finish()),
            Arc::new(self.kafka_partition.finish()),
            Arc::new(self.kafka_offset.finish()),
        ];
        RecordBatch::try_new(schema::schema(), columns)
    }
}

/// The columns of `usage_events` that a `RowBinary` row carries, in its order
/// (`inserted_at` takes its default).
pub const CLICKHOUSE_COLUMNS: &str = "event_id, job_id, batch_id, attempt, ts, ts_ms, day, org, \
     business_unit, team, project, workload, strategy, category, complexity, chosen_model, \
     routing_reason, provider, model, deployment, outcome, input_tokens, output_tokens, \
     cached_input_tokens, cost_usd, baseline_cost_usd, latency_ms, kafka_topic, kafka_partition, \
     kafka_offset";

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

    /// Encodes flat rows (tests, benchmarks).
    pub fn from_rows(rows: &[UsageRow], topic: &str) -> Self {
        let mut out = Self::with_capacity(rows.len());
        for r in rows {
            out.append(
                &RowRef::of_row(r),
                topic,
                r.kafka_partition,
                r.kafka_offset,
                0,
            );
        }
        out
    }

    /// Appends a row read at `partition`/`offset` of `topic` in assignment `epoch`.
    pub fn append(&mut self, r: &RowRef<'_>, topic: &str, partition: i32, offset: i64, epoch: u64) {
        let b = &mut self.bytes;
        put_str(b, r.event_id);
        put_str(b, r.job_id);
        put_str(b, r.batch_id);
        b.extend_from_slice(&r.attempt.to_le_bytes());
        let secs = u32::try_from(r.ts_ms / 1000).unwrap_or(u32::MAX);
        b.extend_from_slice(&secs.to_le_bytes());
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
        put_str(b, topic);
        b.extend_from_slice(&partition.to_le_bytes());
        b.extend_from_slice(&offset.to_le_bytes());
        self.rows.push(RowPosition {
            partition,
            offset,
            day,
            epoch,
            end: b.len(),
        });
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
        let rows = ClickHouseRows::from_rows(std::slice::from_ref(&row), "u");
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
        let tail_len = 1 + 1 + 4 + 8;
        let mut tail = Vec::new();
        put_str(&mut tail, "u");
        tail.extend_from_slice(&3i32.to_le_bytes());
        tail.extend_from_slice(&7i64.to_le_bytes());
        assert_eq!(&b[b.len() - tail_len..], &tail[..]);
        assert_eq!(
            CLICKHOUSE_COLUMNS.split(',').count(),
            30,
            "every usage_events column but inserted_at"
        );
    }

    #[test]
    fn selecting_rows_keeps_their_bytes_whole() {
        let rows: Vec<UsageRow> = (0..5)
            .map(|i| {
                UsageRow::from_event(event(&format!("e{i}"), "acme", "t", 1000, 0.1), "u", 0, i)
            })
            .collect();
        let all = ClickHouseRows::from_rows(&rows, "u");
        let odd = all.select(|_, p| p.offset % 2 == 1);
        assert_eq!(
            odd,
            ClickHouseRows::from_rows(&[rows[1].clone(), rows[3].clone()], "u")
        );
        let mut joined = ClickHouseRows::from_rows(&rows[..2], "u");
        joined.extend(ClickHouseRows::from_rows(&rows[2..], "u"));
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

    #[test]
    fn a_block_is_a_record_batch_of_the_parquet_schema() {
        let row = UsageRow::from_event(event("e1", "acme", "t", 5000, 0.25), "u", 3, 7);
        let mut b = BlockBuilder::with_capacity(4);
        b.append(&RowRef::of_row(&row), 3, 7);
        assert_eq!(b.len(), 1);
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema(), schema::schema());
        assert!(b.is_empty());
    }
}
