//! Bulk offline workloads. A batch is a JSONL file of requests in the OpenAI
//! Batch format, the Anthropic Message Batches format or Switchyard's native
//! job format; [`submit`] validates it in one streaming pass and produces one job
//! per line in a second, recording the batch in the compacted batches topic
//! (the registry), keyed by a batch id derived from the project and the file's
//! hash, so resubmitting is idempotent; a claim in the registry fences runs of
//! the same batch, so only one produces it at a time. [`status`] counts its
//! results so far and says where its deferred jobs are (waiting, or in which
//! provider batch), [`cancel`] ends its unstarted jobs, [`collect`] waits for
//! every result and writes them in input order and format with memory bounded
//! by a 9-byte-per-job index, and [`estimate`] prices a file under every
//! strategy, live and deferred, before it runs.
//!
//! The functions here block (Kafka reads are polling loops); async callers run
//! them on a blocking thread.

pub mod bits;
pub mod collect;
mod error;
pub mod estimate;
pub mod follow;
pub mod formats;
pub mod ids;
pub mod lines;
pub mod progress;
pub mod registry;
pub mod sender;
pub mod side_files;
pub mod status;
pub mod submit;
pub mod tally;
pub mod validate;

pub use collect::{CollectOptions, CollectReport, StopFlag, collect};
pub use error::{Error, Result, SkipInvalid};
pub use estimate::{Estimate, EstimateOptions, StrategyEstimate, estimate};
pub use progress::{ConsoleProgress, NoProgress, Progress, Unit};
pub use status::deferred::{DeferredStatus, ProviderBatchStatus};
pub use status::{BatchStatus, CancelReport, cancel, status};
pub use submit::{SubmitOptions, SubmitReport, submit};
pub use switchyard_core::batch::{BatchFormat, BatchRecord, BatchState};
pub use tally::Counts;
