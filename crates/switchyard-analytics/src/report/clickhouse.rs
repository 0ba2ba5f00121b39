//! Reports from ClickHouse: one `GROUP BY` over `usage_events FINAL` (copies of
//! an event id collapse, as in the Parquet reader) for the groups and one for the
//! total. The SQL sticks to what ClickHouse 18.16 and current releases both
//! accept.

use serde::Deserialize;

use super::{Dimension, Report, ReportQuery, ReportRow};
use crate::error::Result;
use crate::sinks::clickhouse::ClickHouseConfig;
use crate::sinks::clickhouse::migrate::timed;

/// The SQL expression of a dimension's key (the same text as the Parquet side).
pub fn key_sql(d: Dimension) -> &'static str {
    match d {
        Dimension::Org => "org",
        Dimension::Bu => "concat(org, '/', business_unit)",
        Dimension::Team => "concat(org, '/', business_unit, '/', team)",
        Dimension::Project => "concat(org, '/', business_unit, '/', team, '/', project)",
        Dimension::Model => "model",
        Dimension::Provider => "provider",
        Dimension::Strategy => "strategy",
        Dimension::Day => "toString(day)",
    }
}

/// The sums, in [`GroupRow`]'s order. Aliases differ from the column names:
/// ClickHouse resolves an alias inside the next expression, so `sum(cost_usd) AS
/// cost_usd` would turn the failed-cost sum into a sum of a sum.
const SUMS: &str = "uniqExact(job_id) AS n_jobs, count() AS n_attempts, \
    sum(input_tokens) AS s_input, sum(output_tokens) AS s_output, \
    sum(cached_input_tokens) AS s_cached, sum(cost_usd) AS s_cost, \
    sum(if(outcome != 'succeeded', cost_usd, 0.)) AS s_failed_cost, \
    sum(baseline_cost_usd) AS s_baseline, sum(cache_write_input_tokens) AS s_cache_write, \
    sum(live_cost_usd) AS s_live";

/// The group query for `query` (its window bound as the two `?` parameters).
pub fn group_sql(query: &ReportQuery) -> String {
    let keys: Vec<&str> = query.by.iter().map(|d| key_sql(*d)).collect();
    format!(
        "SELECT [{keys}] AS keys, {SUMS} FROM usage_events FINAL \
         WHERE ts_ms >= ? AND ts_ms < ? GROUP BY {group}",
        keys = keys.join(", "),
        group = keys.join(", "),
    )
}

/// The total query (window bound as the two `?` parameters).
pub fn total_sql() -> String {
    format!(
        "SELECT emptyArrayString() AS keys, {SUMS} FROM usage_events FINAL \
         WHERE ts_ms >= ? AND ts_ms < ?"
    )
}

/// A group: its keys, then the sums (RowBinary has no names, so the fields
/// follow the SELECT list).
#[derive(Debug, Deserialize, clickhouse::Row)]
struct GroupRow {
    keys: Vec<String>,
    jobs: u64,
    attempts: u64,
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    cost_usd: f64,
    failed_cost_usd: f64,
    baseline_cost_usd: f64,
    cache_write_input_tokens: u64,
    live_cost_usd: f64,
}

impl From<GroupRow> for ReportRow {
    fn from(g: GroupRow) -> Self {
        ReportRow {
            keys: g.keys,
            jobs: g.jobs,
            attempts: g.attempts,
            input_tokens: g.input_tokens,
            output_tokens: g.output_tokens,
            cached_input_tokens: g.cached_input_tokens,
            cost_usd: g.cost_usd,
            failed_cost_usd: g.failed_cost_usd,
            baseline_cost_usd: g.baseline_cost_usd,
            cache_write_input_tokens: g.cache_write_input_tokens,
            live_cost_usd: g.live_cost_usd,
        }
    }
}

/// Runs `query` against the ClickHouse database of `config`.
pub async fn report(config: &ClickHouseConfig, query: &ReportQuery) -> Result<Report> {
    query.validate()?;
    let (from_ms, to_ms) = query.window_ms();
    let (from_ms, to_ms) = (from_ms.max(0) as u64, to_ms.max(0) as u64);
    let client = config.client();
    let groups: Vec<GroupRow> = timed(
        config,
        "running the report",
        client
            .query(&group_sql(query))
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all::<GroupRow>(),
    )
    .await?;
    let total: Option<GroupRow> = timed(
        config,
        "running the report total",
        client
            .query(&total_sql())
            .bind(from_ms)
            .bind(to_ms)
            .fetch_optional::<GroupRow>(),
    )
    .await?;
    let rows = groups.into_iter().map(ReportRow::from).collect();
    let total = total
        .filter(|t| t.attempts > 0)
        .map_or_else(ReportRow::default, ReportRow::from);
    Ok(Report::new(query.clone(), rows, total))
}
