//! Quotas: jobs and tokens per minute and per day on an org node, counted over
//! every worker (this one's counts plus the others' snapshots for the same
//! minute or day), rolling over in the org's time zone. A job counts when it is
//! admitted: one job, and its prompt plus answer cap in tokens.

use chrono::{DateTime, Utc};

use super::BudgetLedger;
use crate::org::{Quota, QuotaAction};

/// Minutes since the epoch (minute boundaries are the same in every time
/// zone with whole-minute offsets).
pub(super) fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

/// This worker's counts for one node in the current minute and day.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct QuotaCounts {
    pub minute: i64,
    pub jobs_minute: u64,
    pub tokens_minute: u64,
    pub day: String,
    pub jobs_day: u64,
    pub tokens_day: u64,
}

impl QuotaCounts {
    /// The counts for `minute` and `day` (zero for periods that have passed).
    pub fn at(&self, minute: i64, day: &str) -> QuotaCounts {
        let same_minute = self.minute == minute;
        let same_day = self.day == day;
        QuotaCounts {
            minute,
            jobs_minute: if same_minute { self.jobs_minute } else { 0 },
            tokens_minute: if same_minute { self.tokens_minute } else { 0 },
            day: day.to_owned(),
            jobs_day: if same_day { self.jobs_day } else { 0 },
            tokens_day: if same_day { self.tokens_day } else { 0 },
        }
    }
}

/// A node's quota use: what every worker admitted in the current periods.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct QuotaUse {
    /// Jobs this minute.
    pub jobs_minute: u64,
    /// Tokens this minute.
    pub tokens_minute: u64,
    /// Jobs today.
    pub jobs_day: u64,
    /// Tokens today.
    pub tokens_day: u64,
}

/// A quota a job would pass.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaStop {
    /// The node whose quota it is.
    pub node: String,
    /// Which quota (`jobs_per_minute`, `tokens_per_day`, …).
    pub quota: &'static str,
    /// When its period rolls over.
    pub until: DateTime<Utc>,
    /// What the node does: reject, or wait.
    pub action: QuotaAction,
    /// A sentence for the result.
    pub reason: String,
}

impl QuotaStop {
    /// The result's error code: `quota_` and the quota's name.
    pub fn code(&self) -> &'static str {
        match self.quota {
            "jobs_per_minute" => "quota_jobs_per_minute",
            "jobs_per_day" => "quota_jobs_per_day",
            "tokens_per_minute" => "quota_tokens_per_minute",
            _ => "quota_tokens_per_day",
        }
    }
}

impl BudgetLedger {
    /// The day of `at` in the org's time zone, `YYYY-MM-DD`.
    pub(super) fn day_of(&self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.tz).format("%Y-%m-%d").to_string()
    }

    /// When the day of `at` ends, in the org's time zone.
    fn end_of_day(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let local = at.with_timezone(&self.tz).date_naive();
        local
            .succ_opt()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(|t| t.and_local_timezone(self.tz).earliest())
            .map_or(at + chrono::Duration::days(1), |t| t.with_timezone(&Utc))
    }

    /// What every worker admitted on `node` in the periods of `now`.
    pub fn quota_use(&self, node: &str, now: DateTime<Utc>) -> QuotaUse {
        let (minute, day) = (minute_of(now), self.day_of(now));
        let own = self
            .counts
            .get(node)
            .map(|c| c.at(minute, &day))
            .unwrap_or_default();
        let mut used = QuotaUse {
            jobs_minute: own.jobs_minute,
            tokens_minute: own.tokens_minute,
            jobs_day: own.jobs_day,
            tokens_day: own.tokens_day,
        };
        for s in self.others.values().filter(|s| s.node == node) {
            if s.minute == minute {
                used.jobs_minute += s.jobs_minute;
                used.tokens_minute += s.tokens_minute;
            }
            if s.day == day {
                used.jobs_day += s.jobs_day;
                used.tokens_day += s.tokens_day;
            }
        }
        used
    }

    /// Whether one more job of `tokens` fits every quota of these nodes (top
    /// first) at `now`; the first quota it would pass stops it.
    pub fn quota_verdict(
        &self,
        nodes: &[String],
        tokens: u64,
        now: DateTime<Utc>,
    ) -> Result<(), QuotaStop> {
        for node in nodes {
            let Some(q) = self.quotas.get(node) else {
                continue;
            };
            let used = self.quota_use(node, now);
            let next_minute = DateTime::from_timestamp((minute_of(now) + 1) * 60, 0).unwrap_or(now);
            let checks = [
                (
                    "jobs_per_minute",
                    q.jobs_per_minute,
                    used.jobs_minute + 1,
                    next_minute,
                ),
                (
                    "tokens_per_minute",
                    q.tokens_per_minute,
                    used.tokens_minute + tokens,
                    next_minute,
                ),
                (
                    "jobs_per_day",
                    q.jobs_per_day,
                    used.jobs_day + 1,
                    self.end_of_day(now),
                ),
                (
                    "tokens_per_day",
                    q.tokens_per_day,
                    used.tokens_day + tokens,
                    self.end_of_day(now),
                ),
            ];
            for (name, limit, wanted, until) in checks {
                if let Some(limit) = limit
                    && wanted > limit
                {
                    return Err(stop(node, q, name, limit, until));
                }
            }
        }
        Ok(())
    }

    /// Counts an admitted job on these nodes' quotas.
    pub fn count(&mut self, nodes: &[String], tokens: u64, now: DateTime<Utc>) {
        let (minute, day) = (minute_of(now), self.day_of(now));
        for node in nodes.iter().filter(|n| self.quotas.contains_key(*n)) {
            let c = self.counts.entry(node.clone()).or_default();
            *c = c.at(minute, &day);
            c.jobs_minute += 1;
            c.jobs_day += 1;
            c.tokens_minute += tokens;
            c.tokens_day += tokens;
        }
        self.issue_job(nodes, tokens);
    }
}

fn stop(node: &str, q: &Quota, quota: &'static str, limit: u64, until: DateTime<Utc>) -> QuotaStop {
    QuotaStop {
        node: node.to_owned(),
        quota,
        until,
        action: q.action,
        reason: format!(
            "the quota {quota} = {limit} of `{node}` is used up until {}",
            until.format("%Y-%m-%d %H:%M:%S UTC")
        ),
    }
}
