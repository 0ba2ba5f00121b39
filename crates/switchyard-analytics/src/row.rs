//! The words every part of analytics speaks, at the bottom of the crate (this
//! module imports nothing else of it): the flat record both stores share, owned
//! ([`UsageRow`]) and borrowed ([`RowRef`]): a usage event with its org path
//! split into columns, its time as seconds, milliseconds and day, and the Kafka
//! position it came from (which is what makes inserts exactly-once, see
//! `sinks::clickhouse`); the day arithmetic both stores partition by; and
//! [`RowSink`], the way decoded rows reach a store's in-memory shape. Field
//! order is the ClickHouse column order of `usage_events`.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;
use switchyard_core::usage::UsageEvent;

/// One billed attempt, ready for Parquet and ClickHouse.
#[derive(Debug, Clone, PartialEq, Serialize, clickhouse::Row)]
pub struct UsageRow {
    /// Unique per billed attempt; copies of an event share it.
    pub event_id: String,
    /// The job the attempt served.
    pub job_id: String,
    /// The job's batch, empty when none.
    pub batch_id: String,
    /// Position of the attempt in the job (0-based).
    pub attempt: u32,
    /// When the attempt finished, seconds since the epoch (ClickHouse `DateTime`).
    pub ts: u32,
    /// When the attempt finished, milliseconds since the epoch.
    pub ts_ms: u64,
    /// UTC day of `ts`, days since the epoch (ClickHouse `Date`).
    pub day: u16,
    /// Org path, level 1.
    pub org: String,
    /// Org path, level 2.
    pub business_unit: String,
    /// Org path, level 3.
    pub team: String,
    /// Org path, level 4.
    pub project: String,
    /// Workload name, empty when none.
    pub workload: String,
    /// Strategy that routed the job (wire name).
    pub strategy: String,
    /// Estimated task category (wire name).
    pub category: String,
    /// Estimated complexity, 0..1.
    pub complexity: f64,
    /// Model the routing ranked first.
    pub chosen_model: String,
    /// The routing decision's one-line reason.
    pub routing_reason: String,
    /// Provider name.
    pub provider: String,
    /// Catalog model name.
    pub model: String,
    /// Deployment name.
    pub deployment: String,
    /// How the attempt ended (`succeeded` or the failure kind).
    pub outcome: String,
    /// Prompt tokens at the full input price.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Prompt tokens served from cache.
    pub cached_input_tokens: u64,
    /// Cost at the model's list price, USD.
    pub cost_usd: f64,
    /// Cost of the same tokens on the baseline (flagship) model, USD.
    pub baseline_cost_usd: f64,
    /// Wall time of the attempt.
    pub latency_ms: u64,
    /// Topic the event was read from.
    pub kafka_topic: String,
    /// Partition the event was read from.
    pub kafka_partition: i32,
    /// Offset of the event in its partition.
    pub kafka_offset: i64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write_input_tokens: u64,
    /// How the attempt was served: `live` or `deferred` (a provider's batch API).
    pub mode: String,
    /// What the same tokens cost on the same model live, USD (the cost itself
    /// for live attempts): live cost minus cost is what deferral saved.
    pub live_cost_usd: f64,
}

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
pub(crate) const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

const MS_PER_DAY: u64 = 86_400_000;

impl UsageRow {
    /// Flattens an event read at `partition`/`offset` of `topic`.
    pub fn from_event(event: UsageEvent, topic: &str, partition: i32, offset: i64) -> Self {
        let ts_ms = event.ts.timestamp_millis().max(0) as u64;
        let live_cost_usd = event.live_cost();
        Self {
            event_id: event.event_id,
            job_id: event.job_id,
            batch_id: event.batch_id.unwrap_or_default(),
            attempt: event.attempt,
            ts: u32::try_from(ts_ms / 1000).unwrap_or(u32::MAX),
            ts_ms,
            day: day_of(ts_ms),
            org: event.org,
            business_unit: event.business_unit,
            team: event.team,
            project: event.project,
            workload: event.workload,
            strategy: event.strategy.as_str().to_owned(),
            category: event.category.as_str().to_owned(),
            complexity: event.complexity,
            chosen_model: event.chosen_model,
            routing_reason: event.routing_reason,
            provider: event.provider,
            model: event.model,
            deployment: event.deployment,
            outcome: event.outcome.as_str().to_owned(),
            input_tokens: event.usage.input_tokens,
            output_tokens: event.usage.output_tokens,
            cached_input_tokens: event.usage.cached_input_tokens,
            cost_usd: event.cost_usd,
            baseline_cost_usd: event.baseline_cost_usd,
            latency_ms: event.latency_ms,
            kafka_topic: topic.to_owned(),
            kafka_partition: partition,
            kafka_offset: offset,
            cache_write_input_tokens: event.usage.cache_write_input_tokens,
            mode: event.mode.as_str().to_owned(),
            live_cost_usd,
        }
    }

