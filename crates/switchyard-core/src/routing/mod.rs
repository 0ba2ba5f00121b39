//! Routing: from a job, its analysis, the policy in force, live health and budget
//! headroom, produce an ordered chain of deployments to try (primary first,
//! fallbacks preferring other providers), with the reason.
//!
//! The router is pure: health and budget arrive as values, so every decision can
//! be reproduced and explained (`switchyard route --explain`).

mod chain;
mod feasibility;
mod strategy;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::analysis::TaskAnalysis;
use crate::catalog::{Catalog, ModelId};
use crate::health::HealthSnapshot;
use crate::job::Job;
use crate::org::EffectivePolicy;
use crate::result::RoutingSummary;

pub use crate::vocab::{DeploymentId, Strategy};
pub use feasibility::Drop;

use crate::vocab::TaskCategory;

/// What the router knows about a deployment (configuration, not health).
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentInfo {
    /// Deployment name.
    pub name: String,
    /// Catalog model it serves.
    pub model: ModelId,
    /// Provider name (copied from the catalog for quick filtering).
    pub provider: String,
}

/// Budget situation of the job's org path, as the ledger's policy decided it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum BudgetState {
    /// No node's policy acts on this job. `headroom_usd`, when given, drops models
    /// whose estimate exceeds it; the worker leaves it `None` so that a job that
    /// does not fit is treated by the node's policy, not silently downgraded.
    Normal {
        /// Largest estimated cost allowed, if any.
        headroom_usd: Option<f64>,
    },
    /// A `downgrade` node acts: route to the cheapest model above the quality floor
    /// whose estimate fits the headroom.
    NearLimit {
        /// Smallest remaining budget on the path.
        headroom_usd: f64,
    },
}

impl BudgetState {
    /// No budget acts on the job and no headroom drops a model.
    pub const UNCONSTRAINED: BudgetState = BudgetState::Normal { headroom_usd: None };

    fn headroom(&self) -> Option<f64> {
        match *self {
            BudgetState::Normal { headroom_usd } => headroom_usd,
            BudgetState::NearLimit { headroom_usd } => Some(headroom_usd),
        }
    }
}

/// Router settings from the pipeline config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouterSettings {
    /// Longest chain (primary + fallbacks).
    pub max_chain: usize,
    /// Quality slack that latency-first, availability-first and balanced allow below the need.
    pub quality_slack: f64,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            max_chain: 4,
            quality_slack: 0.08,
        }
    }
}

/// Everything the router needs about one job.
pub struct RouteInput<'a> {
    /// The job.
    pub job: &'a Job,
    /// Its analysis.
    pub analysis: &'a TaskAnalysis,
    /// Policy for its project and workload.
    pub policy: &'a EffectivePolicy,
    /// Budget situation.
    pub budget: BudgetState,
    /// Current time (for deadlines).
    pub now: DateTime<Utc>,
}

/// One entry of the chain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChainEntry {
    /// Deployment to call.
    pub deployment: DeploymentId,
    /// Its model.
    pub model: ModelId,
    /// Estimated cost of the call.
    pub estimated_cost_usd: f64,
    /// The most the job may cost on this model (see [`worst_case_usd`]): what
    /// budgets reserve and price caps limit.
    pub worst_case_usd: f64,
    /// Expected latency.
    pub expected_latency_ms: f64,
}

/// The most a job may cost on `model`: `(input tokens × input price + answer
/// cap × output price) × attempts that can bill`, where the input tokens are
/// the cautious count ([`TaskAnalysis::prompt_tokens_ceiling`]), the answer cap
/// is the job's `max_tokens` or else the policy's `default_max_tokens`, capped
/// by the model's output limit, and the attempts that can bill are 1 (only an
/// answer bills, and it ends the job) or, for a job that requires JSON, one per
/// deployment its chain may try (`max_chain`: an answer refused as invalid
/// JSON is billed and fails over). Errors (429, 5xx, timeouts) are not billed by
/// the providers and are not counted.
pub fn worst_case_usd(
    model: &crate::catalog::ModelSpec,
    job: &Job,
    analysis: &TaskAnalysis,
    default_max_tokens: u32,
    max_chain: usize,
) -> f64 {
    let cap = job
        .request
        .max_tokens
        .unwrap_or(default_max_tokens)
        .min(model.max_output_tokens);
    let attempts = if job.request.response_format == crate::job::ResponseFormat::JsonObject {
        max_chain.max(1)
    } else {
        1
    };
    model.estimate_usd(analysis.prompt_tokens_ceiling, cap) * attempts as f64
}

