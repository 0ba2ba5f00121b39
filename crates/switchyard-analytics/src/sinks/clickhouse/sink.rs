//! [`ClickHouseSink`]: inserts batches of rows so that no Kafka offset is ever
//! inserted twice. It knows, per partition, the highest offset ClickHouse holds
//! (asked at start and again after any failed request); rows above it are new
//! and go straight in. Rows at or below it are looked up by offset and only the
//! missing ones are inserted. After a failed insert the sink first waits until
//! the server no longer runs it (by its query id), so an insert that in fact
//! went through is seen as present rather than repeated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use clickhouse::Client;
use tracing::{debug, info, warn};

use super::ClickHouseConfig;
use super::migrate::{migrate, timed};
use crate::error::Result;
use crate::row::{UsageRow, date_from_days};

/// Rows per INSERT, below ClickHouse's block size so that one INSERT is one
/// block (and therefore atomic) on every version.
const MAX_INSERT_ROWS: usize = 500_000;

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
}

impl ClickHouseSink {
    /// Connects, applies the migrations, and prepares to write rows read from `topic`.
    pub async fn connect(config: ClickHouseConfig, topic: &str) -> Result<Self> {
        config.validate()?;
        let applied = migrate(&config).await?;
        info!(url = %config.url, database = %config.database, applied = ?applied, "ClickHouse store ready.");
        Ok(Self {
            client: config.client(),
            config,
            topic: topic.to_owned(),
            known_max: HashMap::new(),
            unsettled: None,
        })
    }

    /// The database client (for reports and tests).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The settings.
    pub fn config(&self) -> &ClickHouseConfig {
        &self.config
    }

    /// Forgets what it knew of the partitions (after a rebalance).
    pub fn forget_partitions(&mut self) {
        self.known_max.clear();
    }

    /// Inserts the rows ClickHouse does not have yet. On error nothing is lost:
    /// call again with the same rows (after a pause) and only what is still
    /// missing goes in.
    pub async fn write(&mut self, rows: &[UsageRow]) -> Result<WriteOutcome> {
        if rows.is_empty() {
            return Ok(WriteOutcome::default());
        }
        self.settle().await?;
        let partitions: Vec<i32> = {
            let set: HashSet<i32> = rows.iter().map(|r| r.kafka_partition).collect();
            set.into_iter().collect()
        };
        if partitions.iter().any(|p| !self.known_max.contains_key(p)) {
            self.learn_max(&partitions).await?;
        }
        let mut present: HashMap<i32, HashSet<i64>> = HashMap::new();
        // A re-delivered row keeps its day, so the lookup reads only those days'
        // monthly partitions, not the whole table.
        let first_day = rows.iter().map(|r| r.day).min().unwrap_or_default();
        let last_day = rows.iter().map(|r| r.day).max().unwrap_or_default();
        let days = (
            date_from_days(first_day).to_string(),
            date_from_days(last_day).to_string(),
        );
        for (p, lo, hi) in ranges_to_check(rows, &self.known_max) {
            present.insert(p, self.present(p, lo, hi, &days).await?);
        }
        let fresh: Vec<&UsageRow> = rows
            .iter()
            .filter(|r| {
                !present
                    .get(&r.kafka_partition)
                    .is_some_and(|s| s.contains(&r.kafka_offset))
            })
            .collect();
        let skipped = (rows.len() - fresh.len()) as u64;
        if skipped > 0 {
            info!(skipped, "Rows ClickHouse already had were left out.");
        }
        let mut by_month: BTreeMap<u32, Vec<&UsageRow>> = BTreeMap::new();
        for r in fresh {
            by_month.entry(r.month()).or_default().push(r);
        }
        let mut inserted = 0;
        for rows in by_month.values() {
            for chunk in rows.chunks(MAX_INSERT_ROWS) {
                self.insert(chunk).await?;
                inserted += chunk.len() as u64;
            }
        }
        Ok(WriteOutcome { inserted, skipped })
    }

    async fn insert(&mut self, rows: &[&UsageRow]) -> Result<()> {
        let query_id = format!("switchyard-sink-{}", uuid::Uuid::new_v4());
        self.unsettled = Some(query_id.clone());
        let result = timed(&self.config, "inserting usage rows", async {
            let mut insert = self
                .client
                .insert::<UsageRow>("usage_events")
                .await?
                .with_setting("query_id", &query_id)
                .with_timeouts(Some(self.config.timeout), Some(self.config.timeout));
            for r in rows {
                insert.write(*r).await?;
            }
            insert.end().await
        })
        .await;
        match result {
            Ok(()) => {
                self.unsettled = None;
                for r in rows {
                    let m = self.known_max.entry(r.kafka_partition).or_insert(-1);
                    *m = (*m).max(r.kafka_offset);
                }
                debug!(rows = rows.len(), "Inserted usage rows.");
                Ok(())
            }
            Err(e) => {
                // Whether it went in is unknown until the server is asked.
                self.known_max.clear();
                Err(e)
            }
        }
    }

    /// Waits until an insert whose outcome is unknown is no longer running.
    async fn settle(&mut self) -> Result<()> {
        let Some(query_id) = self.unsettled.clone() else {
            return Ok(());
        };
        loop {
            let running: u64 = timed(
                &self.config,
                "checking an interrupted insert",
                self.client
                    .query("SELECT count() FROM system.processes WHERE query_id = ?")
                    .bind(&query_id)
                    .fetch_one::<u64>(),
            )
            .await?;
            if running == 0 {
                self.unsettled = None;
                return Ok(());
            }
            warn!(query_id = %query_id, "An interrupted insert is still running; waiting for it to end.");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn learn_max(&mut self, partitions: &[i32]) -> Result<()> {
        let maxima: Vec<(i32, i64)> = timed(
            &self.config,
            "reading the highest offsets",
            self.client
                .query(
                    "SELECT kafka_partition, max(kafka_offset) FROM usage_events \
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
pub fn ranges_to_check(rows: &[UsageRow], known_max: &HashMap<i32, i64>) -> Vec<(i32, i64, i64)> {
    let mut spans: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for r in rows {
        let s = spans
            .entry(r.kafka_partition)
            .or_insert((r.kafka_offset, r.kafka_offset));
        s.0 = s.0.min(r.kafka_offset);
        s.1 = s.1.max(r.kafka_offset);
    }
    spans
        .into_iter()
        .filter_map(|(p, (lo, hi))| {
            let max = known_max.get(&p).copied().unwrap_or(i64::MAX);
            (lo <= max).then_some((p, lo, hi.min(max)))
        })
        .collect()
}
