//! Admission: everything decided about a decoded job before any provider is
//! called, as one pure function over the job, its analysis, the org policy, the
//! router, live health (as values) and the budget ledger. The order is fixed:
//!
//! 0. **signature**: a signed job's key, time, signature, scope and replay were
//!    checked by the worker ([`Signer`]); a refused signature ends the job
//!    `rejected` with an `auth_…` code;
//! 1. **cancel**: a job of a canceled batch ends `canceled`;
//! 2. **policy**: the project must be in the org tree; its (workload's) policy
//!    applies, and a node that requires signed jobs refuses an unsigned one;
//! 3. **quota**: every rationed node of the path must have room for one more
//!    job and its tokens this minute and day: else reject, or wait for the
//!    period to roll over (`on_quota_exhausted`);
//! 4. **budget**: every budgeted node of the path by its thresholds: reject,
//!    hold, or route within the headroom (downgrade);
//! 5. **route**: the strategy's chain within the policy;
//! 6. **fit**: the routed job's worst case (`routing::worst_case_usd`: its
//!    answer cap on the dearest model of its chain, times the attempts that can
//!    bill) against what every budget has left; where a node downgrades, the job
//!    is routed again to a chain whose worst case fits;
//! 7. **approval**: a job whose worst case, or whose batch's worst case
//!    ([`Job::batch_worst_case_usd`], stamped by `switchyard submit`), is above
//!    the node's `approval_required_above_usd`, or routed to one of its
//!    `approval_required_models`, or stopped by a `hold` budget, is held until
//!    an approver's signed decision releases it ([`JobFacts::released_by`],
//!    checked by [`Decision::check`]); released work passes, and a release of
//!    budget-held work overrides the cap;
//! 8. **live or deferred** ([`Admission::live_or_deferred`]): a job that may
//!    wait (its `mode`, else its policy's `default_mode`: `deferred` or `auto`)
//!    is routed again among the models with a batch API and price, and goes
//!    deferred when its deadline (or `deferred_max_delay`) leaves room for the
//!    gathering, the provider's completion window and the margin, and, in
//!    `auto`, when the batch price is lower than live; a batch route that
//!    would need an approval the live one did not stays live; the decision's
//!    reason says which and why;
//! 9. **reserve**: the amount to reserve on the budgeted nodes and the job to
//!    count on the rationed ones, which the caller applies under the same ledger
//!    lock, so that jobs deciding at once cannot all pass on the same headroom.
//!
//! The worker's `Engine` calls [`Admission::admit`] and then dispatches, hands
//! off (deferred) or settles what it returns.

use chrono::{DateTime, Utc};

use crate::access::Keyring;
use crate::access::approval::{Decision, HoldKind, approval_id};
use crate::access::sign::AuthError;
use crate::analysis::TaskAnalysis;
use crate::budget::{BudgetLedger, BudgetStop};
use crate::catalog::Catalog;
use crate::config::DeferredConfig;
use crate::health::HealthSnapshot;
use crate::job::Job;
use crate::org::{EffectivePolicy, OrgTree, QuotaAction};
use crate::result::RoutingSummary;
use crate::routing::{BudgetState, Refusal, RouteError, RouteInput, Router, RoutingDecision};
use crate::vocab::{DeploymentId, JobMode, JobStatus, RunMode};

/// How long a job waits, at a time, for this worker's admissions to reach the
/// others when it has admitted its share of what is left (about a follow lag).
const SHARE_WAIT_MS: i64 = 50;

/// What admission reads besides the job and the ledger.
pub struct Admission<'a> {
    /// The router (catalog and deployment table).
    pub router: &'a Router,
    /// The org tree with every project's policy.
    pub org: &'a OrgTree,
    /// What a job outside the org tree (or canceled before its policy was read)
    /// is described with: the config's default strategy and floor.
    pub default_policy: &'a EffectivePolicy,
    /// Live health of a deployment, as a value.
    pub health: &'a dyn Fn(DeploymentId) -> HealthSnapshot,
    /// The time of the decision.
    pub now: DateTime<Utc>,
    /// The keys, when access control is configured (approval decisions are
    /// checked against them).
    pub keys: Option<&'a Keyring>,
    /// The `[deferred]` settings (how long a deferred job must be able to
    /// wait), when the worker runs deferred routing; `None`: every job runs
    /// live, and a job that asked to wait says why not.
    pub deferred: Option<&'a DeferredConfig>,
}

