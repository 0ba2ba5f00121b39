//! The budget ledger: monthly spend per org node, with reservations for jobs in
//! flight. A job reserves its estimated cost on every budgeted node of its path
//! before the call and settles the actual cost after, so a hard cap is never
//! overshot by more than what is in flight. The worker rebuilds spend from the
//! usage topic at start.
//!
//! Each budgeted node's policy ([`BudgetAction`]) acts on a job when the node's
//! spend (settled plus in flight) has reached its `act_at` fraction of the budget
//! (default 0.9), or when the job's estimated cost does not fit what is left:
//! `reject` refuses the job, `hold` parks it for approval, `downgrade` routes it
//! to the cheapest model above the quality floor that fits (and refuses it when
//! the budget is spent or nothing fits). Where several nodes act, a refusal or a
//! hold wins over a downgrade, and the highest node speaks first.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Utc};

use crate::org::{Budget, BudgetAction, OrgTree};
use crate::routing::BudgetState;

/// What the budget allows for a job: route in this state (`Normal`, with no
/// headroom filter, when no node acts: the policy, not the router, decides what
/// happens to a job that does not fit; `NearLimit` when a `downgrade` node acts),
/// or stop.
pub type BudgetVerdict = Result<BudgetState, BudgetStop>;

/// A node's budget policy stops the job.
#[derive(Debug, Clone, PartialEq)]
pub enum BudgetStop {
    /// A node's policy refuses the job.
    Reject {
        /// The node whose policy acted.
        node: String,
        /// Why, for the rejected result.
        reason: String,
    },
    /// A node's policy holds the job for approval.
    Hold {
        /// The node whose policy acted.
        node: String,
        /// Why, for the held record.
        reason: String,
    },
}

impl BudgetStop {
    /// Why the job stops.
    pub fn reason(&self) -> &str {
        match self {
            BudgetStop::Reject { reason, .. } | BudgetStop::Hold { reason, .. } => reason,
        }
    }
}

/// Why a node's policy acts on a job.
enum Trigger {
    /// Nothing left.
    Exhausted,
    /// Spend at or past `act_at` of the budget.
    NearLimit { used: f64 },
    /// The job's estimate is more than what is left.
    DoesNotFit { estimate: f64, left: f64 },
}

impl Trigger {
    fn describe(&self, node: &str, b: &Budget) -> String {
        let limit = b.usd_per_month;
        match *self {
            Trigger::Exhausted => format!("budget of `{node}` (${limit:.2}/month) is exhausted"),
            Trigger::NearLimit { used } => format!(
                "budget of `{node}` is {:.0}% spent (${used:.2} of ${limit:.2}/month); its policy acts from {:.0}%",
                100.0 * used / limit,
                100.0 * b.act_at
            ),
            Trigger::DoesNotFit { estimate, left } => format!(
                "the job's estimated ${estimate:.6} does not fit the ${left:.6} left in the budget of `{node}` (${limit:.2}/month)"
            ),
        }
    }
}

/// Spend and reservations for one calendar month.
#[derive(Debug, Clone)]
pub struct BudgetLedger {
    budgets: HashMap<String, Budget>,
    month: (i32, u32),
    spent: HashMap<String, f64>,
    reserved: HashMap<String, f64>,
}

/// A reservation to settle once the job is done.
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a reservation must be settled or released"]
pub struct Reservation {
    nodes: Vec<String>,
    amount_usd: f64,
}

impl BudgetLedger {
    /// An empty ledger for the org's budgets.
    pub fn new(org: &OrgTree, now: DateTime<Utc>) -> Self {
        Self {
            budgets: org.budgets().map(|(p, b)| (p.to_owned(), b)).collect(),
            month: (now.year(), now.month()),
            spent: HashMap::new(),
            reserved: HashMap::new(),
        }
    }

    fn roll(&mut self, now: DateTime<Utc>) {
        let month = (now.year(), now.month());
        if month != self.month {
            self.month = month;
            self.spent.clear();
        }
    }

