//! What the commands share: loading a pipeline config with overrides, building
//! its deployments, waiting for Ctrl-C or SIGTERM, and the "bad input" error that
//! maps to exit code 2.

use std::path::Path;

use anyhow::Context;
use switchyard_core::config::{ConfigError, LoadedPipeline};
use switchyard_loader::env_overrides;

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
