//! A batch's state from its registry records, read in log order. Pure: the
//! registry reader supplies the records and their offsets.
//!
//! The rules, which every reader applies the same way:
//! - `canceled` is final; `submitted` is final unless a cancel follows. A
//!   `submitting` record after either (a heartbeat of a run that had not yet
//!   noticed) changes nothing.
//! - While the batch is `submitting`, one submit run holds it. A claim on a batch
//!   nobody holds takes it. A claim on a batch another run holds takes it only if
//!   the claimant had read that run's latest record (its `after` offset is at or
//!   past it): of two runs that raced for the same batch, the first claim in the
//!   log wins and the other is ignored, and a run that is still sending
//!   heartbeats cannot be taken over, since its newest heartbeat is always past
//!   what a claimant read. A holder's own records are heartbeats; its `released`
//!   record frees the batch.
//! - A `submitting` record without a submitter frees the batch too (a record
//!   written before claims existed).
//!
//! Whether a holder has stopped (no heartbeat for the lease) is the claimant's
//! judgement before it writes its claim; the rules above only make sure that
//! exactly one claim counts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use switchyard_core::batch::{BatchRecord, BatchState, Submitter};

/// The run holding a batch, as of its latest accepted record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its latest claim or heartbeat.
    pub submitter: Submitter,
    /// Registry offset of that record.
    pub offset: i64,
}

impl Holder {
    /// Whether the holder has not been heard from for longer than `lease` as of `now`.
    pub fn is_stale(&self, lease: Duration, now: DateTime<Utc>) -> bool {
        self.silent_for(now) > lease
    }

    /// How long since its last heartbeat.
    pub fn silent_for(&self, now: DateTime<Utc>) -> Duration {
        (now - self.submitter.heartbeat_at)
            .to_std()
            .unwrap_or(Duration::ZERO)
    }
}

/// What the registry says about one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchView {
    /// The batch: the fields of its latest accepted record, in the state the rules
    /// give, `submitted_at` the earliest of any of its records (so scans from it
    /// miss nothing) and `submitter` the holder's latest record.
    pub record: BatchRecord,
    /// The run holding the batch while it is `submitting`.
    pub holder: Option<Holder>,
    /// Offset of the batch's newest record, accepted or not.
    pub last_offset: i64,
    /// State of the newest record: what the compacted topic will keep, which the
    /// writer of a late record must put right.
    pub last_state: BatchState,
}

/// Folds a batch's records, oldest first, with their offsets. `None` when there are none.
pub fn fold(history: &[(i64, BatchRecord)]) -> Option<BatchView> {
    let ((first_offset, first), rest) = history.split_first()?;
    let mut view = BatchView {
        record: first.clone(),
        holder: None,
        last_offset: *first_offset,
        last_state: first.state,
    };
    view.holder = claim_of(first, *first_offset);
    let mut earliest = first.submitted_at;
    for (offset, r) in rest {
        earliest = earliest.min(r.submitted_at);
        view.last_offset = *offset;
        view.last_state = r.state;
        match r.state {
            BatchState::Canceled => {
                view.record = r.clone();
                view.holder = None;
            }
            BatchState::Submitted => {
                if view.record.state != BatchState::Canceled {
                    view.record = r.clone();
                }
                view.holder = None;
            }
            BatchState::Submitting => {
                if view.record.state != BatchState::Submitting {
                    continue;
                }
                let Some(s) = &r.submitter else {
                    view.record = r.clone();
                    view.holder = None;
                    continue;
                };
                match &view.holder {
                    Some(h) if h.submitter.id == s.id => {
                        view.holder = claim_of(r, *offset);
                        view.record = r.clone();
                    }
                    Some(h) if s.released || s.after.is_none_or(|a| a < h.offset) => {}
                    None if s.released => {}
                    _ => {
                        view.holder = claim_of(r, *offset);
                        view.record = r.clone();
                    }
                }
            }
        }
    }
    view.record.submitted_at = earliest;
    view.record.submitter = view.holder.as_ref().map(|h| h.submitter.clone());
    Some(view)
}

