//! `switchyard run --config FILE [--metrics-addr ADDR]`: the routing worker,
//! with its telemetry endpoint when an address is given.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use switchyard_providers::build_deployments;
use switchyard_worker::Engine;
use tracing::{info, warn};

use super::common::{MetricsArgs, Overrides, load_pipeline, shutdown_signal, telemetry};

/// Arguments of `run`.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline config file (for example pipelines/production.toml).
    #[arg(long, short, env = "SWITCHYARD_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    overrides: Overrides,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// Runs the worker until SIGINT/SIGTERM, then drains and exits 0.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal();
    let pipeline = load_pipeline(&args.config, &args.overrides)?;
    let deployments = build_deployments(&pipeline.config, &pipeline.catalog)?;
    let engine = Arc::new(Engine::new(&pipeline, deployments)?);
    let mut t = telemetry("worker");
    switchyard_worker::telemetry::register(&mut t, &engine, &pipeline.config.kafka.group_id);
    let endpoint = args.metrics.serve(&pipeline.config, t).await?;
    let watcher = match &pipeline.config.access {
        Some(access) => Some(tokio::spawn(watch_keys(
            engine.clone(),
            access.keys_file.clone(),
        ))),
        None => {
            warn!(
                "No [access] section: Switchyard runs open. Any producer that can write to the jobs topic may claim any project, and commands need no key. See the README's \"Access control\"."
            );
            None
        }
    };
    // On the runtime, not on the thread that waits for it: jobs spawned from a
    // runtime thread run where they were spawned, instead of each one waking
    // a runtime thread from outside (docs/decisions.md, Performance).
    let config = pipeline.config.clone();
    tokio::spawn(async move { switchyard_worker::run(engine, &config, shutdown).await })
        .await
        .map_err(|e| anyhow::anyhow!("the worker stopped abnormally: {e}"))??;
    if let Some(w) = watcher {
        w.abort();
    }
    if let Some(endpoint) = endpoint {
        endpoint.stop().await;
    }
    Ok(ExitCode::SUCCESS)
}

/// How often the keys file is checked for changes.
const KEYS_POLL: Duration = Duration::from_secs(2);

/// Reloads the keys when the keys file changes (a key created or revoked
/// counts within seconds); a file that does not parse keeps the keys in force.
async fn watch_keys(engine: Arc<Engine>, path: PathBuf) {
    let stamp = |p: &PathBuf| {
        std::fs::metadata(p)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut seen = stamp(&path);
    loop {
        tokio::time::sleep(KEYS_POLL).await;
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match switchyard_loader::load_keys(&path) {
            Ok(keys) => {
                info!(keys = keys.keys().len(), file = %path.display(), "Keys reloaded.");
                engine.set_keys(keys);
            }
            Err(e) => {
                warn!(error = %e, "The keys file changed but does not parse; the keys in force stay.")
            }
        }
    }
}
