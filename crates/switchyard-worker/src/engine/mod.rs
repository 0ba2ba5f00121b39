//! The job engine: everything that happens to one decoded job, without Kafka, in
//! three steps. **Admit** (a pure decision in `switchyard-core`: cancel, policy,
//! budget, route, fit, reserve; the reservation applied under the ledger's lock),
//! **dispatch** (the [`Dispatcher`] calls providers along the chain) and
//! **settle** (the real cost replaces the reservation; the result and one usage
//! event per billed attempt are built by constructors in core). The Kafka runner
//! feeds it; tests and benchmarks call it directly.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use chrono::{DateTime, SubsecRound, Utc};
use parking_lot::{Mutex, RwLock};
use switchyard_core::access::Keyring;
use switchyard_core::access::approval::{ApprovalRequest, HoldKind};
use switchyard_core::admission::{Admission, Admitted, JobFacts, Refused, Signer, Verdict};
use switchyard_core::analysis::TaskAnalyzer;
use switchyard_core::budget::{BudgetLedger, BudgetSnapshot, NodeBudget, QuotaUse, Reservation};
use switchyard_core::catalog::{Catalog, ModelId};
use switchyard_core::config::{DeferredConfig, LoadedPipeline};
use switchyard_core::deferred::DeferredJob;
use switchyard_core::job::Job;
use switchyard_core::org::{EffectivePolicy, OrgTree};
use switchyard_core::result::{ErrorInfo, JobResult, JobStatus, RunMode, TokenUsage};
use switchyard_core::routing::{DeploymentInfo, Router, RouterSettings};
use switchyard_core::usage::UsageEvent;
use switchyard_kafka::audit::AuditLog;
use switchyard_providers::Deployment;
use tokio::time::Instant;

mod deferred;
pub use deferred::HANDOFF_KEPT;

use crate::access::{Access, Checked, Envelope};
use crate::audit::{self, Auditor};
use crate::dispatch::{Dispatched, Dispatcher};
use crate::health::HealthTable;
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
    /// Held until an approver releases or rejects it: a non-final `held`
    /// result, and the approval request to publish.
    Held {
        /// Why.
        reason: String,
        /// The `held` result (not final: a second result follows the decision).
        result: Box<JobResult>,
        /// The request an approver decides on.
        request: Box<ApprovalRequest>,
    },
    /// Handed off to deferred routing: the record to publish on the deferred
    /// topic, after which the job's offset counts as done.
    Deferred(Box<DeferredJob>),
}

/// Everything needed to process jobs.
pub struct Engine {
    analyzer: TaskAnalyzer,
    router: Router,
    org: OrgTree,
    /// The config's default strategy and floor: what a job outside the org tree
    /// (or canceled before its policy was read) is described with.
    default_policy: EffectivePolicy,
    catalog: Arc<Catalog>,
    baseline: ModelId,
    dispatcher: Dispatcher,
    /// Spend and reservations. The lock cannot poison, so a panic elsewhere
    /// never switches budgets off: every job is checked and reserved.
    ledger: Mutex<BudgetLedger>,
    /// Woken when this worker reserves, counts or settles, so that its
    /// snapshot goes out at once and the others' view lags by a fetch, not a
    /// second.
    ledger_changed: tokio::sync::Notify,
    canceled_batches: RwLock<HashSet<String>>,
    /// This process's name in budget snapshots.
    instance: String,
    /// Keys, signatures and approvals, with `[access]` configured.
    access: Option<Access>,
    /// How long held work waits for a decision.
    approval_ttl: std::time::Duration,
    /// The audit writer, once the worker has connected.
    auditor: OnceLock<Auditor>,
    /// Longest text copied from a job into its result and usage events.
    max_echo: usize,
    /// What a deferred job must be able to wait (`[deferred]`).
    deferred: DeferredConfig,
    /// Whether admitted jobs may be deferred: set once something gathers the
    /// deferred topic into provider batches ([`Engine::enable_deferral`]).
    /// Until then every job runs live, and one that asked to wait says why.
    deferral: std::sync::atomic::AtomicBool,
    /// Reservations of jobs handed off to the deferred topic, by job id, kept
    /// until a gatherer's hold replaces them (or [`deferred::HANDOFF_KEPT`]
    /// passes), so jobs admitted meanwhile still count them.
    handoffs: Mutex<HashMap<String, (Reservation, std::time::Instant)>>,
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

/// A job admitted for dispatch, with what it reserved.
struct Work<'a> {
    admitted: Admitted,
    /// Who signed it and what released it, as admission found them (carried
    /// by a deferred job to its live run, if any).
    checked: Checked,
    reservation: Reserved<'a>,
    prompt_tokens: u32,
}

