//! The batch registry record: one per bulk batch, keyed by batch id on the
//! compacted batches topic. Any machine with access to the cluster can follow or
//! collect a batch from it, and workers learn cancellations from it. While a
//! batch is `submitting`, its records also name the submit run producing its jobs
//! (a [`Submitter`]), so that two runs never produce the same batch at once.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::vocab::{JobMode, Strategy};

/// The file format a batch came in, and the one its output is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchFormat {
    /// OpenAI Batch API input lines (`custom_id`, `method`, `url`, `body`).
    Openai,
    /// Anthropic Message Batches requests (`custom_id`, `params`).
    Anthropic,
    /// Switchyard's own job records.
    Native,
}

impl BatchFormat {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchFormat::Openai => "openai",
            BatchFormat::Anthropic => "anthropic",
            BatchFormat::Native => "native",
        }
    }
}

/// Where a batch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    /// Jobs are being produced; a resubmission of the same file finishes the job.
    Submitting,
    /// Every job is on the jobs topic.
    Submitted,
    /// Canceled: jobs not yet started end as `canceled`.
    Canceled,
}

impl BatchState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Submitting => "submitting",
            BatchState::Submitted => "submitted",
            BatchState::Canceled => "canceled",
        }
    }
}

/// The registry entry of one batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRecord {
    /// Stable id derived from the project and the file's content.
    pub batch_id: String,
    /// Org path all jobs belong to.
    pub project: String,
    /// Input (and output) format.
    pub format: BatchFormat,
    /// Life-cycle state.
    pub state: BatchState,
    /// Number of jobs (lines accepted).
    pub jobs: u64,
    /// SHA-256 of the input file, hex.
    pub source_sha256: String,
    /// Input file name, for people.
    pub file_name: String,
    /// Strategy forced on every job, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Workload of every job, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Mode of every job that names none (`submit --mode`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<JobMode>,
    /// When the batch was first submitted.
    pub submitted_at: DateTime<Utc>,
    /// When it was canceled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canceled_at: Option<DateTime<Utc>>,
    /// Lines of the file refused at submit (`--skip-invalid`): they are in the
    /// rejects file, not in the batch, and status shows how many.
    #[serde(default)]
    pub refused: u64,
    /// The submit run that holds the batch while it is `submitting`; absent on
    /// other states and on a released claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitter: Option<Submitter>,
    /// The most the whole batch may cost, USD: the sum over its jobs of the
    /// most each may cost on any model it could be routed to. Priced at submit
    /// when the project's policy holds work above `approval_required_above_usd`
    /// (absent otherwise, and on records written before batches were priced);
    /// every job carries the same figure, which is what workers weigh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worst_case_usd: Option<f64>,
}

/// One submit run's claim on a batch: written when it starts producing the
/// batch's jobs, again as a heartbeat while it does, and once more, `released`,
/// when it stops without finishing. Another run may take a batch over only when
/// its holder released it or stopped sending heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submitter {
    /// Unique per run.
    pub id: String,
    /// Host of the run, for people.
    pub host: String,
    /// Process id of the run, for people.
    pub pid: u32,
    /// When the run claimed the batch.
    pub since: DateTime<Utc>,
    /// When the run last said it is alive.
    pub heartbeat_at: DateTime<Utc>,
    /// Registry offset of the batch's latest record the run had read when it wrote
    /// this one. A claim on a batch another run holds counts only if that run
    /// wrote nothing after this offset, so of two runs that raced, one wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    /// The run stopped without finishing and gives the batch up.
    #[serde(default, skip_serializing_if = "is_false")]
    pub released: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}
