//! Cost reports: who spent what, on which model, under which strategy, and what
//! routing saved against the flagship baseline. The same [`ReportQuery`] runs on
//! ClickHouse ([`clickhouse`]) or on a Parquet tree ([`parquet`]) and gives the
//! same rows: both count each event id once, both group on the same keys and both
//! sort in Rust. [`Report::render`] prints a table, CSV or JSON; [`html`] draws a
//! one-page chart report. [`results`] sums job results (rather than billed
//! attempts) into the figures the demo shows: latency percentiles, failovers,
//! the model mix, cost against the baseline.
//!
//! Definitions (shared by both stores and written out in docs/analytics.md):
//! *jobs* are distinct job ids with at least one billed attempt in the group;
//! *cost* is every billed attempt at its model's list price, failed attempts
//! included; *failed cost* is the part billed by attempts that did not succeed;
//! *baseline* is what the same tokens would have cost on the flagship model;
//! *savings* is baseline minus cost.

pub mod clickhouse;
pub mod html;
pub mod parquet;
pub mod results;
#[cfg(test)]
mod tests;

use std::fmt::Write as _;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};

/// A column to group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// The org (top of the tree).
    Org,
    /// The business unit, as `org/bu`.
    Bu,
    /// The team, as `org/bu/team`.
    Team,
    /// The project, as `org/bu/team/project`.
    Project,
    /// The catalog model that served the attempt.
    Model,
    /// The provider of that model.
    Provider,
    /// The routing strategy of the job.
    Strategy,
    /// The UTC day of the attempt, `YYYY-MM-DD`.
    Day,
}

impl Dimension {
    /// Every dimension, in the order `--by` lists them.
    pub const ALL: [Dimension; 8] = [
        Dimension::Org,
        Dimension::Bu,
        Dimension::Team,
        Dimension::Project,
        Dimension::Model,
        Dimension::Provider,
        Dimension::Strategy,
        Dimension::Day,
    ];

    /// The name used on the command line and as the column header.
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Org => "org",
            Dimension::Bu => "bu",
            Dimension::Team => "team",
            Dimension::Project => "project",
            Dimension::Model => "model",
            Dimension::Provider => "provider",
            Dimension::Strategy => "strategy",
            Dimension::Day => "day",
        }
    }
}

impl FromStr for Dimension {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown report dimension `{s}`; use one of org, bu, team, project, model, provider, strategy, day"
                ))
            })
    }
}

/// Output format of [`Report::render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// RFC 4180 CSV with a header row; cells that a spreadsheet would take
    /// for a formula get a leading `'` (numbers stay numbers).
    Csv,
    /// One JSON document.
    Json,
}

/// What to report on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQuery {
    /// Group by these, in this order (at least one).
    pub by: Vec<Dimension>,
    /// First instant included.
    pub since: Option<DateTime<Utc>>,
    /// First instant excluded.
    pub until: Option<DateTime<Utc>>,
}

impl ReportQuery {
    /// Checks the query; no I/O.
    pub fn validate(&self) -> Result<()> {
        if self.by.is_empty() {
            return Err(Error::Invalid(
                "a report needs at least one --by dimension".into(),
            ));
        }
        for (i, d) in self.by.iter().enumerate() {
            if self.by[..i].contains(d) {
                return Err(Error::Invalid(format!(
                    "--by {} is given twice",
                    d.as_str()
                )));
            }
        }
        if let (Some(s), Some(u)) = (self.since, self.until)
            && s >= u
        {
            return Err(Error::Invalid(format!(
                "--since {s} is not before --until {u}"
            )));
        }
        Ok(())
    }

    /// The window as milliseconds since the epoch, `[from, to)`.
    pub fn window_ms(&self) -> (i64, i64) {
        (
            self.since.map_or(0, |t| t.timestamp_millis()),
            self.until.map_or(i64::MAX, |t| t.timestamp_millis()),
        )
    }
}

/// Parses `--since`/`--until`: a day (`2026-11-01`, midnight UTC) or an RFC 3339
/// instant (`2026-11-01T09:30:00Z`).
pub fn parse_instant(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(day.and_time(NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Error::Invalid(format!(
                "`{s}` is not a time; write a day (2026-11-01) or an RFC 3339 instant (2026-11-01T09:30:00Z)"
            ))
        })
}

