//! What the simulator saw, per model: requests, outcomes by status, tokens billed
//! and the busiest rate window, so that a test can check what a client did (for
//! example that its rate limiter never exceeded a provider's RPM).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchyard_core::result::TokenUsage;

/// A snapshot of everything the simulator answered since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Per model id (as the request carried it).
    pub models: BTreeMap<String, ModelStats>,
    /// Requests refused before a model was known to be involved: missing key,
    /// malformed body, unknown route or action. Not counted under any model.
    pub invalid_requests: u64,
    /// Output tokens billed over all models.
    pub total_output_tokens: u64,
    /// HTTP requests being handled right now (waiting out their latency, hanging,
    /// or sending a slow body).
    pub in_flight: u64,
    /// Most HTTP requests handled at once since the start: the concurrency clients
    /// really achieved.
    pub peak_in_flight: u64,
    /// Distinct prompts (model, system and messages) that reached the
    /// simulator, live or as a line of a batch.
    #[serde(default)]
    pub distinct_prompts: u64,
    /// Prompts that reached it again: the same work sent twice (a client's
    /// retries count too).
    #[serde(default)]
    pub repeated_prompts: u64,
    /// What the batch APIs saw.
    #[serde(default)]
    pub batch: BatchStats,
}

/// Counters of the batch APIs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchStats {
    /// Batches created.
    pub batches: u64,
    /// Requests received in created batches.
    pub requests: u64,
    /// Lines answered.
    pub answered: u64,
    /// Lines that failed.
    pub errored: u64,
    /// Lines that expired.
    pub expired: u64,
    /// Lines canceled.
    pub canceled: u64,
    /// Cancel requests received.
    pub cancels: u64,
    /// List requests received.
    pub lists: u64,
    /// Creates answered (a client killed during a slow create never got its answer).
    pub creates_answered: u64,
}

impl SimStats {
    /// The stats of one model (zeros when it was never asked).
    pub fn model(&self, model: &str) -> ModelStats {
        self.models.get(model).cloned().unwrap_or_default()
    }
}

/// Counters of one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelStats {
    /// Well-formed requests received.
    pub requests: u64,
    /// Answers with status 200 (invalid-JSON answers included: they are billed).
    pub successes: u64,
    /// Error answers sent, by HTTP status.
    pub errors_by_status: BTreeMap<u16, u64>,
    /// Requests chosen to hang (they are answered 503 only if the server shuts down first).
    pub hangs: u64,
    /// Successful answers deliberately not valid JSON although JSON was asked for.
    pub invalid_json: u64,
    /// Successful answers whose body was sent slowly (`slow_body_rate`).
    pub slow_bodies: u64,
    /// Tokens billed by the successful answers.
    pub usage: TokenUsage,
    /// Most requests that arrived within any one (scaled) 60 s window, whatever
    /// their outcome. Shows how hard the client pushed.
    pub peak_requests_per_window: u64,
    /// Most requests admitted past the `rpm`/`tpm` limiter within any one window;
    /// never above `rpm`.
    pub peak_admitted_per_window: u64,
}

impl ModelStats {
    /// Error answers with this status.
    pub fn errors(&self, status: u16) -> u64 {
        self.errors_by_status.get(&status).copied().unwrap_or(0)
    }

    /// All error answers.
    pub fn total_errors(&self) -> u64 {
        self.errors_by_status.values().sum()
    }
}
