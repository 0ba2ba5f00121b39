//! Creating provider batches: the intent recorded first, then the create
//! call; an intent left by a stopped worker resumed by finding the batch that
//! carries its key before creating it again.

use std::collections::HashSet;

use chrono::Utc;
use rdkafka::consumer::Consumer;
use switchyard_core::backoff::Backoff;
use switchyard_core::deferred::{
    DeferredJob, DeferredRecord, ProviderBatchRecord, ProviderBatchState, batch_key,
};
use switchyard_core::result::AttemptOutcome;
use switchyard_providers::CallRequest;
use switchyard_providers::batch::{BatchApi, BatchError, BatchRequest, NewBatch, RemoteBatch};
use tokio::time::Instant;
use tracing::{info, warn};

use super::collect::failed_line;
use super::{API_TIMEOUT, CLOCK_SKEW, Gatherer, MAX_LIST_PAGES, NO_API_PAUSE, Part, Poll, timed};

impl Gatherer {
    /// Records a new provider batch of `jobs` on `deployment`, then creates it.
    pub(super) async fn submit(
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
    pub(super) async fn create(
        &self,
        p: i32,
        part: &mut Part,
        record: ProviderBatchRecord,
    ) -> bool {
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
            unreadable: 0,
        }
    }

    /// An intent nobody heard the provider accept: after `submit_timeout`
    /// from its latest attempt, adopts the provider's batch that carries its
    /// key, or creates it when none does.
    pub(super) async fn resume(
        &self,
        p: i32,
        part: &mut Part,
        mut record: ProviderBatchRecord,
    ) -> bool {
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
    pub(super) async fn find(
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
}