/// A candidate model and what became of it, for explanations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    /// Model name.
    pub model: String,
    /// Provider.
    pub provider: String,
    /// Quality for the job's category.
    pub quality: f64,
    /// Estimated cost.
    pub estimated_cost_usd: f64,
    /// Expected latency (live when observed).
    pub expected_latency_ms: f64,
    /// Observed success rate (smoothed).
    pub success_rate: f64,
    /// Strategy score (lower is better for cost and latency orders, shown as given).
    pub score: f64,
    /// Why it was dropped, if it was.
    pub dropped: Option<Drop>,
    /// Position in the ranking, if kept.
    pub rank: Option<usize>,
}

/// The router's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RoutingDecision {
    /// Strategy applied.
    pub strategy: Strategy,
    /// Task category.
    pub category: TaskCategory,
    /// Complexity.
    pub complexity: f64,
    /// Quality the job needed.
    pub required_quality: f64,
    /// Deployments to try, in order.
    pub chain: Vec<ChainEntry>,
    /// One-line reason.
    pub reason: String,
    /// Whether prompt tokens were counted with the model's tokenizer (else estimated).
    pub tokens_counted: bool,
    /// All candidates (only when explaining).
    pub candidates: Vec<Candidate>,
}

/// Why no chain could be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
pub enum RouteError {
    /// Every model was filtered out.
    #[error("no model can serve this job: {summary}")]
    NoFeasibleModel {
        /// Counted drop reasons.
        summary: String,
    },
    /// The deadline has passed.
    #[error("the job's deadline passed before routing")]
    DeadlinePassed,
    /// The job pins a model the catalog lacks.
    #[error("model `{name}` is not in the catalog{hint}")]
    UnknownModel {
        /// The pinned name.
        name: String,
        /// ` (did you mean `x`?)` or empty.
        hint: String,
    },
    /// The job's `allowed_models` names models the catalog lacks. Refused rather
    /// than ignored: a misspelt entry would quietly narrow the job to the others.
    #[error("allowed_models names models not in the catalog: {}", .names.join(", "))]
    UnknownAllowedModels {
        /// Each unknown name, with ` (did you mean `x`?)` where one is close.
        names: Vec<String>,
    },
}

impl RouteError {
    /// Stable error code for results.
    pub fn code(&self) -> &'static str {
        match self {
            RouteError::NoFeasibleModel { .. } => "no_feasible_model",
            RouteError::DeadlinePassed => "deadline_passed",
            RouteError::UnknownModel { .. } | RouteError::UnknownAllowedModels { .. } => {
                "unknown_model"
            }
        }
    }
}

/// A job the router cannot route: why, and the decision as far as it went
/// (strategy, analysis, the quality needed; with every candidate and why it was
/// dropped when explaining). A rejected result carries this decision, so
/// refusals are as explainable as routes.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[error("{error}")]
pub struct Refusal {
    /// Why.
    pub error: RouteError,
    /// The decision with an empty chain; its reason says why nothing was chosen.
    pub decision: RoutingDecision,
}

impl Refusal {
    /// Stable error code for results.
    pub fn code(&self) -> &'static str {
        self.error.code()
    }
}

/// The router: catalog plus deployment table.
#[derive(Debug, Clone)]
pub struct Router {
    catalog: Arc<Catalog>,
    deployments: Vec<DeploymentInfo>,
    by_model: Vec<Vec<DeploymentId>>,
    settings: RouterSettings,
}

impl Router {
    /// Builds a router. Deployments must name catalog models (checked by config validation).
    pub fn new(
        catalog: Arc<Catalog>,
        deployments: Vec<DeploymentInfo>,
        settings: RouterSettings,
    ) -> Self {
        let mut by_model = vec![Vec::new(); catalog.models().len()];
        for (i, d) in deployments.iter().enumerate() {
            if let Some(list) = by_model.get_mut(d.model) {
                list.push(i);
            }
        }
        Self {
            catalog,
            deployments,
            by_model,
            settings,
        }
    }

