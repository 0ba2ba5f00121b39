//! `submit`: validate a batch file in a first streaming pass, then produce one
//! job per accepted line in a second, and record the batch in the registry.
//!
//! Idempotency: the batch id comes from the project and the file's SHA-256, and
//! each job id from the batch id and the line's position, so the same file
//! names the same jobs. A resubmission of a batch already `submitted` produces
//! nothing; one of a batch left `submitting` (the first run died) reads which
//! jobs are already on the jobs topic and produces only the others.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use switchyard_codec::Codec;
use switchyard_core::batch::{BatchFormat, BatchRecord, BatchState};
use switchyard_core::config::{KafkaConfig, LoadedPipeline};
use switchyard_core::routing::Strategy;
use switchyard_kafka::{ScanFrom, scan_to_end};

use crate::bits::BitSet;
use crate::formats::{self, LineSettings, META_LINE, ModelPins};
use crate::lines::{Line, LineReader};
use crate::progress::{Progress, Unit};
use crate::sender::Sender;
use crate::validate::{Validation, max_line_bytes, validate_file};
use crate::{Error, Result, ids, registry};

/// How far before `submitted_at` scans start, for clock skew between machines.
pub const CLOCK_SKEW: Duration = Duration::from_secs(120);

/// Longest wait for the last acknowledgements.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(300);

/// What `submit` was asked to do.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// Org path every job belongs to.
    pub project: String,
    /// Strategy forced on every job.
    pub strategy: Option<Strategy>,
    /// Workload of every job.
    pub workload: Option<String>,
    /// Submit the valid lines even when some are invalid.
    pub skip_invalid: bool,
    /// Where refused lines are written with `skip_invalid`
    /// (default: `FILE.rejects.jsonl` beside the input).
    pub rejects_path: Option<PathBuf>,
}

/// What `submit` did.
#[derive(Debug, Clone, Serialize)]
pub struct SubmitReport {
    /// The batch id.
    pub batch_id: String,
    /// The file's format.
    pub format: BatchFormat,
    /// Jobs in the batch.
    pub jobs: u64,
    /// Lines refused (only with `skip_invalid`).
    pub invalid: u64,
    /// Jobs produced by this run (0 when the batch was already submitted).
    pub produced: u64,
    /// The batch was already fully submitted; nothing was produced.
    pub already_submitted: bool,
    /// An interrupted earlier submission was finished.
    pub resumed: bool,
    /// Where refused lines were written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects_file: Option<PathBuf>,
    /// The batch's state now.
    pub state: BatchState,
}

/// The default rejects file of `input`.
pub fn default_rejects_path(input: &Path) -> PathBuf {
    let mut name = input
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "batch".into());
    name.push(".rejects.jsonl");
    input.with_file_name(name)
}

/// Line settings for `options` against a pipeline's catalog and org tree.
pub fn line_settings(pipeline: &LoadedPipeline, options: &SubmitOptions) -> Result<LineSettings> {
    pipeline
        .org
        .policy(&options.project, options.workload.as_deref())
        .map_err(|e| Error::UnknownProject(e.to_string()))?;
    Ok(LineSettings {
        project: options.project.clone(),
        strategy: options.strategy,
        workload: options.workload.clone(),
        pins: ModelPins::from_catalog(&pipeline.catalog),
    })
}

