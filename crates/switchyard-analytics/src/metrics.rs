//! The sink's counters and state: rows each store took, events consumed and
//! skipped, dead letters, alert webhook deliveries, the lag of its partitions of the usage topic, and whether each
//! store takes writes. The sink changes them through the methods named after
//! what happened; `switchyard sink`'s telemetry endpoint reads them through
//! [`register`], which writes the families `docs/metrics.md` documents and the
//! readiness checks of `/readyz` (both stores writable).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use parking_lot::Mutex;
use switchyard_telemetry::{Family, Telemetry};

/// The stores, as the `store` label writes them.
const PARQUET: &str = "parquet";
const CLICKHOUSE: &str = "clickhouse";

/// What the sink knows of ClickHouse's ability to take rows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ClickHouseState {
    /// No `analytics.clickhouse_url`: the sink writes Parquet only.
    NotConfigured,
    /// Not connected yet (the sink has not started, or is connecting).
    Connecting,
    /// Connected, and the last insert (if any) succeeded.
    Writable,
    /// Connecting or the last insert failed, with why.
    Failing(String),
}

/// Everything counted by one sink.
#[derive(Debug)]
pub struct SinkMetrics {
    consumed: AtomicU64,
    parquet_rows: AtomicU64,
    clickhouse_rows: AtomicU64,
    duplicates: AtomicU64,
    undecodable: AtomicU64,
    /// Undecodable messages whose dead letter the broker acknowledged.
    dead_lettered: AtomicU64,
    /// Alerts the webhook accepted.
    webhook_deliveries: AtomicU64,
    /// Failed POSTs to the webhook (each retried or given up).
    webhook_failures: AtomicU64,
    /// Alerts given up after their last retry.
    webhook_given_up: AtomicU64,
    /// Messages of the held partitions not yet committed; -1 until measured.
    lag: AtomicI64,
    clickhouse: Mutex<ClickHouseState>,
    /// Where the sink writes Parquet (the readiness probe writes a file there).
    parquet_dir: PathBuf,
}

impl SinkMetrics {
    /// Counters for a sink writing Parquet under `parquet_dir`, and to
    /// ClickHouse when `clickhouse` (until connected, ClickHouse is not
    /// writable).
    pub fn new(parquet_dir: impl Into<PathBuf>, clickhouse: bool) -> Self {
        let state = if clickhouse {
            ClickHouseState::Connecting
        } else {
            ClickHouseState::NotConfigured
        };
        Self {
            consumed: AtomicU64::new(0),
            parquet_rows: AtomicU64::new(0),
            clickhouse_rows: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            webhook_deliveries: AtomicU64::new(0),
            webhook_failures: AtomicU64::new(0),
            webhook_given_up: AtomicU64::new(0),
            lag: AtomicI64::new(-1),
            clickhouse: Mutex::new(state),
            parquet_dir: parquet_dir.into(),
        }
    }

