//! [`ClickHouseSink`]: inserts batches of rows so that no Kafka offset is ever
//! inserted twice. It knows, per partition, the highest offset ClickHouse holds
//! (asked at start and again after any failed request); rows above it are new
//! and go straight in. Rows at or below it are looked up by offset and only the
//! missing ones are inserted. After a failed insert the sink first waits until
//! the server no longer runs it (by its query id), so an insert that in fact
//! went through is seen as present rather than repeated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use clickhouse::Client;
use tracing::{debug, info, warn};

use super::config::ClickHouseConfig;
use super::migrate::{migrate, timed};
use super::rows::{CLICKHOUSE_COLUMNS, ClickHouseRows, RowPosition};
use crate::error::Result;
use crate::row::{date_from_days, month_of};

/// Rows per INSERT, below ClickHouse's block size so that one INSERT is one
/// block (and therefore atomic) on every version.
const MAX_INSERT_ROWS: usize = 500_000;

/// Every sink's INSERT carries a query id with this prefix.
const QUERY_ID_PREFIX: &str = "switchyard-sink-";

/// What one write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Rows inserted.
    pub inserted: u64,
    /// Rows left out because ClickHouse already had their offset.
    pub skipped: u64,
}

/// Writes usage rows into `usage_events` (and through the views, the rollups).
pub struct ClickHouseSink {
    config: ClickHouseConfig,
    client: Client,
    topic: String,
    /// Highest offset present per partition (-1: none); absent: unknown.
    known_max: HashMap<i32, i64>,
    /// Query id of an insert whose outcome is unknown.
    unsettled: Option<String>,
    /// After such an insert, every row of the next write is looked up.
    verify_all: bool,
    /// Set by a rebalance: inserts begun before it must end before learning.
    fence: Option<std::time::Instant>,
    /// Partitions this sink owns and their epoch (none: every row is written).
    owned: Option<Arc<tokio::sync::Mutex<HashMap<i32, u64>>>>,
    /// The query id prefix of this database's inserts (see [`query_id_prefix`]).
    query_id_prefix: String,
}

impl ClickHouseSink {
    /// Connects, applies the migrations, and prepares to write rows read from `topic`.
    pub async fn connect(config: ClickHouseConfig, topic: &str) -> Result<Self> {
        config.validate()?;
        let applied = migrate(&config).await?;
        info!(url = %config.display_url(), database = %config.database, applied = ?applied, "ClickHouse store ready.");
        Ok(Self {
            client: config.client(),
            topic: topic.to_owned(),
            known_max: HashMap::new(),
            unsettled: None,
            verify_all: false,
            fence: None,
            owned: None,
            query_id_prefix: query_id_prefix(&config.database),
            config,
        })
    }

    /// Writes only rows of partitions in `owned` at the epoch they were read
    /// in; each INSERT holds the lock, so whoever takes it waits for the insert.
    pub fn with_ownership(mut self, owned: Arc<tokio::sync::Mutex<HashMap<i32, u64>>>) -> Self {
        self.owned = Some(owned);
        self
    }

    /// The database client (for reports and tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The settings.
    pub fn config(&self) -> &ClickHouseConfig {
        &self.config
    }

    /// Forgets what it knew of the partitions: after a rebalance, other sinks
    /// may have written them. Before it learns again, the sink waits until no
    /// insert that started before `since` (another sink's, into partitions it
    /// then owned) is still running, so that what it learns includes them.
    pub fn forget_partitions(&mut self, since: std::time::Instant) {
        self.known_max.clear();
        self.fence = Some(since);
    }

