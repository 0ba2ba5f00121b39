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
//!
//! This file holds the loop, the partitions' state and the planning step;
//! `create` makes provider batches (intent first, then the create call, and
//! resumes intents left behind); `collect` polls open batches and turns ended
//! ones into results.

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
    plan,
};
use switchyard_core::vocab::JobMode;
use switchyard_kafka::produce::{PublishError, publish_to};
use switchyard_providers::Deployment;
use switchyard_providers::batch::{BatchApi, BatchError};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::compacted::{self, CompactedConsumer, ReadState};
use super::publish::{Out, Publisher};
use crate::access::{Checked, Envelope};
use crate::engine::{Engine, Outcome};

mod collect;
mod create;

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
    /// Reads of the ended batch's results that failed in a row.
    unreadable: u32,
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
/// Reads of an ended batch's results that may fail in a row (each after the
/// poll backoff: about 45 minutes at the default poll settings) before its
/// jobs are handed on as if the provider had not answered them.
const RESULTS_ATTEMPTS: u32 = 8;

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
        self.settle_hold(part, job_id, record.unsettled_cost_usd());
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
