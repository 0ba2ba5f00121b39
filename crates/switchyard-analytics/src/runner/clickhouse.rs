//! The sink's ClickHouse task: takes the writer's batches in order, merges what
//! queued up behind while it was busy (or while ClickHouse was down), and
//! inserts them, retrying with backoff until they are in or the sink stops.
//! Rows are checked against the partitions the sink still owns, at their epoch,
//! under the lock a revocation takes.

use std::collections::HashMap;
use std::sync::{Arc, mpsc};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::metrics::SinkMetrics;
use crate::progress::Cut;
use crate::sinks::clickhouse::{ClickHouseConfig, ClickHouseRows, ClickHouseSink};
use switchyard_core::backoff::Backoff;

/// Partitions the sink owns and their epoch; an insert holds the lock.
pub(super) type Owned = Arc<tokio::sync::Mutex<HashMap<i32, u64>>>;

/// Rows merged into one insert while catching up, at most.
const MERGE_ROWS: usize = 200_000;

/// Rows for ClickHouse and the cut they complete.
pub(super) struct Batch {
    pub(super) rows: ClickHouseRows,
    pub(super) cut: Cut,
    /// The epoch of each partition of `cut` when it was handed over.
    pub(super) epochs: HashMap<i32, u64>,
    /// Partitions were assigned at this time: re-learn what ClickHouse holds.
    pub(super) relearn: Option<Instant>,
}

/// ClickHouse holds everything below `cut` (for the epochs given).
pub(super) struct Done {
    pub(super) cut: Cut,
    pub(super) epochs: HashMap<i32, u64>,
    pub(super) rows: usize,
    pub(super) inserted: u64,
    pub(super) skipped: u64,
}

/// What the task needs.
pub(super) struct Task {
    pub(super) config: ClickHouseConfig,
    pub(super) topic: String,
    pub(super) owned: Owned,
    pub(super) backoff: Backoff,
    pub(super) stop: CancellationToken,
    /// Says whether ClickHouse takes rows, for `/readyz`.
    pub(super) metrics: Arc<SinkMetrics>,
}

/// Runs until the writer drops its sender (after writing out what it got) or
/// `stop` is cancelled.
pub(super) async fn run(
    mut task: Task,
    mut batches: tokio::sync::mpsc::UnboundedReceiver<Batch>,
    done: mpsc::Sender<Done>,
) {
    let mut sink = loop {
        match ClickHouseSink::connect(task.config.clone(), &task.topic).await {
            Ok(s) => break s.with_ownership(task.owned.clone()),
            Err(e) => {
                let delay = task.backoff.next_delay();
                task.metrics
                    .clickhouse_failing(format!("cannot connect: {e}"));
                warn!(error = %e, retry_in = ?delay, "ClickHouse is not ready; Parquet goes on and rows wait.");
                tokio::select! {
                    _ = task.stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    };
    task.backoff.reset();
    task.metrics.clickhouse_writable();
    while let Some(mut batch) = batches.recv().await {
        while batch.rows.len() < MERGE_ROWS {
            match batches.try_recv() {
                Ok(next) => {
                    batch.rows.extend(next.rows);
                    batch.cut = next.cut;
                    batch.epochs.extend(next.epochs);
                    batch.relearn = next.relearn.or(batch.relearn);
                }
                Err(_) => break,
            }
        }
        if let Some(since) = batch.relearn.take() {
            sink.forget_partitions(since);
        }
        loop {
            match sink.write(&batch.rows).await {
                Ok(outcome) => {
                    task.backoff.reset();
                    task.metrics.clickhouse_writable();
                    let _ = done.send(Done {
                        cut: std::mem::take(&mut batch.cut),
                        epochs: std::mem::take(&mut batch.epochs),
                        rows: batch.rows.len(),
                        inserted: outcome.inserted,
                        skipped: outcome.skipped,
                    });
                    break;
                }
                Err(e) => {
                    let delay = task.backoff.next_delay();
                    task.metrics
                        .clickhouse_failing(format!("an insert failed: {e}"));
                    warn!(rows = batch.rows.len(), error = %e, retry_in = ?delay, "ClickHouse insert failed; holding the rows and retrying.");
                    tokio::select! {
                        _ = task.stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}