/// The sums of one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReportRow {
    /// The group's values, one per dimension of the query.
    pub keys: Vec<String>,
    /// Distinct jobs with a billed attempt in the group.
    pub jobs: u64,
    /// Billed attempts (a failover bills more than one per job).
    pub attempts: u64,
    /// Prompt tokens at the full input price.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Prompt tokens served from cache.
    pub cached_input_tokens: u64,
    /// Prompt tokens written to the provider's cache.
    pub cache_write_input_tokens: u64,
    /// Cost of every billed attempt, USD (deferred ones at the batch price).
    pub cost_usd: f64,
    /// Cost of the attempts that did not succeed, USD.
    pub failed_cost_usd: f64,
    /// What the same tokens would have cost on the flagship model, live, USD.
    pub baseline_cost_usd: f64,
    /// What the same tokens cost on the models that served them, live, USD
    /// (the cost itself for live attempts).
    pub live_cost_usd: f64,
}

impl ReportRow {
    /// Cost per job, USD (0 without jobs).
    pub fn avg_cost_per_job_usd(&self) -> f64 {
        if self.jobs == 0 {
            0.0
        } else {
            self.cost_usd / self.jobs as f64
        }
    }

    /// Baseline minus cost, USD.
    pub fn savings_usd(&self) -> f64 {
        self.baseline_cost_usd - self.cost_usd
    }

    /// What routing saved: the flagship's live price of the tokens minus the
    /// live price of the models that served them, USD.
    pub fn routing_savings_usd(&self) -> f64 {
        self.baseline_cost_usd - self.live_cost_usd
    }

    /// What deferral saved on top: the live price of the tokens on the models
    /// that served them minus what they cost (the batch price), USD.
    pub fn deferral_savings_usd(&self) -> f64 {
        self.live_cost_usd - self.cost_usd
    }

    /// Savings as a percentage of the baseline (0 without a baseline).
    pub fn savings_pct(&self) -> f64 {
        if self.baseline_cost_usd > 0.0 {
            100.0 * self.savings_usd() / self.baseline_cost_usd
        } else {
            0.0
        }
    }
}

/// A finished report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The query it answers.
    pub query: ReportQuery,
    /// One row per group, sorted by keys.
    pub rows: Vec<ReportRow>,
    /// Everything in the window (its `jobs` counts each job once overall).
    pub total: ReportRow,
}

/// Where a report reads from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A Parquet tree written by the sink.
    Parquet(std::path::PathBuf),
    /// A ClickHouse database migrated by the sink.
    ClickHouse(crate::sinks::clickhouse::ClickHouseConfig),
}

impl Source {
    /// Runs `query` here.
    pub async fn report(&self, query: &ReportQuery) -> Result<Report> {
        query.validate()?;
        match self {
            Source::Parquet(dir) => {
                let (dir, query) = (dir.clone(), query.clone());
                tokio::task::spawn_blocking(move || parquet::report(&dir, &query))
                    .await
                    .map_err(|e| Error::Invalid(format!("the Parquet reader stopped: {e}")))?
            }
            Source::ClickHouse(config) => clickhouse::report(config, query).await,
        }
    }

    /// A name for messages.
    pub fn describe(&self) -> String {
        match self {
            Source::Parquet(dir) => format!("Parquet files under {}", dir.display()),
            Source::ClickHouse(c) => {
                format!("ClickHouse {} (database {})", c.display_url(), c.database)
            }
        }
    }
}

const METRICS: [&str; 14] = [
    "jobs",
    "attempts",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_usd",
    "avg_cost_per_job_usd",
    "failed_cost_usd",
    "baseline_cost_usd",
    "savings_usd",
    "savings_pct",
    "routing_savings_usd",
    "deferral_savings_usd",
    "cache_write_input_tokens",
];

impl Report {
    /// Sorts rows by keys and builds the report.
    pub fn new(query: ReportQuery, mut rows: Vec<ReportRow>, total: ReportRow) -> Self {
        rows.sort_by(|a, b| a.keys.cmp(&b.keys));
        Self { query, rows, total }
    }

