//! `collect`: wait until every job of a batch has a final result, then write the
//! results in the batch's input order, in its format (or the one asked).
//!
//! Memory does not grow with the batch beyond its ordering index. Each result is
//! rendered as its output line when it arrives and appended to a temporary spill
//! file beside the output; what stays in memory is, per job, the spill offset of
//! its kept copy (8 bytes) and its status (1 byte): 9 bytes per job. Then the
//! output is written by reading the spill in job order. Besides that: librdkafka's
//! prefetch (capped at 16 MiB), one result being decoded, and I/O buffers.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_core::batch::{BatchFormat, BatchRecord};
use switchyard_core::config::KafkaConfig;
use switchyard_core::result::JobResult;
use tempfile::NamedTempFile;

use crate::follow::ResultFollower;
use crate::formats::{self, Destination, META_CUSTOM_ID, ModelIds};
use crate::progress::{Progress, Unit};
use crate::side_files::check_apart;
use crate::tally::{Counts, Kept, Tally};
use crate::{Error, Result, registry};

/// Bytes of memory per job while collecting: spill offset and status.
pub const INDEX_BYTES_PER_JOB: usize = 8 + Tally::BYTES_PER_JOB;

/// Asks a long wait to stop (Ctrl-C); cloned into a signal handler.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Asks the wait to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a stop was asked.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What `collect` was asked to do.
#[derive(Debug, Clone)]
pub struct CollectOptions {
    /// The output file.
    pub output: PathBuf,
    /// OpenAI's errors file (default: `NAME.errors.jsonl` beside the output);
    /// written only when some request did not succeed, as OpenAI does.
    pub errors_output: Option<PathBuf>,
    /// Output format; default: the batch's input format.
    pub format: Option<BatchFormat>,
    /// Give up after this long.
    pub timeout: Option<Duration>,
    /// Pause between reads of the results topic.
    pub poll_interval: Duration,
    /// The providers' API model ids, for `model` in OpenAI and Anthropic
    /// output (empty: Switchyard's catalog names).
    pub models: ModelIds,
}

impl CollectOptions {
    /// Defaults for writing to `output`.
    pub fn new(output: impl Into<PathBuf>) -> Self {
        Self {
            output: output.into(),
            errors_output: None,
            format: None,
            timeout: None,
            poll_interval: Duration::from_millis(500),
            models: ModelIds::default(),
        }
    }
}

/// What `collect` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct CollectReport {
    /// The batch.
    pub batch_id: String,
    /// The format written.
    pub format: BatchFormat,
    /// The output file.
    pub output: PathBuf,
    /// Lines in it.
    pub output_lines: u64,
    /// The errors file (OpenAI format only, and only when some request did
    /// not succeed: with none, no errors file is written, as OpenAI does).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors_output: Option<PathBuf>,
    /// Lines in it.
    pub error_lines: u64,
    /// Jobs by final state.
    pub counts: Counts,
    /// What every result copy cost.
    pub cost_usd: f64,
    /// Result copies dropped as duplicates.
    pub duplicates: u64,
    /// Memory held by the ordering index, bytes.
    pub index_bytes: u64,
    /// Size the spill file reached, bytes.
    pub spill_bytes: u64,
}

/// The default errors file for `output`: `NAME.errors.jsonl` (from `NAME.jsonl`).
pub fn default_errors_path(output: &Path) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "output".into());
    output.with_file_name(format!("{stem}.errors.jsonl"))
}

/// Rendered result lines, appended as they arrive, read back by offset.
struct Spill {
    writer: BufWriter<File>,
    offset: u64,
    path: PathBuf,
}

/// Index entry of a job with no result kept yet.
const NOT_KEPT: u64 = u64::MAX;

impl Spill {
    /// A spill file in `dir`, removed when closed.
    fn create(dir: &Path) -> Result<Self> {
        let file = tempfile::tempfile_in(dir).map_err(write_err(dir))?;
        Ok(Self {
            writer: BufWriter::with_capacity(1 << 20, file),
            offset: 0,
            path: dir.join("(spill)"),
        })
    }

