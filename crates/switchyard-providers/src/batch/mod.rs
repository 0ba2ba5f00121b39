//! The providers' batch APIs, behind one [`BatchApi`] trait beside
//! [`Provider`](crate::Provider): OpenAI's Files and Batches (`POST /files`
//! with `purpose=batch`, then `POST /batches`) and Anthropic's Message Batches
//! (`POST /messages/batches` with the requests inline); create, retrieve,
//! list, results and cancel. Each request of a batch is the body a live call
//! would send (the deployment's [`HttpProvider`] writes it), and each result
//! line is read as a live answer would be, so a deferred answer is the same
//! [`Completion`] or [`ProviderError`] as a live one.
//!
//! A batch carries an idempotency key: OpenAI keeps it in the batch's
//! `metadata`, Anthropic in every request's `custom_id` (which must start with
//! it). Listing the provider's batches finds a batch by its key, so a worker
//! that died after the provider accepted a batch, before it recorded that,
//! adopts the batch instead of creating it again.

mod anthropic;
mod http;
mod openai;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use switchyard_core::catalog::Api;
use switchyard_core::deferred::LineCounts;
use switchyard_core::job::ChatRequest;

use crate::{BoxFuture, CallRequest, Completion, HttpProvider, ProviderError};

pub use anthropic::AnthropicBatches;
pub use openai::OpenAiBatches;

/// The metadata key under which an OpenAI batch carries its idempotency key.
pub const KEY_METADATA: &str = "switchyard_key";

/// One request of a new batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchRequest<'a> {
    /// Its custom id (for Anthropic, starting with the batch's key).
    pub custom_id: &'a str,
    /// The call, as a live call would make it.
    pub call: CallRequest<'a>,
}

/// A batch to create.
#[derive(Debug, Clone)]
pub struct NewBatch<'a> {
    /// The idempotency key it carries.
    pub key: &'a str,
    /// Its requests.
    pub requests: Vec<BatchRequest<'a>>,
    /// The completion window asked for (OpenAI accepts only 24 h).
    pub completion_window: Duration,
}

/// Where a provider's batch is, in the words both APIs share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteStatus {
    /// Accepted, being checked (OpenAI `validating`).
    Validating,
    /// Lines are being answered.
    InProgress,
    /// Answers are being written out (OpenAI `finalizing`).
    Finalizing,
    /// A cancel is under way.
    Canceling,
    /// Ended: every line has its outcome (completed, expired or canceled).
    Ended,
    /// Refused as a whole (OpenAI `failed`: the input did not validate).
    Failed,
}

impl RemoteStatus {
    /// Whether results can be read now (or never will be, for `Failed`).
    pub fn is_final(self) -> bool {
        matches!(self, RemoteStatus::Ended | RemoteStatus::Failed)
    }
}

/// A provider's batch as it reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteBatch {
    /// The provider's id.
    pub id: String,
    /// Its state.
    pub status: RemoteStatus,
    /// The provider's own word for it.
    pub provider_status: String,
    /// The idempotency key it carries, where the API keeps one (OpenAI).
    pub key: Option<String>,
    /// When the provider created it.
    pub created_at: Option<DateTime<Utc>>,
    /// Requests in it.
    pub requests: u64,
    /// Line counts so far.
    pub counts: LineCounts,
    /// OpenAI: the file of answered lines.
    pub output_file_id: Option<String>,
    /// OpenAI: the file of failed, expired and canceled lines.
    pub error_file_id: Option<String>,
    /// Why the provider refused the whole batch, when it did.
    pub errors: Option<String>,
}

/// One page of a provider's batches, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchPage {
    /// The batches.
    pub batches: Vec<RemoteBatch>,
    /// The cursor of the next page, if there is one.
    pub next: Option<String>,
}

/// How one line of a batch ended.
#[derive(Debug, Clone, PartialEq)]
pub enum LineOutcome {
    /// Answered, as a live call would be.
    Answered(Completion),
    /// Failed, as a live call would have.
    Failed(ProviderError),
    /// Not reached within the completion window.
    Expired,
    /// Canceled before it was answered.
    Canceled,
}

