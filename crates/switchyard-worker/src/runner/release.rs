//! The releaser: what becomes of held work once an approver decides, or
//! nobody does. Every worker runs one, in a consumer group of its own on the
//! compacted approvals topic; every record of an approval id is on one
//! partition, so one releaser owns each id. It never commits: on assignment
//! it reads its partitions from the beginning (compaction keeps them small:
//! a settled request replaces its request), and it acts only once it has read
//! them to the end they had, so that what was settled before is not redone.
//!
//! - An approval that counts (signed by an approver over the node who did not
//!   submit the work; for a budget hold, an admin's explicit override)
//!   publishes each held message it covers again to the jobs topic, with its
//!   original signature and the decision in a header, carrying the job's path
//!   to the decision's cover: the worker checks the decision and the path
//!   again before the job passes its hold, and the job runs to its final
//!   result. Jobs held under the id after the approval wait for another.
//!   A deferred job held when it came to run live (its budget ran out while
//!   it waited) goes back to the deferred topic instead, its record carrying
//!   the decision, and the gatherer runs it again.
//! - A rejection that counts ends each job `rejected` with the approver's reason.
//! - A request left undecided past its `expires_at` ends `rejected`, `expired`.
//! - A decision that does not count is logged; the work stays held.
//!
//! Each job's request is then replaced by a [`Settled`] record. A crash between
//! the two publishes the job again on restart (at-least-once, like every
//! other step of the pipeline).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Message, OwnedHeaders};
use switchyard_codec::{Codec, headers};
use switchyard_core::access::approval::{
    ApprovalBook, ApprovalRecord, ApprovalRequest, Decision, HeldFrom, ReleasedIn, Settled,
    Settlement,
};
use switchyard_core::access::cover::Hash;
use switchyard_core::access::sign;
use switchyard_core::audit::AuditEntry;
use switchyard_core::deferred::{DeferredJob, DeferredRecord};
use switchyard_core::job::Job;
use switchyard_core::vocab::JobStatus;
use switchyard_kafka::produce::PublishError;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::compacted::{self, CompactedConsumer, ReadState};
use super::publish::{ApprovalsOut, Out, owned_headers};
use crate::engine::Engine;

/// How often undecided requests are checked for expiry.
const EXPIRY_SCAN: Duration = Duration::from_secs(1);

/// What one partition of the approvals topic holds, as read so far.
#[derive(Default)]
struct Book {
    read: ReadState,
    book: ApprovalBook,
    /// Approval ids with news since they were last acted on.
    touched: BTreeSet<String>,
}

impl Book {
    fn apply(&mut self, record: ApprovalRecord) {
        let settled = matches!(record, ApprovalRecord::Settled(_));
        let id = self.book.apply(record);
        if !settled {
            self.touched.insert(id);
        }
    }
}

/// The held jobs a decision decides, each with the copy of the decision it
/// travels with. A rejection decides every job waiting under its id. An
/// approval releases only the jobs its cover names, each with its proof (and
/// ends those whose held copy cannot be read, as `approval_unreleasable`);
/// jobs held under the id after it was made, and copies of jobs it released
/// already, wait for another decision; an approval whose set this releaser
/// cannot rebuild releases nothing.
fn decided_jobs(book: &ApprovalBook, decision: &Decision) -> Vec<(ApprovalRequest, Decision)> {
    let waiting = book.requests_of(&decision.id);
    if !decision.approve {
        return waiting
            .into_iter()
            .map(|r| (r.clone(), decision.clone()))
            .collect();
    }
    let Some((tree, members)) = book.covered(decision) else {
        if !waiting.is_empty() {
            warn!(approval_id = %decision.id, principal = %decision.principal, waiting = waiting.len(), covers = decision.covers.as_ref().map(|c| c.jobs), "An approval does not cover the jobs held here (made before they were all held, or without a list of its jobs); they stay held: decide again.");
        }
        return Vec::new();
    };
    let unreadable: Vec<&ApprovalRequest> = waiting
        .iter()
        .copied()
        .filter(|r| book.leaf_of(r).is_none())
        .collect();
    let left = waiting.len() - members.len() - unreadable.len();
    if left > 0 {
        warn!(approval_id = %decision.id, left, "Jobs held after the approval was made, or held again after it released them, stay held: decide again for them.");
    }
    members
        .into_iter()
        .chain(unreadable)
        .map(|r| {
            let mut d = decision.clone();
            d.proof = book.leaf_of(r).and_then(|l| tree.proof(&l));
            (r.clone(), d)
        })
        .collect()
}

