//! `switchyard sink --config FILE`: the analytics sink, its own consumer group on
//! the usage topic, writing Parquet and (when configured) ClickHouse until
//! SIGINT/SIGTERM, then writing out what it holds and committing; with
//! `--metrics-addr`, a telemetry endpoint beside it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use switchyard_analytics::{Error as AnalyticsError, SinkMetrics, SinkOptions, run_sink_with};

use super::common::{BadInput, MetricsArgs, Overrides, load_pipeline, shutdown_signal, telemetry};

/// Arguments of `sink`.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline config file (its `[analytics]` section and the usage topic).
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    overrides: Overrides,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// With ClickHouse configured, mirrors the audit log into it (in the consumer
/// group `<analytics group>.audit`) beside the usage sink, so `audit verify
/// --from clickhouse` and SQL over `audit_log` see every record.
fn start_audit_mirror(
    config: &switchyard_core::config::PipelineConfig,
) -> Option<(
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<Result<(), AnalyticsError>>,
)> {
    let ch = switchyard_analytics::ClickHouseConfig::from_analytics(&config.analytics)
        .ok()
        .flatten()?;
    let stop = tokio_util::sync::CancellationToken::new();
    let kafka = config.kafka.clone();
    let group = format!("{}.audit", config.analytics.group_id);
    let client = ch.client();
    let token = stop.clone();
    let task = tokio::spawn(async move {
        switchyard_analytics::audit::mirror(&kafka, &group, client, token).await
    });
    Some((stop, task))
}

/// Runs the sink until asked to stop.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal();
    let pipeline = load_pipeline(&args.config, &args.overrides)?;
    let metrics = Arc::new(SinkMetrics::for_analytics(&pipeline.config.analytics));
    let mut t = telemetry("sink");
    switchyard_analytics::metrics::register(&mut t, &metrics);
    let endpoint = args.metrics.serve(&pipeline.config, t).await?;
    let options = SinkOptions {
        metrics,
        ..SinkOptions::default()
    };
    // The sink is a writer of the audit log too: the configuration it runs.
    let group = pipeline.config.analytics.group_id.clone();
    let writer = super::access::audit_log_as(&pipeline, "sink", &group)?;
    super::access::record(
        writer.as_ref(),
        switchyard_core::audit::AuditEntry {
            kind: "config".into(),
            subject: format!("sink:{group}"),
            node: None,
            principal: None,
            outcome: "started".into(),
            detail: serde_json::to_value(&pipeline.config).unwrap_or_default(),
        },
    )
    .await;
    let audit = start_audit_mirror(&pipeline.config);
    let result = run_sink_with(&pipeline.config, options, shutdown).await;
    if let Some((stop, task)) = audit {
        stop.cancel();
        match task.await {
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "The audit mirror stopped with records not yet in ClickHouse; they are mirrored on the next start.")
            }
            Err(e) => tracing::warn!(error = %e, "The audit mirror task failed."),
            Ok(Ok(())) => {}
        }
    }
    let report = match result {
        Ok(r) => r,
        Err(e @ AnalyticsError::Invalid(_)) => {
            return Err(BadInput(format!("{}: {e}", args.config.display())).into());
        }
        Err(e) => return Err(e.into()),
    };
    eprintln!(
        "usage sink stopped: {} events read, {} rows to Parquet in {} files, {} rows to ClickHouse, {} duplicates dropped, {} undecodable ({} dead-lettered to {})",
        report.consumed,
        report.parquet_rows,
        report.parquet_files,
        report.clickhouse_rows,
        report.duplicates,
        report.undecodable,
        report.dead_lettered,
        pipeline.config.analytics.dlq_topic
    );
    if let Some(endpoint) = endpoint {
        endpoint.stop().await;
    }
    Ok(ExitCode::SUCCESS)
}
