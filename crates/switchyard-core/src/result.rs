//! The outcome of a job, as published on the results topic (keyed by `job_id`).
//! Every accepted job ends in exactly one result; a re-delivered job may produce a
//! second copy with the same `job_id`, which consumers deduplicate.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::Job;
pub use crate::vocab::{AttemptOutcome, JobStatus, RunMode, TokenUsage};
use crate::vocab::{Strategy, TaskCategory};

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// Generated text.
    pub content: String,
    /// Why generation stopped, normalised across providers: `stop`, `length`,
    /// `content_filter`, `tool_calls` or the provider's own word.
    pub finish_reason: String,
}

/// One call (or skipped call) on one deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    /// Deployment name from the pipeline config.
    pub deployment: String,
    /// Provider name (`openai`, `anthropic`, …).
    pub provider: String,
    /// Catalog model name.
    pub model: String,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// HTTP status, when a response arrived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Wall time of the attempt, waiting for the rate limiter excluded.
    pub latency_ms: u64,
    /// Tokens this attempt billed.
    #[serde(default)]
    pub usage: TokenUsage,
    /// What this attempt cost.
    #[serde(default)]
    pub cost_usd: f64,
    /// Provider's error message, with secrets removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Why routing chose what it chose, carried in every result and usage event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingSummary {
    /// Strategy in force.
    pub strategy: Strategy,
    /// Task category estimated from the request.
    pub category: TaskCategory,
    /// Estimated complexity, 0..1.
    pub complexity: f64,
    /// Quality the job needed for its category, 0..1.
    pub required_quality: f64,
    /// Model ranked first; empty when the job was not routed.
    pub chosen_model: String,
    /// One line a person can read.
    pub reason: String,
}

/// A job's error, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorInfo {
    /// Stable machine-readable code (`all_attempts_failed`, `budget_exhausted`, …).
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Everything a consumer needs to know about a finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobResult {
    /// The job's idempotency key.
    pub job_id: String,
    /// The batch, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// The job's org path.
    pub project: String,
    /// Final state.
    pub status: JobStatus,
    /// How it was served: `live`, or `deferred` through a provider's batch API
    /// at the batch price. Absent (live) in results of live jobs and of workers
    /// older than deferred routing.
    #[serde(default, skip_serializing_if = "RunMode::is_live")]
    pub mode: RunMode,
    /// Provider of the successful attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Catalog model of the successful attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The answer, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<Output>,
    /// Tokens billed over all attempts.
    pub usage: TokenUsage,
    /// Cost over all attempts.
    pub cost_usd: f64,
    /// Time from the worker taking the job to the result.
    pub latency_ms: u64,
    /// Every attempt, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// The routing decision. Every result a worker produces carries one: a job
    /// refused before or by routing (policy, budget, deadline, unknown model, no
    /// feasible model, canceled batch) has its strategy, category, complexity and
    /// need, an empty `chosen_model` and the reason it was not routed. Absent only
    /// in results written by workers older than that; decode failures produce
    /// dead letters, not results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingSummary>,
    /// Why the job did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// The job's metadata, passed through.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// When the result was produced.
    pub completed_at: DateTime<Utc>,
    /// On a `held` result: the approval request that will release or reject the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
}

/// The deployment an attempt went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptTarget<'a> {
    /// Deployment name.
    pub deployment: &'a str,
    /// Provider name.
    pub provider: &'a str,
    /// Catalog model name.
    pub model: &'a str,
}

impl Attempt {
    /// A deployment passed over without a call (circuit open, rate limiter
    /// unable to admit the call in time).
    pub fn skipped(to: AttemptTarget<'_>, reason: String) -> Self {
        let usage = TokenUsage::default();
        Self::new(
            to,
            AttemptOutcome::Skipped,
            None,
            0,
            usage,
            0.0,
            Some(reason),
        )
    }