/// Submits the batch file at `path`.
pub fn submit(
    pipeline: &LoadedPipeline,
    path: &Path,
    options: &SubmitOptions,
    progress: &dyn Progress,
) -> Result<SubmitReport> {
    let kafka = &pipeline.config.kafka;
    let settings = line_settings(pipeline, options)?;
    let rejects = options.skip_invalid.then(|| {
        options
            .rejects_path
            .clone()
            .unwrap_or_else(|| default_rejects_path(path))
    });
    let started = std::time::Instant::now();
    // Connecting and the idempotent producer's handshake happen in librdkafka's
    // threads while the file is validated.
    let mut sender = Sender::new(kafka)?;
    let (validation, reader) = std::thread::scope(|scope| {
        let warm = &sender;
        let reader = scope.spawn(move || {
            warm.warm_up(&[&kafka.topics.jobs.name, &kafka.topics.batches]);
            registry::RegistryReader::new(kafka)
        });
        let validation = validate_file(
            path,
            &settings,
            &kafka.topics.jobs,
            rejects.as_deref(),
            progress,
        );
        let reader = reader
            .join()
            .unwrap_or_else(|_| registry::RegistryReader::new(kafka));
        (validation, reader)
    });
    let (validation, reader) = (validation?, reader?);
    tracing::debug!(
        lines = validation.lines,
        invalid = validation.invalid,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Batch file validated."
    );
    if validation.invalid > 0 && !options.skip_invalid {
        return Err(Error::InvalidLines {
            path: path.to_owned(),
            lines: validation.lines,
            invalid: validation.invalid,
            examples: validation.examples,
        });
    }
    if validation.accepted == 0 {
        return Err(Error::NothingToSubmit {
            path: path.to_owned(),
        });
    }
    let batch_id = ids::batch_id(&options.project, &validation.sha256);
    let mut report = SubmitReport {
        batch_id: batch_id.clone(),
        format: validation.format,
        jobs: validation.accepted,
        invalid: validation.invalid,
        produced: 0,
        already_submitted: false,
        resumed: false,
        rejects_file: (validation.invalid > 0).then(|| rejects.clone()).flatten(),
        state: BatchState::Submitting,
    };
    let existing = reader.read(&batch_id)?;
    tracing::debug!(batch_id = %batch_id, elapsed_ms = started.elapsed().as_millis() as u64, "Registry read.");
    let (record, already_on_topic) = match existing {
        Some(r) => {
            check_same(&r, &validation, options)?;
            match r.state {
                BatchState::Submitted => {
                    tracing::info!(batch_id = %batch_id, "Batch already submitted; nothing to do.");
                    report.already_submitted = true;
                    report.state = r.state;
                    return Ok(report);
                }
                BatchState::Canceled => {
                    return Err(Error::Conflict(format!(
                        "batch `{batch_id}` (this file, project `{}`) was canceled{}; a canceled batch is not run again (collect it, or submit a changed file as a new batch)",
                        r.project,
                        r.canceled_at
                            .map(|t| format!(" at {t}"))
                            .unwrap_or_default()
                    )));
                }
                BatchState::Submitting => {
                    tracing::info!(batch_id = %batch_id, "Finishing an interrupted submission.");
                    report.resumed = true;
                    let on_topic = jobs_on_topic(kafka, &r, progress)?;
                    (r, on_topic)
                }
            }
        }
        None => {
            let r = BatchRecord {
                batch_id: batch_id.clone(),
                project: options.project.clone(),
                format: validation.format,
                state: BatchState::Submitting,
                jobs: validation.accepted,
                source_sha256: validation.sha256.clone(),
                file_name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                strategy: options.strategy,
                workload: options.workload.clone(),
                submitted_at: Utc::now(),
                canceled_at: None,
            };
            registry::publish_with(&mut sender, kafka, &r)?;
            (r, BitSet::default())
        }
    };
    report.produced = produce(
        &mut sender,
        kafka,
        path,
        &settings,
        &validation,
        &batch_id,
        &already_on_topic,
        progress,
    )?;
    tracing::debug!(batch_id = %batch_id, produced = report.produced, elapsed_ms = started.elapsed().as_millis() as u64, "Jobs produced.");
    // A cancel that arrived meanwhile wins: never overwrite it.
    let now = reader.read(&batch_id)?;
    if now.is_some_and(|r| r.state == BatchState::Canceled) {
        report.state = BatchState::Canceled;
        return Ok(report);
    }
    registry::publish_with(
        &mut sender,
        kafka,
        &BatchRecord {
            state: BatchState::Submitted,
            ..record
        },
    )?;
    // A cancel published between the read above and this record still wins.
    if registry::keep_cancel(&reader, &mut sender, kafka, &batch_id)? == Some(BatchState::Canceled)
    {
        report.state = BatchState::Canceled;
        return Ok(report);
    }
    report.state = BatchState::Submitted;
    tracing::info!(batch_id = %batch_id, jobs = report.jobs, produced = report.produced, "Batch submitted.");
    Ok(report)
}

