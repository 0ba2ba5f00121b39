//! The two stores the usage sink writes, one folder each: [`parquet`] (files
//! partitioned by day and org, with a manifest per sink) and [`clickhouse`]
//! (versioned schema, batched inserts that never repeat a Kafka offset). Each
//! folder holds its store's whole path: the in-memory shape that decoded rows
//! are written into (a [`RowSink`](crate::row::RowSink): Arrow blocks,
//! `RowBinary`), its settings, the writer and what reads it back. One
//! conformance suite (`conformance`, tests only) runs against both shapes.

pub mod clickhouse;
#[cfg(test)]
pub(crate) mod conformance;
pub mod parquet;