/// Who signed a job.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Signer {
    /// Not signed.
    #[default]
    Unsigned,
    /// Signed, and the signature checked out: by this principal.
    Principal(String),
    /// Signed, and the signature is refused.
    Refused(AuthError),
}

impl Signer {
    /// The principal, when the job is validly signed.
    pub fn principal(&self) -> Option<&str> {
        match self {
            Signer::Principal(p) => Some(p),
            _ => None,
        }
    }
}

/// What the worker knows about a job besides its content.
#[derive(Debug, Clone, Default)]
pub struct JobFacts<'a> {
    /// Its batch was canceled.
    pub canceled: bool,
    /// Who signed it.
    pub signer: Signer,
    /// The approver's decision that released it from a hold, when it carries one.
    pub released_by: Option<&'a Decision>,
}

/// What admission decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Route the job along the decision's chain, with this reservation.
    Admitted(Admitted),
    /// The job ends here with a result that says why.
    Refused(Refused),
    /// Held until an approver releases it.
    Held {
        /// Why, for the held record and result.
        reason: String,
        /// Which rule holds it.
        kind: HoldKind,
        /// The approval id (the batch's, or the job's own).
        approval_id: String,
        /// The job's worst case, USD (0 when held before routing).
        worst_case_usd: f64,
        /// The whole batch's worst case, USD, when the threshold holds the
        /// job's batch (the figure its approval is about).
        batch_worst_case_usd: Option<f64>,
    },
    /// A quota is used up and the node's policy is to wait, or this worker
    /// has admitted its share of what is left until the other workers see it:
    /// admit the job again at `until` (or refuse it with `code` if its deadline
    /// comes first).
    Wait {
        /// When the quota's period rolls over.
        until: DateTime<Utc>,
        /// The `quota_…` code if the job cannot wait that long.
        code: &'static str,
        /// Why.
        reason: String,
    },
}

/// Admitted work.
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// The routing decision: chain, reason, analysis summary.
    pub decision: RoutingDecision,
    /// What to reserve before calling, when the path has budgets.
    pub reserve: Option<ReservationPlan>,
    /// The answer cap for calls of a job that gives none (the policy's
    /// `default_max_tokens`; each call caps it by its model's output limit).
    pub default_max_tokens: u32,
    /// Rationed nodes on which the job counts, and its tokens there.
    pub quota: Option<(Vec<String>, u64)>,
    /// How the job runs: live now, or deferred to a provider's batch API
    /// (the decision's chain then holds only models with one).
    pub mode: RunMode,
    /// When a deferred job's answer is due: its deadline, or now plus its
    /// policy's `deferred_max_delay`.
    pub due: Option<DateTime<Utc>>,
}

/// An amount to reserve on budgeted nodes (see [`BudgetLedger::reserve`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ReservationPlan {
    /// Budgeted nodes of the job's path, top first.
    pub nodes: Vec<String>,
    /// The amount, USD.
    pub amount_usd: f64,
}

/// A job refused before any provider was called.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// `rejected` or `canceled`.
    pub status: JobStatus,
    /// Stable error code.
    pub code: &'static str,
    /// What a person reads.
    pub message: String,
    /// The decision as far as it went.
    pub routing: RoutingSummary,
}