    fn append(&mut self, destination: Destination, line: &[u8]) -> std::io::Result<u64> {
        let at = self.offset;
        let tag = match destination {
            Destination::Output => 0u8,
            Destination::Errors => 1u8,
        };
        let len = u32::try_from(line.len())
            .map_err(|_| std::io::Error::other("a result line over 4 GiB"))?;
        self.writer.write_all(&[tag])?;
        self.writer.write_all(&len.to_le_bytes())?;
        self.writer.write_all(line)?;
        self.offset += 5 + line.len() as u64;
        Ok(at)
    }
}

/// An I/O error on `path`, as a write error.
fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_owned();
    move |source| Error::Write { path, source }
}

/// Waits for every result of `batch_id` and writes the output.
pub fn collect(
    kafka: &KafkaConfig,
    batch_id: &str,
    options: &CollectOptions,
    stop: &StopFlag,
    progress: &dyn Progress,
) -> Result<CollectReport> {
    if let Some(errors) = &options.errors_output {
        check_apart(errors, "--errors", &options.output, "output")?;
    }
    let record = registry::get(kafka, batch_id)?;
    let format = options.format.unwrap_or(record.format);
    let dir = match options.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut gathered = Gathered {
        spill: Spill::create(&dir)?,
        index: vec![NOT_KEPT; record.jobs as usize],
        tally: Tally::new(record.jobs),
    };
    gathered.wait_for_results(kafka, &record, format, options, stop, progress)?;
    let spill_bytes = gathered.spill.offset;
    let errors_output = (format == BatchFormat::Openai).then(|| {
        options
            .errors_output
            .clone()
            .unwrap_or_else(|| default_errors_path(&options.output))
    });
    let Gathered {
        spill,
        index,
        tally,
    } = gathered;
    let (output_lines, error_lines) = write_in_order(
        spill,
        &index,
        &dir,
        &options.output,
        errors_output.as_deref(),
    )?;
    let errors_output = errors_output.filter(|_| error_lines > 0);
    tracing::info!(
        batch_id,
        output_lines,
        error_lines,
        duplicates = tally.duplicates,
        "Batch collected."
    );
    Ok(CollectReport {
        batch_id: batch_id.to_owned(),
        format,
        output: options.output.clone(),
        output_lines,
        errors_output,
        error_lines,
        counts: tally.counts(),
        cost_usd: tally.cost_usd,
        duplicates: tally.duplicates,
        index_bytes: (index.capacity() * 8 + record.jobs as usize * Tally::BYTES_PER_JOB) as u64,
        spill_bytes,
    })
}

/// The results gathered so far: each kept one rendered into the spill, its
/// offset there by job ordinal, and the tally.
struct Gathered {
    spill: Spill,
    /// Spill offset of each job's kept result ([`NOT_KEPT`]: none yet).
    index: Vec<u64>,
    tally: Tally,
}

impl Gathered {
    /// Follows the batch's results until every job has a final one, rendering
    /// each kept result into the spill; gives up when stopped or timed out.
    fn wait_for_results(
        &mut self,
        kafka: &KafkaConfig,
        record: &BatchRecord,
        format: BatchFormat,
        options: &CollectOptions,
        stop: &StopFlag,
        progress: &dyn Progress,
    ) -> Result<()> {
        let mut follower = ResultFollower::new(kafka, record);
        let deadline = options.timeout.map(|t| Instant::now() + t);
        let mut last_held = 0;
        let mut line = Vec::with_capacity(4096);
        let mut io_error: Option<std::io::Error> = None;
        progress.start("collecting", Unit::Items, Some(record.jobs));
        loop {
            follower.read_new(|ordinal, r: JobResult| {
                if io_error.is_some() {
                    return;
                }
                if let Err(e) = self.keep(ordinal, &r, format, &options.models, &mut line) {
                    io_error = Some(e);
                }
            })?;
            if let Some(e) = io_error.take() {
                return Err(Error::Write {
                    path: self.spill.path.clone(),
                    source: e,
                });
            }
            let finished = self.tally.counts().finished();
            progress.advance(finished);
            let held = self.tally.counts().held;
            if held != last_held {
                if held > 0 {
                    eprintln!(
                        "{held} job(s) held for approval; waiting for their decisions (`switchyard approvals list`)"
                    );
                }
                last_held = held;
            }
            if self.tally.complete() {
                break;
            }
            if stop.is_stopped() {
                progress.finish();
                return Err(Error::Interrupted {
                    finished,
                    jobs: record.jobs,
                    held: self.tally.counts().held,
                });
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                progress.finish();
                return Err(Error::TimedOut {
                    finished,
                    jobs: record.jobs,
                    held: self.tally.counts().held,
                });
            }
            sleep_unless_stopped(options.poll_interval, stop);
        }
        progress.finish();
        Ok(())
    }

