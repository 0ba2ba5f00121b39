//! Token-level cost analytics. The usage sink reads the usage topic in its own
//! consumer group (so analytics can lag, restart or be down without slowing
//! routing) and writes every billed attempt to Parquet files and to ClickHouse,
//! committing Kafka offsets only once both stores hold the rows. The report side
//! answers "who spent what, on which model, and what did routing save" from either
//! store, with the same numbers.
//!
//! Layout: [`row`] is the flat record both stores share, [`block`] the same
//! rows in the stores' own shapes (Arrow columns, ClickHouse `RowBinary`) and
//! [`decode`] how usage events become them; [`sinks`] holds one folder per
//! store; [`runner`] is the Kafka pipeline that feeds them ([`run_sink`]);
//! [`report`] reads them back. The bookkeeping that makes delivery exact
//! ([`progress`], [`dedupe`], [`backoff`]) is pure and tested without I/O.

pub mod backoff;
pub mod decode;
pub mod dedupe;
mod error;
pub mod progress;
pub mod report;
pub mod row;
pub mod runner;
pub mod sample;
pub mod sinks;

pub use error::{Error, Result};
pub use report::{Dimension, Format, Report, ReportQuery, ReportRow, Source};
pub use row::UsageRow;
pub use runner::{SinkOptions, SinkReport, run_sink, run_sink_with};
pub use sinks::clickhouse::{ClickHouseConfig, ClickHouseSink};
pub use sinks::parquet::{ParquetConfig, ParquetSink};