impl Admission<'_> {
    /// Decides what becomes of `job` (already analysed), in the order of this
    /// module's documentation.
    pub fn admit(
        &self,
        job: &Job,
        analysis: &TaskAnalysis,
        facts: &JobFacts<'_>,
        ledger: &mut BudgetLedger,
    ) -> Verdict {
        if let Signer::Refused(e) = &facts.signer {
            let message = e.to_string();
            let routing = self.unrouted(job, analysis, self.default_policy, &message);
            return self.refuse(JobStatus::Rejected, e.code(), message, routing);
        }
        if facts.canceled {
            let why = "the job's batch was canceled before the job started";
            return self.refuse(
                JobStatus::Canceled,
                "batch_canceled",
                why.into(),
                self.unrouted(job, analysis, self.default_policy, why),
            );
        }
        let policy = match self.org.policy(&job.project, job.workload.as_deref()) {
            Ok(p) => p,
            Err(e) => {
                let message = e.to_string();
                let routing = self.unrouted(job, analysis, self.default_policy, &message);
                return self.refuse(JobStatus::Rejected, "unknown_project", message, routing);
            }
        };
        if policy.require_signed && facts.signer == Signer::Unsigned {
            let e = AuthError::Unsigned;
            let message = e.to_string();
            let routing = self.unrouted(job, analysis, policy, &message);
            return self.refuse(JobStatus::Rejected, e.code(), message, routing);
        }
        let quota = match self.quota(job, analysis, policy, ledger) {
            Ok(q) => q,
            Err(verdict) => return verdict,
        };
        let nodes = &policy.budget_nodes;
        let budget = match ledger.verdict(nodes, None, self.now) {
            Ok(state) => state,
            Err(stop) if self.overridden(&stop, job, facts) => BudgetState::UNCONSTRAINED,
            Err(stop) => return self.stopped(stop, job, analysis, policy, 0.0),
        };
        let decision = match self.route(job, analysis, policy, budget) {
            Ok(d) => d,
            Err(refusal) => {
                let (code, message) = match (budget, &refusal.error) {
                    // Downgrading, and not even the cheapest model above the floor fits.
                    (BudgetState::NearLimit { .. }, RouteError::NoFeasibleModel { .. }) => {
                        ("budget_exhausted", nothing_fits_near_limit(&refusal))
                    }
                    _ => (refusal.code(), refusal.to_string()),
                };
                let routing = refusal.decision.summary(self.catalog());
                return self.refuse(JobStatus::Rejected, code, message, routing);
            }
        };
        let admitted = if nodes.is_empty() {
            Admitted {
                decision,
                reserve: None,
                default_max_tokens: policy.default_max_tokens,
                quota,
                mode: RunMode::Live,
                due: None,
            }
        } else {
            match self.fit_and_reserve(job, analysis, policy, budget, decision, facts, ledger) {
                Verdict::Admitted(a) => Admitted { quota, ..a },
                other => return other,
            }
        };
        let admitted = match self.approval(job, policy, facts, admitted) {
            Verdict::Admitted(a) => a,
            other => return other,
        };
        let stage = Stage {
            job,
            analysis,
            policy,
            budget,
            facts,
        };
        Verdict::Admitted(self.live_or_deferred(&stage, admitted, ledger))
    }

    /// Why `admitted` needs an approver under `policy`, if it does: its worst
    /// case above the node's threshold, or its first model one that needs one.
    fn hold_reason(
        &self,
        job: &Job,
        policy: &EffectivePolicy,
        admitted: &Admitted,
    ) -> Option<(HoldKind, String, Option<f64>)> {
        let worst = admitted
            .decision
            .worst_case_in(self.catalog(), admitted.mode);
        let model = admitted
            .decision
            .chain
            .first()
            .map(|e| self.catalog().model(e.model).name.as_str());
        if let Some((reason, batch)) = policy
            .approval_required_above_usd
            .and_then(|limit| above_threshold(job, worst, limit))
        {
            return Some((HoldKind::Threshold, reason, batch));
        }
        model
            .filter(|m| policy.approval_required_models.iter().any(|a| a == m))
            .map(|m| {
                (
                    HoldKind::Model,
                    format!("jobs routed to `{m}` need an approver"),
                    None,
                )
            })
    }

    /// Step 7: work above the node's approval threshold (the job's own worst
    /// case, or its batch's, so that a batch of jobs each under the threshold
    /// is held as a whole when together they are above it) or on one of its
    /// approval-only models waits for an approver, unless it carries a
    /// decision that releases it.
    fn approval(
        &self,
        job: &Job,
        policy: &EffectivePolicy,
        facts: &JobFacts<'_>,
        admitted: Admitted,
    ) -> Verdict {
        let Some((kind, reason, batch_worst_case_usd)) = self.hold_reason(job, policy, &admitted)
        else {
            return Verdict::Admitted(admitted);
        };
        if self.released(job, facts, kind) {
            return Verdict::Admitted(admitted);
        }
        Verdict::Held {
            reason: format!("{reason}; held for approval"),
            kind,
            approval_id: approval_id(job),
            worst_case_usd: admitted.decision.worst_case_usd(),
            batch_worst_case_usd,
        }
    }

    /// Step 8: live, or deferred to a provider's batch API. The job's mode
    /// (else its policy's) says whether it may wait; `deferred` waits whenever
    /// it can, `auto` only for a lower price. It can when its deadline (or
    /// `deferred_max_delay`) leaves room for `[deferred]` gathering, window
    /// and margin, and when routing among the models with a batch API and
    /// price finds one; a deferred route whose worst case exceeds the fitted
    /// reservation must fit the budgets too, and one that would need an
    /// approval the job does not carry stays live. The reason says what was
    /// chosen and why.
    pub fn live_or_deferred(
        &self,
        stage: &Stage<'_>,
        admitted: Admitted,
        ledger: &mut BudgetLedger,
    ) -> Admitted {
        let asked = stage.job.mode.unwrap_or(stage.policy.default_mode);
        if asked == JobMode::Live {
            return admitted;
        }
        let live = |mut admitted: Admitted, why: String| {
            admitted.decision.reason =
                format!("{}; live ({asked}): {why}", admitted.decision.reason);
            admitted
        };
        let Some(deferred) = self.deferred else {
            return live(
                admitted,
                "this worker does not run deferred routing (no consumer of the deferred topic)"
                    .into(),
            );
        };
        let needed = deferred.needed_delay();
        // Without a deadline, a job is due after the policy's
        // `deferred_max_delay`; one that asked to be deferred outright
        // waits at least as long as a provider batch may take.
        let delay = match asked {
            JobMode::Deferred => stage.policy.deferred_max_delay.max(needed),
            _ => stage.policy.deferred_max_delay,
        };
        let due = stage.job.deadline.unwrap_or_else(|| {
            self.now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)
        });
        let room = (due - self.now).to_std().unwrap_or_default();
        if room < needed {
            return live(
                admitted,
                format!(
                    "its answer is due in {} and a provider batch needs {} (gathering, window, margin)",
                    whole_seconds(room),
                    whole_seconds(needed)
                ),
            );
        }
        let Some(batch) = self.batch_route(stage) else {
            return live(
                admitted,
                "no model it may use has a batch API with a batch price".into(),
            );
        };
        let catalog = self.catalog();
        let (Some(first), Some(batch_first)) =
            (admitted.decision.chain.first(), batch.chain.first())
        else {
            return admitted;
        };
        let (live_model, live_usd) = (&catalog.model(first.model).name, first.estimated_cost_usd);
        let analysis = stage.analysis;
        let spec = catalog.model(batch_first.model);
        let batch_usd = spec.estimate_in(
            RunMode::Deferred,
            analysis.prompt_tokens,
            analysis.expected_output_tokens,
        );
        if asked == JobMode::Auto && batch_usd >= live_usd {
            let why = format!(
                "the batch price on {} (${batch_usd:.6}) is no lower than live on {live_model} (${live_usd:.6})",
                spec.name
            );
            return live(admitted, why);
        }
        let worst = batch.worst_case_in(catalog, RunMode::Deferred);
        if let Some(plan) = &admitted.reserve
            && worst > plan.amount_usd
            && ledger.fits(&plan.nodes, worst, self.now).is_err()
        {
            return live(
                admitted,
                format!("its batch route's worst case ${worst:.6} does not fit its budgets"),
            );
        }
        let mut decision = batch;
        decision.reason = format!(
            "{}; deferred ({asked}): due in {}, room for {} of gathering, window and margin; batch ${batch_usd:.6} on {} vs live ${live_usd:.6} on {live_model}",
            decision.reason,
            whole_seconds(room),
            whole_seconds(needed),
            spec.name,
        );
        let deferred = Admitted {
            decision,
            mode: RunMode::Deferred,
            due: Some(due),
            reserve: admitted.reserve.clone().map(|p| ReservationPlan {
                amount_usd: worst,
                ..p
            }),
            ..admitted.clone()
        };
        if let Some((kind, why, _)) = self.hold_reason(stage.job, stage.policy, &deferred)
            && !self.released(stage.job, stage.facts, kind)
        {
            return live(
                admitted,
                format!("its batch route would need an approver ({why})"),
            );
        }
        deferred
    }

    /// The route among the models deferred routing can use (a batch API and
    /// price), within the job's own pin and allow-list and its policy.
    fn batch_route(&self, stage: &Stage<'_>) -> Option<RoutingDecision> {
        let input = RouteInput {
            job: stage.job,
            analysis: stage.analysis,
            policy: stage.policy,
            budget: stage.budget,
            now: self.now,
        };
        self.router.route_deferred(&input, self.health)
    }

    /// Whether the job carries a decision that releases it from a `kind` hold.
    fn released(&self, job: &Job, facts: &JobFacts<'_>, kind: HoldKind) -> bool {
        let (Some(d), Some(keys)) = (facts.released_by, self.keys) else {
            return false;
        };
        d.approve
            && d.id == approval_id(job)
            && d.node == job.project
            && d.check(keys, facts.signer.principal(), kind).is_ok()
    }

    /// Whether a budget hold is overridden by the decision the job carries.
    fn overridden(&self, stop: &BudgetStop, job: &Job, facts: &JobFacts<'_>) -> bool {
        matches!(stop, BudgetStop::Hold { .. }) && self.released(job, facts, HoldKind::Budget)
    }

    /// Step 3: room on every quota of the path for this job (its prompt and
    /// answer cap in tokens), or the node's policy (reject, wait).
    #[allow(clippy::result_large_err)]
    fn quota(
        &self,
        job: &Job,
        analysis: &TaskAnalysis,
        policy: &EffectivePolicy,
        ledger: &BudgetLedger,
    ) -> Result<Option<(Vec<String>, u64)>, Verdict> {
        if policy.quota_nodes.is_empty() {
            return Ok(None);
        }
        let cap = job.request.max_tokens.unwrap_or(policy.default_max_tokens);
        let tokens = u64::from(analysis.prompt_tokens_ceiling) + u64::from(cap);
        match ledger.quota_verdict(&policy.quota_nodes, tokens, self.now) {
            Ok(()) => match ledger.quota_share_exceeded(&policy.quota_nodes, tokens, self.now) {
                Some(reason) => Err(self.share_wait("quota_contended", reason)),
                None => Ok(Some((policy.quota_nodes.clone(), tokens))),
            },
            Err(stop) => Err(match stop.action {
                QuotaAction::Wait => Verdict::Wait {
                    until: stop.until,
                    code: stop.code(),
                    reason: stop.reason,
                },
                QuotaAction::Reject => {
                    let routing = self.unrouted(job, analysis, policy, &stop.reason);
                    self.refuse(JobStatus::Rejected, stop.code(), stop.reason, routing)
                }
            }),
        }
    }

    /// Steps 5 and 6: the routed job's estimate must fit what every budget has
    /// left, or the node's policy decides (downgrade: route again within the
    /// headroom; reject; hold); what fits is reserved.
    #[allow(clippy::too_many_arguments)]
    fn fit_and_reserve(
        &self,
        job: &Job,
        analysis: &TaskAnalysis,
        policy: &EffectivePolicy,
        budget: BudgetState,
        mut decision: RoutingDecision,
        facts: &JobFacts<'_>,
        ledger: &mut BudgetLedger,
    ) -> Verdict {
        let nodes = &policy.budget_nodes;
        let worst = Some(decision.worst_case_usd());
        match ledger.verdict(nodes, worst, self.now) {
            Ok(state @ BudgetState::NearLimit { .. })
                if matches!(budget, BudgetState::Normal { .. }) =>
            {
                decision = match self.route(job, analysis, policy, state) {
                    Ok(d) => d,
                    Err(refusal) => {
                        let message = nothing_fits_near_limit(&refusal);
                        let routing = refusal.decision.summary(self.catalog());
                        return self.refuse(
                            JobStatus::Rejected,
                            "budget_exhausted",
                            message,
                            routing,
                        );
                    }
                };
            }
            Ok(_) => {}
            Err(stop) if self.overridden(&stop, job, facts) => {}
            Err(stop) => {
                return self.stopped(stop, job, analysis, policy, decision.worst_case_usd());
            }
        }
        let worst = decision.worst_case_usd();
        let fits = match ledger.fits(nodes, worst, self.now) {
            Err(stop) if self.overridden(&stop, job, facts) => Ok(()),
            other => other,
        };
        match fits {
            Ok(()) if !self.released(job, facts, HoldKind::Budget) => {
                if let Some(reason) = ledger.budget_share_exceeded(nodes, worst, self.now) {
                    return self.share_wait("budget_contended", reason);
                }
                self.admitted(decision, policy, worst)
            }
            Ok(()) => self.admitted(decision, policy, worst),
            Err(stop) => self.stopped(stop, job, analysis, policy, worst),
        }
    }

    /// Admitted work reserving `worst` on the policy's budgeted nodes.
    fn admitted(&self, decision: RoutingDecision, policy: &EffectivePolicy, worst: f64) -> Verdict {
        let nodes = &policy.budget_nodes;
        Verdict::Admitted(Admitted {
            decision,
            reserve: Some(ReservationPlan {
                nodes: nodes.clone(),
                amount_usd: worst,
            }),
            default_max_tokens: policy.default_max_tokens,
            quota: None,
            mode: RunMode::Live,
            due: None,
        })
    }

    /// Wait a moment: this worker's unseen admissions have reached its share
    /// of what is left (see `budget::share`).
    fn share_wait(&self, code: &'static str, reason: String) -> Verdict {
        Verdict::Wait {
            until: self.now + chrono::Duration::milliseconds(SHARE_WAIT_MS),
            code,
            reason,
        }
    }

    fn catalog(&self) -> &Catalog {
        self.router.catalog()
    }

    fn route(
        &self,
        job: &Job,
        analysis: &TaskAnalysis,
        policy: &EffectivePolicy,
        budget: BudgetState,
    ) -> Result<RoutingDecision, Box<Refusal>> {
        let input = RouteInput {
            job,
            analysis,
            policy,
            budget,
            now: self.now,
        };
        self.router.route(&input, self.health, false)
    }

    /// The decision of a job refused before routing: what it was, and why not.
    fn unrouted(
        &self,
        job: &Job,
        analysis: &TaskAnalysis,
        policy: &EffectivePolicy,
        why: &str,
    ) -> RoutingSummary {
        let input = RouteInput {
            job,
            analysis,
            policy,
            budget: BudgetState::UNCONSTRAINED,
            now: self.now,
        };
        self.router.not_routed(&input, why).summary(self.catalog())
    }

    /// A budget policy that holds or rejects the job.
    fn stopped(
        &self,
        stop: BudgetStop,
        job: &Job,
        analysis: &TaskAnalysis,
        policy: &EffectivePolicy,
        worst_case_usd: f64,
    ) -> Verdict {
        let routing = self.unrouted(job, analysis, policy, stop.reason());
        match stop {
            BudgetStop::Hold { reason, .. } => Verdict::Held {
                reason: format!("{reason}; held for approval"),
                kind: HoldKind::Budget,
                approval_id: approval_id(job),
                worst_case_usd,
                batch_worst_case_usd: None,
            },
            BudgetStop::Reject { reason, .. } => {
                self.refuse(JobStatus::Rejected, "budget_exhausted", reason, routing)
            }
        }
    }

    fn refuse(
        &self,
        status: JobStatus,
        code: &'static str,
        message: String,
        routing: RoutingSummary,
    ) -> Verdict {
        Verdict::Refused(Refused {
            status,
            code,
            message,
            routing,
        })
    }
}

