//! Where a batch's deferred jobs are: how many wait to be grouped into a
//! provider batch, and each provider batch carrying the batch's jobs, with its
//! state at the provider and how many of the batch's jobs wait on it. Pure:
//! [`status`](super::status) reads the deferred topic to its end and hands its
//! records to [`DeferredBooks`], which folds each partition into a [`Book`]
//! as the gatherer does.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use switchyard_core::deferred::{Book, BookJob, DeferredRecord, LineCounts, ProviderBatchState};

/// What the deferred topic says about one batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeferredStatus {
    /// The deferred topic.
    pub topic: String,
    /// Whether the topic exists: without it, no job was ever deferred on this
    /// cluster, and the rest is empty.
    pub topic_exists: bool,
    /// The batch's jobs handed off and waiting to be grouped into a provider batch.
    pub waiting: u64,
    /// Provider batches carrying the batch's jobs, oldest first (collected
    /// ones included until compaction removes them).
    pub provider_batches: Vec<ProviderBatchStatus>,
    /// Records of the topic that could not be read (skipped).
    pub unreadable: u64,
}

/// One provider batch carrying a batch's jobs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderBatchStatus {
    /// Its idempotency key (on the deferred topic and at the provider).
    pub key: String,
    /// Deployment whose batch API serves it.
    pub deployment: String,
    /// Catalog model.
    pub model: String,
    /// The provider's id, once it accepted the batch.
    pub provider_batch_id: Option<String>,
    /// Where it is: `intent` (recorded, being created at the provider),
    /// `submitted` (accepted, polled) or `collected` (every line's outcome
    /// published or handed on).
    pub state: ProviderBatchState,
    /// The provider's word for its state, as last polled.
    pub provider_status: Option<String>,
    /// Its Switchyard batch was canceled, so it is (being) canceled.
    pub cancel_requested: bool,
    /// Requests it holds.
    pub requests: u64,
    /// Line counts, as last polled.
    pub counts: LineCounts,
    /// Jobs of the batch it still answers for (none once collected; a job
    /// whose line failed and was handed on waits elsewhere).
    pub jobs_waiting: u64,
    /// When its intent was recorded.
    pub created_at: DateTime<Utc>,
}

impl DeferredStatus {
    /// The status when the deferred topic does not exist.
    pub fn no_topic(topic: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            topic_exists: false,
            waiting: 0,
            provider_batches: Vec::new(),
            unreadable: 0,
        }
    }

    /// The status as lines of the `status` table.
    pub fn write_table(&self, t: &mut String) {
        if !self.topic_exists {
            let _ = writeln!(
                t,
                "deferred   none (topic `{}` does not exist: no job was deferred on this cluster)",
                self.topic
            );
            return;
        }
        let n = self.provider_batches.len();
        let _ = writeln!(
            t,
            "deferred   {} waiting to be grouped, {n} provider batch{}",
            self.waiting,
            if n == 1 { "" } else { "es" }
        );
        for b in &self.provider_batches {
            let mut state = b.state.as_str().to_owned();
            if let Some(s) = &b.provider_status {
                let _ = write!(state, " ({s})");
            }
            if b.cancel_requested {
                state.push_str(", cancel requested");
            }
            let provider_id = b
                .provider_batch_id
                .as_deref()
                .map(|id| format!(", provider id {id}"))
                .unwrap_or_default();
            let _ = writeln!(
                t,
                "provider   {} {state}, {} on {}{provider_id}",
                b.key, b.model, b.deployment
            );
            let c = &b.counts;
            let _ = writeln!(
                t,
                "           {} lines: {} processing, {} succeeded, {} errored, {} expired, {} canceled; {} jobs wait on it",
                b.requests,
                c.processing,
                c.succeeded,
                c.errored,
                c.expired,
                c.canceled,
                b.jobs_waiting
            );
        }
        if self.unreadable > 0 {
            let _ = writeln!(
                t,
                "           {} records of `{}` could not be read and were skipped",
                self.unreadable, self.topic
            );
        }
    }
}

/// The deferred topic's partitions folded into [`Book`]s, as far as they can
/// concern one batch: job records of other batches are left out (no provider
/// batch of this batch holds them), everything else is folded in log order.
#[derive(Debug, Default)]
pub struct DeferredBooks {
    batch_id: String,
    books: BTreeMap<i32, Book>,
    unreadable: u64,
}

impl DeferredBooks {
    /// Books for `batch_id`, empty.
    pub fn new(batch_id: &str) -> Self {
        Self {
            batch_id: batch_id.to_owned(),
            ..Self::default()
        }
    }

