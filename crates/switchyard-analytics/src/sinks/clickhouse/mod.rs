//! The ClickHouse store: a versioned schema applied at start
//! (`schemas/clickhouse/*.sql`, recorded in `schema_migrations`), the
//! `usage_events` table with hourly and daily rollups fed by materialized views,
//! and batched inserts that never repeat a Kafka offset: before inserting rows
//! that ClickHouse might already have (after a restart or a failed insert), the
//! sink asks which of their offsets are present and leaves those out. One INSERT
//! of one block into one monthly partition is atomic in every ClickHouse version,
//! so each offset lands exactly once and the rollups stay exact.

mod config;
pub mod migrate;
mod rows;
mod sink;

pub use config::{ClickHouseConfig, redact_url};
pub use rows::{CLICKHOUSE_COLUMNS, ClickHouseRows, RowPosition};
pub use sink::{ClickHouseSink, WriteOutcome, ranges_to_check};
