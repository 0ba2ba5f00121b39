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
use std::sync::Arc;

use switchyard_core::access::Keyring;
use switchyard_core::analysis::need::NeedModel;
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
    let mut loaded = PipelineConfig::parse(path, &text, env, &read_disk)?;
    if let Some(model) = &loaded.config.routing.need_model {
        loaded.need_model = Arc::new(load_need_model(model)?);
    }
    Ok(loaded)
}

/// Reads a need model file (`routing.need_model`), checking that it is one this
/// build can score with and that it carries its threshold calibration.
pub fn load_need_model(path: &Path) -> Result<NeedModel, ConfigError> {
    let error = |problem: String, fix: &str| ConfigError {
        origin: path.display().to_string(),
        line: None,
        key: "routing.need_model".into(),
        problem,
        fix: fix.into(),
    };
    let bytes = std::fs::read(path).map_err(|e| {
        error(
            format!("cannot read the need model: {e}"),
            "check the `routing.need_model` path (relative paths are resolved from the config file's directory), or remove it to use the built-in model",
        )
    })?;
    let model = NeedModel::parse(&bytes).map_err(|e| {
        error(
            format!("not a usable need model: {e}"),
            "point routing.need_model at a file written by `switchyard train-router`, or remove it to use the built-in model",
        )
    })?;
    if model.calibration().is_none() {
        return Err(error(
            "the need model carries no threshold calibration, so quality targets cannot be turned into thresholds".into(),
            &format!(
                "calibrate it on labelled data: switchyard calibrate DATA.jsonl --model {0} --write {0}",
                path.display()
            ),
        ));
    }
    Ok(model)
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

    /// `routing.need_model` replaces the built-in model; a file that is not a
    /// calibrated model is refused with its path and the fix.
    #[test]
    fn a_need_model_file_overrides_the_built_in_one_or_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines");
        for f in ["models.toml", "org.toml"] {
            std::fs::copy(root.join(f), dir.path().join(f)).unwrap();
        }
        let demo = std::fs::read_to_string(root.join("demo.toml")).unwrap();
        let config = dir.path().join("demo.toml");
        let with_model = |name: &str| {
            let text = demo.replacen(
                "[routing]\n",
                &format!("[routing]\nneed_model = \"{name}\"\n"),
                1,
            );
            std::fs::write(&config, text).unwrap();
            load_pipeline(&config, &[])
        };
        let builtin = NeedModel::builtin().unwrap();
        std::fs::write(dir.path().join("mine.bin"), builtin.to_bytes()).unwrap();
        let loaded = with_model("mine.bin").unwrap();
        assert_eq!(*loaded.need_model, *builtin);

        std::fs::write(dir.path().join("junk.bin"), b"not a model").unwrap();
        let e = with_model("junk.bin").unwrap_err();
        assert!(e.origin.ends_with("junk.bin"), "{e}");
        assert!(e.problem.contains("SWNEED01"), "{e}");
        assert!(e.fix.contains("train-router"), "{e}");

        let e = with_model("missing.bin").unwrap_err();
        assert!(e.problem.contains("cannot read"), "{e}");
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