    /// The report as text in `format`.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Table => self.table(),
            Format::Csv => self.csv(),
            Format::Json => self.json(),
        }
    }

    fn headers(&self) -> Vec<&'static str> {
        self.query
            .by
            .iter()
            .map(|d| d.as_str())
            .chain(METRICS)
            .collect()
    }

    /// Metric cells of a row; money to the micro-dollar for machines.
    fn machine_cells(row: &ReportRow) -> [String; 14] {
        [
            row.jobs.to_string(),
            row.attempts.to_string(),
            row.input_tokens.to_string(),
            row.output_tokens.to_string(),
            row.cached_input_tokens.to_string(),
            money(row.cost_usd),
            money(row.avg_cost_per_job_usd()),
            money(row.failed_cost_usd),
            money(row.baseline_cost_usd),
            money(row.savings_usd()),
            format!("{:.2}", row.savings_pct()),
            money(row.routing_savings_usd()),
            money(row.deferral_savings_usd()),
            row.cache_write_input_tokens.to_string(),
        ]
    }

    fn csv(&self) -> String {
        let mut out = String::new();
        let line = |cells: Vec<String>| {
            cells
                .into_iter()
                .map(|c| csv_cell(&c))
                .collect::<Vec<_>>()
                .join(",")
        };
        out.push_str(&line(
            self.headers().into_iter().map(str::to_owned).collect(),
        ));
        out.push_str("\r\n");
        for row in &self.rows {
            let cells = row.keys.iter().cloned().chain(Self::machine_cells(row));
            out.push_str(&line(cells.collect()));
            out.push_str("\r\n");
        }
        out
    }

    fn json(&self) -> String {
        let row_json = |row: &ReportRow| {
            let mut o = serde_json::Map::new();
            for (d, k) in self.query.by.iter().zip(&row.keys) {
                o.insert(d.as_str().into(), k.clone().into());
            }
            for (name, cell) in METRICS.iter().zip(Self::machine_cells(row)) {
                let value = cell
                    .parse::<u64>()
                    .map(serde_json::Value::from)
                    .or_else(|_| cell.parse::<f64>().map(serde_json::Value::from))
                    .unwrap_or_else(|_| cell.into());
                o.insert((*name).into(), value);
            }
            serde_json::Value::Object(o)
        };
        let doc = serde_json::json!({
            "by": self.query.by,
            "since": self.query.since,
            "until": self.query.until,
            "rows": self.rows.iter().map(row_json).collect::<Vec<_>>(),
            "total": row_json(&self.total),
        });
        let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
        s.push('\n');
        s
    }

    fn table(&self) -> String {
        let headers = self.headers();
        let human = |row: &ReportRow| -> Vec<String> {
            vec![
                digits(row.jobs),
                digits(row.attempts),
                digits(row.input_tokens),
                digits(row.output_tokens),
                digits(row.cached_input_tokens),
                dollars(row.cost_usd),
                dollars(row.avg_cost_per_job_usd()),
                dollars(row.failed_cost_usd),
                dollars(row.baseline_cost_usd),
                dollars(row.savings_usd()),
                format!("{:.1}%", row.savings_pct()),
                dollars(row.routing_savings_usd()),
                dollars(row.deferral_savings_usd()),
                digits(row.cache_write_input_tokens),
            ]
        };
        let mut lines: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.keys.iter().cloned().chain(human(r)).collect())
            .collect();
        let mut total: Vec<String> = vec![String::new(); self.query.by.len()];
        total[0] = "TOTAL".into();
        total.extend(human(&self.total));
        let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
        for line in lines.iter().chain(std::iter::once(&total)) {
            for (w, c) in widths.iter_mut().zip(line) {
                *w = (*w).max(c.chars().count());
            }
        }
        let keys = self.query.by.len();
        let render = |out: &mut String, cells: &[String]| {
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                if i < keys {
                    let _ = write!(out, "{c:<w$}");
                } else {
                    let _ = write!(out, "{c:>w$}");
                }
            }
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
            out.push('\n');
        };
        let mut out = String::new();
        render(
            &mut out,
            &headers.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
        );
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        render(&mut out, &rule);
        for line in lines.drain(..) {
            render(&mut out, &line);
        }
        render(&mut out, &rule);
        render(&mut out, &total);
        out
    }
}

/// Money for machines: USD rounded to the micro-dollar.
fn money(v: f64) -> String {
    let s = format!("{v:.6}");
    if s == "-0.000000" {
        "0.000000".into()
    } else {
        s
    }
}

/// Money for people: `$1,234.56`, or four decimals below a dollar.
pub fn dollars(v: f64) -> String {
    let sign = if v < 0.0 { "-" } else { "" };
    let a = v.abs();
    if a < 1.0 {
        return format!("{sign}${a:.4}");
    }
    let cents = (a * 100.0).round() as u64;
    format!("{sign}${}.{:02}", digits(cents / 100), cents % 100)
}

/// An integer with thousands separators.
pub fn digits(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One CSV cell: neutralised against formula injection, then quoted as RFC
/// 4180 says when it holds a separator, a quote or a line break.
fn csv_cell(s: &str) -> String {
    let s = neutralise(s);
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.into_owned()
    }
}

/// OWASP's rule against CSV injection: a cell starting with `=`, `+`, `-`,
/// `@`, a tab or a carriage return is read as a formula by spreadsheets, so it
/// gets a leading `'`. Org, team, project and model names come from whoever
/// writes jobs and the org file. A plain decimal number (an optional minus,
/// digits, an optional fraction) stays as it is: a negative saving is a
/// number, and no formula is only digits.
fn neutralise(s: &str) -> std::borrow::Cow<'_, str> {
    let risky = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if risky && !is_plain_number(s) {
        std::borrow::Cow::Owned(format!("'{s}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

/// `-?digits(.digits)?`.
fn is_plain_number(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, "0"));
    !whole.is_empty()
        && !fraction.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}
