//! The job engine: everything that happens to one decoded job, without Kafka.
//! Policy → analysis → budget → route → call along the chain → settle → result and
//! usage events. The Kafka runner feeds it; tests and benchmarks call it directly.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, SubsecRound, Utc};
use switchyard_core::analysis::TaskAnalyzer;
use switchyard_core::budget::{BudgetLedger, BudgetStop, BudgetVerdict};
use switchyard_core::catalog::{Catalog, ModelId};
use switchyard_core::config::LoadedPipeline;
use switchyard_core::health::{DeploymentHealth, HealthSnapshot};
use switchyard_core::job::Job;
use switchyard_core::org::{EffectivePolicy, OrgTree};
use switchyard_core::result::{ErrorInfo, JobResult, JobStatus, RoutingSummary, TokenUsage};
use switchyard_core::routing::{
    BudgetState, DeploymentId, DeploymentInfo, Refusal, RouteError, RouteInput, Router,
    RouterSettings,
};
use switchyard_core::usage::UsageEvent;
use switchyard_providers::{Backoff, Deployment};

use crate::dispatch::{self, Dispatched};
use crate::metrics::Metrics;

/// What became of a job.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A final result, with a usage event per billed attempt.
    Finished {
        /// The result to publish.
        result: Box<JobResult>,
        /// Usage events to publish.
        usage: Vec<UsageEvent>,
    },
    /// Parked by budget policy until an approver releases it.
    Held {
        /// Why.
        reason: String,
    },
}

/// Live health of every deployment, indexed like the router's table.
pub struct HealthTable {
    cells: Vec<Mutex<DeploymentHealth>>,
}

impl HealthTable {
    fn new(n: usize, cfg: switchyard_core::health::HealthConfig) -> Self {
        Self {
            cells: (0..n)
                .map(|_| Mutex::new(DeploymentHealth::new(cfg)))
                .collect(),
        }
    }

    fn now() -> std::time::Instant {
        tokio::time::Instant::now().into_std()
    }

    /// Snapshot for routing.
    pub fn snapshot(&self, d: DeploymentId) -> HealthSnapshot {
        self.cells
            .get(d)
            .and_then(|c| c.lock().ok())
            .map_or_else(HealthSnapshot::fresh, |h| h.snapshot(Self::now()))
    }

    pub(crate) fn try_acquire(&self, d: DeploymentId) -> bool {
        self.cells
            .get(d)
            .and_then(|c| c.lock().ok())
            .is_none_or(|mut h| h.try_acquire(Self::now()))
    }

    pub(crate) fn record(
        &self,
        d: DeploymentId,
        outcome: switchyard_core::health::CallOutcome,
    ) -> Option<switchyard_core::health::CircuitState> {
        self.cells
            .get(d)
            .and_then(|c| c.lock().ok())
            .and_then(|mut h| h.record(Self::now(), outcome))
    }
}

/// Everything needed to process jobs.
pub struct Engine {
    pub(crate) analyzer: TaskAnalyzer,
    pub(crate) router: Router,
    pub(crate) org: OrgTree,
    /// The config's default strategy and floor: what a job outside the org tree
    /// (or canceled before its policy was read) is described with.
    default_policy: EffectivePolicy,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) baseline: ModelId,
    pub(crate) deployments: Vec<Deployment>,
    pub(crate) health: HealthTable,
    pub(crate) ledger: Mutex<BudgetLedger>,
    pub(crate) backoff: Backoff,
    canceled_batches: RwLock<HashSet<String>>,
    own_events: Mutex<RecentIds>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// Why an engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A deployment names a model the catalog lacks, or the baseline is unknown.
    #[error("{0}")]
    Config(String),
}

