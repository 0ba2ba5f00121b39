//! Settings of the Parquet store, checked before anything is written.

use std::path::PathBuf;
use std::time::Duration;

use switchyard_core::config::AnalyticsConfig;

use super::paths;
use crate::error::{Error, Result};

/// Settings of the Parquet store, checked before anything is written.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetConfig {
    /// Root of the tree.
    pub dir: PathBuf,
    /// Names this sink's files and manifest.
    pub sink_id: String,
    /// The usage topic (recorded in the manifest with the offsets).
    pub topic: String,
    /// Roll when an open file passes this size.
    pub max_file_bytes: u64,
    /// Roll at least this often.
    pub roll_interval: Duration,
    /// Rows per row group.
    pub row_group_rows: usize,
    /// Zstd level (1 is fast and still compresses usage rows about 10×).
    pub zstd_level: i32,
}

impl ParquetConfig {
    /// From the pipeline's analytics section.
    pub fn from_analytics(analytics: &AnalyticsConfig, topic: &str) -> Result<Self> {
        let id = analytics.sink_id.as_deref().unwrap_or(&analytics.group_id);
        let config = Self {
            dir: analytics.parquet_dir.clone(),
            sink_id: paths::sanitize_sink_id(id),
            topic: topic.to_owned(),
            max_file_bytes: analytics.parquet_max_file_bytes,
            roll_interval: analytics.parquet_roll_interval,
            row_group_rows: 128 * 1024,
            zstd_level: 1,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks the settings; no I/O.
    pub fn validate(&self) -> Result<()> {
        if self.dir.as_os_str().is_empty() {
            return Err(Error::Invalid(
                "analytics.parquet_dir is empty; give a directory such as \"data/usage\"".into(),
            ));
        }
        if self.max_file_bytes < 1 << 20 {
            return Err(Error::Invalid(format!(
                "analytics.parquet_max_file_bytes = {} is too small; use at least 1 MiB (1048576)",
                self.max_file_bytes
            )));
        }
        if self.roll_interval < Duration::from_millis(10) {
            return Err(Error::Invalid(
                "analytics.parquet_roll_interval must be at least 10ms (60s is typical)".into(),
            ));
        }
        if !(1..=22).contains(&self.zstd_level) || self.row_group_rows == 0 {
            return Err(Error::Invalid(
                "Parquet zstd level must be 1..=22 and row groups non-empty".into(),
            ));
        }
        Ok(())
    }
}
