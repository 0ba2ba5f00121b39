//! Following a batch's results: which jobs have a final result, with what
//! status, and what they cost. One byte per job; a job's second copy (a worker
//! redid it after a restart) replaces the first only when it succeeded and the
//! first did not, so each job counts once.

use chrono::{DateTime, Utc};
use serde::Serialize;
use switchyard_core::result::{JobResult, JobStatus};

/// What became of a result copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kept {
    /// The job's first result.
    First,
    /// A better copy that replaces the one kept.
    Replaces,
    /// A copy no better than the one kept; dropped.
    Duplicate,
    /// A `held` result: the job waits for approval; nothing to write yet.
    Held,
}

/// Counts of a batch's jobs by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counts {
    /// No result yet (waiting in Kafka or in flight).
    pub queued: u64,
    /// Held for approval: a `held` result, not final.
    pub held: u64,
    /// Answered.
    pub succeeded: u64,
    /// Every attempt failed.
    pub failed: u64,
    /// Refused by policy or budget before any call.
    pub rejected: u64,
    /// Ended by the batch's cancellation before starting.
    pub canceled: u64,
}

impl Counts {
    /// Jobs with a final result.
    pub fn finished(&self) -> u64 {
        self.succeeded + self.failed + self.rejected + self.canceled
    }
}

/// The results seen so far of a batch of `jobs` jobs.
#[derive(Debug, Clone)]
pub struct Tally {
    status: Vec<u8>,
    counts: Counts,
    /// Cost of every copy seen (each copy was billed).
    pub cost_usd: f64,
    /// Copies dropped as duplicates.
    pub duplicates: u64,
    /// Earliest `completed_at` seen.
    pub first_completed: Option<DateTime<Utc>>,
    /// Latest `completed_at` seen.
    pub last_completed: Option<DateTime<Utc>>,
}

fn code(s: JobStatus) -> u8 {
    match s {
        JobStatus::Succeeded => 1,
        JobStatus::Failed => 2,
        JobStatus::Rejected => 3,
        JobStatus::Canceled => 4,
        JobStatus::Held => HELD,
    }
}

/// A held job's status byte.
const HELD: u8 = 5;

impl Tally {
    /// Nothing seen yet.
    pub fn new(jobs: u64) -> Self {
        Self {
            status: vec![0; jobs as usize],
            counts: Counts {
                queued: jobs,
                ..Counts::default()
            },
            cost_usd: 0.0,
            duplicates: 0,
            first_completed: None,
            last_completed: None,
        }
    }

    /// Jobs in the batch.
    pub fn jobs(&self) -> u64 {
        self.status.len() as u64
    }

    /// Counts so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Whether every job has a final result.
    pub fn complete(&self) -> bool {
        self.counts.queued == 0 && self.counts.held == 0
    }

    /// Bytes held per job.
    pub const BYTES_PER_JOB: usize = 1;

    /// Records a copy of the result of job `ordinal` (must be below [`Tally::jobs`]).
    pub fn record(&mut self, ordinal: u64, r: &JobResult) -> Kept {
        self.cost_usd += r.cost_usd;
        self.first_completed = Some(
            self.first_completed
                .map_or(r.completed_at, |t| t.min(r.completed_at)),
        );
        self.last_completed = Some(
            self.last_completed
                .map_or(r.completed_at, |t| t.max(r.completed_at)),
        );
        let Some(&old) = self.status.get(ordinal as usize) else {
            return Kept::Duplicate;
        };
        let new = code(r.status);
        if new == HELD {
            // Not final: counted apart, never written out.
            if old != 0 {
                self.duplicates += 1;
                return Kept::Duplicate;
            }
            self.counts.queued -= 1;
            self.counts.held += 1;
            self.status[ordinal as usize] = HELD;
            return Kept::Held;
        }
        let kept = match old {
            0 => {
                self.counts.queued -= 1;
                Kept::First
            }
            HELD => {
                self.counts.held -= 1;
                Kept::First
            }
            1 => {
                self.duplicates += 1;
                return Kept::Duplicate;
            }
            _ if new == 1 => Kept::Replaces,
            _ => {
                self.duplicates += 1;
                return Kept::Duplicate;
            }
        };
        if kept == Kept::Replaces {
            self.duplicates += 1;
            self.bump(old, false);
        }
        self.status[ordinal as usize] = new;
        self.bump(new, true);
        kept
    }

    fn bump(&mut self, code: u8, up: bool) {
        let c = match code {
            1 => &mut self.counts.succeeded,
            2 => &mut self.counts.failed,
            3 => &mut self.counts.rejected,
            _ => &mut self.counts.canceled,
        };
        if up {
            *c += 1;
        } else {
            *c -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::result::TokenUsage;

    fn result(status: JobStatus) -> JobResult {
        JobResult {
            mode: switchyard_core::result::RunMode::Live,
            job_id: "j".into(),
            batch_id: None,
            project: "a/b/c/d".into(),
            status,
            provider: None,
            model: None,
            output: None,
            usage: TokenUsage::default(),
            cost_usd: 0.5,
            latency_ms: 1,
            attempts: Vec::new(),
            routing: None,
            error: None,
            metadata: Default::default(),
            completed_at: Utc::now(),
            approval_id: None,
        }
    }

    #[test]
    fn held_is_not_final_and_the_decision_replaces_it() {
        let mut t = Tally::new(2);
        assert_eq!(t.record(0, &result(JobStatus::Held)), Kept::Held);
        assert_eq!(t.record(1, &result(JobStatus::Succeeded)), Kept::First);
        let c = t.counts();
        assert_eq!((c.queued, c.held, c.finished()), (0, 1, 1));
        assert!(!t.complete(), "a held job is not done");
        assert_eq!(t.record(0, &result(JobStatus::Held)), Kept::Duplicate);
        assert_eq!(t.record(0, &result(JobStatus::Rejected)), Kept::First);
        let c = t.counts();
        assert_eq!((c.held, c.rejected, c.finished()), (0, 1, 2));
        assert!(t.complete());
        assert_eq!(t.record(0, &result(JobStatus::Held)), Kept::Duplicate);
    }

    #[test]
    fn each_job_counts_once_and_success_wins() {
        let mut t = Tally::new(3);
        assert_eq!(t.record(0, &result(JobStatus::Failed)), Kept::First);
        assert_eq!(t.record(0, &result(JobStatus::Failed)), Kept::Duplicate);
        assert_eq!(t.record(0, &result(JobStatus::Succeeded)), Kept::Replaces);
        assert_eq!(t.record(0, &result(JobStatus::Failed)), Kept::Duplicate);
        assert_eq!(t.record(1, &result(JobStatus::Canceled)), Kept::First);
        assert_eq!(t.record(7, &result(JobStatus::Succeeded)), Kept::Duplicate);
        let c = t.counts();
        assert_eq!((c.queued, c.succeeded, c.failed, c.canceled), (1, 1, 0, 1));
        assert_eq!(t.duplicates, 3);
        assert!((t.cost_usd - 3.0).abs() < 1e-9);
        assert!(!t.complete());
    }
}
