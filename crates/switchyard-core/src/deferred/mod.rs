//! Deferred routing's records and the pure logic over them. A job admission
//! defers is handed from the jobs topic to the compacted deferred topic as a
//! [`DeferredJob`] (keyed by its job id); the worker that owns the record's
//! partition gathers such jobs into provider batches ([`plan`]), records each
//! provider batch's intent before creating it ([`ProviderBatchRecord`], keyed by
//! its idempotency key, which tags the provider's batch), and follows it to its
//! results. [`Book`] folds a partition's records, in log order, into what is
//! waiting and what is open, so that a worker that takes the partition over
//! knows everything without asking anyone.

mod book;
mod plan;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::access::approval::Decision;
use crate::job::Job;
use crate::result::{Attempt, RoutingSummary};

pub use book::{Book, BookBatch, BookJob};
pub use plan::{PlanSettings, Step, plan};

/// One record of the deferred topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
// A record lives only between the topic and the book (which keeps the parts),
// one at a time: boxing the job would cost an allocation per read for nothing.
#[allow(clippy::large_enum_variant)]
pub enum DeferredRecord {
    /// A job waiting for a provider batch (key: its job id).
    Job(DeferredJob),
    /// A provider batch, from the intent to create it to its collection (key:
    /// its idempotency key).
    Batch(ProviderBatchRecord),
}

impl DeferredRecord {
    /// The record's Kafka key.
    pub fn key(&self) -> &str {
        match self {
            DeferredRecord::Job(j) => &j.job.job_id,
            DeferredRecord::Batch(b) => &b.key,
        }
    }
}

/// A deferred job, as handed off: everything needed to run it through a
/// provider's batch API, or live, without the jobs topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeferredJob {
    /// The job itself.
    pub job: Job,
    /// The routing decision, with why it was deferred.
    pub routing: RoutingSummary,
    /// Deployments that may take it through their batch API, best first.
    pub deployments: Vec<String>,
    /// Deployments whose batch already failed it (errored or expired lines),
    /// not to be tried again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tried: Vec<String>,
    /// Its worst case at the batch price, held on its budgets while it waits.
    pub reserve_usd: f64,
    /// When the worker took the job from the jobs topic.
    pub deferred_at: DateTime<Utc>,
    /// When its answer is due: the job's deadline, or the deferral time plus
    /// the policy's `deferred_max_delay`.
    pub due: DateTime<Utc>,
    /// The answer cap for calls of a job that gives none.
    pub default_max_tokens: u32,
    /// Estimated size of its request in a provider batch, bytes.
    pub request_bytes: u64,
    /// Earlier attempts (lines a provider batch failed), carried to the result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// How many times the gatherer wrote the job again (handed on after a
    /// failed line, or freed from an intent dropped before creation). A record
    /// with no more hand-ons than the one an open provider batch holds is a
    /// replay of the hand-off (the jobs topic is at-least-once) and is ignored.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub handed_on: u32,
    /// The principal whose signature admission checked at hand-off: a job
    /// that later runs live is admitted as signed by it (its signature's time
    /// window has passed by then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The approver's decision that released the job from a hold, checked at
    /// hand-off, for the same reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<Box<Decision>>,
    /// What of its earlier attempts' cost the budgets count already: all of
    /// it for a job written back released after a hold on its live run (that
    /// run settled it), else nothing.
    #[serde(default, skip_serializing_if = "is_zero_usd")]
    pub settled_usd: f64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_usd(x: &f64) -> bool {
    *x == 0.0
}

/// Bytes a request takes in a provider batch beyond its own JSON (custom id,
/// method, URL, model, envelope).
const REQUEST_OVERHEAD_BYTES: u64 = 256;

impl DeferredJob {
    /// A job admission deferred at `deferred_at`, due by `due`, to go to the
    /// first of `deployments` that can take it.
    pub fn new(
        job: Job,
        routing: RoutingSummary,
        deployments: Vec<String>,
        reserve_usd: f64,
        deferred_at: DateTime<Utc>,
        due: DateTime<Utc>,
        default_max_tokens: u32,
    ) -> Self {
        let request_bytes =
            serde_json::to_vec(&job.request).map_or(0, |b| b.len() as u64) + REQUEST_OVERHEAD_BYTES;
        Self {
            job,
            routing,
            deployments,
            tried: Vec::new(),
            reserve_usd,
            deferred_at,
            due,
            default_max_tokens,
            request_bytes,
            attempts: Vec::new(),
            handed_on: 0,
            signer: None,
            released_by: None,
            settled_usd: 0.0,
        }
    }

