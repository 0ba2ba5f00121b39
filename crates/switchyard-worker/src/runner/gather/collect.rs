//! Following provider batches: polling with backoff, and collecting an ended
//! batch line by line into results and usage at the batch price, handing
//! failed and expired lines on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use switchyard_core::backoff::Backoff;
use switchyard_core::deferred::{
    DeferredJob, DeferredRecord, ProviderBatchRecord, ProviderBatchState,
};
use switchyard_core::result::{Attempt, AttemptOutcome, AttemptTarget, ErrorInfo, Output, RunMode};
use switchyard_providers::batch::{BatchApi, BatchError, LineOutcome, RemoteBatch, RemoteStatus};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::dispatch::check_output;
use crate::engine::Outcome;
use crate::runner::Incoming;

use super::{
    API_TIMEOUT, Gatherer, NO_API_PAUSE, Part, Poll, RESULTS_ATTEMPTS, RESULTS_TIMEOUT, timed,
};

impl Gatherer {
    /// Whether an open batch may be polled now.
    pub(super) fn poll_due(&self, part: &mut Part, key: &str) -> bool {
        let poll = part.polls.entry(key.to_owned()).or_insert_with(|| Poll {
            next: Instant::now(),
            backoff: Backoff::new(self.settings.poll_interval, self.settings.max_poll_backoff),
            unreadable: 0,
        });
        Instant::now() >= poll.next
    }

    pub(super) fn poll_later(&self, part: &mut Part, key: &str, pause: Duration) {
        if let Some(poll) = part.polls.get_mut(key) {
            poll.next = Instant::now() + pause;
        }
    }

    pub(super) fn polled_badly(&self, part: &mut Part, key: &str, e: &BatchError) {
        if let Some(poll) = part.polls.get_mut(key) {
            let pause = poll.backoff.next_delay();
            poll.next = Instant::now() + pause;
            warn!(key, error = %e, ?pause, "A provider batch API call failed; trying again later.");
        }
    }

    /// Polls a submitted batch when due: cancels it if its Switchyard batch
    /// was canceled, records its progress, collects it once it ended.
    pub(super) async fn follow(
        &self,
        p: i32,
        part: &mut Part,
        mut record: ProviderBatchRecord,
    ) -> bool {
        if !self.poll_due(part, &record.key) {
            return true;
        }
        let Some((_, api)) = self.batch_api(&record.deployment) else {
            warn!(key = %record.key, deployment = %record.deployment, "A provider batch names a deployment this worker has no batch API for; it waits for a worker that has.");
            self.poll_later(part, &record.key, NO_API_PAUSE);
            return true;
        };
        let Some(id) = record.provider_batch_id.clone() else {
            return true;
        };
        let canceled = record
            .batch_id
            .as_deref()
            .is_some_and(|b| self.engine.is_batch_canceled(b));
        let mut polled = None;
        if canceled && !record.cancel_requested {
            info!(key = %record.key, provider_batch_id = %id, "Canceling a provider batch of a canceled batch.");
            match timed(API_TIMEOUT, api.kind(), api.cancel(&id)).await {
                Ok(remote) => {
                    record.cancel_requested = true;
                    polled = Some(Ok(remote));
                }
                // Refused outright (most likely it has ended already): asked
                // once is enough; it is polled and collected as it is.
                Err(e) if !e.is_retryable() => {
                    warn!(key = %record.key, provider_batch_id = %id, error = %e, "The provider refused to cancel a batch; collecting it as it is.");
                    record.cancel_requested = true;
                }
                Err(e) => polled = Some(Err(e)),
            }
        }
        let polled = match polled {
            Some(polled) => polled,
            None => timed(API_TIMEOUT, api.kind(), api.retrieve(&id)).await,
        };
        let remote = match polled {
            Ok(remote) => remote,
            Err(e) => {
                self.polled_badly(part, &record.key, &e);
                return true;
            }
        };
        if let Some(poll) = part.polls.get_mut(&record.key) {
            // An ended batch's poll has succeeded only once its results are
            // read: reads that keep failing back off like a failing retrieve.
            if !remote.status.is_final() {
                poll.backoff.reset();
            }
            poll.next = Instant::now() + self.settings.poll_interval;
        }
        if remote.status.is_final() {
            return self.collect(p, part, record, api.clone(), remote).await;
        }
        let changed = record.provider_status.as_deref() != Some(remote.provider_status.as_str())
            || record.counts != remote.counts
            || (record.cancel_requested
                && part
                    .book
                    .batch(&record.key)
                    .is_some_and(|b| !b.record.cancel_requested));
        if changed {
            record.provider_status = Some(remote.provider_status.clone());
            record.counts = remote.counts;
            record.updated_at = Utc::now();
            debug!(key = %record.key, status = %remote.provider_status, succeeded = remote.counts.succeeded, processing = remote.counts.processing, "Provider batch progress.");
            let key = record.key.clone();
            return self
                .write(p, part, &key, Some(&DeferredRecord::Batch(record)))
                .await
                .is_some();
        }
        true
    }

