//! One sink per `sink_id` on a Parquet directory. Two sinks with the same id
//! would write files of the same names and each remove the other's temporary
//! files as crash leftovers, so a sink holds an exclusive lock on
//! `_switchyard/lock-<sink_id>` for as long as its [`super::ParquetSink`] is
//! open. The lock is the OS's advisory file lock (`flock` on Unix, `LockFileEx`
//! on Windows) through `std::fs::File::try_lock`: the OS releases it when the
//! file is closed or the process ends, however it ends, so a killed sink
//! leaves no stale lock behind. The file itself stays (deleting it would let a
//! third sink lock a new file while a second still waits on the old one); it
//! names its last holder, for the refusal's message.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};

use super::paths::MANIFEST_DIR;
use crate::error::{Error, Result};

/// An exclusive lock on a Parquet directory for one `sink_id`, released when
/// dropped.
#[derive(Debug)]
pub struct DirLock {
    /// Holding the open file holds the lock.
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Path of `sink_id`'s lock file under `root`.
    pub fn path(root: &Path, sink_id: &str) -> PathBuf {
        root.join(MANIFEST_DIR).join(format!("lock-{sink_id}"))
    }

    /// Takes the lock, or refuses naming the sink that holds it.
    pub fn acquire(root: &Path, sink_id: &str) -> Result<Self> {
        let path = Self::path(root, sink_id);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("opening", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    dir: root.to_owned(),
                    sink_id: sink_id.to_owned(),
                    holder: holder(&mut file),
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("locking", &path, e)),
        }
        let stamp = format!(
            "pid {} on {} since {}\n",
            std::process::id(),
            host_name(),
            Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(stamp.as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io("writing", &path, e))?;
        Ok(Self { _file: file, path })
    }

    /// Whether another process (or another open sink of this one) holds the
    /// lock of any sink on `root` now, and who: for tools that would clear
    /// the directory.
    pub fn holders(root: &Path) -> Result<Vec<String>> {
        let dir = root.join(MANIFEST_DIR);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("listing", dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io("listing", &dir, e))?.path();
            let Some(sink_id) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("lock-"))
            else {
                continue;
            };
            let mut file = File::open(&path).map_err(|e| Error::io("opening", &path, e))?;
            match file.try_lock_shared() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    out.push(format!("sink `{sink_id}` ({})", holder(&mut file)));
                }
                Err(TryLockError::Error(e)) => return Err(Error::io("locking", &path, e)),
            }
        }
        Ok(out)
    }

    /// The lock file.
    pub fn file(&self) -> &Path {
        &self.path
    }
}

/// What the lock file says about its holder.
fn holder(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim() {
        "" => "holder not yet recorded".to_owned(),
        t => t.to_owned(),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "an unknown host".to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::row::UsageRow;
    use crate::sinks::parquet::{ParquetConfig, ParquetSink};

    /// Files under `dir` whose name ends with `.tmp` (open Parquet files).
    fn temp_files(dir: &Path) -> usize {
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                n += temp_files(&path);
            } else if path.to_string_lossy().ends_with(".tmp") {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn a_second_sink_with_the_same_id_is_refused_before_it_touches_the_first_ones_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = ParquetConfig {
            dir: dir.path().to_owned(),
            sink_id: "s".into(),
            topic: "usage".into(),
            max_file_bytes: 1 << 20,
            roll_interval: Duration::from_secs(60),
            row_group_rows: 1024,
            zstd_level: 1,
        };
        let mut first = ParquetSink::open(config.clone()).unwrap();
        first
            .push(UsageRow::from_event(crate::sample::event(1), "usage", 0, 0))
            .unwrap();
        first.flush().unwrap();
        assert_eq!(temp_files(dir.path()), 1);
        let err = ParquetSink::open(config.clone()).err().unwrap();
        assert!(matches!(err, Error::Locked { .. }), "{err}");
        assert_eq!(
            temp_files(dir.path()),
            1,
            "the refused sink removed nothing"
        );
        assert_eq!(first.roll(&[(0, 1)].into()).unwrap().rows, 1);
        drop(first);
        assert!(
            ParquetSink::open(config).is_ok(),
            "the lock goes with the first sink"
        );
    }

    #[test]
    fn a_second_holder_of_one_sink_id_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), "sink-a").unwrap();
        let err = DirLock::acquire(dir.path(), "sink-a").unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Locked { .. }), "{err:?}");
        assert!(
            text.contains(&format!("pid {}", std::process::id())),
            "{text}"
        );
        assert!(text.contains("analytics.sink_id"), "{text}");
        assert_eq!(DirLock::holders(dir.path()).unwrap().len(), 1);
        // Another sink id is another lock.
        let other = DirLock::acquire(dir.path(), "sink-b").unwrap();
        assert_eq!(DirLock::holders(dir.path()).unwrap().len(), 2);
        drop(first);
        let again = DirLock::acquire(dir.path(), "sink-a").unwrap();
        assert!(again.file().ends_with("_switchyard/lock-sink-a"));
        drop((again, other));
        assert!(DirLock::holders(dir.path()).unwrap().is_empty());
    }
}
