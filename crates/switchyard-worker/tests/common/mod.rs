//! What the worker's integration tests share: a pipeline over the shipped
//! catalog, one deployment per catalog model on a given client, and an
//! embedded broker with the worker's topics.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchyard_core::config::LoadedPipeline;
use switchyard_kafka::EmbeddedBroker;
use switchyard_providers::{Deployment, DeploymentLimiter, Provider};

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A pipeline in `dir` with the org file `org`, the shipped catalog and
/// `brokers`, loaded as the worker loads it.
pub fn pipeline(dir: &Path, org: &str, brokers: &str) -> LoadedPipeline {
    std::fs::write(dir.join("org.toml"), org).unwrap();
    let config = format!(
        "catalog = \"{}\"\norg = \"org.toml\"\n[kafka]\nbrokers = \"{brokers}\"\n[routing]\nbaseline_model = \"claude-opus-5-5\"\n[[deployments]]\nname = \"unused\"\nmodel = \"gpt-5-nano\"\n",
        root().join("pipelines/models.toml").display()
    );
    std::fs::write(dir.join("pipeline.toml"), config).unwrap();
    switchyard_loader::load_pipeline(&dir.join("pipeline.toml"), &[]).unwrap()
}

/// One deployment per catalog model, all answered by `client`.
pub fn deployments(p: &LoadedPipeline, client: Arc<dyn Provider>) -> Vec<Deployment> {
    p.catalog
        .models()
        .iter()
        .map(|m| Deployment {
            name: format!("dep-{}", m.name),
            model: m.name.clone(),
            provider: m.provider.clone(),
            api_model: m.api_model.clone(),
            client: client.clone(),
            batch: None,
            limiter: DeploymentLimiter::unlimited(),
        })
        .collect()
}

/// A broker with the worker's topics, jobs, results and usage on `partitions`.
pub fn broker(partitions: i32) -> EmbeddedBroker {
    let topics = switchyard_core::config::Topics::default();
    let names = [
        (topics.jobs.name.as_str(), partitions),
        (topics.results.name.as_str(), partitions),
        (topics.usage.name.as_str(), partitions),
        (topics.dlq.as_str(), 1),
        (topics.held.as_str(), 1),
        (topics.batches.as_str(), 1),
    ];
    EmbeddedBroker::start(&names).unwrap()
}
