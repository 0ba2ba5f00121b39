//! The crate's error: what failed, where, and what to do about it. The sink's
//! retry loop reads [`Error::is_retryable`], never the message.

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a sink or report step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kafka client could not be created or used.
    #[error("Kafka: {0} (check kafka.brokers and that the usage topic exists)")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A ClickHouse request failed.
    #[error("ClickHouse at {url}: {during} failed: {source} (is the server up and the URL right?)")]
    ClickHouse {
        /// Server URL, as [`ClickHouseConfig::display_url`](crate::ClickHouseConfig::display_url) shows it.
        url: String,
        /// What the sink or report was doing.
        during: String,
        /// The client's error.
        #[source]
        source: clickhouse::error::Error,
    },
    /// A ClickHouse request took longer than `analytics.clickhouse_timeout`.
    #[error(
        "ClickHouse at {url}: {during} timed out (raise analytics.clickhouse_timeout if the server is just slow)"
    )]
    ClickHouseTimeout {
        /// Server URL, as [`ClickHouseConfig::display_url`](crate::ClickHouseConfig::display_url) shows it.
        url: String,
        /// What the sink or report was doing.
        during: String,
    },
    /// A schema migration failed; the database is left at the previous version.
    #[error(
        "ClickHouse migration {name} failed: {message} (fix the statement in schemas/clickhouse/{name}; applied versions are in the schema_migrations table)"
    )]
    Migration {
        /// File name of the migration.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Writing or reading a Parquet file failed.
    #[error("Parquet file {path}: {message}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// What the parquet or arrow crate said.
        message: String,
    },
    /// A sink manifest is unreadable.
    #[error(
        "Parquet manifest {path} is not valid ({message}); restore it from a backup, or delete it to rewrite every uncommitted offset (duplicates are removed by event_id when reading)"
    )]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Another sink with the same `sink_id` has the Parquet directory open.
    #[error(
        "the Parquet directory {} is in use by another sink with sink_id `{sink_id}` ({holder}); two sinks with one id would overwrite each other's files: stop that sink first, or give this one its own analytics.sink_id (or parquet_dir)",
        .dir.display()
    )]
    Locked {
        /// The Parquet directory.
        dir: PathBuf,
        /// The sink id both sinks have.
        sink_id: String,
        /// Who holds it, as its lock file says (pid, host, since when).
        holder: String,
    },
    /// A setting or argument is invalid (nothing was started).
    #[error("{0}")]
    Invalid(String),
    /// Mirroring or reading the audit log failed.
    #[error("audit log: {0}")]
    Audit(String),
}

impl Error {
    /// Whether trying again later may succeed (server down, timeout, network).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::ClickHouse { source, .. } => !matches!(
                source,
                clickhouse::error::Error::SchemaMismatch(_)
                    | clickhouse::error::Error::InvalidParams(_)
                    | clickhouse::error::Error::Unsupported(_)
            ),
            Error::ClickHouseTimeout { .. } => true,
            Error::Io { .. } | Error::Kafka(_) => true,
            Error::Migration { .. }
            | Error::Parquet { .. }
            | Error::Manifest { .. }
            | Error::Locked { .. }
            | Error::Invalid(_)
            | Error::Audit(_) => false,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parquet(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Parquet {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