    /// Inserts the rows ClickHouse does not have yet. On error nothing is lost:
    /// call again with the same rows (after a pause) and only what is still
    /// missing goes in.
    pub async fn write(&mut self, rows: &ClickHouseRows) -> Result<WriteOutcome> {
        if rows.is_empty() {
            return Ok(WriteOutcome::default());
        }
        self.settle().await?;
        self.wait_for_older_inserts().await?;
        let positions = rows.positions();
        let partitions: Vec<i32> = {
            let set: HashSet<i32> = positions.iter().map(|r| r.partition).collect();
            set.into_iter().collect()
        };
        if self.verify_all || partitions.iter().any(|p| !self.known_max.contains_key(p)) {
            self.learn_max(&partitions).await?;
        }
        // After an insert whose outcome was unknown, the highest offsets read
        // from `usage_offsets` may miss part of it: every row of this batch is
        // looked up in `usage_events`, and the known highest offset becomes the
        // larger of the two.
        let check_all = std::mem::take(&mut self.verify_all);
        let unknown = HashMap::new();
        let limits = if check_all { &unknown } else { &self.known_max };
        let ranges = ranges_to_check(positions, limits);
        let mut present: HashMap<i32, HashSet<i64>> = HashMap::new();
        // A re-delivered row keeps its day, so the lookup reads only those days'
        // monthly partitions, not the whole table.
        let first_day = positions.iter().map(|r| r.day).min().unwrap_or_default();
        let last_day = positions.iter().map(|r| r.day).max().unwrap_or_default();
        let days = (
            date_from_days(first_day).to_string(),
            date_from_days(last_day).to_string(),
        );
        for (p, lo, hi) in ranges {
            present.insert(p, self.present(p, lo, hi, &days).await?);
        }
        if check_all {
            for (p, offsets) in &present {
                if let Some(found) = offsets.iter().max() {
                    let m = self.known_max.entry(*p).or_insert(-1);
                    *m = (*m).max(*found);
                }
            }
        }
        let is_present = |r: &RowPosition| {
            present
                .get(&r.partition)
                .is_some_and(|s| s.contains(&r.offset))
        };
        let skipped = positions.iter().filter(|r| is_present(r)).count() as u64;
        if skipped > 0 {
            info!(skipped, "Rows ClickHouse already had were left out.");
        }
        // One INSERT per month: an INSERT that spans partitions is not atomic.
        let row_months: Vec<u32> = positions.iter().map(|r| month_of(r.day)).collect();
        let mut months = row_months.clone();
        months.sort_unstable();
        months.dedup();
        let mut inserted = 0;
        for &month in &months {
            let fresh = if skipped == 0 && months.len() == 1 {
                None
            } else {
                Some(rows.select(|i, r| row_months[i] == month && !is_present(r)))
            };
            let fresh = fresh.as_ref().unwrap_or(rows);
            if fresh.len() <= MAX_INSERT_ROWS {
                inserted += self.insert(fresh).await?;
            } else {
                for part in fresh.split(MAX_INSERT_ROWS) {
                    inserted += self.insert(&part).await?;
                }
            }
        }
        Ok(WriteOutcome { inserted, skipped })
    }

    /// Inserts `rows` (those of partitions still owned, at their epoch) in one
    /// INSERT; the ownership lock is held until the INSERT has ended.
    async fn insert(&mut self, rows: &ClickHouseRows) -> Result<u64> {
        let owned = self.owned.clone();
        let guard = match &owned {
            Some(o) => Some(o.lock().await),
            None => None,
        };
        let filtered;
        let rows = match &guard {
            Some(g)
                if rows
                    .positions()
                    .iter()
                    .any(|r| g.get(&r.partition) != Some(&r.epoch)) =>
            {
                filtered = rows.select(|_, r| g.get(&r.partition) == Some(&r.epoch));
                &filtered
            }
            _ => rows,
        };
        if rows.is_empty() {
            return Ok(0);
        }
        let query_id = format!("{}{}", self.query_id_prefix, uuid::Uuid::new_v4());
        self.unsettled = Some(query_id.clone());
        let sql = format!("INSERT INTO usage_events ({CLICKHOUSE_COLUMNS}) FORMAT RowBinary");
        let body = bytes::Bytes::copy_from_slice(rows.bytes());
        let result = timed(&self.config, "inserting usage rows", async {
            let mut insert = self
                .client
                .insert_formatted_with(sql)
                .with_setting("query_id", &query_id)
                .with_timeouts(Some(self.config.timeout), Some(self.config.timeout));
            insert.send(body).await?;
            insert.end().await
        })
        .await;
        match result {
            Ok(()) => {
                self.unsettled = None;
                for r in rows.positions() {
                    let m = self.known_max.entry(r.partition).or_insert(-1);
                    *m = (*m).max(r.offset);
                }
                debug!(rows = rows.len(), "Inserted usage rows.");
                Ok(rows.len() as u64)
            }
            Err(e) => {
                // Whether it went in is unknown until the server is asked.
                self.known_max.clear();
                self.verify_all = true;
                Err(e)
            }
        }
    }

    /// After a rebalance: waits until inserts into this database that started
    /// before it are done.
    async fn wait_for_older_inserts(&mut self) -> Result<()> {
        let Some(since) = self.fence else {
            return Ok(());
        };
        let prefix = &self.query_id_prefix;
        self.wait_out(
            || {
                format!(
                    "startsWith(query_id, '{prefix}') AND elapsed >= {:.3}",
                    since.elapsed().as_secs_f64()
                )
            },
            "Inserts begun before the rebalance are still running; waiting for them before learning what ClickHouse holds.",
        )
        .await?;
        self.fence = None;
        Ok(())
    }

