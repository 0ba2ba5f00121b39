//! `status` and `cancel`: a batch's state from the registry and its results so
//! far (counts by status, cost, estimated time left), and its cancellation.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use switchyard_core::batch::{BatchRecord, BatchState};
use switchyard_core::config::KafkaConfig;

use crate::follow::ResultFollower;
use crate::tally::{Counts, Tally};
use crate::{Result, registry};

/// A batch's progress.
#[derive(Debug, Clone, Serialize)]
pub struct BatchStatus {
    /// The registry record.
    pub record: BatchRecord,
    /// Jobs by state.
    pub counts: Counts,
    /// What every result copy seen so far cost (a job redone after a worker
    /// restart was billed twice, and counts twice).
    pub cost_usd: f64,
    /// Result copies beyond the first per job.
    pub duplicates: u64,
    /// Results per second over the batch's completion window so far.
    pub results_per_second: Option<f64>,
    /// Estimated time until every job has a result, at that rate.
    #[serde(serialize_with = "secs")]
    pub eta: Option<Duration>,
    /// When this status was read.
    pub as_of: DateTime<Utc>,
}

fn secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

impl BatchStatus {
    /// Builds a status from a registry record and a tally.
    pub fn from_tally(record: BatchRecord, tally: &Tally) -> Self {
        let counts = tally.counts();
        let finished = counts.finished();
        let rate = match (tally.first_completed, tally.last_completed) {
            (Some(a), Some(b)) if finished >= 2 && b > a => {
                let span = (b - a).num_milliseconds() as f64 / 1000.0;
                Some((finished - 1) as f64 / span)
            }
            _ => None,
        };
        let eta = if counts.queued == 0 {
            Some(Duration::ZERO)
        } else {
            rate.filter(|r| *r > 0.0)
                .and_then(|r| Duration::try_from_secs_f64(counts.queued as f64 / r).ok())
        };
        Self {
            record,
            counts,
            cost_usd: tally.cost_usd,
            duplicates: tally.duplicates,
            results_per_second: rate,
            eta,
            as_of: Utc::now(),
        }
    }
}

/// Reads a batch's status (one pass over its results so far).
pub fn status(kafka: &KafkaConfig, batch_id: &str) -> Result<BatchStatus> {
    let record = registry::get(kafka, batch_id)?;
    let mut tally = Tally::new(record.jobs);
    let mut follower = ResultFollower::new(kafka, &record);
    follower.read_new(|ordinal, r| {
        tally.record(ordinal, &r);
    })?;
    Ok(BatchStatus::from_tally(record, &tally))
}

/// What `cancel` did.
#[derive(Debug, Clone, Serialize)]
pub struct CancelReport {
    /// The record now in the registry.
    pub record: BatchRecord,
    /// Whether the batch was already canceled (nothing published).
    pub already_canceled: bool,
}

/// Cancels a batch: publishes its record with state `canceled`. Workers end its
/// jobs not yet started as `canceled`; jobs already started finish, and what
/// they bill is accounted as usual.
pub fn cancel(kafka: &KafkaConfig, batch_id: &str) -> Result<CancelReport> {
    let record = registry::get(kafka, batch_id)?;
    if record.state == BatchState::Canceled {
        return Ok(CancelReport {
            record,
            already_canceled: true,
        });
    }
    let record = BatchRecord {
        state: BatchState::Canceled,
        canceled_at: Some(Utc::now()),
        ..record
    };
    registry::publish(kafka, &record)?;
    tracing::info!(batch_id, "Batch canceled.");
    Ok(CancelReport {
        record,
        already_canceled: false,
    })
}