    /// The verdict for a job whose path has these budgeted nodes (top first).
    /// Called before routing without an estimate (thresholds and exhaustion), and
    /// again with the routed job's estimated cost, so that a job too expensive for
    /// what is left is treated by policy like one arriving near the limit.
    pub fn verdict(
        &mut self,
        nodes: &[String],
        estimate_usd: Option<f64>,
        now: DateTime<Utc>,
    ) -> BudgetVerdict {
        self.roll(now);
        let mut headroom = f64::INFINITY;
        let mut downgrade = false;
        for node in nodes {
            let Some(b) = self.budgets.get(node) else {
                continue;
            };
            let used = self.spent.get(node).copied().unwrap_or(0.0)
                + self.reserved.get(node).copied().unwrap_or(0.0);
            let left = b.usd_per_month - used;
            let trigger = if left <= 0.0 {
                Some(Trigger::Exhausted)
            } else if used >= b.act_at * b.usd_per_month {
                Some(Trigger::NearLimit { used })
            } else {
                estimate_usd
                    .filter(|e| *e > left)
                    .map(|estimate| Trigger::DoesNotFit { estimate, left })
            };
            headroom = headroom.min(left);
            let Some(trigger) = trigger else { continue };
            match (b.action, &trigger) {
                (BudgetAction::Hold, _) => {
                    let reason = trigger.describe(node, b);
                    return Err(BudgetStop::Hold {
                        node: node.clone(),
                        reason,
                    });
                }
                // A spent budget leaves nothing to downgrade within.
                (BudgetAction::Reject, _) | (BudgetAction::Downgrade, Trigger::Exhausted) => {
                    let reason = trigger.describe(node, b);
                    return Err(BudgetStop::Reject {
                        node: node.clone(),
                        reason,
                    });
                }
                (BudgetAction::Downgrade, _) => downgrade = true,
            }
        }
        Ok(if downgrade {
            BudgetState::NearLimit {
                headroom_usd: headroom,
            }
        } else {
            BudgetState::UNCONSTRAINED
        })
    }

    /// Checks the routed job's estimate against the budgets and reserves it, in
    /// one step: jobs deciding at the same moment cannot all pass on the same
    /// headroom. A job that does not fit what is left is refused even where the
    /// policy is to downgrade (the downgrade was the earlier [`Self::verdict`]'s
    /// chance); otherwise the policies act as in [`Self::verdict`].
    pub fn reserve_checked(
        &mut self,
        nodes: &[String],
        estimate_usd: f64,
        now: DateTime<Utc>,
    ) -> Result<Reservation, BudgetStop> {
        self.fits(nodes, estimate_usd, now)?;
        Ok(self.reserve(nodes, estimate_usd))
    }

