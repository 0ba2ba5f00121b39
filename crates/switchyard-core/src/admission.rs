//! Admission: everything decided about a decoded job before any provider is
//! called, as one pure function over the job, its analysis, the org policy, the
//! router, live health (as values) and the budget ledger. The order is fixed:
//!
//! 1. **cancel**: a job of a canceled batch ends `canceled`;
//! 2. **policy**: the project must be in the org tree; its (workload's) policy applies;
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
//! 7. **reserve**: the amount to reserve on the budgeted nodes and the job to
//!    count on the rationed ones, which the caller applies under the same ledger
//!    lock, so that jobs deciding at once cannot all pass on the same headroom.
//!
//! Later stages join at their place in this order: signature and scope before
//! cancel, approval between quota and budget, the live-or-deferred choice
//! between fit and reserve. The worker's `Engine` calls [`Admission::admit`]
//! and then dispatches or settles what it returns.

use chrono::{DateTime, Utc};

use crate::analysis::TaskAnalysis;
use crate::budget::{BudgetLedger, BudgetStop};
use crate::catalog::Catalog;
use crate::health::HealthSnapshot;
use crate::job::Job;
use crate::org::{EffectivePolicy, OrgTree, QuotaAction};
use crate::result::RoutingSummary;
use crate::routing::{BudgetState, Refusal, RouteError, RouteInput, Router, RoutingDecision};
use crate::vocab::{DeploymentId, JobStatus};

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
}

/// What admission decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Route the job along the decision's chain, with this reservation.
    Admitted(Admitted),
    /// The job ends here with a result that says why.
    Refused(Refused),
    /// A node's policy parks the job for approval.
    Held {
        /// Why, for the held record.
        reason: String,
    },
    /// A quota is used up and the node's policy is to wait: admit the job
    /// again at `until` (or refuse it with `code` once its deadline passes).
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
    /// module's documentation. `canceled` says whether its batch is canceled.
    pub fn admit(
        &self,
        job: &Job,
        analysis: &TaskAnalysis,
        canceled: bool,
        ledger: &mut BudgetLedger,
    ) -> Verdict {
        if canceled {
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
        let quota = match self.quota(job, analysis, policy, ledger) {
            Ok(q) => q,
            Err(verdict) => return verdict,
        };
        let nodes = &policy.budget_nodes;
        let budget = match ledger.verdict(nodes, None, self.now) {
            Ok(state) => state,
            Err(stop) => return self.stopped(stop, job, analysis, policy),
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
        if nodes.is_empty() {
            return Verdict::Admitted(Admitted {
                decision,
                reserve: None,
                default_max_tokens: policy.default_max_tokens,
                quota,
            });
        }
        match self.fit_and_reserve(job, analysis, policy, budget, decision, ledger) {
            Verdict::Admitted(a) => Verdict::Admitted(Admitted { quota, ..a }),
            other => other,
        }
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
            Ok(()) => Ok(Some((policy.quota_nodes.clone(), tokens))),
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
    fn fit_and_reserve(
        &self,
        job: &Job,
        analysis: &TaskAnalysis,
        policy: &EffectivePolicy,
        budget: BudgetState,
        mut decision: RoutingDecision,
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
            Err(stop) => return self.stopped(stop, job, analysis, policy),
        }
        let worst = decision.worst_case_usd();
        match ledger.fits(nodes, worst, self.now) {
            Ok(()) => Verdict::Admitted(Admitted {
                decision,
                reserve: Some(ReservationPlan {
                    nodes: nodes.clone(),
                    amount_usd: worst,
                }),
                default_max_tokens: policy.default_max_tokens,
                quota: None,
            }),
            Err(stop) => self.stopped(stop, job, analysis, policy),
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
    ) -> Verdict {
        let routing = self.unrouted(job, analysis, policy, stop.reason());
        match stop {
            BudgetStop::Hold { reason, .. } => Verdict::Held {
                reason: format!("{reason}; held for approval"),
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

/// Why a job is refused when its budget is near the limit and not even the
/// cheapest model above the quality floor fits what is left.
fn nothing_fits_near_limit(refusal: &Refusal) -> String {
    format!("budget near its limit and no model above the quality floor fits: {refusal}")
}
