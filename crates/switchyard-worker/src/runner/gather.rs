//! The gatherer: deferred routing's side of a worker. Every worker with a
//! deployment whose batch API Switchyard speaks runs one, in a consumer group
//! of its own on the compacted deferred topic; every record of a partition (the
//! jobs admission handed off, keyed by job id, and the provider batches made of
//! them, written to the same partition) is folded into that partition's
//! [`Book`], read from the beginning on assignment, and acted on only once
//! read to the end the partition had (see `compacted`).
//!
//! For each partition it owns, once a second, the gatherer:
//! - holds each waiting job's worst case (at the batch price) on its budgets;
//! - asks the provider to cancel open batches of canceled Switchyard batches;
//! - resumes provider batches left as an intent (a worker stopped between
//!   recording a batch and hearing the provider accept it): twice
//!   `submit_timeout` after the intent's latest attempt (so that a create that
//!   timed out has had time to land), it lists the provider's batches and
//!   adopts the one that carries the batch's key, and creates it only when none
//!   does;
//! - polls open provider batches every `poll_interval` (backing off after
//!   errors), and collects ended ones: each answered line becomes its job's
//!   result and usage events, at the batch price; an errored or expired line
//!   hands its job on (to another deployment's batch, or live); a canceled
//!   batch's lines end canceled;
//! - plans the waiting jobs ([`plan`]): creates provider batches (recording the
//!   intent first), runs live the jobs that can no longer wait, ends canceled
//!   the jobs of canceled batches.
//!
//! Every change is a record on the partition before it counts, and the book is
//! only acted on again once it has read back what the gatherer wrote, so a
//! worker that takes the partition over knows everything without asking anyone.
//! A crash between a result and the record that says so publishes the result
//! again (at-least-once, like the rest of the pipeline); it never sends a
//! provider request again, since a provider batch is created only after its
//! intent is recorded, and an intent is resumed by looking for it first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use switchyard_core::backoff::Backoff;
use switchyard_core::budget::Reservation;
use switchyard_core::config::DeferredConfig;
use switchyard_core::deferred::{
    Book, DeferredJob, DeferredRecord, PlanSettings, ProviderBatchRecord, ProviderBatchState, Step,
    batch_key, plan,
};
use switchyard_core::result::{Attempt, AttemptOutcome, AttemptTarget, ErrorInfo, Output, RunMode};
use switchyard_core::vocab::JobMode;
use switchyard_kafka::produce::{PublishError, publish_to};
use switchyard_providers::batch::{
    BatchApi, BatchError, BatchRequest, LineOutcome, NewBatch, RemoteBatch, RemoteStatus,
};
use switchyard_providers::{CallRequest, Deployment};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::Incoming;
use super::compacted::{self, CompactedConsumer, ReadState};
use super::publish::{Out, Publisher};
use crate::access::{Checked, Envelope};
use crate::dispatch::check_output;
use crate::engine::{Engine, Outcome};

/// How often each partition's book is acted on.
const STEP_EVERY: Duration = Duration::from_secs(1);

/// Most pages of a provider's batch list read when looking for a batch.
const MAX_LIST_PAGES: usize = 20;

/// Clock skew allowed between this worker and a provider when matching a
/// listed batch's creation time with an intent's attempt.
const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::seconds(120);

/// One owned partition of the deferred topic.
#[derive(Default)]
struct Part {
    read: ReadState,
    /// Offset of the last record read.
    read_to: Option<i64>,
    /// Offset of the last record this gatherer wrote; the book is acted on
    /// again once `read_to` reaches it.
    written: Option<i64>,
    book: Book,
    /// Budget holds of waiting jobs, by job id (`None`: nothing to hold).
    holds: HashMap<String, Option<Reservation>>,
    /// When each open provider batch is polled next, by key.
    polls: HashMap<String, Poll>,
    /// After the topic refused a record: the partition waits until then.
    paused_until: Option<Instant>,
    /// No provider batch is planned before then: `submit_timeout` after the
    /// partition was read, so that an intent its previous owner was writing
    /// when the partition moved is read before the same jobs are planned.
    plan_after: Option<Instant>,
}

