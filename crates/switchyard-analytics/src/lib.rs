//! Token-level cost analytics. The usage sink reads the usage topic in its own
//! consumer group (so analytics can lag, restart or be down without slowing
//! routing) and writes every billed attempt to Parquet files and to ClickHouse,
//! committing Kafka offsets only once both stores hold the rows. The report side
//! answers "who spent what, on which model, and what did routing save" from either
//! store, with the same numbers.
//!
//! Layout, cut by store rather than by phase:
//! - [`row`] is the shared vocabulary at the bottom (it imports nothing else of
//!   the crate): the flat record ([`UsageRow`], borrowed as [`row::RowRef`]),
//!   the day arithmetic, and [`row::RowSink`], the small trait through which
//!   decoded rows reach a store's in-memory shape.
//! - [`decode`] turns the topic's bytes into rows and writes them into any
//!   [`row::RowSink`]; it knows no store.
//! - [`sinks`] holds one folder per store, each with its whole path: the shape
//!   (`sinks/parquet/block.rs`: Arrow blocks; `sinks/clickhouse/rows.rs`:
//!   `RowBinary`), the settings, the writer, and what reads it back. One
//!   conformance suite runs against both shapes.
//! - [`runner`] is the Kafka pipeline that feeds them ([`run_sink`]): reader,
//!   decoder and writer threads, the ClickHouse task and the dead-letter task.
//! - [`alerts`] delivers the alerts topic to a webhook, once per transition,
//!   on its own consumer and task; [`metrics`] holds the sink's Prometheus
//!   counters.
//! - [`report`] reads the stores back into cost reports, and sums job results
//!   into the figures the demo shows.
//! - [`metrics`] holds the sink's counters and store states, and registers
//!   them (and the readiness checks) on a telemetry endpoint.
//! - The bookkeeping that makes delivery exact ([`progress`], [`dedupe`]) is
//!   pure and tested without I/O; retries use `switchyard_core::backoff`.

pub mod alerts;
pub mod audit;
pub mod decode;
pub mod dedupe;
mod error;
pub mod metrics;
pub mod progress;
pub mod report;
pub mod row;
pub mod runner;
pub mod sample;
pub mod sinks;

pub use error::{Error, Result};
pub use metrics::SinkMetrics;
pub use report::{Dimension, Format, Report, ReportQuery, ReportRow, Source};
pub use row::{RowSink, UsageRow};
pub use runner::{SinkOptions, SinkReport, run_sink, run_sink_with};
pub use sinks::clickhouse::{ClickHouseConfig, ClickHouseSink, redact_url};
pub use sinks::parquet::{ParquetConfig, ParquetSink};
