//! [`ParquetSink`]: buffers rows per day and org, writes them into open files on
//! each flush, and rolls (close, fsync, rename, manifest) by size, by time and on
//! shutdown. On open it removes what a crash left behind and learns, from every
//! sink's manifest, which offsets the files already hold, so re-delivered events
//! are not written twice.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::block::BlockBuilder;
use super::config::ParquetConfig;
use super::lock::DirLock;
use super::manifest::{Manifest, remove_orphans, sync_dir};
use super::{paths, schema};
use crate::error::{Error, Result};
use crate::progress::Cut;
use crate::row::{RowRef, UsageRow, date_from_days};

/// Partition of the tree: (days since the epoch, org).
type Key = (u16, String);

/// Rows of one day and org encoded together as they arrive.
const WRITE_ROWS: usize = 8192;

/// Columns whose values (nearly) never repeat.
const UNIQUE_COLUMNS: [&str; 4] = ["event_id", "job_id", "ts", "kafka_offset"];

struct OpenFile {
    writer: ArrowWriter<File>,
    temp: PathBuf,
    path: PathBuf,
}

/// What a roll made visible.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollOutcome {
    /// Files renamed into place.
    pub files: u64,
    /// Rows in them.
    pub rows: u64,
}

/// Writes usage rows into the Parquet tree.
pub struct ParquetSink {
    config: ParquetConfig,
    props: WriterProperties,
    manifest: Manifest,
    /// Highest next-offset any sink's files hold, per partition.
    held: Cut,
    buffered: BTreeMap<Key, BlockBuilder>,
    buffered_rows: usize,
    /// Open files, in the order they were opened (few: one per day and org).
    open: Vec<(Key, OpenFile)>,
    open_rows: u64,
    opened_at: Option<Instant>,
    /// This sink's hold on the directory for its `sink_id`, until dropped.
    _lock: DirLock,
}

