//! Sharing the last of a budget or quota between workers. Each worker sees the
//! others' admissions a follow lag late; a worker that admits a burst (a
//! backlog after a rebalance, say) within that lag could, alone, take what the
//! others also count as theirs. So a worker keeps count of what it has issued
//! (reserved and counted) since it started, and learns from its own snapshots
//! coming back on the topic what the others can see of it. What they cannot
//! see yet (its *unseen* admissions) may grow only to its share of what is
//! left: the headroom divided by the live workers (this one and those whose
//! snapshots are fresh). A job that would pass its share waits for its
//! figures to reach the others (a few tens of milliseconds), then is checked
//! against the whole headroom again. So several workers overshoot a cap by at
//! most one job per other worker (each may admit one job while nothing of its
//! own is unseen), not by a burst.

use chrono::{DateTime, Utc};

use super::{BudgetLedger, SNAPSHOT_FRESH};

/// What one worker has reserved and counted on a node since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Issued {
    pub usd: f64,
    pub jobs: u64,
    pub tokens: u64,
}

/// Whether `unseen + want` stays within this worker's share of `left + unseen`
/// (what was left before its unseen admissions), among `peers + 1` workers.
fn within_share(unseen: f64, want: f64, left: f64, peers: usize) -> bool {
    unseen <= 0.0 || unseen + want <= (left + unseen) / (peers as f64 + 1.0)
}

impl BudgetLedger {
    /// Other workers with fresh snapshots for `node`.
    fn peers(&self, node: &str, now: DateTime<Utc>) -> usize {
        self.others
            .values()
            .filter(|s| s.node == node && s.is_fresh(now))
            .count()
    }

    /// What this worker issued on `node` that the others cannot see yet. When
    /// its own snapshots stopped coming back (the topic is unreachable), the
    /// share is not enforced: the others see nothing of it either way.
    fn unseen(&self, node: &str, now: DateTime<Utc>) -> Option<Issued> {
        let echo_fresh = self.echo_at.is_some_and(|at| {
            (now - at)
                .to_std()
                .map_or(true, |age| age <= SNAPSHOT_FRESH)
        });
        if !echo_fresh {
            return None;
        }
        let issued = self.issued.get(node).copied().unwrap_or_default();
        let echoed = self.echoed.get(node).copied().unwrap_or_default();
        Some(Issued {
            usd: (issued.usd - echoed.usd).max(0.0),
            jobs: issued.jobs.saturating_sub(echoed.jobs),
            tokens: issued.tokens.saturating_sub(echoed.tokens),
        })
    }

    /// The first budgeted node on which reserving `amount_usd` now would take
    /// this worker past its share of the headroom, with why.
    pub fn budget_share_exceeded(
        &self,
        nodes: &[String],
        amount_usd: f64,
        now: DateTime<Utc>,
    ) -> Option<String> {
        let month = self.month_of(now);
        nodes.iter().find_map(|node| {
            let b = self.budgets.get(node)?;
            let peers = self.peers(node, now);
            let unseen = self.unseen(node, now)?;
            if peers == 0 {
                return None;
            }
            let left = b.usd_per_month - self.settled_in(node, month) - self.in_flight(node, now);
            (!within_share(unseen.usd, amount_usd, left, peers)).then(|| {
                format!(
                    "the last ${:.6} of the budget of `{node}` is shared with {peers} other worker(s); waiting for them to see this one's ${:.6} in flight",
                    left.max(0.0),
                    unseen.usd
                )
            })
        })
    }

    /// The first rationed node on which one more job of `tokens` would take this
    /// worker past its share of what the minute's or day's quota has left.
    pub fn quota_share_exceeded(
        &self,
        nodes: &[String],
        tokens: u64,
        now: DateTime<Utc>,
    ) -> Option<String> {
        nodes.iter().find_map(|node| {
            let q = self.quotas.get(node)?;
            let peers = self.peers(node, now);
            let unseen = self.unseen(node, now)?;
            if peers == 0 {
                return None;
            }
            let used = self.quota_use(node, now);
            let checks = [
                (q.jobs_per_minute, used.jobs_minute, unseen.jobs, 1),
                (q.jobs_per_day, used.jobs_day, unseen.jobs, 1),
                (q.tokens_per_minute, used.tokens_minute, unseen.tokens, tokens),
                (q.tokens_per_day, used.tokens_day, unseen.tokens, tokens),
            ];
            checks
                .into_iter()
                .any(|(limit, used, unseen, want)| {
                    limit.is_some_and(|limit| {
                        let left = limit as f64 - used as f64;
                        !within_share(unseen as f64, want as f64, left, peers)
                    })
                })
                .then(|| {
                    format!(
                        "the rest of the quota of `{node}` is shared with {peers} other worker(s); waiting for them to see this one's {} unseen job(s)",
                        unseen.jobs
                    )
                })
        })
    }

    /// Counts issued spend on the budgeted `nodes`.
    pub(super) fn issue_usd(&mut self, nodes: &[String], amount_usd: f64) {
        for n in nodes {
            self.issued.entry(n.clone()).or_default().usd += amount_usd;
        }
    }

    /// Counts an issued job on the rationed `nodes`.
    pub(super) fn issue_job(&mut self, nodes: &[String], tokens: u64) {
        for n in nodes.iter().filter(|n| self.quotas.contains_key(*n)) {
            let i = self.issued.entry(n.clone()).or_default();
            i.jobs += 1;
            i.tokens += tokens;
        }
    }

    /// Takes one of this worker's own snapshots back from the topic: what it
    /// issued up to then is visible to the others.
    pub(super) fn echo(&mut self, node: &str, issued: Issued, at: DateTime<Utc>) {
        let e = self.echoed.entry(node.to_owned()).or_default();
        e.usd = e.usd.max(issued.usd);
        e.jobs = e.jobs.max(issued.jobs);
        e.tokens = e.tokens.max(issued.tokens);
        self.echo_at = Some(self.echo_at.map_or(at, |old| old.max(at)));
    }
}