    /// Collects an ended provider batch: every job it still answers for gets
    /// its result, is handed on, or ends canceled; then the batch is recorded
    /// collected and the finished jobs' records are removed.
    pub(super) async fn collect(
        &self,
        p: i32,
        part: &mut Part,
        mut record: ProviderBatchRecord,
        api: Arc<dyn BatchApi>,
        remote: RemoteBatch,
    ) -> bool {
        let mut unreadable = None;
        let lines = if remote.status == RemoteStatus::Failed {
            Vec::new()
        } else {
            match timed(RESULTS_TIMEOUT, api.kind(), api.results(&remote)).await {
                Ok(lines) => lines,
                Err(e) => {
                    let failed = part.polls.get_mut(&record.key).map_or(1, |poll| {
                        poll.unreadable += 1;
                        poll.unreadable
                    });
                    if failed < RESULTS_ATTEMPTS {
                        self.polled_badly(part, &record.key, &e);
                        return true;
                    }
                    error!(key = %record.key, provider_batch_id = ?record.provider_batch_id, attempts = failed, error = %e, "The results of an ended provider batch could not be read; its jobs are handed on.");
                    unreadable = Some(format!(
                        "the provider batch's results could not be read ({failed} attempts; the last: {e})"
                    ));
                    Vec::new()
                }
            }
        };
        let mut outcomes: HashMap<usize, LineOutcome> = HashMap::new();
        let mut foreign = 0usize;
        for line in lines {
            match record.index_of(&line.custom_id) {
                Some(i) => {
                    outcomes.insert(i, line.outcome);
                }
                None => foreign += 1,
            }
        }
        if foreign > 0 {
            error!(key = %record.key, provider_batch_id = ?record.provider_batch_id, lines = foreign, "A provider batch has lines whose custom ids do not carry its key; they are ignored, and its jobs without a line are handed on.");
        }
        let canceled = record.cancel_requested
            || record
                .batch_id
                .as_deref()
                .is_some_and(|b| self.engine.is_batch_canceled(b));
        let whole_failure = remote
            .errors
            .clone()
            .unwrap_or_else(|| "the provider refused the batch".to_owned());
        let jobs: Vec<(usize, DeferredJob, i64)> = part
            .book
            .jobs_of(&record.key)
            .into_iter()
            .map(|(i, j)| (i, j.record.clone(), j.offset))
            .collect();
        let mut ended: Vec<(String, f64)> = Vec::new();
        let mut handed_on = 0usize;
        for (i, job, offset) in jobs {
            let id = job.job.job_id.clone();
            let settled = job.settled_usd;
            let original =
                serde_json::to_vec(&DeferredRecord::Job(job.clone())).unwrap_or_default();
            let line = Line {
                outcome: outcomes.remove(&i),
                canceled,
                whole_failure: (remote.status == RemoteStatus::Failed)
                    .then_some(whole_failure.as_str())
                    .or(unreadable.as_deref()),
            };
            match self
                .settle_line(p, part, &record, api.as_ref(), job, line)
                .await
            {
                Settled::HandedOn => handed_on += 1,
                Settled::Stopped => return false,
                Settled::Ended(outcome) => {
                    let cost = match &outcome {
                        Outcome::Finished { result, .. } => (result.cost_usd - settled).max(0.0),
                        _ => 0.0,
                    };
                    if !self.publish(p, offset, &id, original, &outcome).await {
                        return false;
                    }
                    ended.push((id, cost));
                }
            }
        }
        record.provider_status = Some(remote.provider_status.clone());
        record.counts = remote.counts;
        info!(key = %record.key, provider_batch_id = ?record.provider_batch_id, answered = remote.counts.succeeded, errored = remote.counts.errored, expired = remote.counts.expired, handed_on, "Collected a provider batch.");
        // The ended jobs' records go first, then the batch's: once it is
        // recorded collected, nothing of it is left on the topic to redo.
        let mut ended_ids = Vec::with_capacity(ended.len());
        for (id, cost) in ended {
            self.settle_hold(part, &id, cost);
            if self.write(p, part, &id, None).await.is_none() {
                return false;
            }
            ended_ids.push(id);
        }
        self.close(p, part, record, ended_ids).await
    }