    /// Counters for the sink of `analytics` (Parquet under its directory,
    /// ClickHouse when it names a URL).
    pub fn for_analytics(analytics: &switchyard_core::config::AnalyticsConfig) -> Self {
        let clickhouse = analytics
            .clickhouse_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty());
        Self::new(&analytics.parquet_dir, clickhouse)
    }

    /// Counts usage messages consumed (from partitions the sink still holds).
    pub fn consumed(&self, messages: u64) {
        self.consumed.fetch_add(messages, Ordering::Relaxed);
    }

    /// Counts an event skipped as a copy of one already written.
    pub fn duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a message skipped as not a usage event.
    pub fn undecodable(&self) {
        self.undecodable.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a dead letter the broker acknowledged.
    pub fn dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an alert the webhook accepted.
    pub fn alert_delivered(&self) {
        self.webhook_deliveries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed POST of an alert.
    pub fn alert_post_failed(&self) {
        self.webhook_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an alert given up after its last retry.
    pub fn alert_given_up(&self) {
        self.webhook_given_up.fetch_add(1, Ordering::Relaxed);
    }

    /// Dead letters acknowledged so far.
    pub fn dead_letters(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    /// Alerts the webhook accepted so far.
    pub fn webhook_deliveries(&self) -> u64 {
        self.webhook_deliveries.load(Ordering::Relaxed)
    }

    /// Failed POSTs so far.
    pub fn webhook_failures(&self) -> u64 {
        self.webhook_failures.load(Ordering::Relaxed)
    }

    /// Alerts given up so far.
    pub fn webhook_given_up(&self) -> u64 {
        self.webhook_given_up.load(Ordering::Relaxed)
    }

    /// Counts rows made visible in Parquet (a roll closed their files).
    pub fn parquet_rolled(&self, rows: u64) {
        self.parquet_rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// Counts rows ClickHouse took (inserted, not skipped as already there).
    pub fn clickhouse_inserted(&self, rows: u64) {
        self.clickhouse_rows.fetch_add(rows, Ordering::Relaxed);
    }

    /// ClickHouse is connected and took the last insert.
    pub fn clickhouse_writable(&self) {
        *self.clickhouse.lock() = ClickHouseState::Writable;
    }

    /// ClickHouse could not be reached or refused an insert, for `why`.
    pub fn clickhouse_failing(&self, why: impl Into<String>) {
        *self.clickhouse.lock() = ClickHouseState::Failing(why.into());
    }

    /// Replaces the lag: messages of the held partitions not yet committed.
    pub fn set_lag(&self, messages: i64) {
        self.lag.store(messages.max(0), Ordering::Relaxed);
    }

    /// Usage messages consumed so far.
    pub fn consumed_total(&self) -> u64 {
        self.consumed.load(Ordering::Relaxed)
    }

    /// Rows made visible in Parquet so far.
    pub fn parquet_rows(&self) -> u64 {
        self.parquet_rows.load(Ordering::Relaxed)
    }

    /// Rows ClickHouse took so far.
    pub fn clickhouse_rows(&self) -> u64 {
        self.clickhouse_rows.load(Ordering::Relaxed)
    }

    /// The lag last measured (none before the first measurement).
    pub fn lag(&self) -> Option<i64> {
        let lag = self.lag.load(Ordering::Relaxed);
        (lag >= 0).then_some(lag)
    }

    /// Whether the sink writes to ClickHouse.
    pub fn clickhouse_configured(&self) -> bool {
        *self.clickhouse.lock() != ClickHouseState::NotConfigured
    }

    /// Whether ClickHouse takes rows now, and if not, why.
    pub fn clickhouse_ready(&self) -> Result<(), String> {
        match &*self.clickhouse.lock() {
            ClickHouseState::NotConfigured | ClickHouseState::Writable => Ok(()),
            ClickHouseState::Connecting => Err("not connected to ClickHouse yet".into()),
            ClickHouseState::Failing(why) => Err(format!("ClickHouse takes no rows: {why}")),
        }
    }

    /// Whether the Parquet directory takes a file now: writes and removes a
    /// small one, as the sink's next file would be created.
    pub fn parquet_ready(&self) -> Result<(), String> {
        probe_dir(&self.parquet_dir)
    }

    /// Writes the sink's families into `out`.
    pub fn render_prometheus(&self, out: &mut String) {
        let mut f = Family::counter(
            out,
            "switchyard_sink_rows_total",
            "Usage rows the sink made visible in each store (Parquet: in closed files; ClickHouse: inserted).",
        );
        f.sample(&[("store", PARQUET)], self.parquet_rows() as f64);
        f.sample(&[("store", CLICKHOUSE)], self.clickhouse_rows() as f64);
        Family::counter(
            out,
            "switchyard_sink_events_total",
            "Messages the sink consumed from the usage topic.",
        )
        .sample(&[], self.consumed_total() as f64);
        let mut f = Family::counter(
            out,
            "switchyard_sink_skipped_total",
            "Messages the sink did not write: copies of events already written, or not usage events.",
        );
        f.sample(
            &[("reason", "duplicate")],
            self.duplicates.load(Ordering::Relaxed) as f64,
        );
        f.sample(
            &[("reason", "undecodable")],
            self.undecodable.load(Ordering::Relaxed) as f64,
        );
        Family::counter(
            out,
            "switchyard_sink_dead_letters_total",
            "Messages of the usage topic that are not usage events, whose dead letter the broker acknowledged.",
        )
        .sample(&[], self.dead_letters() as f64);
        let mut f = Family::counter(
            out,
            "switchyard_sink_webhook_posts_total",
            "Alert POSTs to the webhook by outcome (delivered; failed, then retried or given up).",
        );
        f.sample(
            &[("outcome", "delivered")],
            self.webhook_deliveries() as f64,
        );
        f.sample(&[("outcome", "failed")], self.webhook_failures() as f64);
        Family::counter(
            out,
            "switchyard_sink_webhook_given_up_total",
            "Alerts given up after the webhook failed every retry.",
        )
        .sample(&[], self.webhook_given_up() as f64);
        Family::gauge(
            out,
            "switchyard_sink_lag",
            "Messages of the usage partitions this sink holds not yet committed (in both stores), measured every 5 s.",
        )
        .sample(&[], self.lag().unwrap_or(0) as f64);
        let mut f = Family::gauge(
            out,
            "switchyard_sink_store_writable",
            "Whether a store takes writes now: 1 yes, 0 no (Parquet: its directory takes a file; ClickHouse: connected and the last insert succeeded).",
        );
        f.sample(
            &[("store", PARQUET)],
            f64::from(u8::from(self.parquet_ready().is_ok())),
        );
        if self.clickhouse_configured() {
            f.sample(
                &[("store", CLICKHOUSE)],
                f64::from(u8::from(self.clickhouse_ready().is_ok())),
            );
        }
    }
}

/// Creates, writes and removes a small file in `dir`.
fn probe_dir(dir: &Path) -> Result<(), String> {
    let probe = dir.join(format!(".switchyard-ready-{}", std::process::id()));
    let written = std::fs::write(&probe, b"ready\n");
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| {
        format!(
            "cannot write in the Parquet directory {}: {e}",
            dir.display()
        )
    })
}

/// Registers the sink's renderer and its readiness checks (`parquet`, and
/// `clickhouse` when configured) for `metrics`.
pub fn register(telemetry: &mut Telemetry, metrics: &Arc<SinkMetrics>) {
    let m = metrics.clone();
    telemetry.add_renderer(Arc::new(move |out: &mut String| m.render_prometheus(out)));
    let m = metrics.clone();
    telemetry.add_check("parquet", Arc::new(move || m.parquet_ready()));
    if metrics.clickhouse_configured() {
        let m = metrics.clone();
        telemetry.add_check("clickhouse", Arc::new(move || m.clickhouse_ready()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sinks_families_show_its_counts_and_its_stores_state() {
        let dir = tempfile::tempdir().unwrap();
        let m = SinkMetrics::new(dir.path(), true);
        assert_eq!(
            m.clickhouse_ready(),
            Err("not connected to ClickHouse yet".into())
        );
        assert_eq!(m.parquet_ready(), Ok(()));
        m.consumed(5);
        m.duplicate();
        m.undecodable();
        m.parquet_rolled(3);
        m.clickhouse_inserted(2);
        m.set_lag(7);
        m.clickhouse_writable();
        let mut out = String::new();
        m.render_prometheus(&mut out);
        for line in [
            "switchyard_sink_rows_total{store=\"parquet\"} 3\n",
            "switchyard_sink_rows_total{store=\"clickhouse\"} 2\n",
            "switchyard_sink_events_total 5\n",
            "switchyard_sink_skipped_total{reason=\"duplicate\"} 1\n",
            "switchyard_sink_skipped_total{reason=\"undecodable\"} 1\n",
            "switchyard_sink_lag 7\n",
            "switchyard_sink_store_writable{store=\"parquet\"} 1\n",
            "switchyard_sink_store_writable{store=\"clickhouse\"} 1\n",
        ] {
            assert!(out.contains(line), "missing {line:?} in\n{out}");
        }
        m.clickhouse_failing("connection refused");
        assert_eq!(
            m.clickhouse_ready(),
            Err("ClickHouse takes no rows: connection refused".into())
        );
        let mut out = String::new();
        m.render_prometheus(&mut out);
        assert!(out.contains("switchyard_sink_store_writable{store=\"clickhouse\"} 0\n"));
    }

    #[test]
    fn a_directory_that_takes_no_file_is_not_ready() {
        let dir = tempfile::tempdir().unwrap();
        let m = SinkMetrics::new(dir.path().join("missing"), false);
        let err = m.parquet_ready().unwrap_err();
        assert!(
            err.starts_with("cannot write in the Parquet directory"),
            "{err}"
        );
        assert!(!m.clickhouse_configured());
        assert_eq!(m.clickhouse_ready(), Ok(()));
        let mut out = String::new();
        m.render_prometheus(&mut out);
        assert!(out.contains("switchyard_sink_store_writable{store=\"parquet\"} 0\n"));
        assert!(!out.contains("store_writable{store=\"clickhouse\"}"));
        assert!(out.contains("switchyard_sink_lag 0\n"));
    }
}