/// A budget reservation held for a job in flight: settled with the real cost,
/// or, when the job's task ends without settling (aborted, or a panic caught
/// above), released, so that no reservation outlives its job.
struct Reserved<'a> {
    ledger: &'a Mutex<BudgetLedger>,
    changed: &'a tokio::sync::Notify,
    reservation: Option<Reservation>,
}

impl Reserved<'_> {
    /// Replaces the reservation by what the job cost.
    fn settle(mut self, cost_usd: f64) {
        if let Some(r) = self.reservation.take() {
            self.ledger.lock().settle(r, cost_usd, Utc::now());
            self.changed.notify_one();
        }
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.reservation.take() {
            self.ledger.lock().settle(r, 0.0, Utc::now());
            self.changed.notify_one();
        }
    }
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
        let health = HealthTable::new(deployments.len(), routing.health);
        let metrics = Arc::new(Metrics::for_deployments(
            deployments.iter().map(|d| d.name.clone()),
        ));
        Ok(Self {
            analyzer: TaskAnalyzer::for_pipeline(pipeline),
            router: Router::new(catalog.clone(), infos, settings),
            org: pipeline.org.clone(),
            default_policy: EffectivePolicy::open(
                routing.default_strategy,
                routing.default_quality_floor,
            ),
            ledger: Mutex::new(BudgetLedger::new(&pipeline.org, Utc::now())),
            ledger_changed: tokio::sync::Notify::new(),
            dispatcher: Dispatcher::new(
                deployments,
                catalog.clone(),
                health,
                routing.retry.into(),
                metrics.clone(),
            ),
            catalog,
            baseline,
            canceled_batches: RwLock::new(HashSet::new()),
            handoffs: Mutex::new(HashMap::new()),
            instance: uuid::Uuid::now_v7().to_string(),
            access: pipeline
                .config
                .access
                .as_ref()
                .map(|a| Access::new(a, pipeline.keys.clone().unwrap_or_default())),
            approval_ttl: pipeline.config.approval_ttl(),
            auditor: OnceLock::new(),
            max_echo: pipeline.config.worker.max_echo_bytes,
            deferred: pipeline.config.deferred,
            deferral: std::sync::atomic::AtomicBool::new(false),
            metrics,
        })
    }

    /// The router (for `route --explain`).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The org tree whose budgets and quotas the engine enforces.
    pub fn org(&self) -> &OrgTree {
        &self.org
    }

    /// Health of every deployment.
    pub fn health(&self) -> &HealthTable {
        self.dispatcher.health()
    }

    /// Marks a batch canceled: its jobs not yet started end as `canceled`.
    pub fn cancel_batch(&self, batch_id: &str) {
        self.canceled_batches.write().insert(batch_id.to_owned());
    }

    /// Records spend seen on the usage topic (other workers, or before a restart).
    pub fn record_spend(&self, event: &UsageEvent) {
        self.ledger
            .lock()
            .record(&event.project_path(), event.cost_usd, event.ts);
    }

    /// Takes another worker's budget snapshot (its spend and reservations).
    pub fn observe_snapshot(&self, snapshot: BudgetSnapshot) {
        self.ledger.lock().observe(&self.instance, snapshot);
    }

    /// Resolves when this worker's figures have changed since the last call.
    pub async fn ledger_changed(&self) {
        self.ledger_changed.notified().await
    }

    /// This worker's budget and quota figures now, to publish.
    pub fn snapshots(&self) -> Vec<BudgetSnapshot> {
        self.ledger.lock().snapshots(&self.instance, Utc::now())
    }

    /// This process's name among the workers (unique per start).
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// What every worker admitted on a rationed node in the current minute and day.
    pub fn quota_use(&self, node: &str) -> QuotaUse {
        self.ledger.lock().quota_use(node, Utc::now())
    }

    /// A budgeted node's budget, spend, in flight and headroom now.
    pub fn node_budget(&self, node: &str) -> Option<NodeBudget> {
        self.ledger.lock().node_state(node, Utc::now())
    }

    /// A budgeted node's settled spend this month and what jobs in flight have
    /// reserved on it, USD.
    pub fn budget_use(&self, node: &str) -> (f64, f64) {
        let ledger = self.ledger.lock();
        (ledger.spent(node), ledger.reserved(node))
    }

    /// What the baseline model would charge for `usage`.
    pub fn baseline_cost(&self, usage: &TokenUsage) -> f64 {
        self.catalog.model(self.baseline).cost_usd(usage)
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Longest text copied from a job into its result and usage events.
    pub fn max_echo(&self) -> usize {
        self.max_echo
    }

    /// The deployments, with their clients and batch APIs.
    pub fn deployments(&self) -> &[Deployment] {
        self.dispatcher.deployments()
    }

    fn is_canceled(&self, job: &Job) -> bool {
        job.batch_id
            .as_ref()
            .is_some_and(|b| self.canceled_batches.read().contains(b))
    }

    /// Whether access control (keys, signed jobs, approvals) is configured.
    pub fn access_enabled(&self) -> bool {
        self.access.is_some()
    }

    /// Replaces the keys (when the keys file changed).
    pub fn set_keys(&self, keys: Keyring) {
        if let Some(a) = &self.access {
            a.set_keys(keys);
        }
    }

    /// Whether a message's own signature is refused (a replay at another
    /// offset, an expired or forged signature). A copy of a job id already
    /// running here is refused on its own then, rather than sharing the
    /// running copy's result: every refused message gets its own refusal.
    pub fn refuses_signature(&self, job: &Job, env: &Envelope<'_>) -> bool {
        env.signed.is_some()
            && env.checked.is_none()
            && self
                .access
                .as_ref()
                .is_some_and(|a| matches!(a.signer(env, job, Utc::now()), Signer::Refused(_)))
    }

    /// The keys, with access control configured.
    pub fn keys(&self) -> Option<Keyring> {
        self.access.as_ref().map(|a| a.keys().clone())
    }

    /// Processes one job to its outcome: admit, dispatch, settle.
    pub async fn process(&self, job: Job) -> Outcome {
        self.process_with(job, &Envelope::default()).await
    }

    /// Processes one job read from a message: its signature and any release
    /// decision it carries count in admission.
    pub async fn process_with(&self, job: Job, env: &Envelope<'_>) -> Outcome {
        let started = Instant::now();
        loop {
            match self.admit(&job, env) {
                Admit::Work(work) if work.admitted.mode == RunMode::Deferred => {
                    return self.defer(job, work);
                }
                Admit::Work(work) => {
                    let dispatched = self.dispatch(&job, &work).await;
                    return self.settle(job, work, dispatched, started);
                }
                Admit::Refused(refused) => return self.settle_refused(job, refused, started),
                Admit::Held(held) => return self.held(job, held, started),
                Admit::Wait {
                    until,
                    code,
                    reason,
                } => {
                    if job.deadline.is_some_and(|d| d < until) {
                        let why = format!("{reason}, after the job's deadline");
                        return self.refuse_unrouted(job, JobStatus::Rejected, code, &why);
                    }
                    let wait = (until - Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(wait + std::time::Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// The quality target of the job's policy (`None`: the pipeline's default).
    fn quality_target(&self, job: &Job) -> Option<f64> {
        self.org
            .policy(&job.project, job.workload.as_deref())
            .ok()
            .and_then(|p| p.quality_target)
    }

    /// Admission (see `switchyard_core::admission`), with the reservation it
    /// asks for applied under the same ledger lock.
    fn admit(&self, job: &Job, env: &Envelope<'_>) -> Admit<'_> {
        // Analysed first, so that even a refused job's result says what it was,
        // under its policy's quality target.
        let analysis = self
            .analyzer
            .analyze_for(job, self.quality_target(job), false);
        let health = |d| self.dispatcher.health().snapshot(d);
        let now = Utc::now();
        let keys = self.access.as_ref().map(Access::keys);
        let admission = Admission {
            router: &self.router,
            org: &self.org,
            default_policy: &self.default_policy,
            health: &health,
            now,
            keys: keys.as_deref(),
            deferred: self.deferral_enabled().then_some(&self.deferred),
        };
        let facts = match &env.checked {
            Some(checked) => JobFacts {
                canceled: self.is_canceled(job),
                signer: checked
                    .signer
                    .clone()
                    .map_or(Signer::Unsigned, Signer::Principal),
                released_by: checked.released_by.as_deref(),
            },
            None => JobFacts {
                canceled: self.is_canceled(job),
                signer: self
                    .access
                    .as_ref()
                    .map_or(Signer::Unsigned, |a| a.signer(env, job, now)),
                released_by: self.access.as_ref().and_then(|a| a.release(env, job, now)),
            },
        };
        let mut ledger = self.ledger.lock();
        let admit = match admission.admit(job, &analysis, &facts, &mut ledger) {
            Verdict::Admitted(admitted) => {
                let reservation = admitted
                    .reserve
                    .as_ref()
                    .map(|plan| ledger.reserve(&plan.nodes, plan.amount_usd));
                if let Some((nodes, tokens)) = &admitted.quota {
                    ledger.count(nodes, *tokens, now);
                }
                if reservation.is_some() || admitted.quota.is_some() {
                    self.ledger_changed.notify_one();
                }
                Admit::Work(Work {
                    admitted,
                    checked: Checked {
                        signer: facts.signer.principal().map(str::to_owned),
                        released_by: facts.released_by.cloned().map(Box::new),
                    },
                    reservation: Reserved {
                        ledger: &self.ledger,
                        changed: &self.ledger_changed,
                        reservation,
                    },
                    prompt_tokens: analysis.prompt_tokens,
                })
            }
            Verdict::Refused(refused) => Admit::Refused(refused),
            Verdict::Held {
                reason,
                kind,
                approval_id,
                worst_case_usd,
                batch_worst_case_usd,
            } => Admit::Held(Held {
                reason,
                kind,
                approval_id,
                worst_case_usd,
                batch_worst_case_usd,
                submitted_by: facts.signer.principal().map(str::to_owned),
            }),
            Verdict::Wait {
                until,
                code,
                reason,
            } => Admit::Wait {
                until,
                code,
                reason,
            },
        };
        drop(ledger);
        if let Some(a) = self.auditor.get() {
            self.audit_admission(a, job, facts.signer.principal(), &admit);
        }
        admit
    }

    /// Whether a job's node keeps prompts and outputs in the audit log.
    fn audit_content(&self, job: &Job) -> bool {
        self.org
            .policy(&job.project, job.workload.as_deref())
            .is_ok_and(|p| p.audit_content)
    }

    fn audit_admission(&self, a: &Auditor, job: &Job, principal: Option<&str>, admit: &Admit<'_>) {
        let what = match admit {
            Admit::Work(w) => audit::Admitted::Accepted {
                model: w
                    .admitted
                    .decision
                    .chain
                    .first()
                    .map_or("", |e| self.catalog.model(e.model).name.as_str()),
                worst_case_usd: w.admitted.decision.worst_case_usd(),
            },
            Admit::Refused(r) => audit::Admitted::Refused {
                status: r.status.as_str(),
                code: r.code,
                message: &r.message,
            },
            Admit::Held(h) => audit::Admitted::Held {
                approval_id: &h.approval_id,
                reason: &h.reason,
                worst_case_usd: h.worst_case_usd,
            },
            Admit::Wait { code, .. } => audit::Admitted::Waiting { code },
        };
        a.admission(job, principal, what, self.audit_content(job));
    }

    /// Writes audit records with `log`; `all` records every admission
    /// decision and final state (`[audit] enabled`), not only signature
    /// refusals and holds. Set once, when the worker connects.
    pub fn set_audit(&self, log: Arc<AuditLog>, all: bool) {
        let _ = self.auditor.set(Auditor { log, all });
    }

    /// The audit log, when one is written.
    pub fn audit_log(&self) -> Option<&Arc<AuditLog>> {
        self.auditor.get().map(|a| &a.log)
    }

    /// Calls providers along the admitted chain.
    async fn dispatch(&self, job: &Job, work: &Work<'_>) -> Dispatched {
        self.dispatcher
            .run(
                job,
                &work.admitted.decision,
                work.prompt_tokens,
                work.admitted.default_max_tokens,
            )
            .await
    }

    /// Replaces the reservation by what the attempts cost and builds the result
    /// and one usage event per billed attempt.
    fn settle(
        &self,
        job: Job,
        work: Work<'_>,
        dispatched: Dispatched,
        started: Instant,
    ) -> Outcome {
        let Dispatched {
            attempts,
            completion,
            error,
        } = dispatched;
        let cost: f64 = attempts.iter().map(|a| a.cost_usd).sum();
        work.reservation.settle(cost);
        let completed_at = Utc::now().trunc_subsecs(3);
        let routing = work.admitted.decision.summary(&self.catalog);
        let events: Vec<UsageEvent> = match job.project_path() {
            Some(path) => attempts
                .iter()
                .enumerate()
                .filter(|(_, a)| !a.usage.is_zero())
                .map(|(i, a)| {
                    let id = uuid::Uuid::now_v7().to_string();
                    let baseline = self.baseline_cost(&a.usage);
                    let mut e = UsageEvent::for_attempt(
                        id,
                        &job,
                        path,
                        i,
                        a,
                        &routing,
                        baseline,
                        completed_at,
                    );
                    e.cap_echoes(self.max_echo);
                    e
                })
                .collect(),
            None => Vec::new(),
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let content = self.auditor.get().is_some() && self.audit_content(&job);
        let result = JobResult::finished(
            job,
            routing,
            attempts,
            completion,
            error,
            latency_ms,
            completed_at,
        );
        self.finished(result, events, content)
    }

    /// A final result, capped, counted and audited, with its usage events.
    fn finished(&self, mut result: JobResult, usage: Vec<UsageEvent>, content: bool) -> Outcome {
        result.cap_echoes(self.max_echo);
        self.metrics
            .record(&result, self.baseline_cost(&result.usage));
        if let Some(a) = self.auditor.get() {
            a.finished(&result, content);
        }
        Outcome::Finished {
            result: Box::new(result),
            usage,
        }
    }

    /// The result of a job whose processing failed inside the worker (a panic
    /// caught by the runner): failed, with the reason, so that the job still
    /// ends in exactly one result. Its reservation was released by then.
    pub fn failed_internally(&self, job: Job, why: &str) -> Outcome {
        let message = format!("the worker failed while processing the job: {why}");
        self.refuse_unrouted(job, JobStatus::Failed, "internal_error", &message)
    }

    /// A result for a job that ends before routing, outside admission's own
    /// refusals: its decision as far as analysis and policy go, and why.
    fn refuse_unrouted(
        &self,
        job: Job,
        status: JobStatus,
        code: &'static str,
        message: &str,
    ) -> Outcome {
        Outcome::Finished {
            result: Box::new(self.unrouted_result(job, status, code, message)),
            usage: Vec::new(),
        }
    }

    /// The result of a job that ends (or waits) before routing: its decision as
    /// far as analysis and policy go, and why.
    pub(crate) fn unrouted_result(
        &self,
        job: Job,
        status: JobStatus,
        code: &'static str,
        message: &str,
    ) -> JobResult {
        let policy = self
            .org
            .policy(&job.project, job.workload.as_deref())
            .unwrap_or(&self.default_policy);
        let analysis = self
            .analyzer
            .analyze_for(&job, policy.quality_target, false);
        let input = switchyard_core::routing::RouteInput {
            job: &job,
            analysis: &analysis,
            policy,
            budget: switchyard_core::routing::BudgetState::UNCONSTRAINED,
            now: Utc::now(),
        };
        let routing = self
            .router
            .not_routed(&input, message)
            .summary(&self.catalog);
        let refused = Refused {
            status,
            code,
            message: message.to_owned(),
            routing,
        };
        self.refused_result(job, refused, Instant::now())
    }

    /// A held job: its non-final result (nothing called, nothing billed) and
    /// the request an approver decides on.
    fn held(&self, job: Job, held: Held, started: Instant) -> Outcome {
        let now = Utc::now();
        let request = ApprovalRequest {
            id: held.approval_id.clone(),
            job_id: job.job_id.clone(),
            node: job.project.clone(),
            submitted_by: held.submitted_by,
            kind: held.kind,
            reason: held.reason.clone(),
            worst_case_usd: held.worst_case_usd,
            batch_worst_case_usd: held.batch_worst_case_usd,
            created_at: now,
            expires_at: now + chrono::Duration::from_std(self.approval_ttl).unwrap_or_default(),
            held: None,
        };
        let mut result =
            self.unrouted_result(job, JobStatus::Held, "approval_required", &held.reason);
        result.approval_id = Some(held.approval_id);
        result.latency_ms = started.elapsed().as_millis() as u64;
        Outcome::Held {
            reason: held.reason,
            result: Box::new(result),
            request: Box::new(request),
        }
    }

    /// The result of a job admission refused: nothing was called or billed.
    fn settle_refused(&self, job: Job, refused: Refused, started: Instant) -> Outcome {
        Outcome::Finished {
            result: Box::new(self.refused_result(job, refused, started)),
            usage: Vec::new(),
        }
    }

    /// A refused (or held) job's result, counted in the metrics.
    fn refused_result(&self, job: Job, refused: Refused, started: Instant) -> JobResult {
        let error = ErrorInfo {
            code: refused.code.to_owned(),
            message: refused.message,
        };
        let latency_ms = started.elapsed().as_millis() as u64;
        let mut result = JobResult::refused(
            job,
            refused.status,
            error,
            refused.routing,
            latency_ms,
            now_ms(),
        );
        result.cap_echoes(self.max_echo);
        self.metrics.record(&result, 0.0);
        result
    }
}

/// A job admission held for approval.
struct Held {
    reason: String,
    kind: HoldKind,
    approval_id: String,
    worst_case_usd: f64,
    batch_worst_case_usd: Option<f64>,
    submitted_by: Option<String>,
}

/// What admission left the engine to do.
enum Admit<'a> {
    Work(Work<'a>),
    Refused(Refused),
    Held(Held),
    Wait {
        until: DateTime<Utc>,
        code: &'static str,
        reason: String,
    },
}

/// Now, at millisecond precision (what Avro timestamps carry).
pub fn now_ms() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}
