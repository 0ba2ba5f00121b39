//! The budget ledger: monthly spend per org node, with reservations for jobs in
//! flight. A job reserves its estimated cost on every budgeted node of its path
//! before the call and settles the actual cost after, so a hard cap is never
//! overshot by more than what is in flight. Spend counts in the calendar month
//! (in the org's time zone) it happened in: an event from an earlier month never
//! touches the current one. Several workers share their figures through
//! snapshots ([`BudgetSnapshot`], published to a compacted topic every second):
//! each worker adds the others' settled spend and in-flight reservations to its
//! own, and keeps what the others cannot see yet of its own admissions within
//! its share of what is left ([`share`]), so the overshoot across workers is at
//! most one job per other worker. Quotas (jobs and tokens per minute and day) are
//! counted the same way ([`quota`]).
//!
//! Each budgeted node's policy ([`BudgetAction`]) acts on a job when the node's
//! spend (settled plus in flight) has reached its `act_at` fraction of the budget
//! (default 0.9), or when the job's estimated cost does not fit what is left:
//! `reject` refuses the job, `hold` parks it for approval, `downgrade` routes it
//! to the cheapest model above the quality floor that fits (and refuses it when
//! the budget is spent or nothing fits). Where several nodes act, a refusal or a
//! hold wins over a downgrade, and the highest node speaks first.

mod quota;
mod share;
mod snapshot;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::org::{Budget, BudgetAction, OrgTree, Quota};
use crate::routing::BudgetState;
use quota::{QuotaCounts, minute_of};
pub use quota::{QuotaStop, QuotaUse};
pub use snapshot::BudgetSnapshot;

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

/// A calendar month (year, month) in the org's time zone.
pub type Month = (i32, u32);

/// How long another worker's in-flight figure counts after its snapshot: a
/// worker that stopped publishing has nothing in flight any more.
pub const SNAPSHOT_FRESH: Duration = Duration::from_secs(10);

/// Spend per calendar month, reservations of jobs in flight, quota counts, and
/// what other workers reported in their snapshots.
#[derive(Debug, Clone)]
pub struct BudgetLedger {
    budgets: HashMap<String, Budget>,
    quotas: HashMap<String, Quota>,
    tz: Tz,
    /// The latest month seen: what [`BudgetLedger::spent`] reports.
    month: Month,
    /// This worker's settled spend, per month and node.
    own: HashMap<(Month, String), f64>,
    /// Spend recorded from elsewhere (usage events), per month and node.
    recorded: HashMap<(Month, String), f64>,
    /// This worker's reservations per node.
    reserved: HashMap<String, f64>,
    /// Other workers' latest snapshots, by (instance, node).
    others: HashMap<(String, String), BudgetSnapshot>,
    /// This worker's quota counts per node.
    counts: HashMap<String, QuotaCounts>,
    /// What this worker reserved and counted since it started, per node.
    issued: HashMap<String, share::Issued>,
    /// How much of that its own snapshots, read back, showed the others.
    echoed: HashMap<String, share::Issued>,
    /// When the latest of its own snapshots read back was taken.
    echo_at: Option<DateTime<Utc>>,
}

/// A reservation to settle once the job is done.
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a reservation must be settled or released"]
pub struct Reservation {
    nodes: Vec<String>,
    amount_usd: f64,
}

impl BudgetLedger {
    /// An empty ledger for the org's budgets and quotas.
    pub fn new(org: &OrgTree, now: DateTime<Utc>) -> Self {
        let tz = org.time_zone();
        Self {
            budgets: org.budgets().map(|(p, b)| (p.to_owned(), b)).collect(),
            quotas: org.quotas().map(|(p, q)| (p.to_owned(), q)).collect(),
            tz,
            month: month_of(now, tz),
            own: HashMap::new(),
            recorded: HashMap::new(),
            reserved: HashMap::new(),
            others: HashMap::new(),
            counts: HashMap::new(),
            issued: HashMap::new(),
            echoed: HashMap::new(),
            echo_at: None,
        }
    }