/// Why the approval threshold `limit` holds a job whose own worst case is
/// `worst`, and its batch's worst case when that is what passes it; `None`
/// when neither does. A batch stamp that cannot be read holds the job: a
/// batch must not pass the threshold on a figure nobody can check.
fn above_threshold(job: &Job, worst: f64, limit: f64) -> Option<(String, Option<f64>)> {
    if worst > limit {
        let reason = format!(
            "the job's worst case ${worst:.4} is above the ${limit:.2} that needs an approver"
        );
        return Some((reason, None));
    }
    match job.batch_worst_case_usd()? {
        Ok(batch) if batch > limit => Some((
            format!(
                "its batch's worst case ${batch:.4} (this job's: ${worst:.4}) is above the ${limit:.2} that needs an approver"
            ),
            Some(batch),
        )),
        Ok(_) => None,
        Err(text) => Some((
            format!(
                "its batch's worst case `{text}` is not a number of USD, so the ${limit:.2} that needs an approver cannot be checked"
            ),
            None,
        )),
    }
}

/// A job at a stage of admission, with what earlier stages found.
pub struct Stage<'a> {
    /// The job.
    pub job: &'a Job,
    /// Its analysis.
    pub analysis: &'a TaskAnalysis,
    /// Its policy.
    pub policy: &'a EffectivePolicy,
    /// Its budget situation.
    pub budget: BudgetState,
    /// What the worker knows about it (an approval it carries).
    pub facts: &'a JobFacts<'a>,
}