/// One line of a batch's results.
#[derive(Debug, Clone, PartialEq)]
pub struct LineResult {
    /// The request's custom id.
    pub custom_id: String,
    /// Its outcome.
    pub outcome: LineOutcome,
}

/// Why a batch call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    /// The provider answered an error status.
    #[error("the {api} batch API answered HTTP {status}: {message}")]
    Status {
        /// Which API.
        api: &'static str,
        /// HTTP status.
        status: u16,
        /// The provider's message, key removed.
        message: String,
    },
    /// No answer: connection refused or reset, or the time ran out.
    #[error("the {api} batch API could not be reached: {message}; it is tried again")]
    Unreachable {
        /// Which API.
        api: &'static str,
        /// What happened, key removed.
        message: String,
    },
    /// An answer that is not what the API documents.
    #[error("the {api} batch API answered something unreadable: {message}")]
    Decode {
        /// Which API.
        api: &'static str,
        /// What could not be read.
        message: String,
    },
}

impl BatchError {
    /// Whether trying again later may succeed (no answer, 408, 409, 429, 5xx).
    pub fn is_retryable(&self) -> bool {
        match self {
            BatchError::Status { status, .. } => {
                matches!(status, 408 | 409 | 429) || *status >= 500
            }
            BatchError::Unreachable { .. } => true,
            BatchError::Decode { .. } => false,
        }
    }

    /// Whether the call may have reached the provider (a create that fails so
    /// may have created the batch: look for it before creating it again).
    pub fn may_have_reached(&self) -> bool {
        !matches!(self, BatchError::Status { status, .. } if *status < 500)
    }
}

/// A provider's batch API.
pub trait BatchApi: Send + Sync {
    /// The API's name, for logs (`openai`, `anthropic`).
    fn kind(&self) -> &'static str;

    /// Whether a batch found by listing carries `key`: OpenAI batches say so
    /// in their metadata; Anthropic's can only be told by their results'
    /// custom ids, so any batch might (`None`: ask the results).
    fn carries(&self, batch: &RemoteBatch, key: &str) -> Option<bool>;

    /// Creates a batch (for OpenAI, uploads its input file first).
    fn create<'a>(&'a self, batch: NewBatch<'a>) -> BoxFuture<'a, Result<RemoteBatch, BatchError>>;

    /// The batch's state now.
    fn retrieve<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<RemoteBatch, BatchError>>;

    /// A page of the provider's batches, newest first, after `cursor`.
    fn list<'a>(&'a self, cursor: Option<&'a str>) -> BoxFuture<'a, Result<BatchPage, BatchError>>;

    /// The outcome of every line of an ended batch. Answers are read as the
    /// API wrote them; [`BatchApi::finish`] applies what a live call applies.
    fn results<'a>(
        &'a self,
        batch: &'a RemoteBatch,
    ) -> BoxFuture<'a, Result<Vec<LineResult>, BatchError>>;

    /// An answer to `request` finished as a live call's would be (stop
    /// sequences the model leaves to Switchyard cut here).
    fn finish(&self, request: &ChatRequest, answer: Completion) -> Completion;

    /// Asks the provider to cancel the batch; lines already answered stay so.
    fn cancel<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<RemoteBatch, BatchError>>;
}

/// The batch API of a deployment that speaks `api` through `client`, if
/// Switchyard speaks that API's batches (OpenAI, Anthropic; not the
/// OpenAI-compatible hosts or Gemini).
pub fn for_api(api: Api, client: Arc<HttpProvider>) -> Option<Arc<dyn BatchApi>> {
    match api {
        Api::Openai => Some(Arc::new(OpenAiBatches::new(client))),
        Api::Anthropic => Some(Arc::new(AnthropicBatches::new(client))),
        Api::OpenaiCompatible | Api::Gemini => None,
    }
}

/// A completion window as the OpenAI API writes it (`24h`).
fn window_text(window: Duration) -> String {
    let secs = window.as_secs().max(1);
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else {
        format!("{secs}s")
    }
}

/// Seconds since the epoch as a time.
fn epoch(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
}

#[cfg(test)]
mod tests;