    /// The check of [`Self::reserve_checked`] without the reservation: whether
    /// the routed job's estimate may be reserved now. A caller that holds the
    /// ledger's lock from this check to [`Self::reserve`] has the same guarantee.
    pub fn fits(
        &mut self,
        nodes: &[String],
        estimate_usd: f64,
        now: DateTime<Utc>,
    ) -> Result<(), BudgetStop> {
        match self.verdict(nodes, Some(estimate_usd), now)? {
            BudgetState::NearLimit { headroom_usd } if estimate_usd > headroom_usd => {
                Err(BudgetStop::Reject {
                    node: nodes.first().cloned().unwrap_or_default(),
                    reason: format!(
                        "the job's estimated ${estimate_usd:.6} no longer fits the ${:.6} left in its budgets",
                        headroom_usd.max(0.0)
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// Reserves an estimated cost on the nodes.
    pub fn reserve(&mut self, nodes: &[String], amount_usd: f64) -> Reservation {
        let nodes: Vec<String> = nodes
            .iter()
            .filter(|n| self.budgets.contains_key(*n))
            .cloned()
            .collect();
        for n in &nodes {
            *self.reserved.entry(n.clone()).or_default() += amount_usd;
        }
        Reservation { nodes, amount_usd }
    }

    /// Replaces a reservation by the actual cost.
    pub fn settle(&mut self, reservation: Reservation, actual_usd: f64, now: DateTime<Utc>) {
        self.roll(now);
        for n in &reservation.nodes {
            if let Some(r) = self.reserved.get_mut(n) {
                *r = (*r - reservation.amount_usd).max(0.0);
            }
            *self.spent.entry(n.clone()).or_default() += actual_usd;
        }
    }

    /// Records spend seen on the usage topic (another worker's, or before a restart).
    pub fn record(&mut self, project_path: &str, cost_usd: f64, at: DateTime<Utc>) {
        self.roll(at);
        if (at.year(), at.month()) != self.month {
            return;
        }
        let parts: Vec<&str> = project_path.split('/').collect();
        for n in 1..=parts.len() {
            let node = parts[..n].join("/");
            if self.budgets.contains_key(&node) {
                *self.spent.entry(node).or_default() += cost_usd;
            }
        }
    }

    /// Settled spend of a node this month.
    pub fn spent(&self, node: &str) -> f64 {
        self.spent.get(node).copied().unwrap_or(0.0)
    }

    /// Reserved (in flight) on a node.
    pub fn reserved(&self, node: &str) -> f64 {
        self.reserved.get(node).copied().unwrap_or(0.0)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::org::tests::catalog;
    use crate::routing::Strategy;

    /// `acme` ($100, reject from 90%) above `acme/bu` ($10, downgrade from 80%).
    fn org() -> OrgTree {
        let text = r#"
[org]
name = "acme"
budget_usd_per_month = 100
[[node]]
path = "acme/bu"
budget_usd_per_month = 10
on_budget_exhausted = "downgrade"
budget_soft_limit = 0.8
[[node]]
path = "acme/bu/t"
[[node]]
path = "acme/bu/t/p"
"#;
        OrgTree::parse(Path::new("org.toml"), text, &catalog(), Strategy::Auto, 0.5).unwrap()
    }

    /// One project under a $100 budget acting from 90% with `action`.
    fn single(action: &str) -> (OrgTree, Vec<String>) {
        let text = format!(
            "[org]\nname = \"acme\"\n[[node]]\npath = \"acme/bu\"\nbudget_usd_per_month = 100\non_budget_exhausted = \"{action}\"\n[[node]]\npath = \"acme/bu/t\"\n[[node]]\npath = \"acme/bu/t/p\"\n"
        );
        let org = OrgTree::parse(
            Path::new("org.toml"),
            &text,
            &catalog(),
            Strategy::Auto,
            0.5,
        )
        .unwrap();
        let nodes = org
            .policy("acme/bu/t/p", None)
            .unwrap()
            .budget_nodes
            .clone();
        (org, nodes)
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn nodes(org: &OrgTree) -> Vec<String> {
        org.policy("acme/bu/t/p", None)
            .unwrap()
            .budget_nodes
            .clone()
    }

    #[test]
    fn reservations_count_until_settled() {
        let org = org();
        let nodes = nodes(&org);
        let mut l = BudgetLedger::new(&org, now());
        let r = l.reserve(&nodes, 7.0);
        assert_eq!(
            l.verdict(&nodes, None, now()),
            Ok(BudgetState::UNCONSTRAINED)
        );
        l.settle(r, 8.5, now());
        assert_eq!(l.spent("acme/bu"), 8.5);
        assert_eq!(l.reserved("acme/bu"), 0.0);
        assert_eq!(
            l.verdict(&nodes, None, now()),
            Ok(BudgetState::NearLimit { headroom_usd: 1.5 })
        );
        l.record("acme/bu/t/p", 2.0, now());
        assert!(matches!(
            l.verdict(&nodes, None, now()),
            Err(BudgetStop::Reject { node, reason }) if node == "acme/bu" && reason.contains("exhausted")
        ));
    }

    /// Every policy below its threshold, at it, below it with a job too large for
    /// what is left, and with nothing left.
    #[test]
    fn each_policy_acts_from_its_threshold_and_on_jobs_that_do_not_fit() {
        for action in ["reject", "hold", "downgrade"] {
            let (org, nodes) = single(action);
            let mut l = BudgetLedger::new(&org, now());
            let acted = |v: &BudgetVerdict, headroom: f64| match (action, v) {
                ("reject", Err(BudgetStop::Reject { node, .. }))
                | ("hold", Err(BudgetStop::Hold { node, .. })) => node == "acme/bu",
                ("downgrade", Ok(BudgetState::NearLimit { headroom_usd })) => {
                    (headroom_usd - headroom).abs() < 1e-9
                }
                _ => false,
            };
            let normal = Ok(BudgetState::UNCONSTRAINED);

            // Below the threshold: $89.50 of $100 spent, a small job fits.
            l.record("acme/bu/t/p", 89.5, now());
            assert_eq!(l.verdict(&nodes, None, now()), normal, "{action}");
            assert_eq!(l.verdict(&nodes, Some(5.0), now()), normal, "{action}");
            // Below the threshold, but the job's estimate is more than what is left.
            let v = l.verdict(&nodes, Some(11.0), now());
            assert!(acted(&v, 10.5), "{action}: {v:?}");
            if let Err(BudgetStop::Reject { reason, .. }) | Err(BudgetStop::Hold { reason, .. }) =
                &v
            {
                assert!(reason.contains("does not fit the $10.500000"), "{reason}");
            }

            // At the threshold (in flight counts): $90 of $100.
            let r = l.reserve(&nodes, 0.5);
            let v = l.verdict(&nodes, None, now());
            assert!(acted(&v, 10.0), "{action}: {v:?}");
            if let Err(BudgetStop::Reject { reason, .. }) | Err(BudgetStop::Hold { reason, .. }) =
                &v
            {
                assert!(reason.contains("90% spent"), "{reason}");
            }
            l.settle(r, 0.5, now());

            // Spent: downgrading has nothing left to work within.
            l.record("acme/bu/t/p", 10.0, now());
            let v = l.verdict(&nodes, None, now());
            match action {
                "hold" => assert!(matches!(v, Err(BudgetStop::Hold { .. })), "{v:?}"),
                _ => assert!(
                    matches!(&v, Err(BudgetStop::Reject { reason, .. }) if reason.contains("exhausted")),
                    "{action}: {v:?}"
                ),
            }
        }
    }

    #[test]
    fn a_refusal_higher_up_wins_over_a_downgrade_below() {
        let org = org();
        let nodes = nodes(&org);
        let mut l = BudgetLedger::new(&org, now());
        // acme/bu ($10, downgrade from 80%) is at 85%: downgrade within $1.50.
        l.record("acme/bu/t/p", 8.5, now());
        assert_eq!(
            l.verdict(&nodes, None, now()),
            Ok(BudgetState::NearLimit { headroom_usd: 1.5 })
        );
        // acme ($100, reject from 90%) is at 91% through another business unit.
        l.record("acme/other/t/p", 82.5, now());
        assert!(matches!(
            l.verdict(&nodes, None, now()),
            Err(BudgetStop::Reject { node, .. }) if node == "acme"
        ));
    }

    #[test]
    fn a_new_month_starts_from_zero() {
        let org = org();
        let nodes = nodes(&org);
        let mut l = BudgetLedger::new(&org, now());
        l.record("acme/bu/t/p", 50.0, now());
        let next = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        assert!(matches!(
            l.verdict(&nodes, None, next),
            Ok(BudgetState::Normal { .. })
        ));
        assert_eq!(l.spent("acme/bu"), 0.0);
    }

    proptest! {
        /// Whatever the sequence of jobs, reservations and settlements, a job the
        /// ledger admits (with its estimate) never takes a node past its limit.
        #[test]
        fn admitted_work_never_overshoots(costs in proptest::collection::vec(0.01f64..3.0, 1..60)) {
            let org = org();
            let nodes = nodes(&org);
            let mut l = BudgetLedger::new(&org, now());
            let mut open = Vec::new();
            for (i, c) in costs.iter().enumerate() {
                if let Ok(state) = l.verdict(&nodes, Some(*c), now()) {
                    // A downgrade routes within the headroom; a job that fits a normal budget is admitted.
                    let fits = match state { BudgetState::Normal { .. } => true, BudgetState::NearLimit { headroom_usd } => *c <= headroom_usd };
                    if fits {
                        open.push((l.reserve(&nodes, *c), *c));
                    }
                }
                if i % 3 == 2 && let Some((r, c)) = open.pop() {
                    l.settle(r, c, now());
                }
                let committed = l.spent("acme/bu") + l.reserved("acme/bu");
                prop_assert!(committed <= 10.0 + 1e-9, "committed {committed}");
            }
        }
    }

    #[test]
    fn checked_reservations_never_pass_together_on_the_same_headroom() {
        for action in ["reject", "hold", "downgrade"] {
            let (org, nodes) = single(action);
            let mut ledger = BudgetLedger::new(&org, now());
            // Jobs of $30 against $100: three fit, the fourth finds the
            // headroom taken by the others' reservations (none settled yet).
            let passed = (0..4)
                .filter(|_| ledger.reserve_checked(&nodes, 30.0, now()).is_ok())
                .count();
            assert_eq!(passed, 3, "{action}");
            assert!(ledger.reserved(&nodes[0]) <= 100.0, "{action}");
            let refused = ledger.reserve_checked(&nodes, 30.0, now()).unwrap_err();
            match action {
                "hold" => assert!(matches!(refused, BudgetStop::Hold { .. })),
                _ => assert!(matches!(refused, BudgetStop::Reject { .. }), "{action}"),
            }
        }
    }
}
