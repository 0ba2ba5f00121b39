//! `submit`: validate a batch file in a first streaming pass, then produce one
//! job per accepted line in a second, and record the batch in the registry.
//!
//! Idempotency: the batch id comes from the project and the file's SHA-256, and
//! each job id from the batch id and the line's position, so the same file
//! names the same jobs. A resubmission of a batch already `submitted` produces
//! nothing; one of a batch left `submitting` (the first run died) reads which
//! jobs are already on the jobs topic and produces only the others. Two runs
//! never produce the same batch at once: each claims it in the registry first
//! ([`claim`]), and only one claim counts.
//!
//! A batch for a project whose policy holds work above an approval threshold
//! is priced in the first pass ([`worst_case`]): the registry record and every
//! job carry its worst case, so that workers hold the batch as a whole when
//! that passes the threshold, even if no job does alone.

mod claim;
mod produce;
mod worst_case;

use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_core::access::PrivateKey;

use chrono::Utc;
use serde::Serialize;
use switchyard_core::batch::{BatchFormat, BatchRecord, BatchState};
use switchyard_core::config::{KafkaConfig, LoadedPipeline};
use switchyard_core::routing::Strategy;
use switchyard_core::vocab::JobMode;

use self::claim::Claim;
pub use self::claim::DEFAULT_LEASE;
use self::worst_case::BatchWorstCase;
use crate::bits::BitSet;
use crate::error::SkipInvalid;
use crate::formats::{LineSettings, ModelPins};
use crate::progress::Progress;
use crate::sender::Sender;
use crate::side_files::check_apart;
use crate::validate::{Validation, validate_file};
use crate::{Error, Result, ids, registry};

/// How far before `submitted_at` scans start, for clock skew between machines.
pub const CLOCK_SKEW: Duration = Duration::from_secs(120);

/// Longest wait, after a failed submit, for the jobs it sent to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// What `submit` was asked to do.
#[derive(Debug, Clone)]
pub struct SubmitOptions {
    /// Org path every job belongs to.
    pub project: String,
    /// Strategy forced on every job.
    pub strategy: Option<Strategy>,
    /// Workload of every job.
    pub workload: Option<String>,
    /// Mode of every job that names none (`--mode live|deferred|auto`).
    pub mode: Option<JobMode>,
    /// Submit the valid lines even when some are invalid.
    pub skip_invalid: bool,
    /// Where refused lines are written with `skip_invalid`
    /// (default: `FILE.rejects.jsonl` beside the input).
    pub rejects_path: Option<PathBuf>,
    /// How long a submit run of the same batch that is not heard from keeps its
    /// claim before this one takes over ([`DEFAULT_LEASE`]; runs send a
    /// heartbeat every sixth of it).
    pub claim_lease: Duration,
    /// Signs every job with this key (`SWITCHYARD_API_KEY`), for nodes that
    /// require signed jobs.
    pub signer: Option<PrivateKey>,
}

impl SubmitOptions {
    /// Options for submitting to `project`, everything else by default.
    pub fn new(project: impl Into<String>) -> Self {
        Self {
            project: project.into(),
            strategy: None,
            workload: None,
            mode: None,
            skip_invalid: false,
            rejects_path: None,
            claim_lease: DEFAULT_LEASE,
            signer: None,
        }
    }
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
    /// Where refused lines were written (none when every line was valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejects_file: Option<PathBuf>,
    /// The batch's state now.
    pub state: BatchState,
    /// The most the whole batch may cost, USD, when its project holds work
    /// above an approval threshold (see [`BatchRecord::worst_case_usd`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worst_case_usd: Option<f64>,
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
        mode: options.mode,
        pins: ModelPins::from_catalog(&pipeline.catalog),
    })
}

/// Submits the batch file at `path`: validates it (while the producer
/// connects), claims the batch, produces its jobs under the claim, and records
/// the batch as submitted.
pub fn submit(
    pipeline: &LoadedPipeline,
    path: &Path,
    options: &SubmitOptions,
    progress: &dyn Progress,
) -> Result<SubmitReport> {
    let kafka = &pipeline.config.kafka;
    let settings = line_settings(pipeline, options)?;
    let rejects = options
        .rejects_path
        .clone()
        .unwrap_or_else(|| default_rejects_path(path));
    check_apart(&rejects, "--rejects", path, "input")?;
    let started = std::time::Instant::now();
    // Connecting and the idempotent producer's handshake happen in librdkafka's
    // threads while the file is validated.
    let mut sender = Sender::new(kafka)?;
    sender.sign_with(options.signer.clone());
    let (validation, reader, worst_case_usd) = validate_while_connecting(
        &sender, pipeline, path, &settings, options, &rejects, progress,
    )?;
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
            skip: SkipInvalid::Submit { rejects },
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
        rejects_file: validation.rejects_file.clone(),
        state: BatchState::Submitting,
        worst_case_usd,
    };
    let lease = options.claim_lease;
    let fresh = new_record(&batch_id, path, options, &validation, worst_case_usd);
    let claim = match claim::acquire(&reader, &mut sender, kafka, fresh, lease, |r| {
        check_same(r, &validation, options)
    })? {
        None => {
            tracing::info!(batch_id = %batch_id, "Batch already submitted; nothing to do.");
            report.already_submitted = true;
            report.state = BatchState::Submitted;
            return Ok(report);
        }
        Some(claim) => claim,
    };
    tracing::debug!(batch_id = %batch_id, elapsed_ms = started.elapsed().as_millis() as u64, "Batch claimed.");
    report.resumed = claim.resumed;
    report.worst_case_usd = claim.record.worst_case_usd;
    if claim.resumed {
        tracing::info!(batch_id = %batch_id, "Finishing an interrupted submission.");
    }
    let run = Claimed {
        kafka,
        path,
        settings: &settings,
        validation: &validation,
        claim: &claim,
        lease,
    };
    report.produced = run.produce_jobs(&mut sender, progress)?;
    tracing::debug!(batch_id = %batch_id, produced = report.produced, elapsed_ms = started.elapsed().as_millis() as u64, "Jobs produced.");
    report.state = run.mark_submitted(&reader, &mut sender)?;
    tracing::info!(batch_id = %batch_id, jobs = report.jobs, produced = report.produced, state = ?report.state, "Batch submitted.");
    Ok(report)
}

