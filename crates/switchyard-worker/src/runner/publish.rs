//! Publishing a job's outcome: its result and usage events, a held copy, its
//! hand-off to deferred routing, or a dead letter, each until the broker
//! acknowledges it. Nothing a job carries
//! can make its outcome unpublishable: echoed input is capped
//! (`worker.max_echo_bytes`), a result still too large is replaced by the
//! smallest record that says why, and a dead letter's original is cut to fit,
//! with its size and SHA-256 in headers. A missing or unauthorised topic is
//! retried (loudly) until it is fixed or the worker stops: the job's offset then
//! stays uncommitted, never skipped.

use std::sync::Arc;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use switchyard_codec::{Codec, headers};
use switchyard_core::access::approval::{ApprovalRecord, ApprovalRequest, HeldCopy, partition_of};
use switchyard_core::access::sign;
use switchyard_core::backoff::Backoff;
use switchyard_core::deferred::{DeferredJob, DeferredRecord};
use switchyard_core::result::{JobResult, cap_text};
use switchyard_core::usage::UsageEvent;
use switchyard_kafka::dead_letter::{DeadLetter, DeadLetterTopic, RECORD_SLACK};
use switchyard_kafka::produce::{PublishError, partition_count, publish_at};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::Incoming;
use crate::engine::Outcome;
use crate::metrics::Metrics;

/// A topic the worker writes to, with the producer that compresses as the
/// topic's settings say.
#[derive(Clone)]
pub(super) struct Out {
    pub name: String,
    pub producer: FutureProducer,
}

/// The approvals topic: every record of one approval id goes to the partition
/// [`partition_of`] gives, among the partitions the topic has (looked up once).
#[derive(Clone)]
pub(crate) struct ApprovalsOut {
    pub out: Out,
    pub partitions: Arc<OnceCell<usize>>,
}

impl ApprovalsOut {
    pub fn new(out: Out) -> Self {
        Self {
            out,
            partitions: Arc::new(OnceCell::new()),
        }
    }

    /// The partition of `approval_id`, once the topic's size is known (retried,
    /// loudly, while the topic cannot be seen; `None` when stopped meanwhile).
    pub async fn partition(&self, approval_id: &str, stop: &CancellationToken) -> Option<i32> {
        let count = self
            .partitions
            .get_or_try_init(|| async {
                let mut backoff = Backoff::new(
                    std::time::Duration::from_millis(200),
                    std::time::Duration::from_secs(10),
                );
                loop {
                    let producer = self.out.producer.clone();
                    let topic = self.out.name.clone();
                    let found =
                        tokio::task::spawn_blocking(move || partition_count(&producer, &topic))
                            .await;
                    match found {
                        Ok(Ok(n)) if n > 0 => return Ok(n),
                        Ok(Ok(_)) => {
                            warn!(topic = %self.out.name, "The approvals topic does not exist; held work waits until it is created.")
                        }
                        Ok(Err(e)) => {
                            warn!(topic = %self.out.name, error = %e, "Cannot read the approvals topic's partitions; retrying.")
                        }
                        Err(e) => warn!(error = %e, "Partition lookup task failed; retrying."),
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return Err(()),
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                    }
                }
            })
            .await
            .ok()?;
        Some(partition_of(approval_id, *count))
    }

    /// Publishes `record` until acknowledged, at its approval id's partition.
    pub async fn send(
        &self,
        record: &ApprovalRecord,
        stop: &CancellationToken,
    ) -> Result<(), PublishError> {
        let Some(partition) = self.partition(record.approval_id(), stop).await else {
            return Err(PublishError::Stopped);
        };
        let bytes = serde_json::to_vec(record).unwrap_or_default();
        publish_at(
            &self.out.producer,
            &self.out.name,
            Some(partition),
            Some(record.key().as_bytes()),
            &bytes,
            None,
            stop,
        )
        .await
    }
}

/// Produces results, usage events and dead letters, retrying until delivered.
#[derive(Clone)]
pub(super) struct Publisher {
    pub results: (Out, Codec),
    pub usage: (Out, Codec),
    pub dlq: DeadLetterTopic,
    pub held: Out,
    pub approvals: ApprovalsOut,
    /// The compacted topic deferred jobs are handed off to.
    pub deferred: Out,
    pub source_topic: String,
    pub stop: CancellationToken,
    /// Largest record value this producer may send.
    pub max_record: usize,
    /// Longest text copied from a job into what is published about it.
    pub max_echo: usize,
    /// Counts the dead letters delivered, by kind.
    pub metrics: Arc<Metrics>,
}

