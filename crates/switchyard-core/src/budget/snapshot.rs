//! What one worker tells the others about a budgeted or rationed node, on a
//! compacted topic keyed by worker instance and node: its settled spend this
//! month, what its jobs in flight have reserved, and its quota counts for the
//! current minute and day. A restarted worker reads these instead of replaying a
//! month of usage events, so it depends on no retention setting.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Month, SNAPSHOT_FRESH};

/// One worker's figures for one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetSnapshot {
    /// The worker instance that publishes it (unique per process).
    pub instance: String,
    /// The org node.
    pub node: String,
    /// The month the spend belongs to, `YYYY-MM` in the org's time zone.
    pub month: String,
    /// Settled spend this month by this instance, USD.
    pub settled_usd: f64,
    /// Reserved by this instance's jobs in flight, USD.
    pub in_flight_usd: f64,
    /// The minute the minute counts belong to (minutes since the epoch).
    #[serde(default)]
    pub minute: i64,
    /// Jobs admitted in that minute.
    #[serde(default)]
    pub jobs_minute: u64,
    /// Tokens admitted in that minute.
    #[serde(default)]
    pub tokens_minute: u64,
    /// The day the day counts belong to, `YYYY-MM-DD` in the org's time zone.
    #[serde(default)]
    pub day: String,
    /// Jobs admitted that day.
    #[serde(default)]
    pub jobs_day: u64,
    /// Tokens admitted that day.
    #[serde(default)]
    pub tokens_day: u64,
    /// Reserved by this instance since it started, USD (only grows): read back
    /// by the instance itself, it says what the others have seen of it.
    #[serde(default)]
    pub issued_usd: f64,
    /// Jobs counted on quotas by this instance since it started.
    #[serde(default)]
    pub issued_jobs: u64,
    /// Tokens counted on quotas by this instance since it started.
    #[serde(default)]
    pub issued_tokens: u64,
    /// When it was taken.
    pub at: DateTime<Utc>,
}

impl BudgetSnapshot {
    /// The topic key: one live record per instance and node.
    pub fn key(&self) -> String {
        format!("{}|{}", self.instance, self.node)
    }

    /// The month, parsed.
    pub fn month_key(&self) -> Option<Month> {
        let (y, m) = self.month.split_once('-')?;
        Some((y.parse().ok()?, m.parse().ok()?))
    }

    /// Whether its in-flight figure still counts at `now`.
    pub fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        (now - self.at)
            .to_std()
            .map_or(true, |age| age <= SNAPSHOT_FRESH)
    }
}
