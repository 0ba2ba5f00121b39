//! `status` and `cancel`: a batch's state from the registry and its results so
//! far (counts by status, lines refused at submit, cost, estimated time left),
//! where its deferred jobs are (waiting to be grouped, or in which provider
//! batch, in what state: [`deferred`]), and its cancellation.

pub mod deferred;

use std::fmt::Write as _;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use switchyard_core::batch::{BatchRecord, BatchState};
use switchyard_core::config::KafkaConfig;

use switchyard_kafka::{ScanFrom, scan_to_end};

use self::deferred::{DeferredBooks, DeferredStatus};
use crate::follow::ResultFollower;
use crate::tally::{Counts, Tally};
use crate::{Error, Result, registry};

/// Longest the read of the deferred topic to its end may take.
const DEFERRED_SCAN_TIMEOUT: Duration = Duration::from_secs(600);

/// A batch's progress.
#[derive(Debug, Clone, Serialize)]
pub struct BatchStatus {
    /// The registry record.
    pub record: BatchRecord,
    /// Jobs by state.
    pub counts: Counts,
    /// Lines of the file refused at submit (`--skip-invalid`), which are not
    /// jobs of the batch: they are in the rejects file.
    pub refused: u64,
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
    /// Its deferred jobs: waiting to be grouped, or in provider batches.
    pub deferred: DeferredStatus,
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
    /// Builds a status from a registry record, a tally of its results and
    /// what the deferred topic says about it.
    pub fn from_tally(record: BatchRecord, tally: &Tally, deferred: DeferredStatus) -> Self {
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
            refused: record.refused,
            record,
            counts,
            cost_usd: tally.cost_usd,
            duplicates: tally.duplicates,
            results_per_second: rate,
            eta,
            deferred,
            as_of: Utc::now(),
        }
    }

    /// The status as a table for people.
    pub fn table(&self) -> String {
        let r = &self.record;
        let c = &self.counts;
        let mut t = String::new();
        let time = |d: &DateTime<Utc>| d.format("%Y-%m-%d %H:%M:%S UTC").to_string();
        let _ = writeln!(
            t,
            "batch      {}  ({}, {})",
            r.batch_id,
            r.format.as_str(),
            r.file_name
        );
        let _ = writeln!(t, "project    {}", r.project);
        let mut state = format!("{}, submitted {}", r.state.as_str(), time(&r.submitted_at));
        if let Some(at) = &r.canceled_at {
            let _ = write!(state, ", canceled {}", time(at));
        }
        if let Some(s) = &r.submitter {
            let _ = write!(
                state,
                ", being submitted by pid {} on {} (last heartbeat {})",
                s.pid,
                s.host,
                time(&s.heartbeat_at)
            );
        }
        let _ = writeln!(t, "state      {state}");
        let _ = writeln!(t, "jobs       {}", r.jobs);
        if let Some(usd) = r.worst_case_usd {
            let _ = writeln!(
                t,
                "worst case ${usd:.4} for the whole batch (weighed against the project's approval threshold)"
            );
        }
        if self.refused > 0 {
            let _ = writeln!(
                t,
                "refused    {} lines at submit (not in the batch; see the rejects file)",
                self.refused
            );
        }
        let _ = writeln!(t, "queued     {}", c.queued);
        if c.held > 0 {
            let _ = writeln!(
                t,
                "held       {} (waiting for approval: `switchyard approvals list`)",
                c.held
            );
        }
        let _ = writeln!(t, "succeeded  {}", c.succeeded);
        let _ = writeln!(t, "failed     {}", c.failed);
        let _ = writeln!(t, "rejected   {}", c.rejected);
        let _ = writeln!(t, "canceled   {}", c.canceled);
        let _ = writeln!(t, "cost       ${:.6} so far", self.cost_usd);
        let eta = match (self.eta, self.results_per_second) {
            (Some(d), _) if d.is_zero() => "done".to_owned(),
            (Some(d), Some(rate)) => format!(
                "{} ({rate:.1} results/s)",
                humantime::format_duration(Duration::from_secs(d.as_secs().max(1)))
            ),
            _ => "unknown (too few results yet)".to_owned(),
        };
        let _ = writeln!(t, "eta        {eta}");
        self.deferred.write_table(&mut t);
        t
    }
}

/// Reads a batch's status (one pass over its results so far, and one over
/// the deferred topic).
pub fn status(kafka: &KafkaConfig, batch_id: &str) -> Result<BatchStatus> {
    let record = registry::get(kafka, batch_id)?;
    let mut tally = Tally::new(record.jobs);
    let mut follower = ResultFollower::new(kafka, &record);
    follower.read_new(|ordinal, r| {
        tally.record(ordinal, &r);
    })?;
    let deferred = read_deferred(kafka, batch_id)?;
    Ok(BatchStatus::from_tally(record, &tally, deferred))
}