    /// The month of `at` in the org's time zone.
    pub fn month_of(&self, at: DateTime<Utc>) -> Month {
        month_of(at, self.tz)
    }

    /// Moves the current month forward (never back: a late event from an
    /// earlier month is attributed to its month, it does not turn the clock).
    fn roll(&mut self, now: DateTime<Utc>) {
        let month = self.month_of(now);
        if month > self.month {
            self.month = month;
            let keep = |m: &Month| *m >= previous(month);
            self.own.retain(|(m, _), _| keep(m));
            self.recorded.retain(|(m, _), _| keep(m));
        }
    }

    /// Settled spend of `node` in `month`: this worker's, what was recorded,
    /// and what other workers reported.
    fn settled_in(&self, node: &str, month: Month) -> f64 {
        let key = (month, node.to_owned());
        let others: f64 = self
            .others
            .values()
            .filter(|s| s.node == node && s.month_key() == Some(month))
            .map(|s| s.settled_usd)
            .sum();
        self.own.get(&key).copied().unwrap_or(0.0)
            + self.recorded.get(&key).copied().unwrap_or(0.0)
            + others
    }

    /// What is in flight on `node`: this worker's reservations and other
    /// workers' fresh ones.
    fn in_flight(&self, node: &str, now: DateTime<Utc>) -> f64 {
        let others: f64 = self
            .others
            .values()
            .filter(|s| s.node == node && s.is_fresh(now))
            .map(|s| s.in_flight_usd)
            .sum();
        self.reserved.get(node).copied().unwrap_or(0.0) + others
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
        let month = self.month_of(now);
        let mut headroom = f64::INFINITY;
        let mut downgrade = false;
        for node in nodes {
            let Some(b) = self.budgets.get(node) else {
                continue;
            };
            let used = self.settled_in(node, month) + self.in_flight(node, now);
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
        self.issue_usd(&nodes, amount_usd);
        Reservation { nodes, amount_usd }
    }

    /// Replaces a reservation by the actual cost, which counts in the month
    /// of `now`.
    pub fn settle(&mut self, reservation: Reservation, actual_usd: f64, now: DateTime<Utc>) {
        self.roll(now);
        let month = self.month_of(now);
        for n in &reservation.nodes {
            if let Some(r) = self.reserved.get_mut(n) {
                // Sums of floats drift: a remainder below a billionth of a
                // dollar is nothing in flight.
                *r = (*r - reservation.amount_usd).max(0.0);
                if *r < 1e-9 {
                    *r = 0.0;
                }
            }
            *self.own.entry((month, n.clone())).or_default() += actual_usd;
        }
    }

    /// Records spend seen elsewhere (a usage event) in the month it happened,
    /// without touching the current month's figures.
    pub fn record(&mut self, project_path: &str, cost_usd: f64, at: DateTime<Utc>) {
        let month = self.month_of(at);
        let parts: Vec<&str> = project_path.split('/').collect();
        for n in 1..=parts.len() {
            let node = parts[..n].join("/");
            if self.budgets.contains_key(&node) {
                *self.recorded.entry((month, node)).or_default() += cost_usd;
            }
        }
    }

    /// Settled spend of a node this month (the latest month seen).
    pub fn spent(&self, node: &str) -> f64 {
        self.settled_in(node, self.month)
    }

    /// Spend of a node in `month`.
    pub fn spent_in(&self, node: &str, month: Month) -> f64 {
        self.settled_in(node, month)
    }

    /// Reserved by this worker's jobs in flight on a node.
    pub fn reserved(&self, node: &str) -> f64 {
        self.reserved.get(node).copied().unwrap_or(0.0)
    }

    /// A budgeted node's figures at `now`: budget, spend this month, in flight
    /// (every worker's) and what is left.
    pub fn node_state(&self, node: &str, now: DateTime<Utc>) -> Option<NodeBudget> {
        let b = self.budgets.get(node)?;
        let spent = self.settled_in(node, self.month_of(now));
        let in_flight = self.in_flight(node, now);
        Some(NodeBudget {
            budget_usd: b.usd_per_month,
            spent_usd: spent,
            in_flight_usd: in_flight,
            headroom_usd: (b.usd_per_month - spent - in_flight).max(0.0),
        })
    }

    /// Takes another worker's snapshot (its own reservations and settled
    /// spend); this worker's own snapshots (same `instance`) only say what the
    /// others can see of it.
    pub fn observe(&mut self, instance: &str, snapshot: BudgetSnapshot) {
        if snapshot.instance == instance {
            let issued = share::Issued {
                usd: snapshot.issued_usd,
                jobs: snapshot.issued_jobs,
                tokens: snapshot.issued_tokens,
            };
            self.echo(&snapshot.node, issued, snapshot.at);
            return;
        }
        let key = (snapshot.instance.clone(), snapshot.node.clone());
        match self.others.get(&key) {
            Some(old) if old.at > snapshot.at => {}
            _ => {
                self.others.insert(key, snapshot);
            }
        }
    }

    /// This worker's figures per budgeted or rationed node at `now`, to publish
    /// for the other workers (and `org show`).
    pub fn snapshots(&mut self, instance: &str, now: DateTime<Utc>) -> Vec<BudgetSnapshot> {
        self.roll(now);
        let month = self.month_of(now);
        let (minute, day) = (minute_of(now), self.day_of(now));
        let mut nodes: Vec<&String> = self.budgets.keys().chain(self.quotas.keys()).collect();
        nodes.sort();
        nodes.dedup();
        nodes
            .into_iter()
            .map(|node| {
                let counts = self
                    .counts
                    .get(node)
                    .map(|c| c.at(minute, &day))
                    .unwrap_or_default();
                BudgetSnapshot {
                    instance: instance.to_owned(),
                    node: node.clone(),
                    month: format!("{:04}-{:02}", month.0, month.1),
                    settled_usd: self.own.get(&(month, node.clone())).copied().unwrap_or(0.0),
                    in_flight_usd: self.reserved.get(node).copied().unwrap_or(0.0),
                    minute,
                    jobs_minute: counts.jobs_minute,
                    tokens_minute: counts.tokens_minute,
                    day: day.clone(),
                    jobs_day: counts.jobs_day,
                    tokens_day: counts.tokens_day,
                    issued_usd: self.issued.get(node).map_or(0.0, |i| i.usd),
                    issued_jobs: self.issued.get(node).map_or(0, |i| i.jobs),
                    issued_tokens: self.issued.get(node).map_or(0, |i| i.tokens),
                    at: now,
                }
            })
            .collect()
    }

    /// Restores this worker's own settled spend from a snapshot it published
    /// before a restart under the same instance name.
    pub fn restore(&mut self, snapshot: &BudgetSnapshot) {
        if let Some(month) = snapshot.month_key() {
            let e = self.own.entry((month, snapshot.node.clone())).or_default();
            *e = e.max(snapshot.settled_usd);
        }
    }
}

/// A budgeted node's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NodeBudget {
    /// The budget per month.
    pub budget_usd: f64,
    /// Settled spend this month.
    pub spent_usd: f64,
    /// Reserved by jobs in flight, every worker's.
    pub in_flight_usd: f64,
    /// What is left for new jobs.
    pub headroom_usd: f64,
}

fn month_of(at: DateTime<Utc>, tz: Tz) -> Month {
    let local = at.with_timezone(&tz);
    (local.year(), local.month())
}

fn previous((y, m): Month) -> Month {
    if m == 1 { (y - 1, 12) } else { (y, m - 1) }
}

#[cfg(test)]
mod tests;
