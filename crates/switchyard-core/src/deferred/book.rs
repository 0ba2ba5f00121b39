//! The book of one deferred partition: its records folded in log order. A job
//! belongs to the provider batch with the highest offset that lists it, if
//! that batch's record comes after the job's own latest record (a job handed
//! on to another deployment is written again, which frees it from its old
//! batch, and that batch's later records name it `released`); a collected
//! batch ends the jobs it still claims; a tombstone removes a key. A job record
//! with fewer hand-ons than the book's, or as many while an open provider
//! batch holds the job, is a replay of the hand-off, and is ignored. Because
//! compaction keeps the order of the records it keeps and the latest record of
//! every key, the fold of a compacted partition is the fold of the whole log.

use std::collections::HashMap;

use super::{DeferredJob, DeferredRecord, ProviderBatchRecord, ProviderBatchState};

/// A job in the book.
#[derive(Debug, Clone, PartialEq)]
pub struct BookJob {
    /// Its latest record.
    pub record: DeferredJob,
    /// That record's offset.
    pub offset: i64,
    /// The key of the provider batch it waits on; none while it waits to be
    /// grouped.
    pub batch: Option<String>,
}

/// A provider batch in the book.
#[derive(Debug, Clone, PartialEq)]
pub struct BookBatch {
    /// Its latest record (a collected one keeps its job count, not its ids).
    pub record: ProviderBatchRecord,
    /// That record's offset.
    pub offset: i64,
    /// Requests it held.
    pub requests: usize,
}

/// What a partition's records say.
#[derive(Debug, Clone, Default)]
pub struct Book {
    jobs: HashMap<String, BookJob>,
    batches: HashMap<String, BookBatch>,
}

impl Book {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds one record (`None`: a tombstone) read at `offset` under `key`.
    pub fn apply(&mut self, key: &str, record: Option<DeferredRecord>, offset: i64) {
        match record {
            None => {
                self.jobs.remove(key);
                self.batches.remove(key);
            }
            Some(DeferredRecord::Job(job)) => {
                // A replayed hand-off must not free a job from the open
                // provider batch that holds it.
                if let Some(held) = self.jobs.get(key) {
                    let older = job.handed_on < held.record.handed_on;
                    let in_open_batch = held.batch.as_ref().is_some_and(|b| {
                        self.batches
                            .get(b)
                            .is_some_and(|b| b.record.state != ProviderBatchState::Collected)
                    });
                    if older || (job.handed_on == held.record.handed_on && in_open_batch) {
                        return;
                    }
                }
                self.jobs.insert(
                    key.to_owned(),
                    BookJob {
                        record: job,
                        offset,
                        batch: None,
                    },
                );
            }
            Some(DeferredRecord::Batch(batch)) => self.apply_batch(batch, offset),
        }
    }

    fn apply_batch(&mut self, mut batch: ProviderBatchRecord, offset: i64) {
        let requests = batch.jobs.len();
        for id in &batch.jobs {
            if batch.released.contains(id) {
                continue;
            }
            if let Some(job) = self.jobs.get_mut(id)
                && job.offset < offset
            {
                job.batch = Some(batch.key.clone());
            }
        }
        let requests = if batch.state == ProviderBatchState::Collected {
            let key = batch.key.clone();
            self.jobs
                .retain(|_, j| j.batch.as_deref() != Some(key.as_str()));
            // Its jobs are done: the ids are no longer needed.
            let n = self
                .batches
                .get(&key)
                .map_or(requests, |b| b.requests.max(requests));
            batch.jobs = Vec::new();
            n
        } else {
            requests
        };
        self.batches.insert(
            batch.key.clone(),
            BookBatch {
                record: batch,
                offset,
                requests,
            },
        );
    }

    /// Jobs not yet in a provider batch.
    pub fn waiting(&self) -> impl Iterator<Item = &BookJob> {
        self.jobs.values().filter(|j| j.batch.is_none())
    }

    /// Every job in the book.
    pub fn jobs(&self) -> impl Iterator<Item = &BookJob> {
        self.jobs.values()
    }

    /// A job by id.
    pub fn job(&self, id: &str) -> Option<&BookJob> {
        self.jobs.get(id)
    }

    /// Provider batches not yet collected.
    pub fn open_batches(&self) -> impl Iterator<Item = &BookBatch> {
        self.batches
            .values()
            .filter(|b| b.record.state != ProviderBatchState::Collected)
    }

    /// Every provider batch in the book, collected ones included.
    pub fn batches(&self) -> impl Iterator<Item = &BookBatch> {
        self.batches.values()
    }

    /// A provider batch by key.
    pub fn batch(&self, key: &str) -> Option<&BookBatch> {
        self.batches.get(key)
    }

    /// The jobs a provider batch still answers for, with their request index:
    /// those whose latest record it claims (a job handed on since is not).
    pub fn jobs_of(&self, key: &str) -> Vec<(usize, &BookJob)> {
        let Some(batch) = self.batches.get(key) else {
            return Vec::new();
        };
        batch
            .record
            .jobs
            .iter()
            .enumerate()
            .filter_map(|(i, id)| {
                self.jobs
                    .get(id)
                    .filter(|j| j.batch.as_deref() == Some(key))
                    .map(|j| (i, j))
            })
            .collect()
    }

    /// Whether nothing is waiting or open.
    pub fn is_idle(&self) -> bool {
        self.jobs.is_empty() && self.open_batches().next().is_none()
    }
}