    /// The provider answered: usable (`problem` is `None`), or unusable for the
    /// job's checks (invalid JSON when JSON was asked for), tokens billed either way.
    pub fn answered(
        to: AttemptTarget<'_>,
        status: u16,
        latency_ms: u64,
        usage: TokenUsage,
        cost_usd: f64,
        problem: Option<String>,
    ) -> Self {
        let outcome = if problem.is_some() {
            AttemptOutcome::InvalidOutput
        } else {
            AttemptOutcome::Succeeded
        };
        Self::new(
            to,
            outcome,
            Some(status),
            latency_ms,
            usage,
            cost_usd,
            problem,
        )
    }

    /// A call that failed, with what it billed regardless.
    pub fn failed(
        to: AttemptTarget<'_>,
        outcome: AttemptOutcome,
        status_code: Option<u16>,
        latency_ms: u64,
        usage: TokenUsage,
        cost_usd: f64,
        error: String,
    ) -> Self {
        Self::new(
            to,
            outcome,
            status_code,
            latency_ms,
            usage,
            cost_usd,
            Some(error),
        )
    }

    fn new(
        to: AttemptTarget<'_>,
        outcome: AttemptOutcome,
        status_code: Option<u16>,
        latency_ms: u64,
        usage: TokenUsage,
        cost_usd: f64,
        error: Option<String>,
    ) -> Self {
        Self {
            deployment: to.deployment.to_owned(),
            provider: to.provider.to_owned(),
            model: to.model.to_owned(),
            outcome,
            status_code,
            latency_ms,
            usage,
            cost_usd,
            error,
        }
    }
}

/// Metadata key of a result whose echoed fields were cut: the fields, comma-separated.
pub const TRUNCATED_KEY: &str = "switchyard.truncated";