impl ParquetSink {
    /// Opens the tree: creates it, locks it for this sink's id (refusing when
    /// another sink with the same id has it open), removes this sink's crash
    /// leftovers, reads the manifests.
    pub fn open(config: ParquetConfig) -> Result<Self> {
        config.validate()?;
        std::fs::create_dir_all(&config.dir).map_err(|e| Error::io("creating", &config.dir, e))?;
        let lock = DirLock::acquire(&config.dir, &config.sink_id)?;
        let manifest = match Manifest::load(&config.dir, &config.sink_id)? {
            Some(m) if m.topic == config.topic => m,
            Some(m) => {
                return Err(Error::Invalid(format!(
                    "the Parquet manifest of sink `{}` in {} is for topic `{}`, not `{}`; give this sink another analytics.sink_id or parquet_dir",
                    config.sink_id,
                    config.dir.display(),
                    m.topic,
                    config.topic
                )));
            }
            None => {
                refuse_unrecorded_files(&config)?;
                Manifest::empty(&config.sink_id, &config.topic)
            }
        };
        let removed = remove_orphans(&config.dir, &config.sink_id, manifest.seq)?;
        if !removed.is_empty() {
            warn!(sink_id = %config.sink_id, files = removed.len(), seq = manifest.seq, "Removed Parquet files of an unfinished roll; their events are written again.");
        }
        let mut held = Cut::new();
        for m in Manifest::load_all(&config.dir, &config.topic)? {
            for (p, o) in m.offsets {
                let e = held.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
        }
        let level = ZstdLevel::try_new(config.zstd_level)
            .map_err(|e| Error::Invalid(format!("Parquet zstd level: {e}")))?;
        // Ids and Kafka positions are unique per row: a dictionary only costs
        // time before the writer falls back to plain encoding. Chunk-level
        // statistics are what readers prune row groups by.
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            .set_max_row_group_row_count(Some(config.row_group_rows))
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_created_by("switchyard usage sink".into());
        for column in UNIQUE_COLUMNS {
            props = props.set_column_dictionary_enabled(ColumnPath::from(column), false);
        }
        let props = props.build();
        info!(dir = %config.dir.display(), sink_id = %config.sink_id, seq = manifest.seq, partitions = held.len(), "Parquet store open.");
        Ok(Self {
            config,
            props,
            manifest,
            held,
            buffered: BTreeMap::new(),
            buffered_rows: 0,
            open: Vec::new(),
            open_rows: 0,
            opened_at: None,
            _lock: lock,
        })
    }

    /// Whether the files already hold this offset (a re-delivery after a restart).
    pub fn holds(&self, partition: i32, offset: i64) -> bool {
        self.held.get(&partition).is_some_and(|next| offset < *next)
    }

    /// Re-reads every sink's manifest: after a rebalance, partitions this sink
    /// takes over may hold offsets another sink already wrote.
    pub fn reload_held(&mut self) -> Result<()> {
        for m in Manifest::load_all(&self.config.dir, &self.config.topic)? {
            for (p, o) in m.offsets {
                let e = self.held.entry(p).or_insert(o);
                *e = (*e).max(o);
            }
        }
        Ok(())
    }

    /// Queues a row for the next flush (rows one at a time: tests, benchmarks;
    /// the sink itself hands over whole record batches with [`ParquetSink::write_batch`]).
    pub fn push(&mut self, row: UsageRow) -> Result<()> {
        let key = (row.day, row.org.clone());
        let rows = self
            .buffered
            .entry(key.clone())
            .or_insert_with(|| BlockBuilder::with_capacity(WRITE_ROWS));
        rows.append(&RowRef::of_row(&row));
        self.buffered_rows += 1;
        if rows.len() >= WRITE_ROWS {
            // Encode while the rows are still in cache, and keep buffers small.
            if let Some(mut rows) = self.buffered.remove(&key) {
                self.buffered_rows -= rows.len();
                let batch = rows
                    .finish()
                    .map_err(|e| Error::parquet(&self.config.dir, e))?;
                self.write_batch(key.0, &key.1, &batch)?;
            }
        }
        Ok(())
    }

    /// Rows queued and not yet in a file.
    pub fn buffered_rows(&self) -> usize {
        self.buffered_rows
    }

    /// Rows in open (not yet visible) files.
    pub fn open_rows(&self) -> u64 {
        self.open_rows
    }

    /// The last completed roll.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Writes the queued rows into the open files (opening them as needed).
    pub fn flush(&mut self) -> Result<()> {
        if self.buffered_rows == 0 {
            return Ok(());
        }
        let buffered = std::mem::take(&mut self.buffered);
        self.buffered_rows = 0;
        for ((day, org), mut rows) in buffered {
            let batch = rows
                .finish()
                .map_err(|e| Error::parquet(&self.config.dir, e))?;
            self.write_batch(day, &org, &batch)?;
        }
        Ok(())
    }

    /// Appends rows of one day and org (a batch of [`schema::schema`]) to their
    /// open file, creating it if needed.
    pub fn write_batch(&mut self, day: u16, org: &str, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let file = match self.open.iter().position(|(k, _)| k.0 == day && k.1 == org) {
            Some(i) => &mut self.open[i].1,
            None => {
                let key = (day, org.to_owned());
                let file = self.create(&key)?;
                self.open.push((key, file));
                let last = self.open.len() - 1;
                &mut self.open[last].1
            }
        };
        file.writer
            .write(batch)
            .map_err(|e| Error::parquet(&file.temp, e))?;
        self.open_rows += batch.num_rows() as u64;
        if self.opened_at.is_none() {
            self.opened_at = Some(Instant::now());
        }
        Ok(())
    }

    /// Whether the open files are due: one is past the size limit, or the oldest
    /// data in them is past the roll interval.
    pub fn should_roll(&self, now: Instant) -> bool {
        let Some(opened) = self.opened_at else {
            return false;
        };
        now.duration_since(opened) >= self.config.roll_interval
            || self.open.iter().any(|(_, f)| {
                f.writer.bytes_written() as u64 + f.writer.in_progress_size() as u64
                    >= self.config.max_file_bytes
            })
    }

    /// Makes everything pushed so far visible: flushes, closes and renames the open
    /// files, then records `cut` (everything consumed up to now) in the manifest.
    pub fn roll(&mut self, cut: &Cut) -> Result<RollOutcome> {
        self.flush()?;
        let seq = self.manifest.seq + 1;
        let open = std::mem::take(&mut self.open);
        let mut outcome = RollOutcome::default();
        let mut dirs = Vec::new();
        for (_, file) in open {
            let OpenFile { writer, temp, path } = file;
            let metadata = writer.close().map_err(|e| Error::parquet(&temp, e))?;
            let rows = metadata.file_metadata().num_rows() as u64;
            File::open(&temp)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io("syncing", &temp, e))?;
            std::fs::rename(&temp, &path).map_err(|e| Error::io("renaming", &temp, e))?;
            if let Some(dir) = path.parent() {
                dirs.push(dir.to_owned());
            }
            debug!(file = %path.display(), rows, "Parquet file written.");
            outcome.files += 1;
            outcome.rows += rows;
        }
        dirs.dedup();
        for dir in &dirs {
            sync_dir(dir)?;
        }
        let mut manifest = self.manifest.clone();
        if outcome.files > 0 {
            manifest.seq = seq;
        }
        for (p, o) in cut {
            let e = manifest.offsets.entry(*p).or_insert(*o);
            *e = (*e).max(*o);
            let h = self.held.entry(*p).or_insert(*o);
            *h = (*h).max(*o);
        }
        manifest.updated_at = chrono::Utc::now();
        if manifest.offsets != self.manifest.offsets || manifest.seq != self.manifest.seq {
            manifest.store(&self.config.dir)?;
        }
        self.manifest = manifest;
        self.open_rows = 0;
        self.opened_at = None;
        if outcome.files > 0 {
            info!(
                seq,
                files = outcome.files,
                rows = outcome.rows,
                "Parquet roll complete."
            );
        }
        Ok(outcome)
    }

