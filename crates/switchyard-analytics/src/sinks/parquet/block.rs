//! Usage rows as Arrow columns, the shape the Parquet files take: a
//! [`BlockBuilder`] appends rows of one day and org straight from borrowed text
//! (no owned row in between) and finishes them as a record batch of the files'
//! [`schema`]; a [`Block`] is such a batch with its partition.
//! [`BlocksBuilder`] is the Parquet store's [`RowSink`]: it splits the rows of a
//! chunk by day and org, as the tree is partitioned, into [`Blocks`].

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    StringDictionaryBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::compute::filter_record_batch;
use arrow::datatypes::Int32Type;
use arrow::error::ArrowError;

use super::schema;
use crate::row::{RowRef, RowSink, UsageRow};

/// Rows of one day and org, as one record batch of the files' schema.
#[derive(Debug, Clone)]
pub struct Block {
    /// UTC day, days since the epoch.
    pub day: u16,
    /// Org.
    pub org: String,
    /// The rows, in the order they were read.
    pub batch: RecordBatch,
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
    cache_write_input_tokens: UInt64Builder,
    mode: StringBuilder,
    live_cost_usd: Float64Builder,
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
            cache_write_input_tokens: UInt64Builder::with_capacity(rows),
            mode: text(4),
            live_cost_usd: Float64Builder::with_capacity(rows),
            len: 0,
        }
    }

    /// Appends a row.
    pub fn append(&mut self, r: &RowRef<'_>) {
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
        self.kafka_partition.append_value(r.kafka_partition);
        self.kafka_offset.append_value(r.kafka_offset);
        self.cache_write_input_tokens
            .append_value(r.cache_write_input_tokens);
        self.mode.append_value(r.mode);
        self.live_cost_usd.append_value(r.live_cost_usd);
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
            Arc::new(self.cache_write_input_tokens.finish()),
            Arc::new(self.mode.finish()),
            Arc::new(self.live_cost_usd.finish()),
        ];
        RecordBatch::try_new(schema::schema(), columns)
    }
}

/// Rows of a chunk split by day and org, in Arrow builders.
pub struct BlocksBuilder {
    builders: Vec<(u16, String, BlockBuilder)>,
    /// Index into `builders` of each row, in the order appended.
    row_block: Vec<u32>,
    capacity: usize,
}

impl BlocksBuilder {
    /// Builders sized for a chunk of about `rows` rows.
    pub fn with_capacity(rows: usize) -> Self {
        Self {
            builders: Vec::new(),
            row_block: Vec::with_capacity(rows),
            capacity: rows,
        }
    }

    /// The record batches, one per day and org in the order each first appeared.
    pub fn finish(self) -> Result<Blocks, ArrowError> {
        let mut blocks = Vec::with_capacity(self.builders.len());
        for (day, org, mut b) in self.builders {
            blocks.push(Block {
                day,
                org,
                batch: b.finish()?,
            });
        }
        Ok(Blocks {
            blocks,
            row_block: self.row_block,
        })
    }
}

impl RowSink for BlocksBuilder {
    fn append(&mut self, row: &RowRef<'_>, _epoch: u64) {
        let day = row.day();
        // A chunk holds a handful of days and orgs: a scan beats a map.
        let i = match self
            .builders
            .iter()
            .position(|(d, o, _)| *d == day && o == row.org)
        {
            Some(i) => i,
            None => {
                self.builders.push((
                    day,
                    row.org.to_owned(),
                    BlockBuilder::with_capacity(self.capacity),
                ));
                self.builders.len() - 1
            }
        };
        self.builders[i].2.append(row);
        self.row_block.push(i as u32);
    }
}

/// A chunk's rows as finished blocks, and which block each row went to.
#[derive(Debug, Clone, Default)]
pub struct Blocks {
    blocks: Vec<Block>,
    row_block: Vec<u32>,
}

impl Blocks {
    /// The blocks, one per day and org.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// The blocks, owned.
    pub fn into_blocks(self) -> Vec<Block> {
        self.blocks
    }

    /// Rows in all blocks.
    pub fn rows(&self) -> usize {
        self.row_block.len()
    }

    /// Index in [`Blocks::blocks`] of the block that holds row `row` (counted
    /// in the order the rows were appended).
    pub fn block_of(&self, row: usize) -> Option<usize> {
        self.row_block.get(row).map(|b| *b as usize)
    }

    /// The blocks with only the rows `keep` marks (one flag per row, in the
    /// order appended); blocks left without rows are left out.
    pub fn select(&self, keep: &[bool]) -> Result<Vec<Cow<'_, Block>>, ArrowError> {
        if keep.iter().all(|k| *k) {
            return Ok(self.blocks.iter().map(Cow::Borrowed).collect());
        }
        let mut masks: Vec<Vec<bool>> = self
            .blocks
            .iter()
            .map(|b| Vec::with_capacity(b.batch.num_rows()))
            .collect();
        for (block, k) in self.row_block.iter().zip(keep) {
            masks[*block as usize].push(*k);
        }
        let mut out = Vec::with_capacity(self.blocks.len());
        for (block, mask) in self.blocks.iter().zip(masks) {
            if mask.iter().all(|k| *k) {
                out.push(Cow::Borrowed(block));
            } else if mask.iter().any(|k| *k) {
                out.push(Cow::Owned(Block {
                    day: block.day,
                    org: block.org.clone(),
                    batch: filter_record_batch(&block.batch, &BooleanArray::from(mask))?,
                }));
            }
        }
        Ok(out)
    }
}