/// A resubmission must ask for what the registered batch is.
fn check_same(r: &BatchRecord, v: &Validation, options: &SubmitOptions) -> Result<()> {
    let mut differences = Vec::new();
    if r.strategy != options.strategy {
        differences.push(format!(
            "strategy {} (now {})",
            r.strategy.map_or("none".into(), |s| s.to_string()),
            options.strategy.map_or("none".into(), |s| s.to_string())
        ));
    }
    if r.workload != options.workload {
        differences.push(format!(
            "workload {} (now {})",
            r.workload.as_deref().unwrap_or("none"),
            options.workload.as_deref().unwrap_or("none")
        ));
    }
    if r.jobs != v.accepted {
        differences.push(format!("{} jobs (now {})", r.jobs, v.accepted));
    }
    if differences.is_empty() {
        return Ok(());
    }
    Err(Error::Conflict(format!(
        "this file was already submitted to `{}` as batch `{}` with {}; resubmit with the same options (or change the file to make a new batch)",
        r.project,
        r.batch_id,
        differences.join(", ")
    )))
}

/// Ordinals of `record`'s jobs already on the jobs topic.
fn jobs_on_topic(
    kafka: &KafkaConfig,
    record: &BatchRecord,
    progress: &dyn Progress,
) -> Result<BitSet> {
    let mut seen = BitSet::with_capacity(record.jobs);
    let from = record.submitted_at.timestamp_millis() - CLOCK_SKEW.as_millis() as i64;
    progress.start("checking", Unit::Items, None);
    let mut n = 0u64;
    scan_to_end(
        kafka,
        &kafka.topics.jobs.name,
        ScanFrom::Time(from),
        &Default::default(),
        Duration::from_secs(3600),
        |m| {
            if let Some(o) = m.key.and_then(|k| ids::ordinal_of(&record.batch_id, k))
                && o < record.jobs
            {
                seen.insert(o);
            }
            n += 1;
            if n.is_multiple_of(4096) {
                progress.advance(n);
            }
        },
    )
    .map_err(Error::kafka("jobs topic scan"))?;
    progress.finish();
    Ok(seen)
}

/// The second pass: produce every accepted line not yet on the topic.
#[allow(clippy::too_many_arguments)]
fn produce(
    sender: &mut Sender,
    kafka: &KafkaConfig,
    path: &Path,
    settings: &LineSettings,
    validation: &Validation,
    batch_id: &str,
    already: &BitSet,
    progress: &dyn Progress,
) -> Result<u64> {
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let topic = &kafka.topics.jobs;
    let codec = Codec::for_topic(topic);
    let mut reader = LineReader::new(file, max_line_bytes(topic));
    let mut ordinal = 0u64;
    let mut produced = 0u64;
    progress.start("submitting", Unit::Items, Some(validation.accepted));
    while let Some(line) = reader.next_line().map_err(read_err)? {
        let Line::Text { number, bytes } = line else {
            continue;
        };
        if validation.refused.contains(number) || bytes.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let this = ordinal;
        ordinal += 1;
        if already.contains(this) {
            continue;
        }
        let mut job = formats::parse_line(validation.format, bytes, settings)
            .map_err(|_| Error::FileChanged {
                path: path.to_owned(),
            })?
            .job;
        job.job_id = ids::job_id(batch_id, this);
        job.batch_id = Some(batch_id.to_owned());
        job.metadata
            .insert(META_LINE.to_owned(), number.to_string());
        let payload = codec
            .encode(&job)
            .map_err(|e| Error::Encode(e.to_string()))?;
        sender.send(&topic.name, job.job_id.as_bytes(), &payload)?;
        produced += 1;
        if ordinal.is_multiple_of(1024) {
            progress.advance(ordinal);
        }
    }
    progress.advance(ordinal);
    let sha = reader.finish();
    if sha != validation.sha256 || ordinal != validation.accepted {
        return Err(Error::FileChanged {
            path: path.to_owned(),
        });
    }
    sender.flush(FLUSH_TIMEOUT)?;
    progress.finish();
    Ok(produced)
}