    /// What one line of an ended provider batch does to its job.
    async fn settle_line(
        &self,
        p: i32,
        part: &mut Part,
        record: &ProviderBatchRecord,
        api: &dyn BatchApi,
        job: DeferredJob,
        line: Line<'_>,
    ) -> Settled {
        let (target, latency_ms) = line_target(record);
        let attempt = match line.outcome {
            Some(LineOutcome::Answered(answer)) => {
                let answer = api.finish(&job.job.request, answer);
                let cost = self.deferred_cost(&record.model, &answer.usage);
                let problem = check_output(&job.job, &answer);
                let attempt = Attempt::answered(
                    target,
                    answer.status,
                    latency_ms,
                    answer.usage,
                    cost,
                    problem.clone(),
                );
                match problem {
                    None => {
                        let output = Output {
                            content: answer.content,
                            finish_reason: answer.finish_reason,
                        };
                        return Settled::Ended(self.engine.finish_deferred(
                            job,
                            attempt,
                            Some(output),
                            None,
                        ));
                    }
                    // Unusable for the job's checks: failed over like a live answer.
                    Some(_) => attempt,
                }
            }
            Some(LineOutcome::Failed(e)) => {
                let billed = e.billed();
                let cost = self.deferred_cost(&record.model, &billed);
                let attempt = Attempt::failed(
                    target,
                    e.outcome(),
                    e.status(),
                    latency_ms,
                    billed,
                    cost,
                    e.to_string(),
                );
                if !e.allows_failover() && !line.canceled {
                    let error = ErrorInfo {
                        code: e.code().into(),
                        message: e.to_string(),
                    };
                    return Settled::Ended(self.engine.finish_deferred(
                        job,
                        attempt,
                        None,
                        Some(error),
                    ));
                }
                attempt
            }
            Some(LineOutcome::Canceled) => {
                let why = "the provider canceled the line before answering it";
                failed_line(record, AttemptOutcome::Rejected, None, why)
            }
            Some(LineOutcome::Expired) => {
                let why = "the provider batch expired before answering the line";
                failed_line(record, AttemptOutcome::Timeout, None, why)
            }
            None => match line.whole_failure {
                Some(why) => failed_line(record, AttemptOutcome::Rejected, None, why),
                None => {
                    let why = "the provider batch ended without a line for the request";
                    failed_line(record, AttemptOutcome::Timeout, None, why)
                }
            },
        };
        if line.canceled {
            if !self.publish_line_usage(&job, &attempt).await {
                return Settled::Stopped;
            }
            let mut job = job;
            job.attempts.push(attempt);
            return Settled::Ended(self.engine.cancel_deferred(job));
        }
        if self
            .hand_on(p, part, job, &record.deployment, attempt)
            .await
        {
            Settled::HandedOn
        } else {
            Settled::Stopped
        }
    }

    /// Publishes the usage event of a failed line that billed tokens (none
    /// for a line that billed nothing); false when stopped.
    async fn publish_line_usage(&self, job: &DeferredJob, attempt: &Attempt) -> bool {
        match self.engine.deferred_usage(job, attempt) {
            Some(event) => {
                self.publisher
                    .usage_only(std::slice::from_ref(&event))
                    .await
            }
            None => true,
        }
    }