    /// Folds one record of `partition` read at `offset` (an empty payload is a
    /// tombstone).
    pub fn apply(&mut self, partition: i32, offset: i64, key: Option<&[u8]>, payload: &[u8]) {
        let Some(Ok(key)) = key.map(std::str::from_utf8) else {
            self.unreadable += 1;
            return;
        };
        let record = if payload.is_empty() {
            None
        } else {
            match serde_json::from_slice::<DeferredRecord>(payload) {
                Ok(DeferredRecord::Job(j)) if !self.is_ours(&j.job.batch_id) => return,
                Ok(r) => Some(r),
                Err(_) => {
                    self.unreadable += 1;
                    return;
                }
            }
        };
        self.books
            .entry(partition)
            .or_default()
            .apply(key, record, offset);
    }

    fn is_ours(&self, batch_id: &Option<String>) -> bool {
        batch_id.as_deref() == Some(self.batch_id.as_str())
    }

    fn is_our_job(&self, job: &BookJob) -> bool {
        self.is_ours(&job.record.job.batch_id)
    }

    /// What the books say about the batch; `topic` names the deferred topic.
    pub fn summary(&self, topic: &str) -> DeferredStatus {
        let mut waiting = 0u64;
        let mut provider_batches = Vec::new();
        for book in self.books.values() {
            waiting += book.waiting().filter(|j| self.is_our_job(j)).count() as u64;
            for b in book.batches().filter(|b| self.is_ours(&b.record.batch_id)) {
                let r = &b.record;
                let jobs_waiting = book
                    .jobs_of(&r.key)
                    .into_iter()
                    .filter(|(_, j)| self.is_our_job(j))
                    .count() as u64;
                provider_batches.push(ProviderBatchStatus {
                    key: r.key.clone(),
                    deployment: r.deployment.clone(),
                    model: r.model.clone(),
                    provider_batch_id: r.provider_batch_id.clone(),
                    state: r.state,
                    provider_status: r.provider_status.clone(),
                    cancel_requested: r.cancel_requested,
                    requests: b.requests as u64,
                    counts: r.counts,
                    jobs_waiting,
                    created_at: r.created_at,
                });
            }
        }
        provider_batches.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.key.cmp(&b.key)));
        DeferredStatus {
            topic: topic.to_owned(),
            topic_exists: true,
            waiting,
            provider_batches,
            unreadable: self.unreadable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use switchyard_core::deferred::{DeferredJob, ProviderBatchRecord};
    use switchyard_core::job::{ChatRequest, Job};
    use switchyard_core::result::RoutingSummary;
    use switchyard_core::vocab::{Strategy, TaskCategory};

    const OURS: &str = "batch_0123456789abcdef01234567";
    const OTHER: &str = "batch_fedcba9876543210fedcba98";

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn job(id: &str, batch: &str) -> Vec<u8> {
        let mut j = Job::new(id, "a/b/c/d", ChatRequest::from_user("hello"));
        j.batch_id = Some(batch.to_owned());
        let routing = RoutingSummary {
            strategy: Strategy::CostFirst,
            category: TaskCategory::Chat,
            complexity: 0.2,
            required_quality: 0.6,
            chosen_model: "gpt-5-nano".into(),
            reason: "test".into(),
        };
        let job = DeferredJob::new(
            j,
            routing,
            vec!["sim-gpt-5-nano".into()],
            0.01,
            t(0),
            t(86_400),
            4096,
        );
        serde_json::to_vec(&DeferredRecord::Job(job)).unwrap()
    }

    fn provider_batch(
        key: &str,
        batch: &str,
        jobs: &[&str],
        state: ProviderBatchState,
        at: i64,
    ) -> Vec<u8> {
        let submitted = state != ProviderBatchState::Intent;
        let record = ProviderBatchRecord {
            key: key.into(),
            deployment: "sim-gpt-5-nano".into(),
            provider: "openai".into(),
            model: "gpt-5-nano".into(),
            batch_id: Some(batch.to_owned()),
            jobs: jobs.iter().map(|s| (*s).to_owned()).collect(),
            released: Vec::new(),
            state,
            provider_batch_id: submitted.then(|| format!("batch_p_{key}")),
            provider_status: match state {
                ProviderBatchState::Intent => None,
                ProviderBatchState::Submitted => Some("in_progress".to_owned()),
                ProviderBatchState::Collected => Some("completed".to_owned()),
            },
            counts: LineCounts {
                processing: if submitted { jobs.len() as u64 - 1 } else { 0 },
                succeeded: u64::from(submitted),
                ..LineCounts::default()
            },
            created_at: t(at),
            attempt_at: t(at),
            updated_at: t(at),
            cancel_requested: false,
        };
        serde_json::to_vec(&DeferredRecord::Batch(record)).unwrap()
    }

    #[test]
    fn jobs_waiting_and_provider_batches_of_one_batch_are_summarised() {
        let mut books = DeferredBooks::new(OURS);
        let mut offset = 0i64;
        let mut put = |books: &mut DeferredBooks, p: i32, key: &str, payload: &[u8]| {
            offset += 1;
            books.apply(p, offset, Some(key.as_bytes()), payload);
        };
        // Partition 0: four of our jobs; two go into a submitted provider batch,
        // one into one still at its intent; one waits. A job of another batch
        // waits too, and another batch's provider batch is open.
        for id in ["a0", "a1", "a2", "a3"] {
            put(&mut books, 0, id, &job(id, OURS));
        }
        put(&mut books, 0, "x0", &job("x0", OTHER));
        let submitted = ProviderBatchState::Submitted;
        put(
            &mut books,
            0,
            "sy2",
            &provider_batch("sy2", OURS, &["a0", "a1"], submitted, 20),
        );
        put(
            &mut books,
            0,
            "sy1",
            &provider_batch("sy1", OURS, &["a2"], ProviderBatchState::Intent, 10),
        );
        put(
            &mut books,
            0,
            "syx",
            &provider_batch("syx", OTHER, &["x0"], submitted, 5),
        );
        // Partition 1: a collected provider batch, and a job waiting; a
        // tombstone, and a record that is not a deferred record.
        put(&mut books, 1, "b0", &job("b0", OURS));
        put(&mut books, 1, "b1", &job("b1", OURS));
        let collected = ProviderBatchState::Collected;
        put(
            &mut books,
            1,
            "sy3",
            &provider_batch("sy3", OURS, &["b0"], collected, 30),
        );
        put(&mut books, 1, "b9", &job("b9", OURS));
        put(&mut books, 1, "b9", b"");
        put(&mut books, 1, "junk", b"{\"kind\": \"nonsense\"}");

        let s = books.summary("switchyard.deferred");
        assert!(s.topic_exists);
        assert_eq!((s.waiting, s.unreadable), (2, 1));
        let keys: Vec<&str> = s.provider_batches.iter().map(|b| b.key.as_str()).collect();
        assert_eq!(keys, ["sy1", "sy2", "sy3"]);
        let [intent, open, done] = &s.provider_batches[..] else {
            panic!("{s:?}")
        };
        assert_eq!(
            (intent.state, intent.requests, intent.jobs_waiting),
            (ProviderBatchState::Intent, 1, 1)
        );
        assert_eq!(intent.provider_batch_id, None);
        assert_eq!((open.requests, open.jobs_waiting), (2, 2));
        assert_eq!(open.provider_batch_id.as_deref(), Some("batch_p_sy2"));
        assert_eq!((open.counts.processing, open.counts.succeeded), (1, 1));
        assert_eq!(
            (done.state, done.requests, done.jobs_waiting),
            (collected, 1, 0)
        );

        let mut table = String::new();
        s.write_table(&mut table);
        for want in [
            "deferred   2 waiting to be grouped, 3 provider batches\n",
            "provider   sy1 intent, gpt-5-nano on sim-gpt-5-nano\n",
            "provider   sy2 submitted (in_progress), gpt-5-nano on sim-gpt-5-nano, provider id batch_p_sy2\n",
            "           2 lines: 1 processing, 1 succeeded, 0 errored, 0 expired, 0 canceled; 2 jobs wait on it\n",
            "provider   sy3 collected (completed), gpt-5-nano on sim-gpt-5-nano, provider id batch_p_sy3\n",
            "1 records of `switchyard.deferred` could not be read",
        ] {
            assert!(table.contains(want), "`{want}` not in:\n{table}");
        }
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["waiting"], 2);
        assert_eq!(json["provider_batches"][1]["state"], "submitted");
        assert_eq!(json["provider_batches"][1]["counts"]["succeeded"], 1);
        assert_eq!(json["provider_batches"][1]["jobs_waiting"], 2);
    }

    #[test]
    fn a_missing_topic_is_said_and_is_no_error() {
        let s = DeferredStatus::no_topic("switchyard.deferred");
        let mut table = String::new();
        s.write_table(&mut table);
        assert_eq!(
            table,
            "deferred   none (topic `switchyard.deferred` does not exist: no job was deferred on this cluster)\n"
        );
        assert_eq!(
            serde_json::to_value(&s).unwrap()["topic_exists"],
            serde_json::Value::Bool(false)
        );
        // A topic without any record of the batch.
        let s = DeferredBooks::new(OURS).summary("switchyard.deferred");
        assert_eq!((s.topic_exists, s.waiting), (true, 0));
        let mut table = String::new();
        s.write_table(&mut table);
        assert_eq!(
            table,
            "deferred   0 waiting to be grouped, 0 provider batches\n"
        );
    }
}
