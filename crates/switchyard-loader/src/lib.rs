//! The edge where configuration meets the machine. `switchyard-core` parses
//! texts and returns values (with errors that name the file, the line and the
//! fix); this crate reads those texts from disk and the overrides from the
//! process environment, and nothing else. Every binary, tool and test that
//! starts from a file on disk loads it through here.
//!
//! The demo's files (pipeline config, catalog, org tree, prompt corpus) are
//! also compiled in: a command run outside a checkout that names them by their
//! default paths (`pipelines/demo.toml`, …) gets the built-in copies. A file on
//! disk at that path always wins.

use std::path::{Component, Path};

use switchyard_core::access::Keyring;
use switchyard_core::catalog::Catalog;
use switchyard_core::config::{ConfigError, LoadedPipeline, PipelineConfig};
use switchyard_core::org::OrgTree;
use switchyard_core::routing::Strategy;

/// The process environment's `SWITCHYARD__SECTION__KEY=value` overrides.
pub fn env_overrides() -> Vec<(String, String)> {
    switchyard_core::config::env_overrides(std::env::vars())
}

/// The demo's files as shipped, by their path relative to a checkout.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "pipelines/demo.toml",
        include_str!("../../../pipelines/demo.toml"),
    ),
    (
        "pipelines/models.toml",
        include_str!("../../../pipelines/models.toml"),
    ),
    (
        "pipelines/org.toml",
        include_str!("../../../pipelines/org.toml"),
    ),
    (
        "pipelines/corpus/prompts.jsonl",
        include_str!("../../../pipelines/corpus/prompts.jsonl"),
    ),
    (
        "pipelines/corpus/workloads.toml",
        include_str!("../../../pipelines/corpus/workloads.toml"),
    ),
];

/// The built-in copy of a demo file named by its relative path (`./` and
/// `dir/../` steps allowed), if `path` is one.
pub fn builtin(path: &Path) -> Option<&'static str> {
    if path.is_absolute() {
        return None;
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(p) => parts.push(p.to_str()?),
            _ => return None,
        }
    }
    let wanted = parts.join("/");
    BUILTIN
        .iter()
        .find(|(name, _)| *name == wanted)
        .map(|(_, text)| *text)
}

/// Reads a file the way every loader here does: from disk, or, when a demo
/// file's default path does not exist here, its built-in copy.
pub fn read_disk(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match builtin(path) {
            Some(text) => Ok(text.to_owned()),
            None => Err(e),
        },
        other => other,
    }
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

/// Reads the keys file (`[access] keys_file`); absent is empty.
pub fn load_keys(path: &Path) -> Result<Keyring, ConfigError> {
    switchyard_core::config::read_keys(path, &read_disk)
}

/// Writes the keys file whole (a temporary file renamed over it, so that a
/// worker reloading it never reads half a file).
pub fn save_keys(path: &Path, keys: &Keyring) -> std::io::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&tmp, keys.to_text())?;
    std::fs::rename(&tmp, path)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_paths_resolve_to_the_built_in_copies() {
        assert!(builtin(Path::new("pipelines/demo.toml")).is_some());
        assert!(builtin(Path::new("./pipelines/corpus/../models.toml")).is_some());
        assert!(builtin(Path::new("pipelines/production.toml")).is_none());
        assert!(builtin(Path::new("/etc/pipelines/demo.toml")).is_none());
        assert!(builtin(Path::new("../pipelines/demo.toml")).is_none());
    }

    #[test]
    fn the_demo_loads_from_an_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let here = std::env::current_dir().unwrap();
        // Loading names the relative default path, as the commands do.
        let relative = Path::new("pipelines/demo.toml");
        std::env::set_current_dir(dir.path()).unwrap();
        let loaded = load_pipeline(relative, &[]);
        std::env::set_current_dir(here).unwrap();
        let loaded = loaded.unwrap();
        assert!(loaded.catalog.models().len() > 10);
        assert!(!loaded.org.projects().is_empty());
    }
}