    /// A job whose line `deployment`'s batch failed: its billed tokens are
    /// published as a usage event now, and the job is written again with the
    /// deployment tried, which frees it from the batch to be planned anew
    /// (another deployment's batch, or live). False when stopped.
    pub(super) async fn hand_on(
        &self,
        p: i32,
        part: &mut Part,
        job: DeferredJob,
        deployment: &str,
        attempt: Attempt,
    ) -> bool {
        if !self.publish_line_usage(&job, &attempt).await {
            return false;
        }
        debug!(job_id = %job.job.job_id, deployment, why = ?attempt.error, "A provider batch failed a line; handing the job on.");
        let next = job.after_failure(deployment, attempt);
        let id = next.job.job_id.clone();
        self.write(p, part, &id, Some(&DeferredRecord::Job(next)))
            .await
            .is_some()
    }

    /// What `usage` cost on `model` at its batch price.
    fn deferred_cost(&self, model: &str, usage: &switchyard_core::vocab::TokenUsage) -> f64 {
        self.engine
            .catalog()
            .get(model)
            .map_or(0.0, |m| m.cost_in(RunMode::Deferred, usage))
    }

    /// Records a provider batch as done with. The record names only the
    /// jobs that ended with it (`ended`, whose records were removed just
    /// before), while jobs handed on (written again since) are left alone; it
    /// is never larger than the intent was. It stays on the topic for
    /// `status` for [`COLLECTED_KEPT`], then is removed.
    pub(super) async fn close(
        &self,
        p: i32,
        part: &mut Part,
        mut record: ProviderBatchRecord,
        ended: Vec<String>,
    ) -> bool {
        record.state = ProviderBatchState::Collected;
        record.jobs = ended;
        record.released = Vec::new();
        record.updated_at = Utc::now();
        part.polls.remove(&record.key);
        let key = record.key.clone();
        self.write(p, part, &key, Some(&DeferredRecord::Batch(record)))
            .await
            .is_some()
    }

    /// Publishes a deferred job's outcome (result and usage events; a dead
    /// letter holding `original`, its deferred record, if the result cannot be
    /// published); false when stopped.
    pub(super) async fn publish(
        &self,
        p: i32,
        offset: i64,
        job_id: &str,
        original: Vec<u8>,
        outcome: &Outcome,
    ) -> bool {
        let incoming = Incoming::detached(p, offset, job_id, original);
        self.publisher.publish(outcome, &incoming).await
    }

    /// Ends a waiting job of a canceled batch.
    pub(super) async fn cancel_waiting(&self, p: i32, part: &mut Part, job_id: &str) -> bool {
        let Some(job) = part.book.job(job_id).map(|j| (j.record.clone(), j.offset)) else {
            return true;
        };
        let (record, offset) = job;
        let original = serde_json::to_vec(&DeferredRecord::Job(record.clone())).unwrap_or_default();
        let billed = record.unsettled_cost_usd();
        let outcome = self.engine.cancel_deferred(record);
        if !self.publish(p, offset, job_id, original, &outcome).await {
            return false;
        }
        self.settle_hold(part, job_id, billed);
        self.write(p, part, job_id, None).await.is_some()
    }
}

/// Where a provider batch's lines were sent, and how long they took: from the
/// batch's creation to now.
fn line_target(record: &ProviderBatchRecord) -> (AttemptTarget<'_>, u64) {
    let target = AttemptTarget {
        deployment: &record.deployment,
        provider: &record.provider,
        model: &record.model,
    };
    let latency_ms = (Utc::now() - record.created_at).num_milliseconds().max(0) as u64;
    (target, latency_ms)
}

/// The attempt of a line that failed without an answer.
pub(super) fn failed_line(
    record: &ProviderBatchRecord,
    outcome: AttemptOutcome,
    status: Option<u16>,
    why: &str,
) -> Attempt {
    let (target, latency_ms) = line_target(record);
    Attempt::failed(
        target,
        outcome,
        status,
        latency_ms,
        Default::default(),
        0.0,
        why.to_owned(),
    )
}

/// One line of an ended provider batch, as `collect` read it.
struct Line<'a> {
    /// Its outcome; `None` when the provider gave no line for the request.
    outcome: Option<LineOutcome>,
    /// The job's Switchyard batch was canceled.
    canceled: bool,
    /// Why the provider refused the whole batch, when it did.
    whole_failure: Option<&'a str>,
}

/// What became of a job of a collected provider batch.
enum Settled {
    /// It ended: publish its outcome.
    Ended(Outcome),
    /// It was handed on to another deployment's batch, or live.
    HandedOn,
    /// Stopped before it was recorded.
    Stopped,
}