    /// A router over the deployments of a pipeline config (those naming a catalog
    /// model), with its routing settings: what tools that route without calling
    /// anything (`route`, `estimate`) need.
    pub fn for_pipeline(catalog: Arc<Catalog>, config: &crate::config::PipelineConfig) -> Self {
        let deployments = config
            .deployments
            .iter()
            .filter_map(|d| {
                catalog.id(&d.model).map(|model| DeploymentInfo {
                    name: d.name.clone(),
                    model,
                    provider: catalog.model(model).provider.clone(),
                })
            })
            .collect();
        let settings = RouterSettings {
            max_chain: config.routing.max_chain,
            quality_slack: config.routing.quality_slack,
        };
        Self::new(catalog, deployments, settings)
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The deployment table.
    pub fn deployments(&self) -> &[DeploymentInfo] {
        &self.deployments
    }

    /// Routes one job. `health` gives the live state of a deployment. With
    /// `explain`, the decision (or the refusal's) lists every candidate and why it
    /// was kept or dropped.
    pub fn route(
        &self,
        input: &RouteInput<'_>,
        health: &dyn Fn(DeploymentId) -> HealthSnapshot,
        explain: bool,
    ) -> Result<RoutingDecision, Box<Refusal>> {
        let job = input.job;
        let analysis = input.analysis;
        let strategy = job.strategy.unwrap_or(input.policy.strategy);
        let refused = |error: RouteError, tokens_counted: bool, candidates: Vec<Candidate>| {
            let mut decision = self.not_routed(input, &error.to_string());
            decision.tokens_counted = tokens_counted;
            decision.candidates = candidates;
            Box::new(Refusal { error, decision })
        };
        let early = self.check_request(input);
        if let Some(error) = early.clone()
            && !explain
        {
            return Err(refused(error, false, Vec::new()));
        }
        let assessed = feasibility::assess(self, input, health);
        let (ranked, reason) = strategy::rank(self, strategy, input, &assessed);
        let candidates = if explain {
            strategy::explain(self, &assessed, &ranked)
        } else {
            Vec::new()
        };
        if let Some(error) = early {
            return Err(refused(error, assessed.tokens_counted, candidates));
        }
        let chain = chain::build(self, &ranked, &assessed, self.settings.max_chain);
        if chain.is_empty() {
            let error = RouteError::NoFeasibleModel {
                summary: feasibility::summarize(&assessed),
            };
            return Err(refused(error, assessed.tokens_counted, candidates));
        }
        Ok(RoutingDecision {
            strategy,
            category: analysis.category,
            complexity: analysis.complexity,
            required_quality: strategy::need(strategy, input, self.settings),
            chain,
            reason,
            tokens_counted: assessed.tokens_counted,
            candidates,
        })
    }

    /// The most a job may cost on any model it could be routed to, whatever
    /// the live state: the largest [`worst_case_usd`] over the models its
    /// request and policy allow (pin and allow-lists, deny lists, output limit,
    /// context window, price cap, a deployment), with every circuit closed, no
    /// budget headroom and no deadline counted. A chain holds only such
    /// models, so admission's per-job worst case ([`RoutingDecision::worst_case_usd`])
    /// never exceeds it, now or later. `None` when routing refuses the job
    /// whatever the state (nothing it may use, a passed deadline, an unknown
    /// model): it will cost nothing. `switchyard submit` prices a batch with it.
    pub fn worst_case_bound(&self, input: &RouteInput<'_>) -> Option<f64> {
        if self.check_request(input).is_some() {
            return None;
        }
        // A later moment may find more of the deadline left, or faster
        // deployments: deadlines drop nothing here.
        let undated;
        let job = match input.job.deadline {
            Some(_) => {
                undated = Job {
                    deadline: None,
                    ..input.job.clone()
                };
                &undated
            }
            None => input.job,
        };
        let input = RouteInput {
            job,
            budget: BudgetState::UNCONSTRAINED,
            ..*input
        };
        let assessed = feasibility::assess(self, &input, &|_| HealthSnapshot::fresh());
        assessed
            .models
            .iter()
            .filter(|a| a.drop.is_none())
            .map(|a| a.worst_case_usd)
            .reduce(f64::max)
    }

    /// Routes one job among the models deferred routing can use (a batch API
    /// Switchyard speaks and a catalog batch price, [`ModelSpec::deferrable`]),
    /// within the job's own allow-list and its policy: the route of a job that
    /// goes through a provider's batch API (admission's deferred route, and
    /// `estimate`'s deferred price). `None` when no such model can serve it.
    ///
    /// [`ModelSpec::deferrable`]: crate::catalog::ModelSpec::deferrable
    pub fn route_deferred(
        &self,
        input: &RouteInput<'_>,
        health: &dyn Fn(DeploymentId) -> HealthSnapshot,
    ) -> Option<RoutingDecision> {
        let allowed = &input.job.allowed_models;
        let deferrable: Vec<String> = self
            .catalog
            .models()
            .iter()
            .filter(|m| m.deferrable())
            .filter(|m| allowed.is_empty() || allowed.contains(&m.name))
            .map(|m| m.name.clone())
            .collect();
        if deferrable.is_empty() {
            return None;
        }
        let mut job = input.job.clone();
        job.allowed_models = deferrable;
        let input = RouteInput {
            job: &job,
            analysis: input.analysis,
            policy: input.policy,
            budget: input.budget,
            now: input.now,
        };
        self.route(&input, health, false).ok()
    }

    /// Refusals that do not depend on the candidates: a passed deadline, unknown
    /// model names in the job.
    fn check_request(&self, input: &RouteInput<'_>) -> Option<RouteError> {
        let job = input.job;
        if let Some(deadline) = job.deadline
            && deadline <= input.now
        {
            return Some(RouteError::DeadlinePassed);
        }
        let names = || self.catalog.models().iter().map(|m| m.name.as_str());
        let hint = |name: &str| {
            crate::config::source::closest(name, names())
                .map(|near| format!(" (did you mean `{near}`?)"))
                .unwrap_or_default()
        };
        if let Some(pinned) = &job.model
            && self.catalog.id(pinned).is_none()
        {
            return Some(RouteError::UnknownModel {
                name: pinned.clone(),
                hint: hint(pinned),
            });
        }
        let unknown: Vec<String> = job
            .allowed_models
            .iter()
            .filter(|m| self.catalog.id(m).is_none())
            .map(|m| format!("`{m}`{}", hint(m)))
            .collect();
        if !unknown.is_empty() {
            return Some(RouteError::UnknownAllowedModels { names: unknown });
        }
        None
    }

    /// A decision that routes nowhere, for a job refused before or by routing
    /// (budget policy, unknown project, canceled batch, no feasible model): the
    /// strategy, analysis and need as they stand, an empty chain, and `why` as
    /// the reason. Results carry it so every refusal says what the job was.
    pub fn not_routed(&self, input: &RouteInput<'_>, why: &str) -> RoutingDecision {
        let strategy = input.job.strategy.unwrap_or(input.policy.strategy);
        let needed = strategy::need(strategy, input, self.settings);
        RoutingDecision {
            strategy,
            category: input.analysis.category,
            complexity: input.analysis.complexity,
            required_quality: needed,
            chain: Vec::new(),
            reason: format!(
                "{}; not routed: {why}",
                strategy::head(strategy, input, needed)
            ),
            tokens_counted: false,
            candidates: Vec::new(),
        }
    }
}

impl RoutingDecision {
    /// The most the job may cost along its chain: the dearest entry's worst case.
    pub fn worst_case_usd(&self) -> f64 {
        self.chain
            .iter()
            .map(|e| e.worst_case_usd)
            .fold(0.0, f64::max)
    }

    /// The most the job may cost along its chain when served in `mode`: each
    /// entry's worst case scaled by its model's batch factor when deferred.
    pub fn worst_case_in(&self, catalog: &Catalog, mode: crate::vocab::RunMode) -> f64 {
        self.chain
            .iter()
            .map(|e| match mode {
                crate::vocab::RunMode::Live => e.worst_case_usd,
                crate::vocab::RunMode::Deferred => {
                    e.worst_case_usd * catalog.model(e.model).batch_factor()
                }
            })
            .fold(0.0, f64::max)
    }

    /// The summary carried in results and usage events; `chosen_model` is empty
    /// when the job was not routed.
    pub fn summary(&self, catalog: &Catalog) -> RoutingSummary {
        let chosen = self
            .chain
            .first()
            .map(|e| catalog.model(e.model).name.clone())
            .unwrap_or_default();
        RoutingSummary {
            strategy: self.strategy,
            category: self.category,
            complexity: (self.complexity * 1000.0).round() / 1000.0,
            required_quality: (self.required_quality * 1000.0).round() / 1000.0,
            chosen_model: chosen,
            reason: self.reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
