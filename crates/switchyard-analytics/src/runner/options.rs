//! [`SinkOptions`]: the sink's knobs that are not in the pipeline config.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use crate::metrics::SinkMetrics;

/// Knobs that are not in the pipeline config (tests and embedding).
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Event ids remembered for de-duplication.
    pub dedupe_window: usize,
    /// How long shutdown waits for ClickHouse to take the last rows.
    pub drain_grace: Duration,
    /// How long giving up a partition in a rebalance waits for ClickHouse.
    pub revoke_grace: Duration,
    /// First pause after a ClickHouse failure.
    pub base_backoff: Duration,
    /// Decoder threads (at least one).
    pub decoders: usize,
    /// Counts the messages consumed, for callers that watch progress.
    pub consumed: Option<Arc<AtomicU64>>,
    /// The sink's counters and store states, for a telemetry endpoint
    /// (by default its own, which nothing reads).
    pub metrics: Arc<SinkMetrics>,
}

impl Default for SinkOptions {
    fn default() -> Self {
        Self {
            dedupe_window: 1_000_000,
            drain_grace: Duration::from_secs(30),
            revoke_grace: Duration::from_secs(10),
            base_backoff: Duration::from_millis(200),
            decoders: std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 4)),
            consumed: None,
            metrics: Arc::new(SinkMetrics::new(std::env::temp_dir(), false)),
        }
    }
}