/// The rows as one record batch of the files' schema (tests, tools).
pub fn record_batch(rows: &[UsageRow]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let mut b = BlockBuilder::with_capacity(rows.len());
    for r in rows {
        b.append(&RowRef::of_row(r));
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{
        DataType, Float64Type, Int64Type, TimestampMillisecondType, UInt32Type, UInt64Type,
    };

    use super::*;
    use crate::row::day_of;
    use crate::row::tests::event;
    use crate::sinks::conformance::{ReadBack, row_sink_conformance};

    impl ReadBack for BlocksBuilder {
        fn empty(rows: usize) -> Self {
            BlocksBuilder::with_capacity(rows)
        }

        fn read_back(self, topic: &str) -> Vec<UsageRow> {
            let blocks = self.finish().unwrap();
            let mut next = vec![0; blocks.blocks().len()];
            (0..blocks.rows())
                .map(|i| {
                    let b = blocks.block_of(i).unwrap();
                    next[b] += 1;
                    row_at(&blocks.blocks()[b].batch, next[b] - 1, topic)
                })
                .collect()
        }
    }

    /// Row `j` of a block, read column by column.
    fn row_at(batch: &RecordBatch, j: usize, topic: &str) -> UsageRow {
        let column = |name: &str| batch.column_by_name(name).unwrap().clone();
        let text = |name: &str| {
            let c = arrow::compute::cast(&column(name), &DataType::Utf8).unwrap();
            let c = c.as_string::<i32>();
            if c.is_null(j) {
                String::new()
            } else {
                c.value(j).to_owned()
            }
        };
        let count = |name: &str| column(name).as_primitive::<UInt64Type>().value(j);
        let usd = |name: &str| column(name).as_primitive::<Float64Type>().value(j);
        let ts_ms = column("ts")
            .as_primitive::<TimestampMillisecondType>()
            .value(j) as u64;
        UsageRow {
            event_id: text("event_id"),
            job_id: text("job_id"),
            batch_id: text("batch_id"),
            attempt: column("attempt").as_primitive::<UInt32Type>().value(j),
            ts: u32::try_from(ts_ms / 1000).unwrap_or(u32::MAX),
            ts_ms,
            day: day_of(ts_ms),
            org: text("org"),
            business_unit: text("business_unit"),
            team: text("team"),
            project: text("project"),
            workload: text("workload"),
            strategy: text("strategy"),
            category: text("category"),
            complexity: usd("complexity"),
            chosen_model: text("chosen_model"),
            routing_reason: text("routing_reason"),
            provider: text("provider"),
            model: text("model"),
            deployment: text("deployment"),
            outcome: text("outcome"),
            input_tokens: count("input_tokens"),
            output_tokens: count("output_tokens"),
            cached_input_tokens: count("cached_input_tokens"),
            cost_usd: usd("cost_usd"),
            baseline_cost_usd: usd("baseline_cost_usd"),
            latency_ms: count("latency_ms"),
            kafka_topic: topic.to_owned(),
            kafka_partition: column("kafka_partition")
                .as_primitive::<arrow::datatypes::Int32Type>()
                .value(j),
            kafka_offset: column("kafka_offset").as_primitive::<Int64Type>().value(j),
            cache_write_input_tokens: count("cache_write_input_tokens"),
            mode: text("mode"),
            live_cost_usd: usd("live_cost_usd"),
        }
    }

    row_sink_conformance!(BlocksBuilder);

    #[test]
    fn selecting_rows_keeps_them_in_their_blocks_and_drops_emptied_blocks() {
        let day = 86_400_000;
        let rows: Vec<UsageRow> = [("a", 0), ("b", day), ("a", 1), ("b", day + 1)]
            .into_iter()
            .enumerate()
            .map(|(i, (org, ms))| {
                UsageRow::from_event(event(&format!("e{i}"), org, "t", ms, 0.1), "u", 0, i as i64)
            })
            .collect();
        let mut b = BlocksBuilder::with_capacity(4);
        for r in &rows {
            b.append(&RowRef::of_row(r), 0);
        }
        let blocks = b.finish().unwrap();
        assert_eq!(blocks.rows(), 4);
        let all = blocks.select(&[true; 4]).unwrap();
        assert!(all.iter().all(|b| matches!(b, Cow::Borrowed(_))));
        let kept = blocks.select(&[false, false, true, false]).unwrap();
        assert_eq!(kept.len(), 1, "the block of org b lost every row");
        assert_eq!(
            kept[0].batch,
            record_batch(std::slice::from_ref(&rows[2])).unwrap()
        );
    }

    #[test]
    fn a_block_is_a_record_batch_of_the_parquet_schema() {
        let row = UsageRow::from_event(event("e1", "acme", "t", 5000, 0.25), "u", 3, 7);
        let mut b = BlockBuilder::with_capacity(4);
        b.append(&RowRef::of_row(&row));
        assert_eq!(b.len(), 1);
        let batch = b.finish().unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert_eq!(batch.schema(), schema::schema());
        assert!(b.is_empty());
    }
}
