//! Feasibility: which models can serve this job at all, and at what estimated cost
//! and latency. Each dropped model carries the reason, for explanations and for the
//! rejection message when nothing is left.

use serde::Serialize;

use super::{DeploymentId, RouteInput, Router};
use crate::catalog::{ModelId, ModelSpec, Tokenizer};
use crate::health::{CircuitState, HealthSnapshot};
use crate::tokens;

/// Why a model was not considered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Drop {
    /// Excluded by the job's pin or allow-list.
    NotRequested,
    /// Excluded by an org or workload policy.
    PolicyDenied {
        /// Which rule.
        rule: String,
    },
    /// No deployment configured for the model.
    NoDeployment,
    /// Every deployment's circuit is open.
    CircuitOpen,
    /// Prompt plus answer would not fit.
    ContextWindow {
        /// Tokens needed.
        needed: u32,
        /// Model's window.
        window: u32,
    },
    /// The job asks for more output than the model can give.
    MaxOutput {
        /// Asked.
        asked: u32,
        /// Model's limit.
        limit: u32,
    },
    /// Expected to miss the deadline.
    Deadline {
        /// Expected latency.
        expected_ms: u64,
        /// Time left.
        remaining_ms: u64,
    },
    /// Over the policy's price cap per job.
    PriceCap {
        /// The job's worst case on this model.
        cost_usd: f64,
        /// Cap.
        cap_usd: f64,
    },
    /// Over the remaining budget.
    BudgetHeadroom {
        /// The job's worst case on this model.
        cost_usd: f64,
        /// Remaining budget.
        headroom_usd: f64,
    },
    /// Quality for the category under what the strategy accepts.
    BelowQuality {
        /// Model's quality.
        quality: f64,
        /// What was needed.
        needed: f64,
    },
}

impl Drop {
    /// Short name for summaries.
    pub fn label(&self) -> &'static str {
        match self {
            Drop::NotRequested => "not requested",
            Drop::PolicyDenied { .. } => "denied by policy",
            Drop::NoDeployment => "no deployment",
            Drop::CircuitOpen => "circuit open",
            Drop::ContextWindow { .. } => "context window",
            Drop::MaxOutput { .. } => "max output",
            Drop::Deadline { .. } => "deadline",
            Drop::PriceCap { .. } => "price cap",
            Drop::BudgetHeadroom { .. } => "budget headroom",
            Drop::BelowQuality { .. } => "below quality",
        }
    }
}

/// One model's assessment for this job.
#[derive(Debug, Clone)]
pub(super) struct Assessment {
    pub model: ModelId,
    pub quality: f64,
    pub cost_usd: f64,
    /// The most the job may cost on this model.
    pub worst_case_usd: f64,
    pub latency_ms: f64,
    pub success_rate: f64,
    /// Usable deployments, best first: `deployments[dep_start..dep_start + dep_len]`.
    pub dep_start: usize,
    pub dep_len: usize,
    pub drop: Option<Drop>,
}

/// All models assessed.
pub(super) struct Assessed {
    pub models: Vec<Assessment>,
    pub deployments: Vec<DeploymentId>,
    pub tokens_counted: bool,
}

impl Assessed {
    pub fn deployments_of(&self, a: &Assessment) -> &[DeploymentId] {
        &self.deployments[a.dep_start..a.dep_start + a.dep_len]
    }
}

/// Margin on the cautious byte count of prompt tokens: the prompt is counted
/// exactly (or, without a tokenizer, taken at this figure) only when it does not
/// fit with the margin.
const ESTIMATE_MARGIN: f64 = 1.15;