/// Cuts `text` to at most `max` bytes (on a character boundary), marking the
/// cut. Returns whether it cut.
pub fn cap_text(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    let mark = format!("…[cut {} bytes]", text.len());
    let mut end = max.saturating_sub(mark.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.push_str(&mark);
    true
}

impl JobResult {
    /// Cuts what the result copies from its job (project, batch id, metadata)
    /// and texts that may quote it or a provider (error message, routing
    /// reason, attempts' errors) to `max`
    /// bytes each, metadata to `16 × max` in all, and names what was cut under
    /// [`TRUNCATED_KEY`]. A job's input must not make its result unpublishable.
    pub fn cap_echoes(&mut self, max: usize) {
        let mut cut: Vec<&str> = Vec::new();
        if cap_text(&mut self.project, max) {
            cut.push("project");
        }
        if let Some(b) = &mut self.batch_id
            && cap_text(b, max)
        {
            cut.push("batch_id");
        }
        if let Some(e) = &mut self.error
            && cap_text(&mut e.message, max)
        {
            cut.push("error.message");
        }
        if let Some(r) = &mut self.routing
            && cap_text(&mut r.reason, max)
        {
            cut.push("routing.reason");
        }
        let mut attempts_cut = false;
        for a in &mut self.attempts {
            if let Some(e) = &mut a.error {
                attempts_cut |= cap_text(e, max);
            }
        }
        if attempts_cut {
            cut.push("attempts.error");
        }
        let budget = max.saturating_mul(16);
        let mut used = 0usize;
        let mut metadata_cut = false;
        let entries = std::mem::take(&mut self.metadata);
        for (mut k, mut v) in entries {
            metadata_cut |= cap_text(&mut k, max) | cap_text(&mut v, max);
            if used + k.len() + v.len() > budget {
                metadata_cut = true;
                continue;
            }
            used += k.len() + v.len();
            self.metadata.insert(k, v);
        }
        if metadata_cut {
            cut.push("metadata");
        }
        if !cut.is_empty() {
            self.metadata
                .insert(TRUNCATED_KEY.to_owned(), cut.join(","));
        }
    }

    /// The smallest result that still says what became of the job: its ids and
    /// status, the cost, and why the rest is missing. For a result too large
    /// for the results topic even after [`JobResult::cap_echoes`].
    pub fn stripped(&self, why: String) -> Self {
        Self {
            job_id: self.job_id.clone(),
            batch_id: self.batch_id.clone(),
            project: self.project.clone(),
            status: if self.status == JobStatus::Succeeded {
                JobStatus::Failed
            } else {
                self.status
            },
            mode: self.mode,
            provider: self.provider.clone(),
            model: self.model.clone(),
            output: None,
            usage: self.usage,
            cost_usd: self.cost_usd,
            latency_ms: self.latency_ms,
            attempts: Vec::new(),
            routing: None,
            error: Some(ErrorInfo {
                code: "result_too_large".into(),
                message: why,
            }),
            metadata: BTreeMap::new(),
            completed_at: self.completed_at,
            approval_id: self.approval_id.clone(),
        }
    }

    /// The result of a job that ended before any provider was called (refused
    /// by policy, budget or routing, or canceled), with the decision as far as
    /// it went.
    pub fn refused(
        job: Job,
        status: JobStatus,
        error: ErrorInfo,
        routing: RoutingSummary,
        latency_ms: u64,
        completed_at: DateTime<Utc>,
    ) -> Self {
        Self {
            job_id: job.job_id,
            batch_id: job.batch_id,
            project: job.project,
            status,
            mode: RunMode::Live,
            provider: None,
            model: None,
            output: None,
            usage: TokenUsage::default(),
            cost_usd: 0.0,
            latency_ms,
            attempts: Vec::new(),
            routing: Some(routing),
            error: Some(error),
            metadata: job.metadata,
            completed_at,
            approval_id: None,
        }
    }

    /// The result of a routed job: succeeded when `answer` names the attempt
    /// that answered, failed (with `error`) otherwise. Tokens and cost are summed
    /// over every attempt, billed failures included.
    pub fn finished(
        job: Job,
        routing: RoutingSummary,
        attempts: Vec<Attempt>,
        answer: Option<(usize, Output)>,
        error: Option<ErrorInfo>,
        latency_ms: u64,
        completed_at: DateTime<Utc>,
    ) -> Self {
        let mut usage = TokenUsage::default();
        let mut cost_usd = 0.0;
        for a in &attempts {
            usage.add(&a.usage);
            cost_usd += a.cost_usd;
        }
        let answered_by = answer.as_ref().and_then(|(i, _)| attempts.get(*i));
        let (status, provider, model) = match answered_by {
            Some(a) => (
                JobStatus::Succeeded,
                Some(a.provider.clone()),
                Some(a.model.clone()),
            ),
            None => (JobStatus::Failed, None, None),
        };
        Self {
            job_id: job.job_id,
            batch_id: job.batch_id,
            project: job.project,
            status,
            mode: RunMode::Live,
            provider,
            model,
            output: answer.map(|(_, o)| o),
            usage,
            cost_usd,
            latency_ms,
            attempts,
            routing: Some(routing),
            error,
            metadata: job.metadata,
            completed_at,
            approval_id: None,
        }
    }

    /// The same result, served in `mode` (the constructors make live results).
    pub fn in_mode(mut self, mode: RunMode) -> Self {
        self.mode = mode;
        self
    }

    /// The same result with `earlier` attempts (made before it, such as the
    /// lines of provider batches that failed the job) first, their tokens and
    /// cost added.
    pub fn with_earlier_attempts(mut self, mut earlier: Vec<Attempt>) -> Self {
        for a in &earlier {
            self.usage.add(&a.usage);
            self.cost_usd += a.cost_usd;
        }
        earlier.append(&mut self.attempts);
        self.attempts = earlier;
        self
    }

    /// Number of failovers: distinct deployments tried beyond the first.
    pub fn failovers(&self) -> usize {
        let mut seen: Vec<&str> = Vec::with_capacity(self.attempts.len());
        for a in &self.attempts {
            if a.outcome != AttemptOutcome::Skipped && !seen.contains(&a.deployment.as_str()) {
                seen.push(&a.deployment);
            }
        }
        seen.len().saturating_sub(1)
    }
}
