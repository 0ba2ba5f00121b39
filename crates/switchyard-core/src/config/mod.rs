//! Configuration files: the pipeline config and the machinery that turns any TOML
//! file into typed settings with errors that name the file, the line and the fix.

mod access;
mod alerts;
mod pipeline;
pub mod source;

pub use access::{AccessConfig, AuditConfig, read_keys};
pub use alerts::AlertsConfig;
pub use pipeline::{
    AnalyticsConfig, Compression, DeferredConfig, DeploymentConfig, Encoding, KafkaConfig,
    LoadedPipeline, ObservabilityConfig, PipelineConfig, RetryConfig, RoutingConfig, Timeouts,
    TopicConfig, Topics, UnknownFields, WorkerConfig,
};
pub use source::{ConfigError, ReadFile, env_overrides};

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    /// Loads a pipeline config from disk, as `switchyard-loader` does (tests may
    /// read files; the crate's code does not).
    pub(crate) fn load(path: &Path) -> Result<super::LoadedPipeline, super::ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| super::ConfigError {
            origin: path.display().to_string(),
            line: None,
            key: "(file)".into(),
            problem: e.to_string(),
            fix: String::new(),
        })?;
        super::PipelineConfig::parse(path, &text, &[], &|p: &Path| std::fs::read_to_string(p))
    }
}