pub(super) fn assess(
    router: &Router,
    input: &RouteInput<'_>,
    health: &dyn Fn(DeploymentId) -> HealthSnapshot,
) -> Assessed {
    let catalog = &router.catalog;
    let mut job = JobFacts::new(input);
    let mut out = Assessed {
        models: Vec::with_capacity(catalog.models().len()),
        deployments: Vec::new(),
        tokens_counted: false,
    };
    for (id, m) in catalog.models().iter().enumerate() {
        let analysis = input.analysis;
        let quality = match analysis.alternative {
            Some(alt) => m.quality_for(analysis.category).min(m.quality_for(alt)),
            None => m.quality_for(analysis.category),
        };
        let output = analysis.expected_output_tokens.min(m.max_output_tokens);
        let cost_usd = m.estimate_usd(job.estimate, output);
        let worst_case_usd = super::worst_case_usd(
            m,
            input.job,
            analysis,
            input.policy.default_max_tokens,
            router.settings.max_chain,
        );
        let usable = usable_deployments(&router.by_model[id], health, &mut out.deployments);
        let latency_ms = m.expected_latency_ms(output) * usable.slowdown;
        let candidate = Candidacy {
            any_deployment: !router.by_model[id].is_empty(),
            usable: usable.len,
            output,
            latency_ms,
            worst_case_usd,
        };
        let drop = job.first_drop(input, m, &candidate);
        out.models.push(Assessment {
            model: id,
            quality,
            cost_usd,
            worst_case_usd,
            latency_ms,
            success_rate: if usable.len > 0 { usable.success } else { 0.0 },
            dep_start: usable.start,
            dep_len: usable.len,
            drop,
        });
    }
    out.tokens_counted = job.tokens_counted;
    out
}

/// What is the same for every model when assessing one job.
struct JobFacts {
    /// Time left before the deadline, ms.
    remaining_ms: Option<f64>,
    /// Budget headroom, when routing within it.
    headroom: Option<f64>,
    /// Estimated prompt tokens, for prices.
    estimate: u32,
    /// The cautious prompt count with a margin, for context windows.
    padded: u32,
    /// Exact counts per tokenizer (o200k, cl100k), computed at most once.
    exact: [Option<u32>; 2],
    tokens_counted: bool,
}

/// One model's figures that the filters read.
struct Candidacy {
    any_deployment: bool,
    usable: usize,
    output: u32,
    latency_ms: f64,
    worst_case_usd: f64,
}

/// A model's usable deployments, pushed best first onto the shared list.
struct Usable {
    start: usize,
    len: usize,
    /// Smallest observed slowdown among them (1.0 when none).
    slowdown: f64,
    /// Best success rate among them.
    success: f64,
}

/// Deployments whose circuit lets a call through, best success rate first.
fn usable_deployments(
    deployments: &[DeploymentId],
    health: &dyn Fn(DeploymentId) -> HealthSnapshot,
    out: &mut Vec<DeploymentId>,
) -> Usable {
    let start = out.len();
    let mut slowdown = f64::INFINITY;
    let mut success = 0.0f64;
    for &d in deployments {
        let h = health(d);
        let usable = match h.circuit {
            CircuitState::Closed => true,
            CircuitState::HalfOpen { probe_available } => probe_available,
            CircuitState::Open => false,
        };
        if usable {
            out.push(d);
            slowdown = slowdown.min(h.slowdown);
            success = success.max(h.success_rate);
        }
    }
    // Best deployment first: the health snapshot is cheap to read twice.
    out[start..].sort_by(|a, b| health(*b).success_rate.total_cmp(&health(*a).success_rate));
    Usable {
        start,
        len: out.len() - start,
        slowdown: if slowdown.is_finite() { slowdown } else { 1.0 },
        success,
    }
}

impl JobFacts {
    fn new(input: &RouteInput<'_>) -> Self {
        let analysis = input.analysis;
        let estimate = analysis.prompt_tokens;
        // Near-limit checks use the cautious count, which does not undercount
        // non-Latin scripts the way four bytes per token would.
        let padded =
            (f64::from(analysis.prompt_tokens_ceiling.max(estimate)) * ESTIMATE_MARGIN) as u32;
        Self {
            remaining_ms: input
                .job
                .deadline
                .map(|d| (d - input.now).num_milliseconds().max(0) as f64),
            headroom: input.budget.headroom(),
            estimate,
            padded,
            exact: [None, None],
            tokens_counted: false,
        }
    }