    /// Waits until an insert whose outcome is unknown is no longer running.
    async fn settle(&mut self) -> Result<()> {
        let Some(query_id) = self.unsettled.clone() else {
            return Ok(());
        };
        self.wait_out(
            || format!("query_id = '{query_id}'"),
            "An interrupted insert is still running; waiting for it to end.",
        )
        .await?;
        self.unsettled = None;
        Ok(())
    }

    /// Waits until no query matching `filter` (a condition on
    /// `system.processes`, remade each round) runs. One still running after the
    /// request timeout is killed: its client gave up on it, so it can only be
    /// waiting for a body that will never come (one INSERT is one block: killed,
    /// it leaves all of its rows or none). Then it is waited for as before.
    async fn wait_out(&self, filter: impl Fn() -> String, waiting: &str) -> Result<()> {
        let started = std::time::Instant::now();
        let mut killed = false;
        let mut said = false;
        loop {
            let condition = filter();
            let running: u64 = timed(
                &self.config,
                "checking running inserts",
                self.client
                    .query(&format!(
                        "SELECT count() FROM system.processes WHERE {condition}"
                    ))
                    .fetch_one::<u64>(),
            )
            .await?;
            if running == 0 {
                return Ok(());
            }
            if !said {
                warn!(inserts = running, "{waiting}");
                said = true;
            }
            if !killed && started.elapsed() >= self.config.timeout {
                warn!(inserts = running, condition = %condition, "Inserts still running after the request timeout; their clients are gone: stopping them.");
                timed(
                    &self.config,
                    "stopping abandoned inserts",
                    self.client
                        .query(&format!("KILL QUERY WHERE {condition} ASYNC"))
                        .execute(),
                )
                .await?;
                killed = true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn learn_max(&mut self, partitions: &[i32]) -> Result<()> {
        let maxima: Vec<(i32, i64)> = timed(
            &self.config,
            "reading the highest offsets",
            self.client
                .query(
                    "SELECT kafka_partition, max(max_offset) FROM usage_offsets \
                     WHERE kafka_topic = ? GROUP BY kafka_partition",
                )
                .bind(&self.topic)
                .fetch_all::<(i32, i64)>(),
        )
        .await?;
        for (p, m) in maxima {
            self.known_max.insert(p, m);
        }
        for p in partitions {
            self.known_max.entry(*p).or_insert(-1);
        }
        debug!(known = ?self.known_max, "Learned the highest offsets in ClickHouse.");
        Ok(())
    }

    async fn present(
        &self,
        partition: i32,
        lo: i64,
        hi: i64,
        days: &(String, String),
    ) -> Result<HashSet<i64>> {
        let offsets: Vec<i64> = timed(
            &self.config,
            "looking up offsets already inserted",
            self.client
                .query(
                    "SELECT kafka_offset FROM usage_events WHERE day >= toDate(?) \
                     AND day <= toDate(?) AND kafka_topic = ? \
                     AND kafka_partition = ? AND kafka_offset >= ? AND kafka_offset <= ?",
                )
                .bind(&days.0)
                .bind(&days.1)
                .bind(&self.topic)
                .bind(partition)
                .bind(lo)
                .bind(hi)
                .fetch_all::<i64>(),
        )
        .await?;
        Ok(offsets.into_iter().collect())
    }
}

/// Per partition, the offset range of `rows` that ClickHouse may already hold:
/// from the batch's lowest offset up to the highest one present (inclusive).
/// Partitions whose rows are all above what is present need no lookup.
pub fn ranges_to_check(
    rows: &[RowPosition],
    known_max: &HashMap<i32, i64>,
) -> Vec<(i32, i64, i64)> {
    let mut spans: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for r in rows {
        let s = spans.entry(r.partition).or_insert((r.offset, r.offset));
        s.0 = s.0.min(r.offset);
        s.1 = s.1.max(r.offset);
    }
    spans
        .into_iter()
        .filter_map(|(p, (lo, hi))| {
            let max = known_max.get(&p).copied().unwrap_or(i64::MAX);
            (lo <= max).then_some((p, lo, hi.min(max)))
        })
        .collect()
}

/// The query id prefix of inserts into `database`: waits for other sinks'
/// inserts look only at those into the same database.
fn query_id_prefix(database: &str) -> String {
    let db: String = database
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{QUERY_ID_PREFIX}{db}-")
}