impl Part {
    /// Whether the book has read back everything this gatherer wrote (and
    /// no refusal pauses the partition).
    fn settled(&self) -> bool {
        self.read.caught_up
            && self.paused_until.is_none_or(|t| Instant::now() >= t)
            && match (self.written, self.read_to) {
                (None, _) => true,
                (Some(w), Some(r)) => r >= w,
                (Some(_), None) => false,
            }
    }

    fn wrote(&mut self, offset: i64) {
        self.written = Some(self.written.map_or(offset, |w| w.max(offset)));
    }
}

struct Poll {
    next: Instant,
    backoff: Backoff,
}

/// A live run's end: the partition, the job and its tombstone's offset.
type LiveDone = (i32, String, Option<i64>);

/// Deferred jobs being run live, across partitions: a job stays here until
/// its task ended, so that no step plans it again meanwhile (nor after its
/// partition comes back to this worker).
#[derive(Default)]
struct LiveRuns {
    tasks: JoinSet<LiveDone>,
    /// The job of each task, to free it if the task panics.
    ids: HashMap<tokio::task::Id, (i32, String)>,
    running: HashSet<String>,
}

impl LiveRuns {
    fn has_room(&self) -> bool {
        self.running.len() < MAX_LIVE_RUNS
    }

    /// Takes in ended runs: each job's tombstone offset goes to its partition.
    fn reap(&mut self, parts: &mut HashMap<i32, Part>) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            let (id, ended) = match done {
                Ok((id, (p, job, tombstone))) => (id, Some((p, job, tombstone))),
                Err(e) => {
                    error!(error = %e, "A live run of a deferred job failed; it runs again when its partition is planned next.");
                    (e.id(), None)
                }
            };
            if let Some((_, job)) = self.ids.remove(&id) {
                self.running.remove(&job);
            }
            if let Some((p, _, Some(offset))) = ended
                && let Some(part) = parts.get_mut(&p)
            {
                part.wrote(offset);
            }
        }
    }
}

/// Most deferred jobs run live at once by one gatherer.
const MAX_LIVE_RUNS: usize = 256;

/// Longest a provider batch API call may take (listing, polling, canceling).
const API_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest reading a provider batch's results may take (under the consumer's
/// five-minute poll interval, so that the gatherer keeps its partitions).
const RESULTS_TIMEOUT: Duration = Duration::from_secs(240);

/// How long a provider batch of a deployment this worker cannot reach waits
/// before it is looked at again (and the warning repeated).
const NO_API_PAUSE: Duration = Duration::from_secs(60);

/// How long a collected provider batch's record stays on the deferred topic
/// (for `status`).
const COLLECTED_KEPT: Duration = Duration::from_secs(7 * 24 * 3600);

/// How long a partition waits after the topic refused one of its records.
const REFUSED_PAUSE: Duration = Duration::from_secs(30);

/// The gatherer's inputs and outputs.
pub(super) struct Gatherer {
    pub engine: Arc<Engine>,
    pub consumer: CompactedConsumer,
    /// The deferred topic.
    pub out: Out,
    /// Results and usage events; its source topic is the deferred topic.
    pub publisher: Publisher,
    pub settings: DeferredConfig,
    /// How long live runs may finish after a stop.
    pub drain_grace: Duration,
    pub stop: CancellationToken,
}