    /// The first filter that applies is the reason the model is dropped.
    fn first_drop(&mut self, input: &RouteInput<'_>, m: &ModelSpec, c: &Candidacy) -> Option<Drop> {
        let job = input.job;
        if let Some(d) = requested(job, m).or(allowed(input.policy, m)) {
            return Some(d);
        }
        if !c.any_deployment {
            return Some(Drop::NoDeployment);
        }
        if c.usable == 0 {
            return Some(Drop::CircuitOpen);
        }
        let asked = job.request.max_tokens.unwrap_or(0);
        if asked > m.max_output_tokens {
            return Some(Drop::MaxOutput {
                asked,
                limit: m.max_output_tokens,
            });
        }
        if let Some(d) = self.context_window(job, m, c.output) {
            return Some(d);
        }
        if let Some(left) = self.remaining_ms
            && c.latency_ms > left
        {
            return Some(Drop::Deadline {
                expected_ms: c.latency_ms as u64,
                remaining_ms: left as u64,
            });
        }
        if let Some(cap) = input.policy.max_usd_per_job
            && c.worst_case_usd > cap
        {
            return Some(Drop::PriceCap {
                cost_usd: c.worst_case_usd,
                cap_usd: cap,
            });
        }
        if let Some(h) = self.headroom
            && c.worst_case_usd > h
        {
            return Some(Drop::BudgetHeadroom {
                cost_usd: c.worst_case_usd,
                headroom_usd: h,
            });
        }
        None
    }

    /// Whether prompt and answer fit the model's window: by the cautious count,
    /// and when that is close to the limit, by the model's tokenizer where one exists.
    fn context_window(
        &mut self,
        job: &crate::job::Job,
        m: &ModelSpec,
        output: u32,
    ) -> Option<Drop> {
        let reserve = job
            .request
            .max_tokens
            .unwrap_or(output)
            .min(m.max_output_tokens);
        let fits =
            |prompt: u32| u64::from(prompt) + u64::from(reserve) <= u64::from(m.context_window);
        if fits(self.padded) {
            return None;
        }
        let padded = self.padded;
        let prompt = match m.tokenizer {
            Tokenizer::Estimate => padded,
            t => {
                let slot = usize::from(t == Tokenizer::Cl100kBase);
                self.tokens_counted = true;
                *self.exact[slot].get_or_insert_with(|| tokens::count_job(job, t).unwrap_or(padded))
            }
        };
        (!fits(prompt)).then(|| Drop::ContextWindow {
            needed: prompt.saturating_add(reserve),
            window: m.context_window,
        })
    }
}

fn requested(job: &crate::job::Job, m: &ModelSpec) -> Option<Drop> {
    if let Some(pinned) = &job.model
        && pinned != &m.name
    {
        return Some(Drop::NotRequested);
    }
    if !job.allowed_models.is_empty() && !job.allowed_models.contains(&m.name) {
        return Some(Drop::NotRequested);
    }
    None
}

fn allowed(policy: &crate::org::EffectivePolicy, m: &ModelSpec) -> Option<Drop> {
    if !policy.provider_allowed(&m.provider) {
        return Some(Drop::PolicyDenied {
            rule: format!("provider `{}` not allowed", m.provider),
        });
    }
    if !policy.model_allowed(&m.name) {
        return Some(Drop::PolicyDenied {
            rule: format!("model `{}` not allowed", m.name),
        });
    }
    None
}

/// "12 below quality, 3 no deployment, …" for rejection messages.
pub(super) fn summarize(assessed: &Assessed) -> String {
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    for a in &assessed.models {
        let Some(d) = &a.drop else { continue };
        match counts.iter_mut().find(|(l, _)| *l == d.label()) {
            Some((_, n)) => *n += 1,
            None => counts.push((d.label(), 1)),
        }
    }
    if counts.is_empty() {
        return "every candidate was ranked out".into();
    }
    counts
        .iter()
        .map(|(l, n)| format!("{n} {l}"))
        .collect::<Vec<_>>()
        .join(", ")
}
