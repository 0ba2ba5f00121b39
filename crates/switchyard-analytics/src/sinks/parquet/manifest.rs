//! A sink's manifest (`_switchyard/manifest-<sink-id>.json`): the last completed
//! roll's sequence and, per partition, the next offset the Parquet files hold.
//! It is written atomically after a roll's files are renamed into place, so it is
//! the roll's commit record: a file of a later roll is an orphan of a crash
//! between rename and manifest, and is removed on start.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::paths::{self, MANIFEST_DIR};
use crate::error::{Error, Result};

/// What one sink has written for good.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The sink.
    pub sink_id: String,
    /// The usage topic the offsets belong to.
    pub topic: String,
    /// Sequence of the last completed roll (0: none yet).
    pub seq: u64,
    /// Next offset per partition held by this sink's files.
    pub offsets: BTreeMap<i32, i64>,
    /// When the manifest was written.
    pub updated_at: DateTime<Utc>,
}

impl Manifest {
    /// An empty manifest (nothing written yet).
    pub fn empty(sink_id: &str, topic: &str) -> Self {
        Self {
            sink_id: sink_id.to_owned(),
            topic: topic.to_owned(),
            seq: 0,
            offsets: BTreeMap::new(),
            updated_at: Utc::now(),
        }
    }

    /// Path of `sink_id`'s manifest under `root`.
    pub fn path(root: &Path, sink_id: &str) -> PathBuf {
        root.join(MANIFEST_DIR)
            .join(format!("manifest-{sink_id}.json"))
    }

    /// Reads `sink_id`'s manifest, `None` when it has none yet.
    pub fn load(root: &Path, sink_id: &str) -> Result<Option<Self>> {
        read(&Self::path(root, sink_id))
    }

    /// Every sink's manifest for `topic` (partitions may have moved between
    /// sinks of one group; the highest offset any of them wrote counts).
    pub fn load_all(root: &Path, topic: &str) -> Result<Vec<Self>> {
        let dir = root.join(MANIFEST_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing", dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io("listing", &dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("manifest-")
                && name.ends_with(".json")
                && let Some(m) = read(&path)?
                && m.topic == topic
            {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Writes the manifest atomically: temporary file, fsync, rename, fsync dir.
    pub fn store(&self, root: &Path) -> Result<()> {
        let path = Self::path(root, &self.sink_id);
        let dir = root.join(MANIFEST_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let temp = dir.join(format!(".manifest-{}.json.tmp", self.sink_id));
        let text = serde_json::to_vec_pretty(self).map_err(|e| Error::Manifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let mut f = File::create(&temp).map_err(|e| Error::io("creating", &temp, e))?;
        f.write_all(&text)
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io("writing", &temp, e))?;
        std::fs::rename(&temp, &path).map_err(|e| Error::io("renaming", &temp, e))?;
        sync_dir(&dir)
    }
}

fn read(path: &Path) -> Result<Option<Manifest>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Manifest {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Makes a rename in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("syncing", dir, e))
}

/// Removes what a crash left behind for `sink_id`: its temporary files, and its
/// files of rolls after `seq` (renamed before the manifest recorded them).
/// Returns the removed paths.
pub fn remove_orphans(root: &Path, sink_id: &str, seq: u64) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let dirs = paths::partition_dirs(root).map_err(|e| Error::io("listing", root, e))?;
    for (_, dir) in dirs {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io("listing", &dir, e))?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(paths::parse_file_name)
            else {
                continue;
            };
            if name.sink_id == sink_id && (name.temporary || name.seq > seq) {
                std::fs::remove_file(&path).map_err(|e| Error::io("removing", &path, e))?;
                removed.push(path);
            }
        }
    }
    Ok(removed)
}
