//! The Parquet store: Zstd-compressed files partitioned by day and org
//! (`day=2026-11-25/org=acme/part-….parquet`), readable by pyarrow and DuckDB.
//! Rows go into open files under hidden temporary names; a *roll* (by size, by
//! time, and on shutdown) closes every open file, renames it into place and then
//! records the roll in the sink's manifest, so a reader never sees half a file and
//! a restart knows exactly which offsets the files hold. One sink per
//! `sink_id` writes a directory at a time ([`DirLock`]).

pub mod block;
mod config;
mod lock;
mod manifest;
pub mod paths;
pub mod reader;
pub mod schema;
mod sink;

pub use config::ParquetConfig;
pub use lock::DirLock;
pub use manifest::{Manifest, remove_orphans};
pub use sink::{ParquetSink, RollOutcome};
