//! The edge where configuration meets the machine. `switchyard-core` parses
//! texts and returns values (with errors that name the file, the line and the
//! fix); this crate reads those texts from disk and the overrides from the
//! process environment, and nothing else. Every binary, tool and test that
//! starts from a file on disk loads it through here.

use std::path::Path;

use switchyard_core::catalog::Catalog;
use switchyard_core::config::{ConfigError, LoadedPipeline, PipelineConfig};
use switchyard_core::org::OrgTree;
use switchyard_core::routing::Strategy;

/// The process environment's `SWITCHYARD__SECTION__KEY=value` overrides.
pub fn env_overrides() -> Vec<(String, String)> {
    switchyard_core::config::env_overrides(std::env::vars())
}

/// Reads a file the way every loader here does.
pub fn read_disk(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Reads, validates and resolves a pipeline config with its catalog and org file.
pub fn load_pipeline(path: &Path, env: &[(String, String)]) -> Result<LoadedPipeline, ConfigError> {
    let text = read_disk(path).map_err(|e| ConfigError {
        origin: path.display().to_string(),
        line: None,
        key: "(file)".into(),
        problem: format!("cannot read the pipeline config: {e}"),
        fix: "pass an existing file, for example pipelines/production.toml".into(),
    })?;
    PipelineConfig::parse(path, &text, env, &read_disk)
}

/// Reads and validates a catalog file.
pub fn load_catalog(path: &Path) -> Result<Catalog, ConfigError> {
    let text = read_disk(path).map_err(|e| ConfigError {
        origin: path.display().to_string(),
        line: None,
        key: "(file)".into(),
        problem: format!("cannot read the model catalog: {e}"),
        fix: "check the `catalog` path in the pipeline config (relative paths are resolved from the config file's directory)".into(),
    })?;
    Catalog::parse(path, &text)
}

/// Reads and validates an org file against a catalog.
pub fn load_org(
    path: &Path,
    catalog: &Catalog,
    default_strategy: Strategy,
    default_floor: f64,
) -> Result<OrgTree, ConfigError> {
    let text = read_disk(path).map_err(|e| ConfigError {
        origin: path.display().to_string(),
        line: None,
        key: "(file)".into(),
        problem: format!("cannot read the org file: {e}"),
        fix: "check the `org` path in the pipeline config".into(),
    })?;
    OrgTree::parse(path, &text, catalog, default_strategy, default_floor)
}