/// A released job's place in its decision's cover.
fn released_in(leaf: Option<Hash>, decision: &Decision, settled: Settlement) -> Option<ReleasedIn> {
    if settled != Settlement::Released {
        return None;
    }
    Some(ReleasedIn::of(decision.covers.as_ref()?, &leaf?))
}

/// What a held copy's value holds.
enum HeldValue {
    /// A job as its producer wrote it.
    Job(Box<Job>),
    /// A deferred job's record.
    Deferred(Box<DeferredJob>),
    /// Neither.
    Unreadable,
}

/// The releaser's outputs.
pub(super) struct Releaser {
    pub engine: Arc<Engine>,
    pub consumer: CompactedConsumer,
    pub jobs: Out,
    /// The deferred topic, where a deferred job held on its live run goes back.
    pub deferred: Out,
    pub job_codec: Codec,
    pub results: (Out, Codec),
    pub approvals: ApprovalsOut,
    /// How long a decision counts after it is made.
    pub ttl: Duration,
    pub stop: CancellationToken,
}

impl Releaser {
    /// Runs until stopped.
    pub async fn run(self) {
        let mut books: HashMap<i32, Book> = HashMap::new();
        let mut last_scan = tokio::time::Instant::now();
        loop {
            let message = tokio::select! {
                _ = self.stop.cancelled() => break,
                m = tokio::time::timeout(Duration::from_millis(200), self.consumer.recv()) => m,
            };
            self.rebalanced(&mut books);
            match message {
                Ok(Ok(m)) => {
                    if let Some(book) = books.get_mut(&m.partition()) {
                        match m.payload().map(serde_json::from_slice::<ApprovalRecord>) {
                            Some(Ok(record)) => book.apply(record),
                            Some(Err(e)) => {
                                warn!(partition = m.partition(), offset = m.offset(), error = %e, "Skipping an approvals record that does not parse.")
                            }
                            None => {}
                        }
                    }
                }
                Ok(Err(e)) => warn!(error = %e, "Reading the approvals topic failed; retrying."),
                Err(_) => {}
            }
            self.catch_up(&mut books);
            let scan = last_scan.elapsed() >= EXPIRY_SCAN;
            if scan {
                last_scan = tokio::time::Instant::now();
            }
            for book in books.values_mut().filter(|b| b.read.caught_up) {
                if !self.act(book, scan).await {
                    return;
                }
            }
        }
    }

    /// Takes in assignments (a book per partition, read from the beginning)
    /// and revocations (their books dropped).
    fn rebalanced(&self, books: &mut HashMap<i32, Book>) {
        for (assigned, partitions) in self.consumer.context().take() {
            for p in partitions {
                if assigned {
                    books.insert(p, Book::default());
                } else {
                    books.remove(&p);
                }
            }
        }
    }

    /// Marks the partitions read up to the end they had at assignment.
    fn catch_up(&self, books: &mut HashMap<i32, Book>) {
        let topic = self.approvals.out.name.as_str();
        let states = books.iter_mut().map(|(p, b)| (*p, &mut b.read));
        for p in compacted::catch_up(&self.consumer, topic, states) {
            let pending = books.get(&p).map_or(0, |b| b.book.pending().count());
            info!(
                partition = p,
                pending, "Approvals read; acting on decisions."
            );
        }
    }

    /// Acts on the decided ids of a book (and, on `scan`, on expired requests).
    /// False when stopped mid-way.
    async fn act(&self, book: &mut Book, scan: bool) -> bool {
        let now = Utc::now();
        let touched = std::mem::take(&mut book.touched);
        for id in touched {
            let Some(decision) = book.book.decision(&id).cloned() else {
                continue;
            };
            if !self.in_force(&decision, &book.book) {
                continue;
            }
            for (request, decision) in decided_jobs(&book.book, &decision) {
                let Some(outcome) = self.decided(&request, &decision).await else {
                    return false;
                };
                if let Some(settled) = outcome {
                    let released_in = released_in(book.book.leaf_of(&request), &decision, settled);
                    if !self
                        .settle(&mut book.book, &request, settled, now, released_in)
                        .await
                    {
                        return false;
                    }
                }
            }
        }
        if scan {
            let expired: Vec<ApprovalRequest> = book
                .book
                .pending()
                .filter(|r| r.expires_at <= now)
                .cloned()
                .collect();
            for request in expired {
                let message = format!(
                    "expired: nobody decided on approval `{}` before {}",
                    request.id,
                    request.expires_at.to_rfc3339()
                );
                if !self.reject(&request, "approval_expired", &message).await {
                    return false;
                }
                self.audit(&request, "expired", None, &message);
                if !self
                    .settle(&mut book.book, &request, Settlement::Expired, now, None)
                    .await
                {
                    return false;
                }
            }
        }
        true
    }

