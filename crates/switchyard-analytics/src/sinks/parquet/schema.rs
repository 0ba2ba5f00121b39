//! The Parquet file schema and the conversion of rows into Arrow record batches.
//! Typed columns: timestamps as UTC milliseconds, tokens as unsigned integers,
//! money as float64 USD (the unit in the name), the org path as four columns.
//! `org` is dictionary-encoded so that readers that add the `org=` directory as a
//! (dictionary) partition column, such as `pyarrow.parquet.read_table`, can
//! merge it with the file's own column.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray, UInt32Array, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};

use crate::row::UsageRow;

/// The schema of every file.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let s = |name: &str| Field::new(name, DataType::Utf8, false);
    Arc::new(Schema::new(vec![
        s("event_id"),
        s("job_id"),
        Field::new("batch_id", DataType::Utf8, true),
        Field::new("attempt", DataType::UInt32, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new(
            "org",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        ),
        s("business_unit"),
        s("team"),
        s("project"),
        s("workload"),
        s("strategy"),
        s("category"),
        Field::new("complexity", DataType::Float64, false),
        s("chosen_model"),
        s("routing_reason"),
        s("provider"),
        s("model"),
        s("deployment"),
        s("outcome"),
        Field::new("input_tokens", DataType::UInt64, false),
        Field::new("output_tokens", DataType::UInt64, false),
        Field::new("cached_input_tokens", DataType::UInt64, false),
        Field::new("cost_usd", DataType::Float64, false),
        Field::new("baseline_cost_usd", DataType::Float64, false),
        Field::new("latency_ms", DataType::UInt64, false),
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
    ]))
});

/// The rows as one record batch of [`schema`].
pub fn record_batch(rows: &[UsageRow]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let text = |f: fn(&UsageRow) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let columns: Vec<ArrayRef> = vec![
        text(|r| &r.event_id),
        text(|r| &r.job_id),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| {
            (!r.batch_id.is_empty()).then_some(r.batch_id.as_str())
        }))),
        Arc::new(UInt32Array::from_iter_values(
            rows.iter().map(|r| r.attempt),
        )),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.ts_ms as i64))
                .with_timezone("UTC"),
        ),
        Arc::new(
            rows.iter()
                .map(|r| r.org.as_str())
                .collect::<DictionaryArray<Int32Type>>(),
        ),
        text(|r| &r.business_unit),
        text(|r| &r.team),
        text(|r| &r.project),
        text(|r| &r.workload),
        text(|r| &r.strategy),
        text(|r| &r.category),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.complexity),
        )),
        text(|r| &r.chosen_model),
        text(|r| &r.routing_reason),
        text(|r| &r.provider),
        text(|r| &r.model),
        text(|r| &r.deployment),
        text(|r| &r.outcome),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.input_tokens),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.output_tokens),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.cached_input_tokens),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.cost_usd),
        )),
        Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|r| r.baseline_cost_usd),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.latency_ms),
        )),
        Arc::new(Int32Array::from_iter_values(
            rows.iter().map(|r| r.kafka_partition),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|r| r.kafka_offset),
        )),
    ];
    RecordBatch::try_new(schema(), columns)
}
