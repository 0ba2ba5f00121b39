//! The engine's side of deferred routing: handing an admitted job off to the
//! deferred topic, holding a waiting job's worst case on its budgets, and
//! turning what a provider batch did with a job's line into the job's result
//! and usage events (at the batch price, with what the same tokens cost live).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::{SubsecRound, Utc};
use switchyard_core::budget::Reservation;
use switchyard_core::deferred::DeferredJob;
use switchyard_core::job::Job;
use switchyard_core::result::{Attempt, ErrorInfo, JobResult, JobStatus, Output, RunMode};
use switchyard_core::usage::UsageEvent;

use super::{Engine, Outcome, Work, now_ms};

/// How long a deferred job's admission reservation is kept for a gatherer to
/// replace it by its hold. A gatherer steps every second: one here replaces
/// it then, one on another worker holds the job and its budget snapshots
/// (published every second) carry the hold well within this. Counting both
/// meanwhile errs on the side of the cap, for a few seconds only; a gatherer
/// held up longer in a provider call leaves the job uncounted until its next
/// step, as before the hand-off kept anything.
pub const HANDOFF_KEPT: Duration = Duration::from_secs(15);

impl Engine {
    /// Whether a batch was canceled (its deferred jobs end canceled too).
    pub fn is_batch_canceled(&self, batch_id: &str) -> bool {
        self.canceled_batches.read().contains(batch_id)
    }

    /// Holds `amount_usd` on the budgets of a waiting deferred job's path
    /// (none when its path has no budget or its project is unknown), so that
    /// jobs admitted meanwhile count it; settle it with what the job cost.
    /// The reservation the job was admitted with here, if still kept, is
    /// released in the same step: the job is never counted zero times.
    pub fn hold_budget(&self, job: &Job, amount_usd: f64) -> Option<Reservation> {
        let handed = self.handoffs.lock().remove(&job.job_id).map(|(r, _)| r);
        let policy = self.org.policy(&job.project, job.workload.as_deref()).ok();
        let nodes = policy
            .as_ref()
            .map(|p| p.budget_nodes.as_slice())
            .filter(|nodes| !nodes.is_empty());
        if handed.is_none() && nodes.is_none() {
            return None;
        }
        let mut ledger = self.ledger.lock();
        let hold = nodes.map(|nodes| ledger.reserve(nodes, amount_usd));
        if let Some(r) = handed {
            ledger.settle(r, 0.0, Utc::now());
        }
        drop(ledger);
        self.ledger_changed.notify_one();
        hold
    }

    /// Releases the reservations of jobs handed off more than
    /// [`HANDOFF_KEPT`] before `now` that no gatherer here took over (their
    /// records went to a partition another worker gathers, whose hold its
    /// budget snapshots carry by then).
    pub fn release_stale_handoffs(&self, now: Instant) {
        let stale: Vec<Reservation> = self
            .handoffs
            .lock()
            .extract_if(|_, (_, at)| now.saturating_duration_since(*at) >= HANDOFF_KEPT)
            .map(|(_, (r, _))| r)
            .collect();
        for r in stale {
            self.settle_budget(r, 0.0);
        }
    }

    /// Keeps the reservation of a job handed off to the deferred topic until a
    /// gatherer holds the job (a redelivered copy's replaces the earlier one).
    fn keep_handoff(&self, job_id: &str, reservation: Reservation) {
        let earlier = self
            .handoffs
            .lock()
            .insert(job_id.to_owned(), (reservation, Instant::now()));
        if let Some((r, _)) = earlier {
            self.settle_budget(r, 0.0);
        }
    }

    /// Replaces a hold by what the job cost (0 when it ended unbilled).
    pub fn settle_budget(&self, hold: Reservation, cost_usd: f64) {
        self.ledger.lock().settle(hold, cost_usd, Utc::now());
        self.ledger_changed.notify_one();
    }

