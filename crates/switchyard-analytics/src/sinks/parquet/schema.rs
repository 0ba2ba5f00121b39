//! The Parquet file schema (rows become record batches of it in [`block`](super::block)).
//! Typed columns: timestamps as UTC milliseconds, tokens as unsigned integers,
//! money as float64 USD (the unit in the name), the org path as four columns.
//! `org` is dictionary-encoded so that readers that add the `org=` directory as a
//! (dictionary) partition column, such as `pyarrow.parquet.read_table`, can
//! merge it with the file's own column.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

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
        // Added with deferred routing and the cache-write price; files written
        // before lack them, and readers take 0, `live` and cost_usd instead.
        Field::new("cache_write_input_tokens", DataType::UInt64, false),
        s("mode"),
        Field::new("live_cost_usd", DataType::Float64, false),
    ]))
});