    fn create(&self, key: &Key) -> Result<OpenFile> {
        let dir = paths::partition_dir(&self.config.dir, date_from_days(key.0), &key.1);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
        let seq = self.manifest.seq + 1;
        let n = self.open.len() as u32;
        let temp = dir.join(paths::temp_name(seq, n, &self.config.sink_id));
        let path = dir.join(paths::file_name(seq, n, &self.config.sink_id));
        let file = File::create(&temp).map_err(|e| Error::io("creating", &temp, e))?;
        let writer = ArrowWriter::try_new(file, schema::schema(), Some(self.props.clone()))
            .map_err(|e| Error::parquet(&temp, e))?;
        Ok(OpenFile { writer, temp, path })
    }
}

/// Without a manifest, finished files of this sink are either the first roll of a
/// run that crashed before recording it, or the history of a sink whose manifest
/// was lost: only a person can tell, so the sink refuses rather than delete.
fn refuse_unrecorded_files(config: &ParquetConfig) -> Result<()> {
    let files: Vec<PathBuf> = paths::data_files(&config.dir)
        .map_err(|e| Error::io("listing", &config.dir, e))?
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(paths::parse_file_name)
                .is_some_and(|f| f.sink_id == config.sink_id && !f.temporary)
        })
        .collect();
    if files.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "{} holds {} Parquet files of sink `{}` (for example {}) but no manifest for it ({}): restore the manifest, or, if the sink crashed during its very first roll, delete those files (they were never committed); or give this sink another analytics.sink_id",
        config.dir.display(),
        files.len(),
        config.sink_id,
        files[0].display(),
        Manifest::path(&config.dir, &config.sink_id).display()
    )))
}