    /// Whether a decision may still act on newly held work: made within the
    /// approval TTL (checked before its set is rebuilt, so an old decision
    /// costs nothing when more work is held under its id).
    fn in_force(&self, decision: &Decision, book: &ApprovalBook) -> bool {
        let age = (Utc::now() - decision.at).to_std().unwrap_or_default();
        if age <= self.ttl {
            return true;
        }
        if !book.requests_of(&decision.id).is_empty() {
            warn!(approval_id = %decision.id, decided_at = %decision.at, "A decision older than the approval TTL does not release newly held work; decide again.");
        }
        false
    }

    /// What a decision does to one held job: `Some(Some(_))` settled,
    /// `Some(None)` the decision does not count (the job stays held), `None`
    /// stopped.
    async fn decided(
        &self,
        request: &ApprovalRequest,
        decision: &Decision,
    ) -> Option<Option<Settlement>> {
        let Some(keys) = self.engine.keys() else {
            warn!(approval_id = %request.id, "A decision arrived, but this worker has no [access] keys to check it against; the work stays held.");
            return Some(None);
        };
        let age = (Utc::now() - decision.at).to_std().unwrap_or_default();
        if age > self.ttl {
            warn!(approval_id = %request.id, decided_at = %decision.at, "A decision older than the approval TTL does not release newly held work; decide again.");
            return Some(None);
        }
        if decision.node != request.node {
            warn!(approval_id = %request.id, decision_node = %decision.node, node = %request.node, "A decision names another node than the held work; it does not count.");
            return Some(None);
        }
        if let Err(e) = decision.check(&keys, request.submitted_by.as_deref(), request.kind) {
            warn!(approval_id = %request.id, job_id = %request.job_id, principal = %decision.principal, reason = %e, "A decision does not count; the work stays held.");
            self.audit(request, "decision_refused", Some(decision), &e.to_string());
            return Some(None);
        }
        let done = if decision.approve {
            self.release(request, decision).await
        } else {
            let message = format!(
                "rejected by `{}`: {}",
                decision.principal,
                if decision.reason.is_empty() {
                    "no reason given"
                } else {
                    &decision.reason
                }
            );
            self.reject(request, "approval_rejected", &message).await
        };
        if !done {
            return None;
        }
        info!(approval_id = %request.id, job_id = %request.job_id, approved = decision.approve, principal = %decision.principal, override_budget = decision.override_budget, "Held work decided.");
        let outcome = match (decision.approve, decision.override_budget) {
            (true, true) => "released_budget_override",
            (true, false) => "released",
            (false, _) => "rejected",
        };
        self.audit(request, outcome, Some(decision), &decision.reason);
        Some(Some(if decision.approve {
            Settlement::Released
        } else {
            Settlement::Rejected
        }))
    }

    /// Publishes the held message again, with its signature and the decision
    /// (a deferred job's record goes back to the deferred topic, released).
    async fn release(&self, request: &ApprovalRequest, decision: &Decision) -> bool {
        let Some((value, copy)) = request
            .held
            .as_ref()
            .and_then(|h| h.value().map(|v| (v, h)))
        else {
            let message =
                "the held message is missing from its approval request; submit the job again";
            return self.reject(request, "approval_unreleasable", message).await;
        };
        match self.read_held(copy.from, &value) {
            HeldValue::Deferred(record) => {
                return self.release_deferred(request, decision, record).await;
            }
            HeldValue::Unreadable if copy.from == HeldFrom::Deferred => {
                let message = "the held deferred record cannot be read back; submit the job again";
                return self.reject(request, "approval_unreleasable", message).await;
            }
            HeldValue::Job(_) | HeldValue::Unreadable => {}
        }
        let mut fields = vec![(
            headers::RELEASED_BY,
            serde_json::to_string(decision).unwrap_or_default(),
        )];
        if let Some(s) = &copy.signed {
            fields.push((sign::KEY_ID, s.key_id.clone()));
            fields.push((sign::TS, s.ts.clone()));
            fields.push((sign::SIG, s.sig.clone()));
        }
        let key = copy.key();
        let headers = owned_headers(&fields);
        self.put_back(request, &self.jobs, key.as_deref(), &value, Some(&headers))
            .await
    }

    /// Writes a deferred job held on its live run back to the deferred topic
    /// (keyed by its job id, as the hand-off was) with the decision in its
    /// record: the gatherer takes it up again, and its next run is admitted
    /// past the hold as released by it. The decision is one this releaser
    /// checked, over a cover it rebuilt with this record in it.
    async fn release_deferred(
        &self,
        request: &ApprovalRequest,
        decision: &Decision,
        record: Box<DeferredJob>,
    ) -> bool {
        let record = DeferredRecord::Job(record.released(decision.clone()));
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        let key = Some(request.job_id.as_bytes());
        self.put_back(request, &self.deferred, key, &bytes, None)
            .await
    }

