//! Usage rows as Arrow columns, the shape the Parquet files take: a
//! [`BlockBuilder`] appends rows of one day and org straight from borrowed text
//! (no owned row in between) and finishes them as a record batch of the files'
//! [`schema`](super::schema); a [`Block`] is such a batch with its partition.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder,
    StringDictionaryBuilder, TimestampMillisecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::Int32Type;

use super::schema;
use crate::row::{RowRef, UsageRow};

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
    use super::*;
    use crate::row::tests::event;

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