    /// Counts a result and, when it is the copy to keep, renders it into the
    /// spill (`line` is a reused buffer).
    fn keep(
        &mut self,
        ordinal: u64,
        r: &JobResult,
        format: BatchFormat,
        models: &ModelIds,
        line: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        match self.tally.record(ordinal, r) {
            Kept::Duplicate | Kept::Held => Ok(()),
            Kept::First | Kept::Replaces => {
                let custom_id = r
                    .metadata
                    .get(META_CUSTOM_ID)
                    .map_or(r.job_id.as_str(), String::as_str);
                line.clear();
                let destination = formats::render(format, r, custom_id, models, line);
                self.index[ordinal as usize] = self.spill.append(destination, line)?;
                Ok(())
            }
        }
    }
}

/// Writes the kept results in job order (`index`: their offsets in the spill)
/// into temporary files beside the output, then moves them into place:
/// `output`, and `errors` (OpenAI's errors file) when some request failed.
/// Gives the line counts of each.
fn write_in_order(
    spill: Spill,
    index: &[u64],
    dir: &Path,
    output: &Path,
    errors: Option<&Path>,
) -> Result<(u64, u64)> {
    let spill_path = spill.path;
    let mut spill_file = spill.writer.into_inner().map_err(|e| Error::Write {
        path: spill_path.clone(),
        source: e.into_error(),
    })?;
    let mut out = NamedTempFile::new_in(dir).map_err(write_err(dir))?;
    let mut errs = match errors {
        Some(_) => Some(NamedTempFile::new_in(dir).map_err(write_err(dir))?),
        None => None,
    };
    let (mut output_lines, mut error_lines) = (0u64, 0u64);
    {
        let mut out_w = BufWriter::with_capacity(1 << 20, out.as_file_mut());
        let mut err_w = errs
            .as_mut()
            .map(|f| BufWriter::with_capacity(1 << 20, f.as_file_mut()));
        let mut header = [0u8; 5];
        let mut line = Vec::with_capacity(4096);
        for &at in index {
            if at == NOT_KEPT {
                continue;
            }
            spill_file
                .seek(SeekFrom::Start(at))
                .and_then(|_| spill_file.read_exact(&mut header))
                .map_err(write_err(&spill_path))?;
            let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
            line.resize(len, 0);
            spill_file
                .read_exact(&mut line)
                .map_err(write_err(&spill_path))?;
            line.push(b'\n');
            let target = match (header[0], err_w.as_mut()) {
                (1, Some(w)) => {
                    error_lines += 1;
                    w
                }
                _ => {
                    output_lines += 1;
                    &mut out_w
                }
            };
            target.write_all(&line).map_err(write_err(output))?;
        }
        out_w.flush().map_err(write_err(output))?;
        if let Some(mut w) = err_w {
            w.flush().map_err(write_err(output))?;
        }
    }
    out.persist(output).map_err(|e| Error::Write {
        path: output.to_owned(),
        source: e.error,
    })?;
    // No errors file when every request succeeded: the temporary one is
    // dropped, and one an earlier collect left at that path is removed.
    match (errs, errors) {
        (Some(f), Some(p)) if error_lines > 0 => {
            f.persist(p).map_err(|e| Error::Write {
                path: p.to_owned(),
                source: e.error,
            })?;
        }
        (_, Some(p)) => crate::error::remove_stale(p)?,
        _ => {}
    }
    Ok((output_lines, error_lines))
}

fn sleep_unless_stopped(d: Duration, stop: &StopFlag) {
    let end = Instant::now() + d;
    while !stop.is_stopped() {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