    /// Lets admission defer jobs that may wait (their records go to the
    /// deferred topic). Only for a worker whose deferred topic is gathered
    /// into provider batches: a deferred job nobody gathers never ends.
    pub fn enable_deferral(&self) {
        self.deferral
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Hands a deferred job off as the record the runner publishes on the
    /// deferred topic. Its reservation is kept until the gatherer's hold
    /// replaces it (here, in [`Engine::hold_budget`]) or [`HANDOFF_KEPT`]
    /// passes: dropped at the hand-off, a burst of deferred jobs was each
    /// admitted against the same headroom before any gatherer held one.
    pub(super) fn defer(&self, job: Job, mut work: Work<'_>) -> Outcome {
        if let Some(r) = work.reservation.reservation.take() {
            self.keep_handoff(&job.job_id, r);
        }
        let decision = &work.admitted.decision;
        let deployments = decision
            .chain
            .iter()
            .filter_map(|e| self.router.deployments().get(e.deployment))
            .map(|d| d.name.clone())
            .collect();
        let now = now_ms();
        self.metrics.job_deferred();
        let mut record = DeferredJob::new(
            job,
            decision.summary(&self.catalog),
            deployments,
            decision.worst_case_in(&self.catalog, RunMode::Deferred),
            now,
            work.admitted.due.unwrap_or(now),
            work.admitted.default_max_tokens,
        );
        record.signer = work.checked.signer.clone();
        record.released_by = work.checked.released_by.clone();
        Outcome::Deferred(Box::new(record))
    }

    /// Whether admission may defer jobs now.
    pub(super) fn deferral_enabled(&self) -> bool {
        self.deferral.load(Ordering::Relaxed)
    }

    /// The final result of a deferred job after its provider batch answered
    /// its line (`answer`, read from `attempt`) or failed it for good
    /// (`error`): served deferred, with the attempts of earlier batches first.
    pub fn finish_deferred(
        &self,
        record: DeferredJob,
        attempt: Attempt,
        answer: Option<Output>,
        error: Option<ErrorInfo>,
    ) -> Outcome {
        let completed_at = Utc::now().trunc_subsecs(3);
        let usage: Vec<UsageEvent> = self.deferred_usage(&record, &attempt).into_iter().collect();
        let DeferredJob {
            job,
            routing,
            attempts: earlier,
            deferred_at,
            ..
        } = record;
        let latency_ms = (completed_at - deferred_at).num_milliseconds().max(0) as u64;
        let content = self.auditor.get().is_some() && self.audit_content(&job);
        let answer = answer.map(|a| (0, a));
        let result = JobResult::finished(
            job,
            routing,
            vec![attempt],
            answer,
            error,
            latency_ms,
            completed_at,
        )
        .with_earlier_attempts(earlier)
        .in_mode(RunMode::Deferred);
        self.finished(result, usage, content)
    }

    /// The usage event of one provider-batch line of a deferred job that
    /// billed tokens: its cost at the batch price, `live_cost_usd` what the
    /// same tokens cost on the same model live. `None` when the line billed
    /// nothing or the job names no project path.
    pub fn deferred_usage(&self, record: &DeferredJob, attempt: &Attempt) -> Option<UsageEvent> {
        if attempt.usage.is_zero() {
            return None;
        }
        let path = record.job.project_path()?;
        let live = self
            .catalog
            .get(&attempt.model)
            .map_or(attempt.cost_usd, |m| {
                m.cost_in(RunMode::Live, &attempt.usage)
            });
        let mut event = UsageEvent::for_attempt(
            uuid::Uuid::now_v7().to_string(),
            &record.job,
            path,
            record.attempts.len(),
            attempt,
            &record.routing,
            self.baseline_cost(&attempt.usage),
            Utc::now().trunc_subsecs(3),
        )
        .deferred(live);
        event.cap_echoes(self.max_echo);
        Some(event)
    }

    /// The result of a deferred job whose Switchyard batch was canceled while
    /// it waited (or while its provider batch ran and did not answer it).
    pub fn cancel_deferred(&self, record: DeferredJob) -> Outcome {
        let DeferredJob {
            job,
            routing,
            attempts,
            ..
        } = record;
        let message = "the job's batch was canceled while the job waited for a provider batch";
        let mut result = self
            .unrouted_result(job, JobStatus::Canceled, "batch_canceled", message)
            .with_earlier_attempts(attempts)
            .in_mode(RunMode::Deferred);
        result.routing = Some(routing);
        self.metrics.record(&result, 0.0);
        Outcome::Finished {
            result: Box::new(result),
            usage: Vec::new(),
        }
    }
}
