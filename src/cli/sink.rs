//! `switchyard sink --config FILE`: the analytics sink, its own consumer group on
//! the usage topic, writing Parquet and (when configured) ClickHouse until
//! SIGINT/SIGTERM, then writing out what it holds and committing.

use std::path::PathBuf;
use std::process::ExitCode;

use switchyard_analytics::{Error as AnalyticsError, run_sink};

use super::common::{BadInput, Overrides, load_pipeline, shutdown_signal};

/// Arguments of `sink`.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline config file (its `[analytics]` section and the usage topic).
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    overrides: Overrides,
}

/// Runs the sink until asked to stop.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal();
    let pipeline = load_pipeline(&args.config, &args.overrides)?;
    let report = match run_sink(&pipeline.config, shutdown).await {
        Ok(r) => r,
        Err(e @ AnalyticsError::Invalid(_)) => {
            return Err(BadInput(format!("{}: {e}", args.config.display())).into());
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "usage sink stopped: {} events read, {} rows to Parquet in {} files, {} rows to ClickHouse, {} duplicates dropped, {} undecodable",
        report.consumed,
        report.parquet_rows,
        report.parquet_files,
        report.clickhouse_rows,
        report.duplicates,
        report.undecodable
    );
    Ok(ExitCode::SUCCESS)
}
