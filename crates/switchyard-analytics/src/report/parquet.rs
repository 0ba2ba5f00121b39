//! Reports from a Parquet tree: the files of the window's days are read column by
//! column, each event id is counted once (a file left by a crashed roll and
//! rewritten after the restart holds the same events), and the rows are summed
//! per group. Memory holds the groups, one 16-byte hash per event id and one per
//! (group, job) pair, never the rows.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::Path;

use arrow::array::{
    Array, Float64Array, RecordBatch, StringArray, TimestampMillisecondArray, UInt64Array,
};
use chrono::{DateTime, Utc};

use super::{Dimension, Report, ReportQuery, ReportRow};
use crate::error::{Error, Result};
use crate::sinks::parquet::reader;

const COLUMNS: [&str; 18] = [
    "event_id",
    "job_id",
    "ts",
    "org",
    "business_unit",
    "team",
    "project",
    "model",
    "provider",
    "strategy",
    "outcome",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_usd",
    "baseline_cost_usd",
    // Absent from files written before deferred routing: 0 and cost_usd then.
    "cache_write_input_tokens",
    "live_cost_usd",
];

#[derive(Default)]
struct Group {
    row: ReportRow,
    jobs: HashSet<u128>,
}

impl Group {
    fn add(&mut self, job: u128, r: &Fields<'_>, i: usize) {
        self.jobs.insert(job);
        let row = &mut self.row;
        row.attempts += 1;
        row.input_tokens += r.input.value(i);
        row.output_tokens += r.output.value(i);
        row.cached_input_tokens += r.cached.value(i);
        row.cache_write_input_tokens += r.cache_write.map_or(0, |c| c.value(i));
        let cost = r.cost.value(i);
        row.cost_usd += cost;
        row.live_cost_usd += r.live.map_or(cost, |c| c.value(i));
        if r.outcome.value(i) != "succeeded" {
            row.failed_cost_usd += cost;
        }
        row.baseline_cost_usd += r.baseline.value(i);
    }

    fn finish(mut self, keys: Vec<String>) -> ReportRow {
        self.row.keys = keys;
        self.row.jobs = self.jobs.len() as u64;
        self.row
    }
}

/// The typed columns of one record batch.
struct Fields<'a> {
    event_id: &'a StringArray,
    job_id: &'a StringArray,
    ts: &'a TimestampMillisecondArray,
    org: &'a StringArray,
    bu: &'a StringArray,
    team: &'a StringArray,
    project: &'a StringArray,
    model: &'a StringArray,
    provider: &'a StringArray,
    strategy: &'a StringArray,
    outcome: &'a StringArray,
    input: &'a UInt64Array,
    output: &'a UInt64Array,
    cached: &'a UInt64Array,
    cost: &'a Float64Array,
    baseline: &'a Float64Array,
    cache_write: Option<&'a UInt64Array>,
    live: Option<&'a Float64Array>,
}

impl<'a> Fields<'a> {
    fn of(batch: &'a RecordBatch) -> std::result::Result<Self, String> {
        fn col<'b, T: 'static>(
            batch: &'b RecordBatch,
            name: &str,
        ) -> std::result::Result<&'b T, String> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<T>())
                .ok_or_else(|| format!("column `{name}` is missing or of another type"))
        }
        Ok(Self {
            event_id: col(batch, "event_id")?,
            job_id: col(batch, "job_id")?,
            ts: col(batch, "ts")?,
            org: col(batch, "org")?,
            bu: col(batch, "business_unit")?,
            team: col(batch, "team")?,
            project: col(batch, "project")?,
            model: col(batch, "model")?,
            provider: col(batch, "provider")?,
            strategy: col(batch, "strategy")?,
            outcome: col(batch, "outcome")?,
            input: col(batch, "input_tokens")?,
            output: col(batch, "output_tokens")?,
            cached: col(batch, "cached_input_tokens")?,
            cost: col(batch, "cost_usd")?,
            baseline: col(batch, "baseline_cost_usd")?,
            cache_write: col(batch, "cache_write_input_tokens").ok(),
            live: col(batch, "live_cost_usd").ok(),
        })
    }

    fn key(&self, d: Dimension, i: usize) -> String {
        match d {
            Dimension::Org => self.org.value(i).to_owned(),
            Dimension::Bu => format!("{}/{}", self.org.value(i), self.bu.value(i)),
            Dimension::Team => format!(
                "{}/{}/{}",
                self.org.value(i),
                self.bu.value(i),
                self.team.value(i)
            ),
            Dimension::Project => format!(
                "{}/{}/{}/{}",
                self.org.value(i),
                self.bu.value(i),
                self.team.value(i),
                self.project.value(i)
            ),
            Dimension::Model => self.model.value(i).to_owned(),
            Dimension::Provider => self.provider.value(i).to_owned(),
            Dimension::Strategy => self.strategy.value(i).to_owned(),
            Dimension::Day => DateTime::<Utc>::from_timestamp_millis(self.ts.value(i))
                .unwrap_or_default()
                .format("%Y-%m-%d")
                .to_string(),
        }
    }
}

/// A 128-bit hash of an id (two independently keyed 64-bit hashes): ids are
/// remembered in 16 bytes each, with no practical chance of two colliding.
struct IdHasher([std::hash::RandomState; 2]);

impl IdHasher {
    fn new() -> Self {
        Self([std::hash::RandomState::new(), std::hash::RandomState::new()])
    }

    fn hash(&self, id: &str) -> u128 {
        let one = |s: &std::hash::RandomState| {
            let mut h = s.build_hasher();
            h.write(id.as_bytes());
            h.finish()
        };
        (u128::from(one(&self.0[0])) << 64) | u128::from(one(&self.0[1]))
    }
}

/// Runs `query` over the Parquet tree at `dir`.
pub fn report(dir: &Path, query: &ReportQuery) -> Result<Report> {
    query.validate()?;
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "{} is not a directory; give the analytics.parquet_dir the sink writes to",
            dir.display()
        )));
    }
    let (from_ms, to_ms) = query.window_ms();
    let first_day = query.since.map(|t| t.date_naive());
    let last_day = query
        .until
        .map(|t| (t - chrono::Duration::milliseconds(1)).date_naive());
    let hasher = IdHasher::new();
    let mut seen: HashSet<u128> = HashSet::new();
    let mut groups: HashMap<Vec<String>, Group> = HashMap::new();
    let mut total = Group::default();
    for file in reader::files(dir, first_day, last_day)? {
        reader::for_each_batch(&file, &COLUMNS, |batch| {
            let f = Fields::of(batch).map_err(|m| Error::parquet(&file, m))?;
            for i in 0..batch.num_rows() {
                let ts = f.ts.value(i);
                if ts < from_ms || ts >= to_ms || !seen.insert(hasher.hash(f.event_id.value(i))) {
                    continue;
                }
                let job = hasher.hash(f.job_id.value(i));
                let keys: Vec<String> = query.by.iter().map(|d| f.key(*d, i)).collect();
                groups.entry(keys).or_default().add(job, &f, i);
                total.add(job, &f, i);
            }
            Ok(())
        })?;
    }
    let rows = groups.into_iter().map(|(k, g)| g.finish(k)).collect();
    Ok(Report::new(query.clone(), rows, total.finish(Vec::new())))
}