/// How a send ended.
enum Sent {
    Delivered,
    /// The worker is stopping: the outcome stays unpublished and the job's
    /// offset uncommitted.
    Stopped,
    /// Too large (or otherwise refused) as it is.
    Refused(String),
}

impl Publisher {
    async fn send(
        &self,
        to: &Out,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Sent {
        match publish_at(
            &to.producer,
            &to.name,
            None,
            key,
            payload,
            headers.as_ref(),
            &self.stop,
        )
        .await
        {
            Ok(()) => Sent::Delivered,
            Err(PublishError::Stopped) => Sent::Stopped,
            Err(PublishError::Refused(e)) => Sent::Refused(e.to_string()),
        }
    }

    /// Publishes what became of a job; true once everything is acknowledged.
    pub async fn publish(&self, outcome: &Outcome, incoming: &Incoming) -> bool {
        match outcome {
            Outcome::Finished { result, usage } => self.finished(result, usage, incoming).await,
            Outcome::Deferred(job) => self.deferred(job, incoming).await,
            Outcome::Held {
                reason,
                result,
                request,
            } => self.held(reason, result, request, incoming).await,
        }
    }

    /// A held job: its approval request (carrying the message, so that a
    /// release can publish it again), a copy on the held topic (the reason and
    /// approval id in headers), and its `held` result, in that order: once the
    /// request is out, the job can be released even if the rest is redone.
    async fn held(
        &self,
        reason: &str,
        result: &JobResult,
        request: &ApprovalRequest,
        incoming: &Incoming,
    ) -> bool {
        let mut request = request.clone();
        request.held = Some(HeldCopy::of(
            &incoming.payload,
            incoming.key.as_deref(),
            incoming.signed.clone(),
            incoming.from,
        ));
        match self
            .approvals
            .send(&ApprovalRecord::Request(request.clone()), &self.stop)
            .await
        {
            Ok(()) => {}
            Err(PublishError::Stopped) => return false,
            Err(PublishError::Refused(e)) => {
                let reason = format!(
                    "the job was held ({reason}) but the approvals topic refused its request: {e}"
                );
                return self
                    .dead_letter(incoming, "unpublishable_hold", &reason)
                    .await;
            }
        }
        let mut reason = reason.to_owned();
        cap_text(&mut reason, self.max_echo);
        let mut fields = vec![
            (headers::HELD_REASON, reason.clone()),
            (headers::HELD_APPROVAL_ID, request.id.clone()),
        ];
        if let Some(s) = &incoming.signed {
            fields.push((sign::KEY_ID, s.key_id.clone()));
            fields.push((sign::TS, s.ts.clone()));
            fields.push((sign::SIG, s.sig.clone()));
        }
        let copy = match self
            .send(
                &self.held,
                incoming.key.as_deref(),
                &incoming.payload,
                Some(owned_headers(&fields)),
            )
            .await
        {
            Sent::Delivered => true,
            Sent::Stopped => return false,
            Sent::Refused(why) => {
                // The request carries the message: the copy is only a record.
                error!(job_id = %request.job_id, error = %why, "The held topic refused a held job's copy; its approval request carries it.");
                true
            }
        };
        copy && self.result(result, incoming).await
    }

    /// A deferred job, handed off: its record on the deferred topic (keyed by
    /// job id). Once acknowledged, the job's offset counts as done: the
    /// deferred topic holds it from here on, however long it waits.
    async fn deferred(&self, job: &DeferredJob, incoming: &Incoming) -> bool {
        let record = DeferredRecord::Job(job.clone());
        let bytes = match serde_json::to_vec(&record) {
            Ok(b) => b,
            Err(e) => {
                let reason =
                    format!("the job was deferred but its record could not be written: {e}");
                return self
                    .dead_letter(incoming, "unpublishable_deferral", &reason)
                    .await;
            }
        };
        let key = Some(job.job.job_id.as_bytes());
        match self.send(&self.deferred, key, &bytes, None).await {
            Sent::Delivered => true,
            Sent::Stopped => false,
            Sent::Refused(why) => {
                let reason = format!(
                    "the job was deferred but the deferred topic `{}` refused its record ({why}); replaying this message with \"mode\": \"live\" runs it live",
                    self.deferred.name
                );
                self.dead_letter(incoming, "unpublishable_deferral", &reason)
                    .await
            }
        }
    }

    /// A final result and its usage events. The billed attempts are published
    /// whatever becomes of the result, so that their cost reaches analytics and
    /// budgets.
    async fn finished(
        &self,
        result: &JobResult,
        usage: &[UsageEvent],
        incoming: &Incoming,
    ) -> bool {
        let (delivered, events_delivered) =
            tokio::join!(self.result(result, incoming), self.usage_only(usage));
        delivered && events_delivered
    }

    /// Usage events alone (a provider-batch line that billed tokens before
    /// its job was handed on); true once acknowledged, false when stopped. An
    /// event the topic cannot take is logged with its cost, not retried.
    pub async fn usage_only(&self, usage: &[UsageEvent]) -> bool {
        let mut events = Vec::with_capacity(usage.len());
        for event in usage {
            match self.usage.1.encode(event) {
                Ok(bytes) => events.push((event, bytes)),
                Err(e) => {
                    error!(job_id = %event.job_id, event_id = %event.event_id, cost_usd = event.cost_usd, input_tokens = event.usage.input_tokens, output_tokens = event.usage.output_tokens, error = %e, "Usage event does not fit the usage topic's schema; its cost is only in this log line.");
                }
            }
        }
        let sends = events.iter().map(|(event, bytes)| async move {
            match self.send(&self.usage.0, Some(event.job_id.as_bytes()), bytes, None).await {
                Sent::Delivered => true,
                Sent::Stopped => false,
                Sent::Refused(why) => {
                    error!(job_id = %event.job_id, event_id = %event.event_id, cost_usd = event.cost_usd, error = %why, "The usage topic refused a usage event; its cost is only in this log line.");
                    true
                }
            }
        });
        futures::future::join_all(sends)
            .await
            .into_iter()
            .all(|ok| ok)
    }

    /// The result, or the smallest record that says why it could not be sent.
    async fn result(&self, result: &JobResult, incoming: &Incoming) -> bool {
        let key = Some(result.job_id.as_bytes());
        let bytes = match self.results.1.encode(result) {
            Ok(bytes) => bytes,
            Err(e) => {
                // A job without a result would look lost: it goes to
                // the dead-letter topic, saying what it already cost.
                let reason = format!(
                    "the job ran (status {}, cost ${:.6}, billed attempts on `{}`) but its result does not fit the schema of `{}`: {e}; fix the schema or the topic's encoding; replaying this message runs the job again",
                    result.status.as_str(),
                    result.cost_usd,
                    self.usage.0.name,
                    self.results.0.name
                );
                error!(job_id = %result.job_id, error = %e, "Result does not fit its schema; dead-lettering the job.");
                return self
                    .dead_letter(incoming, "unencodable_outcome", &reason)
                    .await;
            }
        };
        let refused = if bytes.len() + RECORD_SLACK > self.max_record {
            format!(
                "{} bytes, over the {} a record may have",
                bytes.len(),
                self.max_record
            )
        } else {
            match self.send(&self.results.0, key, &bytes, None).await {
                Sent::Delivered => return true,
                Sent::Stopped => return false,
                Sent::Refused(why) => why,
            }
        };
        let why = format!(
            "the result could not be published ({refused}); its output is not kept, its cost is in the usage events"
        );
        error!(job_id = %result.job_id, reason = %why, "Result too large; publishing a stripped result.");
        match self.results.1.encode(&result.stripped(why.clone())) {
            Ok(small) => match self.send(&self.results.0, key, &small, None).await {
                Sent::Delivered => true,
                Sent::Stopped => false,
                Sent::Refused(e) => {
                    self.dead_letter(
                        incoming,
                        "unpublishable_result",
                        &format!("{why}; even the stripped result was refused: {e}"),
                    )
                    .await
                }
            },
            Err(e) => {
                self.dead_letter(incoming, "unpublishable_result", &format!("{why}; {e}"))
                    .await
            }
        }
    }

    /// The original message, with the reason and where it came from in headers
    /// (an original too large for a record is cut to fit; see
    /// [`DeadLetterTopic::send`]).
    pub async fn dead_letter(&self, incoming: &Incoming, kind: &str, reason: &str) -> bool {
        let mut reason = reason.to_owned();
        cap_text(&mut reason, self.max_echo);
        let letter = DeadLetter {
            kind,
            reason: &reason,
            topic: &self.source_topic,
            partition: incoming.ticket.partition,
            offset: incoming.ticket.offset,
            key: incoming.key.as_deref(),
            payload: &incoming.payload,
        };
        let sent = self.dlq.send(&letter, &self.stop).await;
        if sent {
            self.metrics.dead_lettered_as(kind);
        }
        sent
    }
}

/// Headers from (name, value) pairs.
pub(crate) fn owned_headers(fields: &[(&str, String)]) -> OwnedHeaders {
    fields.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value.as_bytes()),
        })
    })
}