fn claim_of(r: &BatchRecord, offset: i64) -> Option<Holder> {
    match (&r.submitter, r.state) {
        (Some(s), BatchState::Submitting) if !s.released => Some(Holder {
            submitter: s.clone(),
            offset,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use switchyard_core::batch::BatchFormat;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn record(state: BatchState, submitter: Option<Submitter>) -> BatchRecord {
        BatchRecord {
            mode: None,
            batch_id: "batch_x".into(),
            project: "a/b/c/d".into(),
            format: BatchFormat::Openai,
            state,
            jobs: 10,
            source_sha256: "0".repeat(64),
            file_name: "f.jsonl".into(),
            strategy: None,
            workload: None,
            submitted_at: at(0),
            canceled_at: None,
            refused: 0,
            submitter,
            worst_case_usd: None,
        }
    }

    fn run(id: &str, heartbeat: i64, after: Option<i64>) -> Submitter {
        Submitter {
            id: id.into(),
            host: "h".into(),
            pid: 1,
            since: at(0),
            heartbeat_at: at(heartbeat),
            after,
            released: false,
        }
    }

    fn claim(id: &str, heartbeat: i64, after: Option<i64>) -> BatchRecord {
        record(BatchState::Submitting, Some(run(id, heartbeat, after)))
    }

    fn release(id: &str, after: i64) -> BatchRecord {
        let mut s = run(id, 0, Some(after));
        s.released = true;
        record(BatchState::Submitting, Some(s))
    }

    fn view(records: Vec<BatchRecord>) -> BatchView {
        let history: Vec<(i64, BatchRecord)> = (10..).zip(records).collect();
        fold(&history).unwrap()
    }

    fn holder(v: &BatchView) -> Option<&str> {
        v.holder.as_ref().map(|h| h.submitter.id.as_str())
    }

    #[test]
    fn of_two_racing_claims_the_first_in_the_log_wins() {
        let v = view(vec![claim("a", 0, None), claim("b", 0, None)]);
        assert_eq!(holder(&v), Some("a"));
        assert_eq!(v.holder.as_ref().unwrap().offset, 10);
        assert_eq!((v.last_offset, v.last_state), (11, BatchState::Submitting));
        // The same when both had read an earlier record of the batch.
        let v = view(vec![
            record(BatchState::Submitting, None),
            claim("b", 1, Some(10)),
            claim("a", 1, Some(10)),
        ]);
        assert_eq!(holder(&v), Some("b"));
        assert_eq!(fold(&[]), None);
    }

    #[test]
    fn a_live_holder_keeps_the_batch_and_a_silent_one_can_be_taken_over() {
        // b read a's claim (offset 10), but a sent a heartbeat (11) before b's claim.
        let v = view(vec![
            claim("a", 0, None),
            claim("a", 5, Some(10)),
            claim("b", 40, Some(10)),
        ]);
        assert_eq!(holder(&v), Some("a"));
        let h = v.holder.as_ref().unwrap();
        assert_eq!((h.offset, h.submitter.heartbeat_at), (11, at(5)));
        assert!(!h.is_stale(Duration::from_secs(30), at(20)));
        assert!(h.is_stale(Duration::from_secs(30), at(36)));
        // b read a's latest heartbeat: its claim takes over, and a's later heartbeats count for nothing.
        let v = view(vec![
            claim("a", 0, None),
            claim("a", 5, Some(10)),
            claim("b", 40, Some(11)),
            claim("a", 41, Some(11)),
        ]);
        assert_eq!(holder(&v), Some("b"));
        assert_eq!(v.record.submitter.as_ref().unwrap().id, "b");
    }

    #[test]
    fn a_release_frees_the_batch_only_from_its_holder() {
        let v = view(vec![claim("a", 0, None), release("b", 10)]);
        assert_eq!(holder(&v), Some("a"));
        let v = view(vec![claim("a", 0, None), release("a", 10)]);
        assert_eq!(holder(&v), None);
        assert_eq!(v.record.state, BatchState::Submitting);
        let v = view(vec![
            claim("a", 0, None),
            release("a", 10),
            claim("b", 9, None),
        ]);
        assert_eq!(holder(&v), Some("b"));
        // A record from before claims existed leaves the batch free.
        let v = view(vec![
            claim("a", 0, None),
            record(BatchState::Submitting, None),
        ]);
        assert_eq!(holder(&v), None);
    }

    #[test]
    fn final_states_stand_against_late_records() {
        let mut canceled = record(BatchState::Canceled, None);
        canceled.canceled_at = Some(at(3));
        let v = view(vec![
            claim("a", 0, None),
            canceled.clone(),
            claim("a", 5, Some(10)),
            record(BatchState::Submitted, None),
        ]);
        assert_eq!(v.record.state, BatchState::Canceled);
        assert_eq!(v.record.canceled_at, Some(at(3)));
        assert_eq!(v.last_state, BatchState::Submitted);
        assert_eq!(holder(&v), None);
        let v = view(vec![
            claim("a", 0, None),
            record(BatchState::Submitted, None),
            claim("b", 9, Some(11)),
        ]);
        assert_eq!(v.record.state, BatchState::Submitted);
        assert_eq!(v.record.submitter, None);
        assert_eq!(v.last_state, BatchState::Submitting);
    }

    #[test]
    fn submitted_at_is_the_earliest_of_any_record() {
        let mut late = claim("a", 0, None);
        late.submitted_at = at(50);
        let v = view(vec![late, claim("b", 0, None)]);
        assert_eq!(holder(&v), Some("a"));
        assert_eq!(v.record.submitted_at, at(0));
    }
}
