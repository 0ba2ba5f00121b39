//! The crate's error: what failed, and what to do about it. Errors caused by the
//! user's input (a bad file, an unknown batch, a conflicting resubmission) say so
//! through [`Error::is_bad_input`], which the CLI maps to exit code 2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::error::KafkaError;

/// Everything that can go wrong in a batch command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An output or temporary file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No line of the file is in a known batch format.
    #[error(
        "cannot tell the format of {path}: no line looks like an OpenAI Batch request (custom_id, method, url, body), an Anthropic Message Batches request (custom_id, params) or a Switchyard job (job_id, project, request)"
    )]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// Some lines are invalid and `--skip-invalid` was not given.
    #[error("{}", invalid_lines(.path, *.lines, *.invalid, .examples, .skip))]
    InvalidLines {
        /// The file.
        path: PathBuf,
        /// Non-blank lines read.
        lines: u64,
        /// Lines refused.
        invalid: u64,
        /// The first few refusals (line number and reason).
        examples: Vec<(u64, String)>,
        /// What `--skip-invalid` would do instead.
        skip: SkipInvalid,
    },
    /// Every line is invalid (nothing left to submit).
    #[error("no valid line in {path}; nothing to submit")]
    NothingToSubmit {
        /// The file.
        path: PathBuf,
    },
    /// The pipeline config cannot serve the command.
    #[error("{0}")]
    Config(String),
    /// The project is not in the org tree.
    #[error("{0}")]
    UnknownProject(String),
    /// The batch id is not in the registry.
    #[error(
        "batch `{batch_id}` is not in the registry (topic `{topic}`); check the id and that --brokers points at the cluster it was submitted to"
    )]
    UnknownBatch {
        /// The id asked for.
        batch_id: String,
        /// The registry topic.
        topic: String,
    },
    /// A resubmission disagrees with the registered batch.
    #[error("{0}")]
    Conflict(String),
    /// Another submit run is producing the batch's jobs right now.
    #[error(
        "batch `{batch_id}` is being submitted by another process (pid {pid} on {host}) since {}, last heard from {} ago; wait for it to finish, or run this command again after it stops: a submit not heard from for {} is taken over and finished from where it stopped",
        .since.format("%Y-%m-%d %H:%M:%S UTC"),
        humantime::format_duration(*.silent_for),
        humantime::format_duration(*.lease)
    )]
    Busy {
        /// The batch.
        batch_id: String,
        /// Host of the other run.
        host: String,
        /// Its process id.
        pid: u32,
        /// When it claimed the batch.
        since: DateTime<Utc>,
        /// How long since its last heartbeat (whole seconds).
        silent_for: Duration,
        /// How long a silent run keeps the batch.
        lease: Duration,
    },
    /// This run stopped sending heartbeats for longer than the lease and another
    /// run took the batch over.
    #[error(
        "another process (pid {pid} on {host}) took over submitting batch `{batch_id}` because this one was not heard from for {}; that process finishes the batch, and this one stopped producing",
        humantime::format_duration(*.lease)
    )]
    ClaimLost {
        /// The batch.
        batch_id: String,
        /// Host of the run that took over.
        host: String,
        /// Its process id.
        pid: u32,
        /// The lease this run overran.
        lease: Duration,
    },
    /// Kafka failed.
    #[error("Kafka {action} failed: {source}; check --brokers and that the cluster is up")]
    Kafka {
        /// What was being done.
        action: &'static str,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// Some produced messages were not acknowledged.
    #[error(
        "{failed} of {sent} jobs were not acknowledged by Kafka ({first}); the batch stays `submitting`: submit the same file again to finish it"
    )]
    Undelivered {
        /// Messages sent.
        sent: u64,
        /// Messages that failed.
        failed: u64,
        /// The first failure.
        first: String,
    },
    /// A record does not fit the topic's encoding (a bug, not bad input).
    #[error("cannot encode a job for the jobs topic: {0}")]
    Encode(String),
    /// The file changed between the validation pass and the produce pass.
    #[error(
        "{path} changed while it was being submitted; the batch stays `submitting` (submit the original file again to finish it, or a new file as a new batch)"
    )]
    FileChanged {
        /// The file.
        path: PathBuf,
    },
    /// A file the command would write is its input or output under another
    /// name: writing it would destroy that file.
    #[error(
        "{flag} {} is the {role} file itself; writing it would overwrite the {role}: give {flag} another path",
        .path.display()
    )]
    SameFile {
        /// The side file as given.
        path: PathBuf,
        /// The flag that named it (`--rejects`, `--errors`).
        flag: &'static str,
        /// What it collides with (`input`, `output`).
        role: &'static str,
    },
    /// Waiting was interrupted (Ctrl-C or the caller's stop).
    #[error(
        "stopped before the batch finished ({finished} of {jobs} results, {held} held for approval); run the command again to continue"
    )]
    Interrupted {
        /// Distinct final results seen.
        finished: u64,
        /// Jobs of the batch.
        jobs: u64,
        /// Jobs held for approval (see `switchyard approvals list`).
        held: u64,
    },
    /// Waiting took longer than allowed.
    #[error(
        "timed out with {finished} of {jobs} results, {held} held for approval (see `switchyard approvals list`); run the command again to keep waiting"
    )]
    TimedOut {
        /// Distinct final results seen.
        finished: u64,
        /// Jobs of the batch.
        jobs: u64,
        /// Jobs held for approval.
        held: u64,
    },
}

/// What `--skip-invalid` does for the command that refused a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipInvalid {
    /// `submit`: submits the valid lines and writes every refused one to this file.
    Submit {
        /// The rejects file.
        rejects: PathBuf,
    },
    /// `estimate`: prices the valid lines.
    Estimate,
}

fn invalid_lines(
    path: &Path,
    lines: u64,
    invalid: u64,
    examples: &[(u64, String)],
    skip: &SkipInvalid,
) -> String {
    let nothing = match skip {
        SkipInvalid::Submit { .. } => "submitted",
        SkipInvalid::Estimate => "priced",
    };
    let mut s = format!(
        "{invalid} of {lines} lines of {} are invalid; nothing was {nothing}:",
        path.display()
    );
    for (line, reason) in examples {
        s.push_str(&format!("\n  line {line}: {reason}"));
    }
    let more = invalid.saturating_sub(examples.len() as u64);
    if more > 0 {
        s.push_str(&format!("\n  … and {more} more"));
    }
    let valid = lines - invalid.min(lines);
    match skip {
        SkipInvalid::Submit { rejects } => s.push_str(&format!(
            "\nfix them, or pass --skip-invalid to submit the {valid} valid lines and write every invalid one, with its line number and reason, to {}",
            rejects.display()
        )),
        SkipInvalid::Estimate => s.push_str(&format!(
            "\nfix them, or pass --skip-invalid to price the {valid} valid lines"
        )),
    }
    s
}

impl Error {
    /// Whether the error is the user's input (exit code 2) rather than a failure of the work.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Read { .. }
                | Error::UnknownFormat { .. }
                | Error::InvalidLines { .. }
                | Error::NothingToSubmit { .. }
                | Error::UnknownProject(_)
                | Error::Config(_)
                | Error::UnknownBatch { .. }
                | Error::Conflict(_)
                | Error::SameFile { .. }
        )
    }

    pub(crate) fn kafka(action: &'static str) -> impl FnOnce(KafkaError) -> Error {
        move |source| Error::Kafka { action, source }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Removes a side file (an errors or rejects file) left at `path` by an earlier
/// run, when this run has nothing to put there: a file beside the output must
/// describe this run or not exist.
pub(crate) fn remove_stale(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Write {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}