    /// The deployment it goes to next: the first not tried that `usable` accepts.
    pub fn next_deployment<'a>(&'a self, usable: &dyn Fn(&str) -> bool) -> Option<&'a str> {
        self.deployments
            .iter()
            .map(String::as_str)
            .find(|d| !self.tried.iter().any(|t| t == d) && usable(d))
    }

    /// The job again after `deployment`'s batch failed it with `attempt`.
    pub fn after_failure(mut self, deployment: &str, attempt: Attempt) -> Self {
        self.tried.push(deployment.to_owned());
        self.attempts.push(attempt);
        self.handed_on += 1;
        self
    }

    /// The job written again unchanged but for its hand-on count (freed from
    /// a provider batch intent dropped before creation).
    pub fn again(mut self) -> Self {
        self.handed_on += 1;
        self
    }

    /// What its earlier attempts (failed lines that billed) cost.
    pub fn earlier_cost_usd(&self) -> f64 {
        self.attempts.iter().map(|a| a.cost_usd).sum()
    }

    /// What of its earlier attempts' cost its budgets do not count yet.
    pub fn unsettled_cost_usd(&self) -> f64 {
        (self.earlier_cost_usd() - self.settled_usd).max(0.0)
    }

    /// The job written back after an approver released it from a hold on its
    /// live run: the run settled its earlier attempts' cost, and the decision
    /// admits its next run past the hold.
    pub fn released(mut self, decision: Decision) -> Self {
        self.released_by = Some(Box::new(decision));
        self.settled_usd = self.earlier_cost_usd();
        self.handed_on += 1;
        self
    }
}

/// Where a provider batch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderBatchState {
    /// Recorded, about to be created (or being created) at the provider. A
    /// worker that finds it so after `submit_timeout` looks for it at the
    /// provider (by its key) before creating it.
    Intent,
    /// The provider accepted it: polled until it ends.
    Submitted,
    /// Ended, and every line's outcome published (or handed on): done.
    Collected,
}

impl ProviderBatchState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderBatchState::Intent => "intent",
            ProviderBatchState::Submitted => "submitted",
            ProviderBatchState::Collected => "collected",
        }
    }
}

/// Line counts of a provider batch, as the provider reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LineCounts {
    /// Lines not yet done.
    pub processing: u64,
    /// Lines answered.
    pub succeeded: u64,
    /// Lines that failed.
    pub errored: u64,
    /// Lines the provider did not reach within its window.
    pub expired: u64,
    /// Lines canceled.
    pub canceled: u64,
}

/// One provider batch, from its intent to its collection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderBatchRecord {
    /// Idempotency key (`sy` + 24 hex digits): the provider batch carries it
    /// (OpenAI `metadata`, every request's `custom_id`), so a worker that
    /// takes over finds the batch instead of creating it again.
    pub key: String,
    /// Deployment whose batch API serves it.
    pub deployment: String,
    /// Provider name.
    pub provider: String,
    /// Catalog model.
    pub model: String,
    /// The Switchyard batch its jobs belong to, if any (a provider batch holds
    /// jobs of one Switchyard batch, so canceling that batch cancels it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Job ids in request order: request `i` has custom id `{key}-{i}`.
    pub jobs: Vec<String>,
    /// Jobs of `jobs` it no longer answers for: handed on to another
    /// deployment's batch, or to a live call, when their lines failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub released: Vec<String>,
    /// Where it is.
    pub state: ProviderBatchState,
    /// The provider's id, once it accepted the batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_batch_id: Option<String>,
    /// The provider's word for its state (`validating`, `in_progress`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<String>,
    /// Line counts, as last polled.
    #[serde(default)]
    pub counts: LineCounts,
    /// When the intent was recorded.
    pub created_at: DateTime<Utc>,
    /// When the latest attempt to create it at the provider began.
    pub attempt_at: DateTime<Utc>,
    /// When this record was written.
    pub updated_at: DateTime<Utc>,
    /// Its Switchyard batch was canceled: the provider batch is (being) canceled.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancel_requested: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ProviderBatchRecord {
    /// The custom id of request `index`.
    pub fn custom_id(&self, index: usize) -> String {
        custom_id(&self.key, index)
    }

    /// The request index a custom id of this batch names.
    pub fn index_of(&self, custom_id: &str) -> Option<usize> {
        let i: usize = custom_id
            .strip_prefix(self.key.as_str())?
            .strip_prefix('-')?
            .parse()
            .ok()?;
        (i < self.jobs.len()).then_some(i)
    }
}

/// The custom id of request `index` of the provider batch `key`: 1 to 64
/// letters, digits, `_` or `-`, as Anthropic requires.
pub fn custom_id(key: &str, index: usize) -> String {
    format!("{key}-{index}")
}

/// A new idempotency key from 96 random bits (as hex, `entropy` from the caller).
pub fn batch_key(entropy: u128) -> String {
    format!("sy{:024x}", entropy & ((1u128 << 96) - 1))
}

#[cfg(test)]
mod tests;