    /// The UTC day as a date.
    pub fn date(&self) -> NaiveDate {
        date_from_days(self.day)
    }

    /// The finish time.
    pub fn timestamp(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.ts_ms as i64).unwrap_or_default()
    }

    /// ClickHouse's monthly partition of the row (`toYYYYMM(day)`).
    pub fn month(&self) -> u32 {
        month_of(self.day)
    }

    /// Whether the attempt failed (its cost still counts).
    pub fn failed(&self) -> bool {
        self.outcome != "succeeded"
    }
}

/// One billed attempt, borrowed from whatever it was decoded from: what
/// [`RowSink::append`] takes, so that decode copies no text on its way into a
/// store. The same fields as [`UsageRow`], less the ones derived from `ts_ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowRef<'a> {
    /// Unique per billed attempt.
    pub event_id: &'a str,
    /// The job the attempt served.
    pub job_id: &'a str,
    /// The job's batch, empty when none.
    pub batch_id: &'a str,
    /// Position of the attempt in the job.
    pub attempt: u32,
    /// When the attempt finished, milliseconds since the epoch (never negative).
    pub ts_ms: u64,
    /// Org path, level 1.
    pub org: &'a str,
    /// Org path, level 2.
    pub business_unit: &'a str,
    /// Org path, level 3.
    pub team: &'a str,
    /// Org path, level 4.
    pub project: &'a str,
    /// Workload name, empty when none.
    pub workload: &'a str,
    /// Strategy wire name.
    pub strategy: &'a str,
    /// Task category wire name.
    pub category: &'a str,
    /// Estimated complexity.
    pub complexity: f64,
    /// Model the routing ranked first.
    pub chosen_model: &'a str,
    /// The routing decision's reason.
    pub routing_reason: &'a str,
    /// Provider name.
    pub provider: &'a str,
    /// Catalog model name.
    pub model: &'a str,
    /// Deployment name.
    pub deployment: &'a str,
    /// Outcome wire name.
    pub outcome: &'a str,
    /// Prompt tokens at the full price.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Prompt tokens served from cache.
    pub cached_input_tokens: u64,
    /// Cost at list price, USD.
    pub cost_usd: f64,
    /// Cost on the baseline model, USD.
    pub baseline_cost_usd: f64,
    /// Wall time of the attempt.
    pub latency_ms: u64,
    /// Topic the event was read from.
    pub kafka_topic: &'a str,
    /// Partition the event was read from.
    pub kafka_partition: i32,
    /// Offset of the event in its partition.
    pub kafka_offset: i64,
    /// Prompt tokens written to the cache.
    pub cache_write_input_tokens: u64,
    /// `live` or `deferred`.
    pub mode: &'a str,
    /// The same tokens on the same model live, USD.
    pub live_cost_usd: f64,
}

impl RowRef<'_> {
    /// UTC day, days since the epoch.
    pub fn day(&self) -> u16 {
        day_of(self.ts_ms)
    }

    /// Finish time in whole seconds since the epoch (ClickHouse `DateTime`).
    pub fn ts_secs(&self) -> u32 {
        u32::try_from(self.ts_ms / 1000).unwrap_or(u32::MAX)
    }
}

impl<'a> RowRef<'a> {
    /// Borrows a flat row.
    pub fn of_row(r: &'a UsageRow) -> Self {
        Self {
            event_id: &r.event_id,
            job_id: &r.job_id,
            batch_id: &r.batch_id,
            attempt: r.attempt,
            ts_ms: r.ts_ms,
            org: &r.org,
            business_unit: &r.business_unit,
            team: &r.team,
            project: &r.project,
            workload: &r.workload,
            strategy: &r.strategy,
            category: &r.category,
            complexity: r.complexity,
            chosen_model: &r.chosen_model,
            routing_reason: &r.routing_reason,
            provider: &r.provider,
            model: &r.model,
            deployment: &r.deployment,
            outcome: &r.outcome,
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            cached_input_tokens: r.cached_input_tokens,
            cost_usd: r.cost_usd,
            baseline_cost_usd: r.baseline_cost_usd,
            latency_ms: r.latency_ms,
            kafka_topic: &r.kafka_topic,
            kafka_partition: r.kafka_partition,
            kafka_offset: r.kafka_offset,
            cache_write_input_tokens: r.cache_write_input_tokens,
            mode: &r.mode,
            live_cost_usd: r.live_cost_usd,
        }
    }

