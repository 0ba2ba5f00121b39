//! What the commands share: loading a pipeline config with overrides, building
//! its deployments, waiting for Ctrl-C or SIGTERM, starting the telemetry
//! endpoint, and the "bad input" error that maps to exit code 2.

use std::path::{Path, PathBuf};

use anyhow::Context;
use switchyard_core::config::{ConfigError, LoadedPipeline, PipelineConfig};
use switchyard_loader::env_overrides;
use switchyard_telemetry::{MetricsServer, Telemetry};

/// An error caused by the user's input (usage, config, file), exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// Whether an error is the user's input rather than a failure of the work.
pub fn is_bad_input(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<BadInput>() || c.is::<ConfigError>() || c.is::<switchyard_providers::BuildError>()
    })
}

/// Overrides from flags (which clap also fills from their environment variables).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// Kafka bootstrap servers, `host:port[,host:port]`; overrides kafka.brokers.
    #[arg(long, env = "SWITCHYARD_BROKERS")]
    pub brokers: Option<String>,
    /// ClickHouse HTTP URL; overrides analytics.clickhouse_url.
    #[arg(long, env = "SWITCHYARD_CLICKHOUSE_URL")]
    pub clickhouse_url: Option<String>,
}

/// `--metrics-addr`, for the commands that run part of the pipeline.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics (GET /metrics), /healthz and /readyz on
    /// IP:PORT (port 0 picks a free one; the URL is printed); overrides
    /// observability.metrics_addr.
    #[arg(long, value_name = "ADDR", env = "SWITCHYARD_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

impl MetricsArgs {
    /// Starts the telemetry endpoint when an address is given (the flag, else
    /// `observability.metrics_addr`) and prints `metrics: http://HOST:PORT/metrics`.
    pub async fn serve(
        &self,
        config: &PipelineConfig,
        telemetry: Telemetry,
    ) -> anyhow::Result<Option<MetricsServer>> {
        let Some(addr) = self
            .metrics_addr
            .as_deref()
            .or(config.observability.metrics_addr.as_deref())
        else {
            return Ok(None);
        };
        let addr = switchyard_telemetry::parse_addr(addr)
            .map_err(|e| BadInput(format!("--metrics-addr: {e}")))?;
        let server = MetricsServer::start(telemetry, addr).await?;
        println!("metrics: {}", server.metrics_url());
        Ok(Some(server))
    }
}

/// Telemetry for a command: the process basics, as `component` of this build.
pub fn telemetry(component: &str) -> Telemetry {
    Telemetry::for_process(env!("CARGO_PKG_VERSION"), component)
}

/// Loads a pipeline config: file, then `SWITCHYARD__…` variables, then flags.
pub fn load_pipeline(path: &Path, overrides: &Overrides) -> anyhow::Result<LoadedPipeline> {
    let mut loaded = switchyard_loader::load_pipeline(path, &env_overrides())?;
    if let Some(b) = &overrides.brokers {
        loaded.config.kafka.brokers = b.clone();
    }
    if let Some(url) = &overrides.clickhouse_url {
        loaded.config.analytics.clickhouse_url = Some(url.clone()).filter(|u| !u.is_empty());
    }
    Ok(loaded)
}

/// Resolves when the process is asked to stop (SIGINT or SIGTERM). The handlers
/// are installed when this is called, not when the future is first polled, so a
/// signal that arrives while the command is still starting is not lost.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let int = signal(SignalKind::interrupt()).ok();
        let term = signal(SignalKind::terminate()).ok();
        async move {
            let wait = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(int) => {}
                _ = wait(term) => {}
            }
            tracing::info!("Stop requested.");
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Stop requested.");
    }
}

/// Reads a whole text file, naming it in the error.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| BadInput(format!("cannot read {}: {e}", path.display())))
        .context("reading input")
}

/// The pipeline config and cluster flags most commands take.
#[derive(clap::Args)]
pub struct PipelineArgs {
    /// Pipeline config (Kafka, topics, catalog, org, `[access]`, `[audit]`).
    #[arg(
        long,
        short,
        default_value = "pipelines/demo.toml",
        env = "SWITCHYARD_CONFIG"
    )]
    pub config: PathBuf,
    #[command(flatten)]
    pub overrides: Overrides,
}

impl PipelineArgs {
    /// Loads the pipeline: file, then `SWITCHYARD__…` variables, then flags.
    pub fn load(&self) -> anyhow::Result<LoadedPipeline> {
        load_pipeline(&self.config, &self.overrides)
    }
}

/// Output on stdout for people or for scripts.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TableOrJson {
    /// Aligned text for people.
    Table,
    /// One JSON document.
    Json,
}