/// Reads the deferred topic (every partition) to its end and says where
/// `batch_id`'s deferred jobs are. A topic that does not exist (no partition
/// to read) means nothing was ever deferred, and says so.
fn read_deferred(kafka: &KafkaConfig, batch_id: &str) -> Result<DeferredStatus> {
    let topic = &kafka.topics.deferred;
    let mut books = DeferredBooks::new(batch_id);
    let partitions = scan_to_end(
        kafka,
        topic,
        ScanFrom::Beginning,
        &Default::default(),
        DEFERRED_SCAN_TIMEOUT,
        |m| books.apply(m.partition, m.offset, m.key, m.payload),
    )
    .map_err(Error::kafka("deferred topic read"))?;
    if partitions.is_empty() {
        return Ok(DeferredStatus::no_topic(topic));
    }
    Ok(books.summary(topic))
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
        submitter: None,
        ..record
    };
    registry::publish(kafka, &record)?;
    tracing::info!(batch_id, "Batch canceled.");
    Ok(CancelReport {
        record,
        already_canceled: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use switchyard_core::batch::BatchFormat;
    use switchyard_core::result::{JobResult, JobStatus, TokenUsage};

    fn record(jobs: u64, refused: u64) -> BatchRecord {
        BatchRecord {
            mode: None,
            batch_id: "batch_0123456789abcdef01234567".into(),
            project: "acme/retail/support/ticket-triage".into(),
            format: BatchFormat::Openai,
            state: BatchState::Submitted,
            jobs,
            source_sha256: "0".repeat(64),
            file_name: "requests.jsonl".into(),
            strategy: None,
            workload: None,
            submitted_at: Utc.timestamp_opt(1_800_000_000, 0).unwrap(),
            canceled_at: None,
            refused,
            submitter: None,
            worst_case_usd: None,
        }
    }

    fn no_deferral() -> DeferredStatus {
        DeferredStatus::no_topic("switchyard.deferred")
    }

    fn finished_at(secs: i64, status: JobStatus) -> JobResult {
        JobResult {
            mode: switchyard_core::result::RunMode::Live,
            job_id: "j".into(),
            batch_id: None,
            project: "acme/retail/support/ticket-triage".into(),
            status,
            provider: None,
            model: None,
            output: None,
            usage: TokenUsage::default(),
            cost_usd: 0.25,
            latency_ms: 1,
            attempts: Vec::new(),
            routing: None,
            error: None,
            metadata: Default::default(),
            completed_at: Utc.timestamp_opt(1_800_000_100 + secs, 0).unwrap(),
            approval_id: None,
        }
    }

    #[test]
    fn the_eta_is_the_queued_jobs_at_the_rate_of_results_so_far() {
        // 100 jobs; 41 results over 20 s: 2 results/s, 59 queued, about 30 s left.
        let mut tally = Tally::new(100);
        for i in 0..41u64 {
            let status = if i == 7 {
                JobStatus::Failed
            } else {
                JobStatus::Succeeded
            };
            tally.record(i, &finished_at(i as i64 / 2, status));
        }
        let priced = BatchRecord {
            worst_case_usd: Some(0.25),
            ..record(100, 3)
        };
        let s = BatchStatus::from_tally(priced, &tally, no_deferral());
        assert_eq!(s.counts.queued, 59);
        assert_eq!(s.results_per_second, Some(2.0));
        assert_eq!(s.eta, Some(Duration::from_millis(29_500)));
        assert_eq!(s.refused, 3);
        let table = s.table();
        for want in [
            "jobs       100\n",
            "worst case $0.2500 for the whole batch",
            "refused    3 lines at submit",
            "queued     59\n",
            "succeeded  40\n",
            "failed     1\n",
            "cost       $10.250000 so far\n",
            "eta        29s (2.0 results/s)\n",
            "deferred   none (topic `switchyard.deferred` does not exist",
        ] {
            assert!(table.contains(want), "`{want}` not in:\n{table}");
        }
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["refused"], 3);
        assert_eq!(json["eta"], 29.5);
        assert_eq!(json["results_per_second"], 2.0);
        assert_eq!(json["deferred"]["topic_exists"], false);
    }

    #[test]
    fn the_eta_is_unknown_before_two_results_and_zero_when_done() {
        let mut tally = Tally::new(2);
        let s = BatchStatus::from_tally(record(2, 0), &tally, no_deferral());
        assert_eq!((s.eta, s.results_per_second), (None, None));
        assert!(
            s.table()
                .contains("eta        unknown (too few results yet)\n")
        );
        assert!(!s.table().contains("refused"));
        assert!(
            !s.table().contains("worst case"),
            "a batch priced at nothing"
        );
        tally.record(0, &finished_at(0, JobStatus::Succeeded));
        assert_eq!(
            BatchStatus::from_tally(record(2, 0), &tally, no_deferral()).eta,
            None
        );
        tally.record(1, &finished_at(4, JobStatus::Succeeded));
        let s = BatchStatus::from_tally(record(2, 0), &tally, no_deferral());
        assert_eq!(s.eta, Some(Duration::ZERO));
        assert!(s.table().contains("eta        done\n"));
        assert_eq!(serde_json::to_value(&s).unwrap()["eta"], 0.0);
    }
}
