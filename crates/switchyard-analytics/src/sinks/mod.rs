//! The two stores the usage sink writes, one folder each: [`parquet`] (files
//! partitioned by day and org, with a manifest per sink) and [`clickhouse`]
//! (versioned schema, batched inserts that never repeat a Kafka offset).

pub mod clickhouse;
pub mod parquet;
