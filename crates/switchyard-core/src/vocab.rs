//! The words every part of Switchyard speaks: strategies, task categories, job
//! and attempt outcomes, token counts, and the indexes of models and deployments.
//! This module sits at the bottom of the crate and imports nothing else of it, so
//! jobs, results, the catalog, analysis and routing can all use these words
//! without importing each other.

use serde::{Deserialize, Serialize};

/// How a workload wants its models chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Cheapest model whose quality for the category meets what the complexity needs.
    Auto,
    /// Best quality for the money: each doubling of price must buy quality.
    Balanced,
    /// Cheapest feasible model above the quality floor, whatever the complexity.
    CostFirst,
    /// Lowest observed latency (live EWMA, catalog figures until observed).
    LatencyFirst,
    /// Highest observed success rate, spread across providers.
    AvailabilityFirst,
}

impl Strategy {
    /// All strategies.
    pub const ALL: [Strategy; 5] = [
        Strategy::Auto,
        Strategy::Balanced,
        Strategy::CostFirst,
        Strategy::LatencyFirst,
        Strategy::AvailabilityFirst,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Auto => "auto",
            Strategy::Balanced => "balanced",
            Strategy::CostFirst => "cost-first",
            Strategy::LatencyFirst => "latency-first",
            Strategy::AvailabilityFirst => "availability-first",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a job may wait for a provider's batch API: what a job, a batch or
/// a node's policy asks for (`default_mode` in the org file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobMode {
    /// Call a provider now.
    #[default]
    Live,
    /// Hand the job to a provider's batch API at its discount, whenever the
    /// chain has a model with a batch price and its deadline leaves room.
    Deferred,
    /// Let admission decide: deferred when the deadline leaves room for the
    /// provider's completion window and the batch price is lower, else live.
    Auto,
}

impl JobMode {
    /// All modes.
    pub const ALL: [JobMode; 3] = [JobMode::Live, JobMode::Deferred, JobMode::Auto];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobMode::Live => "live",
            JobMode::Deferred => "deferred",
            JobMode::Auto => "auto",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl std::fmt::Display for JobMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a job was served: what results and usage events say (`"mode"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// A provider's live API, at the list price.
    #[default]
    Live,
    /// A provider's batch API, at the batch price.
    Deferred,
}

impl RunMode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Live => "live",
            RunMode::Deferred => "deferred",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(RunMode::Live),
            "deferred" => Some(RunMode::Deferred),
            _ => None,
        }
    }

    /// True for the default, so serializers can leave it out.
    pub fn is_live(&self) -> bool {
        *self == RunMode::Live
    }
}

/// The eight kinds of work the catalog rates models on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskCategory {
    /// Assign a label from a fixed set.
    Classification,
    /// Pull structured fields out of text.
    Extraction,
    /// Condense a text.
    Summarization,
    /// Conversational assistance.
    Chat,
    /// Write, fix, explain or review code.
    Code,
    /// Multi-step analysis, planning, decisions.
    Reasoning,
    /// Calculation and proofs.
    Math,
    /// Stories, poems, marketing copy.
    Creative,
}

impl TaskCategory {
    /// All categories, in index order.
    pub const ALL: [TaskCategory; 8] = [
        TaskCategory::Classification,
        TaskCategory::Extraction,
        TaskCategory::Summarization,
        TaskCategory::Chat,
        TaskCategory::Code,
        TaskCategory::Reasoning,
        TaskCategory::Math,
        TaskCategory::Creative,
    ];

    /// Position in [`TaskCategory::ALL`]; used to index per-category arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskCategory::Classification => "classification",
            TaskCategory::Extraction => "extraction",
            TaskCategory::Summarization => "summarization",
            TaskCategory::Chat => "chat",
            TaskCategory::Code => "code",
            TaskCategory::Reasoning => "reasoning",
            TaskCategory::Math => "math",
            TaskCategory::Creative => "creative",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl std::fmt::Display for TaskCategory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job's state in its result. Every state is final but `held`: a held job
/// gets a second result once an approver decides (or the request expires), so
/// consumers keep the last result per job id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// A provider answered and the answer passed the job's checks.
    Succeeded,
    /// Every attempt along the routing chain failed; `error` says why.
    Failed,
    /// Policy or budget refused the job before any provider was called.
    Rejected,
    /// The job's batch was canceled before the job started.
    Canceled,
    /// Not final: held until an approver releases or rejects it (the result
    /// carries the reason and the approval id).
    Held,
}

impl JobStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Rejected => "rejected",
            JobStatus::Canceled => "canceled",
            JobStatus::Held => "held",
        }
    }

    /// Whether no later result will follow for the job.
    pub fn is_final(self) -> bool {
        self != JobStatus::Held
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "succeeded" => Some(JobStatus::Succeeded),
            "failed" => Some(JobStatus::Failed),
            "rejected" => Some(JobStatus::Rejected),
            "canceled" => Some(JobStatus::Canceled),
            "held" => Some(JobStatus::Held),
            _ => None,
        }
    }
}

/// Tokens billed by a provider for one call (or summed over a job's attempts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenUsage {
    /// Prompt tokens billed at the full input price (cached ones excluded).
    pub input_tokens: u64,
    /// Generated tokens, reasoning tokens included.
    pub output_tokens: u64,
    /// Prompt tokens served from the provider's cache, billed at the cached price.
    pub cached_input_tokens: u64,
    /// Prompt tokens written to the provider's cache, billed at the cache-write
    /// price (Anthropic's surcharge); absent in records written before it was
    /// counted apart (it was part of `input_tokens` then).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_input_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl TokenUsage {
    /// Sum of all counts (saturating: the counts come from providers).
    pub fn total(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cached_input_tokens)
            .saturating_add(self.cache_write_input_tokens)
    }

    /// Prompt tokens of every kind: what long-context tiers are judged on.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.cached_input_tokens)
            .saturating_add(self.cache_write_input_tokens)
    }

    /// True when the provider billed nothing.
    pub fn is_zero(&self) -> bool {
        self.total() == 0
    }

    /// The largest count a provider may report for one call: above any
    /// model's context window by far. A larger one is a broken or hostile
    /// answer, not a bill (it would wrap sums and swamp budgets).
    pub const MAX_PLAUSIBLE: u64 = 100_000_000;

    /// Whether every count is at most [`TokenUsage::MAX_PLAUSIBLE`].
    pub fn is_plausible(&self) -> bool {
        [
            self.input_tokens,
            self.output_tokens,
            self.cached_input_tokens,
            self.cache_write_input_tokens,
        ]
        .iter()
        .all(|&n| n <= Self::MAX_PLAUSIBLE)
    }

    /// Adds another call's usage (saturating).
    pub fn add(&mut self, other: &TokenUsage) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cached_input_tokens = self
            .cached_input_tokens
            .saturating_add(other.cached_input_tokens);
        self.cache_write_input_tokens = self
            .cache_write_input_tokens
            .saturating_add(other.cache_write_input_tokens);
    }
}

/// How one attempt on one deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Usable answer.
    Succeeded,
    /// 429 or a provider's own rate limit.
    RateLimited,
    /// 5xx, 529, connection reset: worth retrying.
    ProviderError,
    /// Connect, first-byte or total timeout.
    Timeout,
    /// 400/401/403 or a refusal: retrying the same request will not help.
    Rejected,
    /// The provider answered but the answer failed the job's checks (for example
    /// invalid JSON when JSON was required). Tokens were still billed.
    InvalidOutput,
    /// Skipped: circuit open or the rate limiter could not admit the call before the deadline.
    Skipped,
}

impl AttemptOutcome {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Succeeded => "succeeded",
            AttemptOutcome::RateLimited => "rate_limited",
            AttemptOutcome::ProviderError => "provider_error",
            AttemptOutcome::Timeout => "timeout",
            AttemptOutcome::Rejected => "rejected",
            AttemptOutcome::InvalidOutput => "invalid_output",
            AttemptOutcome::Skipped => "skipped",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "succeeded" => AttemptOutcome::Succeeded,
            "rate_limited" => AttemptOutcome::RateLimited,
            "provider_error" => AttemptOutcome::ProviderError,
            "timeout" => AttemptOutcome::Timeout,
            "rejected" => AttemptOutcome::Rejected,
            "invalid_output" => AttemptOutcome::InvalidOutput,
            "skipped" => AttemptOutcome::Skipped,
            _ => return None,
        })
    }
}

/// Index of a model in the catalog.
pub type ModelId = usize;

/// Index of a deployment in the router's table.
pub type DeploymentId = usize;