/// A duration as whole seconds, for reasons people read (`25h 10m`).
fn whole_seconds(d: std::time::Duration) -> String {
    humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
}

/// Why a job is refused when its budget is near the limit and not even the
/// cheapest model above the quality floor fits what is left.
fn nothing_fits_near_limit(refusal: &Refusal) -> String {
    format!("budget near its limit and no model above the quality floor fits: {refusal}")
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::access::{Grant, Role, new_key};
    use crate::catalog::tests::model;
    use crate::job::{ChatRequest, META_BATCH_WORST_CASE_USD};
    use crate::routing::{DeploymentInfo, RouterSettings, Strategy};

    const GATED: &str = "acme/bu/t/gated";
    const LIMIT: f64 = 0.01;

    struct World {
        router: Router,
        org: OrgTree,
        open: EffectivePolicy,
        now: DateTime<Utc>,
    }

    /// One model at $1 / $5 per million tokens; `acme/bu/t/gated` holds work
    /// whose worst case passes a cent.
    fn world() -> World {
        let catalog = Catalog::from_models(vec![model("m", "openai", (1.0, 5.0), 0.8)]).unwrap();
        let org = format!(
            "[org]\nname = \"acme\"\n[[node]]\npath = \"acme/bu\"\n[[node]]\npath = \"acme/bu/t\"\n[[node]]\npath = \"{GATED}\"\napproval_required_above_usd = {LIMIT}\n"
        );
        let org =
            OrgTree::parse(Path::new("org.toml"), &org, &catalog, Strategy::Auto, 0.0).unwrap();
        let deployment = DeploymentInfo {
            name: "m-dep".into(),
            model: 0,
            provider: "openai".into(),
        };
        World {
            router: Router::new(
                Arc::new(catalog),
                vec![deployment],
                RouterSettings::default(),
            ),
            org,
            open: EffectivePolicy::open(Strategy::Auto, 0.0),
            now: Utc::now(),
        }
    }

    /// Line `n` of batch `batch_1`, with an answer cap of 1,000 tokens (half a cent on `m`).
    fn batch_job(n: usize) -> Job {
        Job {
            batch_id: Some("batch_1".into()),
            ..Job::new(
                format!("batch_1-{n}"),
                GATED,
                ChatRequest {
                    max_tokens: Some(1_000),
                    ..ChatRequest::from_user(format!("Summarise ticket {n} in one line."))
                },
            )
        }
    }

    impl World {
        fn admit(&self, job: &Job, facts: &JobFacts<'_>) -> Verdict {
            let analysis =
                crate::analysis::tests::analyzer_for(self.router.catalog()).analyze(job, false);
            let admission = Admission {
                router: &self.router,
                org: &self.org,
                default_policy: &self.open,
                health: &|_| HealthSnapshot::fresh(),
                now: self.now,
                keys: None,
                deferred: None,
            };
            let mut ledger = BudgetLedger::new(&self.org, self.now);
            admission.admit(job, &analysis, facts, &mut ledger)
        }

        /// The job's own worst case, as admission prices it.
        fn worst(&self, job: &Job) -> f64 {
            let analysis =
                crate::analysis::tests::analyzer_for(self.router.catalog()).analyze(job, false);
            crate::routing::worst_case_usd(
                self.router.catalog().model(0),
                job,
                &analysis,
                self.open.default_max_tokens,
                RouterSettings::default().max_chain,
            )
        }
    }

    #[test]
    fn a_batch_under_the_threshold_job_by_job_but_above_it_in_all_is_held_as_a_whole() {
        let w = world();
        let jobs: Vec<Job> = (0..4).map(batch_job).collect();
        let each: Vec<f64> = jobs.iter().map(|j| w.worst(j)).collect();
        let total: f64 = each.iter().sum();
        assert!(each.iter().all(|&x| x < LIMIT) && total > LIMIT, "{each:?}");
        // Without the batch's figure, each job passes on its own.
        for j in &jobs {
            assert!(matches!(
                w.admit(j, &JobFacts::default()),
                Verdict::Admitted(_)
            ));
        }
        // Stamped with the batch's worst case, every job is held under the
        // batch's one approval id, with both figures.
        for (j, own) in jobs.iter().zip(&each) {
            let mut j = j.clone();
            j.stamp_batch_worst_case(total);
            match w.admit(&j, &JobFacts::default()) {
                Verdict::Held {
                    kind,
                    approval_id,
                    worst_case_usd,
                    batch_worst_case_usd,
                    reason,
                } => {
                    assert_eq!(kind, HoldKind::Threshold);
                    assert_eq!(approval_id, "appr-batch_1");
                    assert!((worst_case_usd - own).abs() < 1e-12);
                    assert_eq!(batch_worst_case_usd, Some(total));
                    assert!(reason.contains("batch's worst case"), "{reason}");
                }
                other => panic!("{} not held: {other:?}", j.job_id),
            }
        }
        // A batch whose total is not above the threshold passes.
        let mut small = jobs[0].clone();
        small.stamp_batch_worst_case(LIMIT);
        assert!(matches!(
            w.admit(&small, &JobFacts::default()),
            Verdict::Admitted(_)
        ));
        // The figure counts only on a job of a batch.
        let mut single = jobs[0].clone();
        single.stamp_batch_worst_case(total);
        single.batch_id = None;
        assert!(matches!(
            w.admit(&single, &JobFacts::default()),
            Verdict::Admitted(_)
        ));
        // A figure that cannot be read holds the job rather than let it pass.
        let mut garbled = jobs[0].clone();
        garbled
            .metadata
            .insert(META_BATCH_WORST_CASE_USD.into(), "a little".into());
        assert!(matches!(
            w.admit(&garbled, &JobFacts::default()),
            Verdict::Held {
                kind: HoldKind::Threshold,
                batch_worst_case_usd: None,
                ..
            }
        ));
    }

    #[test]
    fn an_approval_of_the_batch_releases_each_of_its_jobs() {
        let w = world();
        let (record, bob) = new_key(
            [7; 32],
            "bob",
            vec![Grant {
                role: Role::Approver,
                scope: "acme".into(),
            }],
            w.now - chrono::Duration::hours(1),
        );
        let mut keys = Keyring::default();
        keys.add(record);
        let decision =
            Decision::signed(&bob, "bob", "appr-batch_1", GATED, true, "ok", false, w.now);
        let other = Decision::signed(&bob, "bob", "appr-batch_2", GATED, true, "ok", false, w.now);
        let admission_with = |job: &Job, d: &Decision| {
            let analysis =
                crate::analysis::tests::analyzer_for(w.router.catalog()).analyze(job, false);
            let admission = Admission {
                router: &w.router,
                org: &w.org,
                default_policy: &w.open,
                health: &|_| HealthSnapshot::fresh(),
                now: w.now,
                keys: Some(&keys),
                deferred: None,
            };
            let facts = JobFacts {
                released_by: Some(d),
                ..JobFacts::default()
            };
            admission.admit(
                job,
                &analysis,
                &facts,
                &mut BudgetLedger::new(&w.org, w.now),
            )
        };
        for n in 0..4 {
            let mut j = batch_job(n);
            j.stamp_batch_worst_case(1.0);
            assert!(
                matches!(admission_with(&j, &decision), Verdict::Admitted(_)),
                "job {n} of the approved batch"
            );
            assert!(
                matches!(admission_with(&j, &other), Verdict::Held { .. }),
                "released by another batch's approval"
            );
        }
    }
}
