//! The Parquet tree's names: Hive-style partition directories
//! (`day=2026-11-25/org=acme/`), file names that carry the roll sequence and the
//! sink id (`part-0000000042-0003-switchyard-analytics.parquet`), hidden temporary
//! names for files being written, and the manifest folder `_switchyard/`.
//! Readers (pyarrow, DuckDB) skip names starting with `.` or `_`.

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

/// Folder of the sinks' manifests under the Parquet root.
pub const MANIFEST_DIR: &str = "_switchyard";

/// Directory of one day and org under `root`.
pub fn partition_dir(root: &Path, day: NaiveDate, org: &str) -> PathBuf {
    root.join(format!("day={}", day.format("%Y-%m-%d")))
        .join(format!("org={}", escape(org)))
}

/// A Hive partition value: bytes outside `[A-Za-z0-9._-]` (and a leading `.` or
/// `_`, which readers would take for a hidden file) as `%XX`.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, b) in value.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
        if plain && !(i == 0 && matches!(b, b'.' | b'_')) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// Reverses [`escape`].
pub fn unescape(value: &str) -> String {
    if value == "%00" {
        return String::new();
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A sink id safe in file names.
pub fn sanitize_sink_id(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "sink".into() } else { s }
}

/// Final name of file `n` of roll `seq` by `sink_id`.
pub fn file_name(seq: u64, n: u32, sink_id: &str) -> String {
    format!("part-{seq:010}-{n:04}-{sink_id}.parquet")
}

/// Hidden name a file has while it is being written.
pub fn temp_name(seq: u64, n: u32, sink_id: &str) -> String {
    format!(".{}.tmp", file_name(seq, n, sink_id))
}

/// What a file name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileName {
    /// Roll sequence.
    pub seq: u64,
    /// File number within the roll.
    pub n: u32,
    /// Sink that wrote it.
    pub sink_id: String,
    /// Still being written (or left by a crash while being written).
    pub temporary: bool,
}

/// Parses a name made by [`file_name`] or [`temp_name`].
pub fn parse_file_name(name: &str) -> Option<FileName> {
    let (body, temporary) = match name.strip_prefix('.') {
        Some(rest) => (rest.strip_suffix(".tmp")?, true),
        None => (name, false),
    };
    let body = body.strip_prefix("part-")?.strip_suffix(".parquet")?;
    let mut parts = body.splitn(3, '-');
    let seq = parts.next()?.parse().ok()?;
    let n = parts.next()?.parse().ok()?;
    let sink_id = parts.next()?.to_owned();
    Some(FileName {
        seq,
        n,
        sink_id,
        temporary,
    })
}

/// The day of a `day=YYYY-MM-DD` directory name.
pub fn parse_day_dir(name: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(name.strip_prefix("day=")?, "%Y-%m-%d").ok()
}

/// Every data file (final names only) under `root`, with its day, sorted.
pub fn data_files(root: &Path) -> std::io::Result<Vec<(NaiveDate, PathBuf)>> {
    let mut out = Vec::new();
    for (day, dir) in partition_dirs(root)? {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".parquet") && !name.starts_with('.') && !name.starts_with('_') {
                out.push((day, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every `day=…/org=…` directory under `root`.
pub fn partition_dirs(root: &Path) -> std::io::Result<Vec<(NaiveDate, PathBuf)>> {
    let mut out = Vec::new();
    let days = match std::fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for day in days {
        let day = day?;
        let Some(date) = day.file_name().to_str().and_then(parse_day_dir) else {
            continue;
        };
        if !day.file_type()?.is_dir() {
            continue;
        }
        for org in std::fs::read_dir(day.path())? {
            let org = org?;
            if org.file_type()?.is_dir()
                && org
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with("org="))
            {
                out.push((date, org.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}