    /// Publishes a released job to `to` until acknowledged; a topic that
    /// refuses it ends the job `approval_unreleasable`. False when stopped.
    async fn put_back(
        &self,
        request: &ApprovalRequest,
        to: &Out,
        key: Option<&[u8]>,
        value: &[u8],
        headers: Option<&OwnedHeaders>,
    ) -> bool {
        let sent = switchyard_kafka::produce::publish(
            &to.producer,
            &to.name,
            key,
            value,
            headers,
            &self.stop,
        )
        .await;
        match sent {
            Ok(()) => true,
            Err(PublishError::Stopped) => false,
            Err(PublishError::Refused(e)) => {
                let message = format!("the topic `{}` refused the released job: {e}", to.name);
                self.reject(request, "approval_unreleasable", &message)
                    .await
            }
        }
    }

    /// The job a held copy holds: the message as its producer wrote it, or
    /// the job of a deferred record.
    fn held_job(&self, request: &ApprovalRequest) -> Option<Job> {
        let copy = request.held.as_ref()?;
        match self.read_held(copy.from, &copy.value()?) {
            HeldValue::Job(job) => Some(*job),
            HeldValue::Deferred(record) => Some(record.job),
            HeldValue::Unreadable => None,
        }
    }

    /// A held copy's value read back. Workers older than [`HeldFrom`] held a
    /// deferred job's live run with its deferred record as a jobs-topic copy:
    /// a jobs-topic copy that is no job but a deferred job's record is one.
    fn read_held(&self, from: HeldFrom, value: &[u8]) -> HeldValue {
        if from == HeldFrom::Jobs
            && let Ok(job) = self.job_codec.decode_job(value)
        {
            return HeldValue::Job(Box::new(job));
        }
        match serde_json::from_slice::<DeferredRecord>(value) {
            Ok(DeferredRecord::Job(record)) => HeldValue::Deferred(Box::new(record)),
            _ => HeldValue::Unreadable,
        }
    }

    /// Ends a held job `rejected` (its last result), saying why.
    async fn reject(&self, request: &ApprovalRequest, code: &'static str, message: &str) -> bool {
        let Some(job) = self.held_job(request) else {
            error!(approval_id = %request.id, job_id = %request.job_id, code, "A held job's message cannot be read back; it ends without a second result.");
            return true;
        };
        let mut result = self
            .engine
            .unrouted_result(job, JobStatus::Rejected, code, message);
        result.approval_id = Some(request.id.clone());
        let bytes = match self.results.1.encode(&result) {
            Ok(b) => b,
            Err(e) => {
                error!(job_id = %request.job_id, error = %e, "A rejected held job's result does not fit the results schema.");
                return true;
            }
        };
        !matches!(
            switchyard_kafka::produce::publish(
                &self.results.0.producer,
                &self.results.0.name,
                Some(request.job_id.as_bytes()),
                &bytes,
                None,
                &self.stop,
            )
            .await,
            Err(PublishError::Stopped)
        )
    }

    /// Records what became of one held job's request.
    fn audit(
        &self,
        request: &ApprovalRequest,
        outcome: &str,
        decision: Option<&Decision>,
        reason: &str,
    ) {
        let Some(log) = self.engine.audit_log() else {
            return;
        };
        log.record(AuditEntry {
            kind: "approval".into(),
            subject: request.id.clone(),
            node: Some(request.node.clone()),
            principal: decision.map(|d| d.principal.clone()),
            outcome: outcome.to_owned(),
            detail: serde_json::json!({
                "job_id": request.job_id,
                "hold": request.kind,
                "submitted_by": request.submitted_by,
                "worst_case_usd": request.worst_case_usd,
                "key_id": decision.map(|d| d.key_id.clone()),
                "override_budget": decision.is_some_and(|d| d.override_budget),
                "reason": reason,
            }),
        });
    }

    /// Replaces a held job's request with how it ended, in `book` at once
    /// (as reading the record back will) and on the topic.
    async fn settle(
        &self,
        book: &mut ApprovalBook,
        request: &ApprovalRequest,
        outcome: Settlement,
        at: DateTime<Utc>,
        released_in: Option<ReleasedIn>,
    ) -> bool {
        let record = ApprovalRecord::Settled(Settled {
            id: request.id.clone(),
            job_id: request.job_id.clone(),
            node: request.node.clone(),
            outcome,
            at,
            released_in,
        });
        book.apply(record.clone());
        self.approvals.send(&record, &self.stop).await.is_ok()
    }
}