/// The first pass over the file, pricing the batch's worst case when its
/// project needs it ([`BatchWorstCase`]), while another thread warms the
/// producer up and opens the registry.
fn validate_while_connecting(
    sender: &Sender,
    pipeline: &LoadedPipeline,
    path: &Path,
    settings: &LineSettings,
    options: &SubmitOptions,
    rejects: &Path,
    progress: &dyn Progress,
) -> Result<(Validation, registry::RegistryReader, Option<f64>)> {
    let kafka = &pipeline.config.kafka;
    let mut priced =
        BatchWorstCase::for_project(pipeline, &options.project, options.workload.as_deref());
    let (validation, reader) = std::thread::scope(|scope| {
        let reader = scope.spawn(move || {
            sender.warm_up(&[&kafka.topics.jobs.name, &kafka.topics.batches]);
            registry::RegistryReader::new(kafka)
        });
        let validation = validate_file(
            path,
            settings,
            &kafka.topics.jobs,
            options.skip_invalid.then_some(rejects),
            progress,
            "validating",
            &mut |parsed| {
                if let Some(p) = priced.as_mut() {
                    p.add(&parsed.job);
                }
            },
        );
        let reader = reader
            .join()
            .unwrap_or_else(|_| registry::RegistryReader::new(kafka));
        (validation, reader)
    });
    Ok((validation?, reader?, priced.map(|p| p.total_usd())))
}

/// The registry record of a batch submitted for the first time.
fn new_record(
    batch_id: &str,
    path: &Path,
    options: &SubmitOptions,
    validation: &Validation,
    worst_case_usd: Option<f64>,
) -> BatchRecord {
    BatchRecord {
        batch_id: batch_id.to_owned(),
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
        mode: options.mode,
        submitted_at: Utc::now(),
        canceled_at: None,
        refused: validation.invalid,
        submitter: None,
        worst_case_usd,
    }
}

/// A validated batch that this run has claimed.
struct Claimed<'a> {
    kafka: &'a KafkaConfig,
    path: &'a Path,
    settings: &'a LineSettings,
    validation: &'a Validation,
    claim: &'a Claim,
    lease: Duration,
}

impl Claimed<'_> {
    /// The second pass: produces every job not yet on the topic while a
    /// heartbeat keeps the claim. On failure, lets what was sent settle and
    /// gives the claim up.
    fn produce_jobs(&self, sender: &mut Sender, progress: &dyn Progress) -> Result<u64> {
        let (kafka, claim) = (self.kafka, self.claim);
        let (produced, last_offset) = claim::with_heartbeat(claim, kafka, self.lease, |lease| {
            let already = if claim.resumed {
                produce::jobs_on_topic(kafka, &claim.record, progress, lease)?
            } else {
                BitSet::default()
            };
            produce::produce(
                &mut *sender,
                kafka,
                self.path,
                self.settings,
                self.validation,
                &claim.record,
                &already,
                progress,
                lease,
            )
        });
        match produced {
            Ok(n) => Ok(n),
            Err(e @ Error::ClaimLost { .. }) => Err(e),
            Err(e) => {
                // Let what was sent settle (delivered or failed) before the next
                // submit may look for it on the topic, then give the batch up.
                if let Err(unsettled) = sender.flush(SETTLE_TIMEOUT) {
                    tracing::debug!(error = %unsettled, "Jobs sent before the failure did not all settle.");
                }
                claim::release(kafka, claim, last_offset);
                Err(e)
            }
        }
    }

    /// Every job is on the topic: records the batch as submitted and gives its
    /// state. A cancel that arrived meanwhile wins: it is never overwritten;
    /// and a run that took over meanwhile finishes the batch itself.
    fn mark_submitted(
        &self,
        reader: &registry::RegistryReader,
        sender: &mut Sender,
    ) -> Result<BatchState> {
        let kafka = self.kafka;
        let batch_id = &self.claim.record.batch_id;
        if let Some(view) = reader.view(batch_id)? {
            if view.record.state == BatchState::Canceled {
                registry::restore_from(&view, sender, kafka)?;
                return Ok(BatchState::Canceled);
            }
            if let Some(h) = view.holder.filter(|h| {
                Some(&h.submitter.id) != self.claim.record.submitter.as_ref().map(|s| &s.id)
            }) {
                return Err(Error::ClaimLost {
                    batch_id: batch_id.clone(),
                    host: h.submitter.host,
                    pid: h.submitter.pid,
                    lease: self.lease,
                });
            }
        }
        registry::publish_with(
            sender,
            kafka,
            &BatchRecord {
                state: BatchState::Submitted,
                submitter: None,
                ..self.claim.record.clone()
            },
        )?;
        // A cancel published between the read above and this record still wins.
        Ok(
            registry::restore_final_state(reader, sender, kafka, batch_id)?
                .unwrap_or(BatchState::Submitted),
        )
    }
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
    if r.mode != options.mode {
        differences.push(format!(
            "mode {} (now {})",
            r.mode.map_or("none".into(), |m| m.to_string()),
            options.mode.map_or("none".into(), |m| m.to_string())
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