    /// Borrows a decoded event read at `partition`/`offset` of `topic`.
    pub fn of_event(e: &'a UsageEvent, topic: &'a str, partition: i32, offset: i64) -> Self {
        Self {
            event_id: &e.event_id,
            job_id: &e.job_id,
            batch_id: e.batch_id.as_deref().unwrap_or(""),
            attempt: e.attempt,
            ts_ms: e.ts.timestamp_millis().max(0) as u64,
            org: &e.org,
            business_unit: &e.business_unit,
            team: &e.team,
            project: &e.project,
            workload: &e.workload,
            strategy: e.strategy.as_str(),
            category: e.category.as_str(),
            complexity: e.complexity,
            chosen_model: &e.chosen_model,
            routing_reason: &e.routing_reason,
            provider: &e.provider,
            model: &e.model,
            deployment: &e.deployment,
            outcome: e.outcome.as_str(),
            input_tokens: e.usage.input_tokens,
            output_tokens: e.usage.output_tokens,
            cached_input_tokens: e.usage.cached_input_tokens,
            cost_usd: e.cost_usd,
            baseline_cost_usd: e.baseline_cost_usd,
            latency_ms: e.latency_ms,
            kafka_topic: topic,
            kafka_partition: partition,
            kafka_offset: offset,
            cache_write_input_tokens: e.usage.cache_write_input_tokens,
            mode: e.mode.as_str(),
            live_cost_usd: e.live_cost(),
        }
    }
}

/// A store's in-memory shape that rows are written into, one at a time, in the
/// order they were read: the Parquet store's Arrow blocks and the ClickHouse
/// store's `RowBinary` both take rows this way, so decode knows neither, and one
/// conformance suite (`sinks::conformance`) checks every store alike.
pub trait RowSink {
    /// Takes one row; `epoch` is its partition's assignment epoch when it was
    /// read (0 outside the sink), for stores that must drop rows of a partition
    /// given up since.
    fn append(&mut self, row: &RowRef<'_>, epoch: u64);
}

/// UTC day of a millisecond timestamp, days since the epoch (saturating).
pub fn day_of(ts_ms: u64) -> u16 {
    u16::try_from(ts_ms / MS_PER_DAY).unwrap_or(u16::MAX)
}

/// ClickHouse's monthly partition of a day (`toYYYYMM(day)`).
pub fn month_of(day: u16) -> u32 {
    let d = date_from_days(day);
    d.year().max(0) as u32 * 100 + d.month()
}

/// Days since the epoch as a date.
pub fn date_from_days(days: u16) -> NaiveDate {
    NaiveDate::from_num_days_from_ce_opt(UNIX_EPOCH_DAYS_FROM_CE + i32::from(days))
        .unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::TimeZone;
    use switchyard_core::analysis::TaskCategory;
    use switchyard_core::result::{AttemptOutcome, TokenUsage};
    use switchyard_core::routing::Strategy;

    use super::*;

    /// An event for tests: `n` picks the org node and the time.
    pub fn event(id: &str, org: &str, team: &str, ms: i64, cost: f64) -> UsageEvent {
        UsageEvent {
            event_id: id.to_owned(),
            job_id: format!("job-{id}"),
            batch_id: None,
            attempt: 0,
            ts: Utc.timestamp_millis_opt(ms).single().unwrap(),
            org: org.to_owned(),
            business_unit: "retail".into(),
            team: team.to_owned(),
            project: "search".into(),
            workload: String::new(),
            strategy: Strategy::CostFirst,
            category: TaskCategory::Chat,
            complexity: 0.3,
            chosen_model: "m".into(),
            routing_reason: "cheapest".into(),
            provider: "openai".into(),
            model: "gpt-5-nano".into(),
            deployment: "d".into(),
            outcome: AttemptOutcome::Succeeded,
            usage: TokenUsage {
                input_tokens: 100,
                output_tokens: 20,
                cached_input_tokens: 5,
                cache_write_input_tokens: 0,
            },
            cost_usd: cost,
            baseline_cost_usd: cost * 10.0,
            latency_ms: 12,
            mode: switchyard_core::result::RunMode::Live,
            live_cost_usd: None,
        }
    }

    #[test]
    fn a_row_keeps_the_exact_time_and_splits_the_day() {
        // 2026-11-25T23:59:59.999Z
        let ms = 1_795_651_199_999;
        let row = UsageRow::from_event(event("e", "acme", "t", ms, 1.0), "u", 3, 42);
        assert_eq!(row.ts_ms, ms as u64);
        assert_eq!(row.ts, 1_795_651_199);
        assert_eq!(row.date().to_string(), "2026-11-25");
        assert_eq!(row.month(), 202611);
        assert_eq!(row.strategy, "cost-first");
        assert_eq!(row.category, "chat");
        assert_eq!(row.outcome, "succeeded");
        assert_eq!((row.kafka_partition, row.kafka_offset), (3, 42));
        assert_eq!(row.timestamp().timestamp_millis(), ms);
    }
}
