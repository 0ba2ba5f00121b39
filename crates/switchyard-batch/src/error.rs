//! The crate's error: what failed, and what to do about it. Errors caused by the
//! user's input (a bad file, an unknown batch, a conflicting resubmission) say so
//! through [`Error::is_bad_input`], which the CLI maps to exit code 2.

use std::path::PathBuf;

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
    #[error(
        "{invalid} of {lines} lines of {path} are invalid; nothing was submitted (fix them, or pass --skip-invalid to submit the rest and write the rejects to a file){}",
        first_reasons(.examples)
    )]
    InvalidLines {
        /// The file.
        path: PathBuf,
        /// Non-blank lines read.
        lines: u64,
        /// Lines refused.
        invalid: u64,
        /// The first few refusals (line number and reason).
        examples: Vec<(u64, String)>,
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
    /// Waiting was interrupted (Ctrl-C or the caller's stop).
    #[error(
        "stopped before the batch finished ({finished} of {jobs} results); run the command again to continue"
    )]
    Interrupted {
        /// Distinct results seen.
        finished: u64,
        /// Jobs of the batch.
        jobs: u64,
    },
    /// Waiting took longer than allowed.
    #[error("timed out with {finished} of {jobs} results; run the command again to keep waiting")]
    TimedOut {
        /// Distinct results seen.
        finished: u64,
        /// Jobs of the batch.
        jobs: u64,
    },
}

fn first_reasons(examples: &[(u64, String)]) -> String {
    let mut s = String::new();
    for (line, reason) in examples {
        s.push_str(&format!("\n  line {line}: {reason}"));
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
        )
    }

    pub(crate) fn kafka(action: &'static str) -> impl FnOnce(KafkaError) -> Error {
        move |source| Error::Kafka { action, source }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