impl Engine {
    /// Builds an engine for a loaded pipeline and its deployments.
    pub fn new(
        pipeline: &LoadedPipeline,
        deployments: Vec<Deployment>,
    ) -> Result<Self, EngineError> {
        let catalog = Arc::new(pipeline.catalog.clone());
        let routing = &pipeline.config.routing;
        let baseline = catalog.id(&routing.baseline_model).ok_or_else(|| {
            EngineError::Config(format!(
                "baseline model `{}` is not in the catalog",
                routing.baseline_model
            ))
        })?;
        let infos = deployments
            .iter()
            .map(|d| {
                let model = catalog.id(&d.model).ok_or_else(|| {
                    EngineError::Config(format!(
                        "deployment `{}` serves unknown model `{}`",
                        d.name, d.model
                    ))
                })?;
                Ok(DeploymentInfo {
                    name: d.name.clone(),
                    model,
                    provider: d.provider.clone(),
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let settings = RouterSettings {
            max_chain: routing.max_chain,
            quality_slack: routing.quality_slack,
        };
        Ok(Self {
            analyzer: TaskAnalyzer::new(),
            router: Router::new(catalog.clone(), infos, settings),
            org: pipeline.org.clone(),
            default_policy: EffectivePolicy::open(
                routing.default_strategy,
                routing.default_quality_floor,
            ),
            health: HealthTable::new(deployments.len(), routing.health),
            ledger: Mutex::new(BudgetLedger::new(&pipeline.org, Utc::now())),
            catalog,
            baseline,
            deployments,
            backoff: routing.retry.into(),
            canceled_batches: RwLock::new(HashSet::new()),
            own_events: Mutex::new(RecentIds::default()),
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// The router (for `route --explain`).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Health of every deployment.
    pub fn health(&self) -> &HealthTable {
        &self.health
    }

    /// Marks a batch canceled: its jobs not yet started end as `canceled`.
    pub fn cancel_batch(&self, batch_id: &str) {
        if let Ok(mut set) = self.canceled_batches.write() {
            set.insert(batch_id.to_owned());
        }
    }

    /// Records spend seen on the usage topic (other workers, or before a restart).
    pub fn record_spend(&self, event: &UsageEvent) {
        if let Ok(mut l) = self.ledger.lock() {
            l.record(&event.project_path(), event.cost_usd, event.ts);
        }
    }

    /// Records spend from the usage topic unless this engine made the event itself
    /// (its own spend is settled when the job ends). Returns whether it counted.
    pub fn record_foreign_spend(&self, event: &UsageEvent) -> bool {
        let own = self
            .own_events
            .lock()
            .is_ok_and(|mut ids| ids.take(&event.event_id));
        if !own {
            self.record_spend(event);
        }
        !own
    }

    /// What the baseline model would charge for `usage`.
    pub fn baseline_cost(&self, usage: &TokenUsage) -> f64 {
        self.catalog.model(self.baseline).cost_usd(usage)
    }

    fn is_canceled(&self, job: &Job) -> bool {
        job.batch_id
            .as_ref()
            .is_some_and(|b| self.canceled_batches.read().is_ok_and(|s| s.contains(b)))
    }

    /// The budget's verdict for a job on these nodes (see [`BudgetLedger::verdict`]).
    fn budget_verdict(
        &self,
        nodes: &[String],
        estimate_usd: Option<f64>,
        now: DateTime<Utc>,
    ) -> BudgetVerdict {
        match self.ledger.lock() {
            Ok(mut l) => l.verdict(nodes, estimate_usd, now),
            Err(_) => Ok(BudgetState::UNCONSTRAINED),
        }
    }

    /// Processes one job to its outcome.
    pub async fn process(&self, job: Job) -> Outcome {
        let started = tokio::time::Instant::now();
        let now = Utc::now();
        // Analysed first, so that even a refused job's result says what it was.
        let analysis = self.analyzer.analyze(&job, false);
        let unrouted = |policy: &EffectivePolicy, why: &str| {
            let input = RouteInput {
                job: &job,
                analysis: &analysis,
                policy,
                budget: BudgetState::UNCONSTRAINED,
                now,
            };
            self.router.not_routed(&input, why).summary(&self.catalog)
        };
        if self.is_canceled(&job) {
            let why = "the job's batch was canceled before the job started";
            let routing = unrouted(&self.default_policy, why);
            return self.refuse(
                job,
                routing,
                started,
                JobStatus::Canceled,
                "batch_canceled",
                why.into(),
            );
        }
        let policy = match self.org.policy(&job.project, job.workload.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                let message = e.to_string();
                let routing = unrouted(&self.default_policy, &message);
                return self.refuse(
                    job,
                    routing,
                    started,
                    JobStatus::Rejected,
                    "unknown_project",
                    message,
                );
            }
        };
        let nodes = &policy.budget_nodes;
        let budget = match self.budget_verdict(nodes, None, now) {
            Ok(state) => state,
            Err(stop) => {
                let routing = unrouted(policy, stop.reason());
                return self.budget_stopped(stop, job, routing, started);
            }
        };
        let route = |budget: BudgetState| {
            let input = RouteInput {
                job: &job,
                analysis: &analysis,
                policy,
                budget,
                now,
            };
            self.router
                .route(&input, &|d| self.health.snapshot(d), false)
        };
        let mut decision = match route(budget) {
            Ok(d) => d,
            Err(refusal) => {
                let routing = refusal.decision.summary(&self.catalog);
                let (code, message) = match (budget, &refusal.error) {
                    // Downgrading, and not even the cheapest model above the floor fits.
                    (BudgetState::NearLimit { .. }, RouteError::NoFeasibleModel { .. }) => {
                        ("budget_exhausted", nothing_fits_near_limit(&refusal))
                    }
                    _ => (refusal.code(), refusal.to_string()),
                };
                return self.refuse(job, routing, started, JobStatus::Rejected, code, message);
            }
        };
        // The routed job's estimate must fit what every budget has left, or the
        // node's policy decides: downgrade (route again within the headroom),
        // reject or hold.
        if !nodes.is_empty() {
            let estimate = decision.chain.first().map(|e| e.estimated_cost_usd);
            match self.budget_verdict(nodes, estimate, now) {
                Ok(state @ BudgetState::NearLimit { .. })
                    if matches!(budget, BudgetState::Normal { .. }) =>
                {
                    decision = match route(state) {
                        Ok(d) => d,
                        Err(refusal) => {
                            let routing = refusal.decision.summary(&self.catalog);
                            let message = nothing_fits_near_limit(&refusal);
                            return self.refuse(
                                job,
                                routing,
                                started,
                                JobStatus::Rejected,
                                "budget_exhausted",
                                message,
                            );
                        }
                    };
                }
                Ok(_) => {}
                Err(stop) => {
                    let routing = unrouted(policy, stop.reason());
                    return self.budget_stopped(stop, job, routing, started);
                }
            }
        }
        // The estimate is checked and reserved under one lock, so that jobs
        // deciding at once cannot all pass on the same headroom.
        let estimate = decision.chain.first().map_or(0.0, |e| e.estimated_cost_usd);
        let reserved = self
            .ledger
            .lock()
            .ok()
            .map(|mut l| l.reserve_checked(nodes, estimate, now));
        let reservation = match reserved {
            Some(Ok(r)) => Some(r),
            Some(Err(stop)) => {
                let routing = unrouted(policy, stop.reason());
                return self.budget_stopped(stop, job, routing, started);
            }
            None => None,
        };
        let Dispatched {
            attempts,
            completion,
            error,
        } = dispatch::run(self, &job, &decision, analysis.prompt_tokens).await;
        let mut usage = TokenUsage::default();
        let mut cost = 0.0;
        for a in &attempts {
            usage.add(&a.usage);
            cost += a.cost_usd;
        }
        if let (Some(r), Ok(mut l)) = (reservation, self.ledger.lock()) {
            l.settle(r, cost, Utc::now());
        }
        let completed_at = Utc::now().trunc_subsecs(3);
        let summary = decision.summary(&self.catalog);
        let path = job.project_path();
        let events: Vec<UsageEvent> = attempts
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.usage.is_zero())
            .filter_map(|(i, a)| {
                let p = path?;
                Some(UsageEvent {
                    event_id: uuid::Uuid::now_v7().to_string(),
                    job_id: job.job_id.clone(),
                    batch_id: job.batch_id.clone(),
                    attempt: i as u32,
                    ts: completed_at,
                    org: p.org.to_owned(),
                    business_unit: p.business_unit.to_owned(),
                    team: p.team.to_owned(),
                    project: p.project.to_owned(),
                    workload: job.workload.clone().unwrap_or_default(),
                    strategy: summary.strategy,
                    category: summary.category,
                    complexity: summary.complexity,
                    chosen_model: summary.chosen_model.clone(),
                    routing_reason: summary.reason.clone(),
                    provider: a.provider.clone(),
                    model: a.model.clone(),
                    deployment: a.deployment.clone(),
                    outcome: a.outcome,
                    usage: a.usage,
                    cost_usd: a.cost_usd,
                    baseline_cost_usd: self.baseline_cost(&a.usage),
                    latency_ms: a.latency_ms,
                })
            })
            .collect();
        if !events.is_empty()
            && let Ok(mut ids) = self.own_events.lock()
        {
            for e in &events {
                ids.insert(e.event_id.clone());
            }
        }
        let (status, provider, model, output) = match completion {
            Some((idx, c)) => {
                let a = &attempts[idx];
                (
                    JobStatus::Succeeded,
                    Some(a.provider.clone()),
                    Some(a.model.clone()),
                    Some(c),
                )
            }
            None => (JobStatus::Failed, None, None, None),
        };
        let result = JobResult {
            job_id: job.job_id,
            batch_id: job.batch_id,
            project: job.project,
            status,
            provider,
            model,
            output,
            usage,
            cost_usd: cost,
            latency_ms: started.elapsed().as_millis() as u64,
            attempts,
            routing: Some(summary),
            error,
            metadata: job.metadata,
            completed_at,
        };
        self.metrics.record(&result, self.baseline_cost(&usage));
        Outcome::Finished {
            result: Box::new(result),
            usage: events,
        }
    }

    /// The outcome of a budget policy that holds or rejects the job.
    fn budget_stopped(
        &self,
        stop: BudgetStop,
        job: Job,
        routing: RoutingSummary,
        started: tokio::time::Instant,
    ) -> Outcome {
        match stop {
            BudgetStop::Hold { reason, .. } => Outcome::Held {
                reason: format!("{reason}; held for approval"),
            },
            BudgetStop::Reject { reason, .. } => self.refuse(
                job,
                routing,
                started,
                JobStatus::Rejected,
                "budget_exhausted",
                reason,
            ),
        }
    }

    fn refuse(
        &self,
        job: Job,
        routing: RoutingSummary,
        started: tokio::time::Instant,
        status: JobStatus,
        code: &str,
        message: String,
    ) -> Outcome {
        let result = JobResult {
            job_id: job.job_id,
            batch_id: job.batch_id,
            project: job.project,
            status,
            provider: None,
            model: None,
            output: None,
            usage: TokenUsage::default(),
            cost_usd: 0.0,
            latency_ms: started.elapsed().as_millis() as u64,
            attempts: Vec::new(),
            routing: Some(routing),
            error: Some(ErrorInfo {
                code: code.to_owned(),
                message,
            }),
            metadata: job.metadata,
            completed_at: now_ms(),
        };
        self.metrics.record(&result, 0.0);
        Outcome::Finished {
            result: Box::new(result),
            usage: Vec::new(),
        }
    }
}

/// Ids of usage events this engine produced, until they come back from the topic.
/// Bounded: the oldest are forgotten first (a forgotten id would count its spend
/// twice in this worker's ledger, never lose it).
#[derive(Default)]
struct RecentIds {
    set: HashSet<String>,
    order: std::collections::VecDeque<String>,
}

/// Own event ids remembered at most.
const RECENT_IDS: usize = 200_000;

impl RecentIds {
    fn insert(&mut self, id: String) {
        if self.order.len() >= RECENT_IDS
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        self.set.insert(id.clone());
        self.order.push_back(id);
    }

    /// Removes `id` if present (the order queue drops it lazily).
    fn take(&mut self, id: &str) -> bool {
        self.set.remove(id)
    }
}

/// Now, at millisecond precision (what Avro timestamps carry).
pub fn now_ms() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// Why a job is refused when its budget is near the limit and not even the
/// cheapest model above the quality floor fits what is left.
fn nothing_fits_near_limit(refusal: &Refusal) -> String {
    format!("budget near its limit and no model above the quality floor fits: {refusal}")
}