impl Gatherer {
    /// Runs until stopped.
    pub async fn run(self) {
        let this = Arc::new(self);
        let mut parts: HashMap<i32, Part> = HashMap::new();
        let mut live = LiveRuns::default();
        let mut last_step = Instant::now();
        loop {
            let message = tokio::select! {
                _ = this.stop.cancelled() => break,
                m = tokio::time::timeout(Duration::from_millis(200), this.consumer.recv()) => m,
            };
            this.rebalanced(&mut parts);
            match message {
                Ok(Ok(m)) => this.read(&mut parts, &m),
                Ok(Err(e)) => warn!(error = %e, "Reading the deferred topic failed; retrying."),
                Err(_) => {}
            }
            let topic = this.out.name.as_str();
            let states = parts.iter_mut().map(|(p, part)| (*p, &mut part.read));
            for p in compacted::catch_up(&this.consumer, topic, states) {
                if let Some(part) = parts.get_mut(&p) {
                    part.plan_after = Some(Instant::now() + this.settings.submit_timeout);
                    info!(
                        partition = p,
                        waiting = part.book.waiting().count(),
                        open = part.book.open_batches().count(),
                        "Deferred jobs read; gathering."
                    );
                }
            }
            live.reap(&mut parts);
            if last_step.elapsed() < STEP_EVERY {
                continue;
            }
            last_step = Instant::now();
            for (p, part) in parts.iter_mut().filter(|(_, part)| part.settled()) {
                if !this.step(*p, part, &mut live).await && this.stop.is_cancelled() {
                    break;
                }
            }
        }
        // Calls under way finish (their results published) within the grace;
        // what is cut then runs again on the partition's next owner.
        let drained = tokio::time::timeout(this.drain_grace, async {
            while live.tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!(
                running = live.running.len(),
                "Live runs of deferred jobs cut at the end of the drain grace; they run again on the partition's next owner."
            );
        }
        live.tasks.shutdown().await;
        for part in parts.into_values() {
            this.release_holds(part);
        }
    }

    /// Takes in assignments (a book per partition, read from the beginning)
    /// and revocations (their books dropped, their holds released).
    fn rebalanced(&self, parts: &mut HashMap<i32, Part>) {
        for (assigned, partitions) in self.consumer.context().take() {
            for p in partitions {
                if assigned {
                    parts.insert(p, Part::default());
                } else if let Some(part) = parts.remove(&p) {
                    self.release_holds(part);
                }
            }
        }
    }

    fn release_holds(&self, part: Part) {
        for hold in part.holds.into_values().flatten() {
            self.engine.settle_budget(hold, 0.0);
        }
    }

    /// Folds one record into its partition's book.
    fn read(&self, parts: &mut HashMap<i32, Part>, m: &rdkafka::message::BorrowedMessage<'_>) {
        let Some(part) = parts.get_mut(&m.partition()) else {
            return;
        };
        part.read_to = Some(m.offset());
        let Some(Ok(key)) = m.key().map(std::str::from_utf8) else {
            warn!(
                partition = m.partition(),
                offset = m.offset(),
                "Skipping a deferred record without a UTF-8 key."
            );
            return;
        };
        let record = match m.payload().map(serde_json::from_slice::<DeferredRecord>) {
            None => None,
            Some(Ok(record)) => Some(record),
            Some(Err(e)) => {
                warn!(partition = m.partition(), offset = m.offset(), error = %e, "Skipping a deferred record that does not parse.");
                return;
            }
        };
        part.book.apply(key, record, m.offset());
    }

    /// Acts on one partition's book; false when stopped (or the topic
    /// refused a record) mid-way.
    async fn step(self: &Arc<Self>, p: i32, part: &mut Part, live: &mut LiveRuns) -> bool {
        self.hold_waiting(part, &live.running);
        if !self.forget_collected(p, part).await {
            return false;
        }
        let open: Vec<ProviderBatchRecord> = part
            .book
            .open_batches()
            .map(|b| current(&part.book, &b.record))
            .collect();
        for record in open {
            let done = match record.state {
                ProviderBatchState::Intent => self.resume(p, part, record).await,
                ProviderBatchState::Submitted => self.follow(p, part, record).await,
                ProviderBatchState::Collected => true,
            };
            if !done {
                return false;
            }
        }
        if !part.settled() || part.plan_after.is_some_and(|t| Instant::now() < t) {
            return true;
        }
        let settings = PlanSettings {
            max_wait: self.settings.max_wait,
            completion_window: self.settings.completion_window,
            margin: self.settings.margin,
            max_requests: self.settings.max_requests,
            max_bytes: self.settings.max_bytes,
        };
        let steps = plan(
            &part.book,
            Utc::now(),
            &settings,
            &|d| self.batch_api(d).is_some(),
            &|b| self.engine.is_batch_canceled(b),
        );
        // One provider batch created per partition and step, so that the
        // loop returns to its consumer between uploads.
        let mut created = false;
        for step in steps {
            let done = match step {
                Step::Submit {
                    deployment,
                    batch_id,
                    jobs,
                } => {
                    let jobs: Vec<String> = jobs
                        .into_iter()
                        .filter(|j| !live.running.contains(j))
                        .collect();
                    if created || jobs.is_empty() {
                        continue;
                    }
                    created = true;
                    self.submit(p, part, deployment, batch_id, jobs).await
                }
                Step::Live { job_id, why } => {
                    if !live.running.contains(&job_id) && live.has_room() {
                        self.run_live(p, part, &job_id, why, live);
                    }
                    true
                }
                Step::Cancel { job_id } if live.running.contains(&job_id) => true,
                Step::Cancel { job_id } => self.cancel_waiting(p, part, &job_id).await,
            };
            if !done {
                return false;
            }
        }
        true
    }

    /// Removes the records of provider batches collected more than
    /// [`COLLECTED_KEPT`] ago (their jobs' records went before them).
    async fn forget_collected(&self, p: i32, part: &mut Part) -> bool {
        let before = Utc::now() - chrono::TimeDelta::from_std(COLLECTED_KEPT).unwrap_or_default();
        let old: Vec<String> = part
            .book
            .batches()
            .filter(|b| b.record.state == ProviderBatchState::Collected)
            .filter(|b| b.record.updated_at < before)
            .map(|b| b.record.key.clone())
            .collect();
        for key in old {
            if self.write(p, part, &key, None).await.is_none() {
                return false;
            }
        }
        true
    }

    /// Holds the worst case of every job in the book not held yet, and
    /// releases the holds of jobs no longer in it.
    fn hold_waiting(&self, part: &mut Part, running: &HashSet<String>) {
        for job in part.book.jobs() {
            let id = &job.record.job.job_id;
            if !part.holds.contains_key(id) && !running.contains(id) {
                let hold = self
                    .engine
                    .hold_budget(&job.record.job, job.record.reserve_usd);
                part.holds.insert(id.clone(), hold);
            }
        }
        let gone: Vec<String> = part
            .holds
            .keys()
            .filter(|id| part.book.job(id).is_none())
            .cloned()
            .collect();
        for id in gone {
            self.settle_hold(part, &id, 0.0);
        }
    }

    fn settle_hold(&self, part: &mut Part, job_id: &str, cost_usd: f64) {
        if let Some(Some(hold)) = part.holds.remove(job_id) {
            self.engine.settle_budget(hold, cost_usd);
        }
    }

    /// The deployment named `name` with its batch API, if this worker has both.
    fn batch_api(&self, name: &str) -> Option<(&Deployment, &Arc<dyn BatchApi>)> {
        self.engine
            .deployments()
            .iter()
            .find(|d| d.name == name)
            .and_then(|d| d.batch.as_ref().map(|b| (d, b)))
    }

    /// Writes a record (or a tombstone) to partition `p`; its offset once
    /// acknowledged, `None` when stopped or refused.
    async fn write(
        &self,
        p: i32,
        part: &mut Part,
        key: &str,
        record: Option<&DeferredRecord>,
    ) -> Option<i64> {
        let bytes = record.map(|r| serde_json::to_vec(r).unwrap_or_default());
        let sent = publish_to(
            &self.out.producer,
            (&self.out.name, Some(p)),
            Some(key.as_bytes()),
            bytes.as_deref(),
            None,
            &self.stop,
        )
        .await;
        match sent {
            Ok((_, offset)) => {
                part.wrote(offset);
                Some(offset)
            }
            Err(PublishError::Stopped) => None,
            Err(PublishError::Refused(e)) => {
                error!(topic = %self.out.name, partition = p, key, error = %e, pause = ?REFUSED_PAUSE, "The deferred topic refused a record; this partition waits, then tries again (check the topic and message.max.bytes).");
                part.paused_until = Some(Instant::now() + REFUSED_PAUSE);
                None
            }
        }
    }

    /// Records a new provider batch of `jobs` on `deployment`, then creates it.
    async fn submit(
        &self,
        p: i32,
        part: &mut Part,
        deployment: String,
        batch_id: Option<String>,
        jobs: Vec<String>,
    ) -> bool {
        let Some((dep, _)) = self.batch_api(&deployment) else {
            return true;
        };
        // A partition that moved to another worker since this step began is
        // no longer this worker's to plan.
        let owned = self
            .consumer
            .assignment()
            .is_ok_and(|tpl| tpl.find_partition(&self.out.name, p).is_some());
        if !owned {
            return true;
        }
        let now = Utc::now();
        let record = ProviderBatchRecord {
            key: batch_key(uuid::Uuid::new_v4().as_u128()),
            deployment: deployment.clone(),
            provider: dep.provider.clone(),
            model: dep.model.clone(),
            batch_id,
            jobs,
            released: Vec::new(),
            state: ProviderBatchState::Intent,
            provider_batch_id: None,
            provider_status: None,
            counts: Default::default(),
            created_at: now,
            attempt_at: now,
            updated_at: now,
            cancel_requested: false,
        };
        let intent = DeferredRecord::Batch(record.clone());
        if self
            .write(p, part, &record.key, Some(&intent))
            .await
            .is_none()
        {
            return false;
        }
        info!(key = %record.key, deployment = %record.deployment, jobs = record.jobs.len(), "Creating a provider batch.");
        self.create(p, part, record).await
    }

    /// Creates a recorded provider batch at the provider and records that it
    /// was accepted. A create that may have reached the provider leaves the
    /// intent, to be looked for after `submit_timeout`; one the provider
    /// refused outright hands its jobs on.
    async fn create(&self, p: i32, part: &mut Part, record: ProviderBatchRecord) -> bool {
        let Some((dep, api)) = self.batch_api(&record.deployment) else {
            return true;
        };
        // The requests are the jobs the intent still answers for, each under
        // the custom id of its place in the intent: a fresh intent's jobs
        // (not in any batch the book knows yet) or a resumed one's own.
        let key = record.key.clone();
        let jobs: Vec<(usize, DeferredJob)> = record
            .jobs
            .iter()
            .enumerate()
            .filter(|(_, id)| !record.released.contains(id))
            .filter_map(|(i, id)| {
                let j = part.book.job(id)?;
                (j.batch.is_none() || j.batch.as_deref() == Some(key.as_str()))
                    .then(|| (i, j.record.clone()))
            })
            .collect();
        if jobs.len() + record.released.len() != record.jobs.len() {
            // A job of the intent ended or moved on meanwhile (its batch was
            // canceled, or another worker ran it): the intent is dropped, its
            // remaining jobs planned again.
            return self
                .abandon_intent(
                    p,
                    part,
                    record,
                    "some of its jobs ended before it was created",
                )
                .await;
        }
        let ids: Vec<String> = jobs.iter().map(|(i, _)| record.custom_id(*i)).collect();
        let requests = jobs
            .iter()
            .zip(&ids)
            .map(|((_, job), custom_id)| BatchRequest {
                custom_id,
                call: CallRequest {
                    request: &job.job.request,
                    api_model: &dep.api_model,
                    default_max_tokens: Some(job.default_max_tokens),
                },
            })
            .collect();
        let new = NewBatch {
            key: &record.key,
            requests,
            completion_window: self.settings.completion_window,
        };
        let created = tokio::time::timeout(self.settings.submit_timeout, api.create(new)).await;
        match created {
            Ok(Ok(remote)) => {
                info!(key = %record.key, provider_batch_id = %remote.id, jobs = jobs.len(), "The provider accepted a batch.");
                self.accepted(p, part, record, &remote).await
            }
            Ok(Err(e)) if !e.may_have_reached() && !e.is_retryable() => {
                warn!(key = %record.key, deployment = %record.deployment, error = %e, "The provider refused a batch; its jobs are handed on.");
                let why = e.to_string();
                let status = match &e {
                    BatchError::Status { status, .. } => Some(*status),
                    _ => None,
                };
                for (_, job) in jobs {
                    let attempt = failed_line(&record, AttemptOutcome::Rejected, status, &why);
                    if !self
                        .hand_on(p, part, job, &record.deployment, attempt)
                        .await
                    {
                        return false;
                    }
                }
                self.close(p, part, record, Vec::new()).await
            }
            Ok(Err(e)) => {
                warn!(key = %record.key, deployment = %record.deployment, error = %e, wait = ?self.settings.submit_timeout, "Creating a provider batch failed; it is looked for at the provider, then created again if absent, after submit_timeout.");
                true
            }
            Err(_) => {
                warn!(key = %record.key, deployment = %record.deployment, "Creating a provider batch took longer than submit_timeout; it is looked for at the provider before it is created again.");
                true
            }
        }
    }

    /// Records that the provider accepted `record` as `remote`.
    async fn accepted(
        &self,
        p: i32,
        part: &mut Part,
        mut record: ProviderBatchRecord,
        remote: &RemoteBatch,
    ) -> bool {
        record.state = ProviderBatchState::Submitted;
        record.provider_batch_id = Some(remote.id.clone());
        record.provider_status = Some(remote.provider_status.clone());
        record.counts = remote.counts;
        record.updated_at = Utc::now();
        part.polls.insert(record.key.clone(), self.poll_state());
        let key = record.key.clone();
        self.write(p, part, &key, Some(&DeferredRecord::Batch(record)))
            .await
            .is_some()
    }

    fn poll_state(&self) -> Poll {
        Poll {
            next: Instant::now() + self.settings.poll_interval,
            backoff: Backoff::new(self.settings.poll_interval, self.settings.max_poll_backoff),
        }
    }

    /// An intent nobody heard the provider accept: after `submit_timeout`
    /// from its latest attempt, adopts the provider's batch that carries its
    /// key, or creates it when none does.
    async fn resume(&self, p: i32, part: &mut Part, mut record: ProviderBatchRecord) -> bool {
        // Twice the timeout: a worker whose create timed out at the first
        // may have had the provider accept it a little later.
        let due = record.attempt_at
            + chrono::TimeDelta::from_std(self.settings.submit_timeout * 2)
                .unwrap_or(chrono::TimeDelta::MAX);
        if Utc::now() < due || !self.poll_due(part, &record.key) {
            return true;
        }
        let Some((_, api)) = self.batch_api(&record.deployment) else {
            warn!(key = %record.key, deployment = %record.deployment, "A provider batch intent names a deployment this worker has no batch API for; it waits for a worker that has.");
            self.poll_later(part, &record.key, NO_API_PAUSE);
            return true;
        };
        let canceled = record
            .batch_id
            .as_deref()
            .is_some_and(|b| self.engine.is_batch_canceled(b));
        match self.find(api.as_ref(), part, &record).await {
            Ok(Some(remote)) => {
                info!(key = %record.key, provider_batch_id = %remote.id, "Adopted a provider batch created before its acceptance was recorded.");
                self.accepted(p, part, record, &remote).await
            }
            Ok(None) if canceled => {
                self.abandon_intent(
                    p,
                    part,
                    record,
                    "its batch was canceled before it was created",
                )
                .await
            }
            Ok(None) => {
                info!(key = %record.key, "No provider batch carries this intent's key; creating it.");
                record.attempt_at = Utc::now();
                record.updated_at = record.attempt_at;
                let key = record.key.clone();
                let intent = DeferredRecord::Batch(record.clone());
                if self.write(p, part, &key, Some(&intent)).await.is_none() {
                    return false;
                }
                self.create(p, part, record).await
            }
            Err(e) => {
                self.polled_badly(part, &record.key, &e);
                true
            }
        }
    }

    /// Drops an intent never created: the jobs it still answers for are
    /// written again (a hand-on more), which frees them to be planned anew.
    async fn abandon_intent(
        &self,
        p: i32,
        part: &mut Part,
        record: ProviderBatchRecord,
        why: &str,
    ) -> bool {
        info!(key = %record.key, why, "A provider batch intent is dropped before creation.");
        let key = record.key.as_str();
        let own: Vec<DeferredJob> = record
            .jobs
            .iter()
            .filter(|id| !record.released.contains(id))
            .filter_map(|id| part.book.job(id))
            .filter(|j| j.batch.as_deref() == Some(key))
            .map(|j| j.record.clone())
            .collect();
        for job in own {
            let id = job.job.job_id.clone();
            let again = DeferredRecord::Job(job.again());
            if self.write(p, part, &id, Some(&again)).await.is_none() {
                return false;
            }
        }
        self.close(p, part, record, Vec::new()).await
    }

    /// The provider's batch that carries `record`'s key, if there is one.
    /// OpenAI keeps the key in the batch's metadata. Anthropic keeps it only in
    /// the requests' custom ids, readable once the batch ended, so there a
    /// batch is taken by what can be seen: created within the intent's attempt
    /// window (with clock skew), with as many requests, not recorded by any
    /// other provider batch of this partition; its custom ids are checked when
    /// its results are read.
    async fn find(
        &self,
        api: &dyn BatchApi,
        part: &Part,
        record: &ProviderBatchRecord,
    ) -> Result<Option<RemoteBatch>, BatchError> {
        let claimed: HashSet<&str> = part
            .book
            .batches()
            .filter_map(|b| b.record.provider_batch_id.as_deref())
            .collect();
        let from = record.attempt_at - CLOCK_SKEW;
        let to = record.attempt_at
            + chrono::TimeDelta::from_std(self.settings.submit_timeout * 2).unwrap_or_default()
            + CLOCK_SKEW;
        let requests = (record.jobs.len() - record.released.len()) as u64;
        let mut cursor: Option<String> = None;
        let mut candidate: Option<RemoteBatch> = None;
        for _ in 0..MAX_LIST_PAGES {
            let page = timed(API_TIMEOUT, api.kind(), api.list(cursor.as_deref())).await?;
            let mut older = false;
            for remote in page.batches {
                match api.carries(&remote, &record.key) {
                    Some(true) => return Ok(Some(remote)),
                    Some(false) => {}
                    None => {
                        let within = remote.created_at.is_none_or(|t| t >= from && t <= to);
                        if within
                            && remote.requests == requests
                            && !claimed.contains(remote.id.as_str())
                        {
                            // Newest first: the last match is the earliest.
                            candidate = Some(remote.clone());
                        }
                    }
                }
                older |= remote.created_at.is_some_and(|t| t < from);
            }
            match page.next {
                Some(next) if !older => cursor = Some(next),
                _ => return Ok(candidate),
            }
        }
        // Not back to the intent's time yet: creating it now could send it
        // twice, so the search is tried again later.
        Err(BatchError::Unreachable {
            api: api.kind(),
            message: format!(
                "{MAX_LIST_PAGES} pages of batches listed without reaching the intent's time"
            ),
        })
    }

    /// Whether an open batch may be polled now.
    fn poll_due(&self, part: &mut Part, key: &str) -> bool {
        let poll = part.polls.entry(key.to_owned()).or_insert_with(|| Poll {
            next: Instant::now(),
            backoff: Backoff::new(self.settings.poll_interval, self.settings.max_poll_backoff),
        });
        Instant::now() >= poll.next
    }

    fn poll_later(&self, part: &mut Part, key: &str, pause: Duration) {
        if let Some(poll) = part.polls.get_mut(key) {
            poll.next = Instant::now() + pause;
        }
    }

    fn polled_badly(&self, part: &mut Part, key: &str, e: &BatchError) {
        if let Some(poll) = part.polls.get_mut(key) {
            let pause = poll.backoff.next_delay();
            poll.next = Instant::now() + pause;
            warn!(key, error = %e, ?pause, "A provider batch API call failed; trying again later.");
        }
    }

    /// Polls a submitted batch when due: cancels it if its Switchyard batch
    /// was canceled, records its progress, collects it once it ended.
    async fn follow(&self, p: i32, part: &mut Part, mut record: ProviderBatchRecord) -> bool {
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
            poll.backoff.reset();
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
    async fn collect(
        &self,
        p: i32,
        part: &mut Part,
        mut record: ProviderBatchRecord,
        api: Arc<dyn BatchApi>,
        remote: RemoteBatch,
    ) -> bool {
        let lines = if remote.status == RemoteStatus::Failed {
            Vec::new()
        } else {
            match timed(RESULTS_TIMEOUT, api.kind(), api.results(&remote)).await {
                Ok(lines) => lines,
                Err(e) => {
                    self.polled_badly(part, &record.key, &e);
                    return true;
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
            let original =
                serde_json::to_vec(&DeferredRecord::Job(job.clone())).unwrap_or_default();
            let line = Line {
                outcome: outcomes.remove(&i),
                canceled,
                whole_failure: (remote.status == RemoteStatus::Failed)
                    .then_some(whole_failure.as_str()),
            };
            match self
                .settle_line(p, part, &record, api.as_ref(), job, line)
                .await
            {
                Settled::HandedOn => handed_on += 1,
                Settled::Stopped => return false,
                Settled::Ended(outcome) => {
                    let cost = match &outcome {
                        Outcome::Finished { result, .. } => result.cost_usd,
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
        let target = AttemptTarget {
            deployment: &record.deployment,
            provider: &record.provider,
            model: &record.model,
        };
        let latency_ms = (Utc::now() - record.created_at).num_milliseconds().max(0) as u64;
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
    async fn hand_on(
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
    async fn close(
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
    async fn publish(
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
    async fn cancel_waiting(&self, p: i32, part: &mut Part, job_id: &str) -> bool {
        let Some(job) = part.book.job(job_id).map(|j| (j.record.clone(), j.offset)) else {
            return true;
        };
        let (record, offset) = job;
        let original = serde_json::to_vec(&DeferredRecord::Job(record.clone())).unwrap_or_default();
        let billed = record.earlier_cost_usd();
        let outcome = self.engine.cancel_deferred(record);
        if !self.publish(p, offset, job_id, original, &outcome).await {
            return false;
        }
        self.settle_hold(part, job_id, billed);
        self.write(p, part, job_id, None).await.is_some()
    }

    /// Runs a job that can no longer wait for a provider batch live, in a
    /// task of its own: admitted again (as live, on the signer and release
    /// checked at hand-off), its earlier batch attempts kept, and its record
    /// removed once the result is out.
    fn run_live(
        self: &Arc<Self>,
        p: i32,
        part: &mut Part,
        job_id: &str,
        why: String,
        live: &mut LiveRuns,
    ) {
        let Some((record, offset)) = part.book.job(job_id).map(|j| (j.record.clone(), j.offset))
        else {
            return;
        };
        // The live run reserves its own worst case; what earlier lines billed
        // is spent already.
        self.settle_hold(part, job_id, record.earlier_cost_usd());
        live.running.insert(job_id.to_owned());
        let this = self.clone();
        let id = job_id.to_owned();
        let task = live.tasks.spawn(async move {
            info!(job_id = %id, why = %why, "A deferred job runs live.");
            let original =
                serde_json::to_vec(&DeferredRecord::Job(record.clone())).unwrap_or_default();
            let DeferredJob {
                mut job,
                attempts,
                signer,
                released_by,
                ..
            } = record;
            job.mode = Some(JobMode::Live);
            let envelope = Envelope {
                checked: Some(Checked {
                    signer,
                    released_by,
                }),
                ..Envelope::default()
            };
            let outcome = match this.engine.process_with(job, &envelope).await {
                Outcome::Finished { result, usage } => {
                    let mut result = result.with_earlier_attempts(attempts);
                    if let Some(r) = result.routing.as_mut() {
                        r.reason = format!("{}; live after deferral: {why}", r.reason);
                    }
                    Outcome::Finished {
                        result: Box::new(result),
                        usage,
                    }
                }
                other => other,
            };
            if !this.publish(p, offset, &id, original, &outcome).await {
                return (p, id, None);
            }
            let mut scratch = Part::default();
            let tombstone = this.write(p, &mut scratch, &id, None).await;
            (p, id, tombstone)
        });
        live.ids.insert(task.id(), (p, job_id.to_owned()));
    }
}

/// The attempt of a line that failed without an answer.
fn failed_line(
    record: &ProviderBatchRecord,
    outcome: AttemptOutcome,
    status: Option<u16>,
    why: &str,
) -> Attempt {
    let target = AttemptTarget {
        deployment: &record.deployment,
        provider: &record.provider,
        model: &record.model,
    };
    let latency_ms = (Utc::now() - record.created_at).num_milliseconds().max(0) as u64;
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

/// The record of an open provider batch as the book says it now: the jobs it
/// no longer answers for (handed on since it was written) named `released`,
/// so that a record written from it claims none of them back.
fn current(book: &Book, record: &ProviderBatchRecord) -> ProviderBatchRecord {
    let claimed: HashSet<&str> = book
        .jobs_of(&record.key)
        .into_iter()
        .map(|(_, j)| j.record.job.job_id.as_str())
        .collect();
    let mut record = record.clone();
    record.released = record
        .jobs
        .iter()
        .filter(|id| !claimed.contains(id.as_str()))
        .cloned()
        .collect();
    record
}

/// A provider batch API call, given up after `limit` (tried again later).
async fn timed<T>(
    limit: Duration,
    api: &'static str,
    call: impl std::future::Future<Output = Result<T, BatchError>>,
) -> Result<T, BatchError> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(BatchError::Unreachable {
            api,
            message: format!("no answer within {} s", limit.as_secs()),
        })
    })
}
