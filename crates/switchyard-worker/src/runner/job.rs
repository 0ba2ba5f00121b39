//! One job's task: from its bytes to its published outcome. A panic while the
//! job is processed becomes a failed result; a job whose partition is taken away
//! stops without a result (the new owner runs it); a job id already running on
//! this worker (the same job sent twice, or seen again after a rebalance) is not
//! started a second time, unless the copy's own signature is refused (a replay),
//! which then gets its own refusal.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use parking_lot::Mutex;
use switchyard_codec::Codec;
use switchyard_core::result::cap_text;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tracing::{debug, error, warn};

use super::Incoming;
use super::partitions::Partitions;
use super::publish::Publisher;
use crate::access::Envelope;
use crate::engine::Engine;
use crate::metrics::Metrics;

/// Longest reason a dead-lettered message's log line carries, in bytes.
const LOGGED_REASON_MAX: usize = 500;

/// Counts a job in flight for as long as it lives (also when its task is aborted).
struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.job_done();
    }
}

/// Job ids running on this worker, each with a signal sent when it ends.
#[derive(Default)]
pub(super) struct RunningIds {
    ids: Mutex<HashMap<String, RunningId>>,
}

/// A running job id's message value and its end signal.
type RunningId = (Box<[u8]>, watch::Receiver<bool>);

/// How a second message with a running job's id stands to it.
enum Sibling {
    /// The same value: a redelivery, answered by the running job's result.
    Same(watch::Receiver<bool>),
    /// Another value under the same id: another job, which must not be
    /// taken for this one (its work would be lost).
    Conflict,
}

/// Held while a job id runs; ending it (drop) wakes any copy waiting.
struct Running<'a> {
    ids: &'a RunningIds,
    id: String,
    done: watch::Sender<bool>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.ids.ids.lock().remove(&self.id);
        let _ = self.done.send(true);
    }
}

impl RunningIds {
    /// Claims `id` for a message of `value`, or says how it stands to the
    /// copy already running: the same when the values are the same bytes or
    /// `same_job` finds them the same job (a resend encoded again, its JSON
    /// keys in another order, say).
    fn claim(
        &self,
        id: &str,
        value: &[u8],
        same_job: impl FnOnce(&[u8]) -> bool,
    ) -> Result<Running<'_>, Sibling> {
        let mut ids = self.ids.lock();
        if let Some((running, rx)) = ids.get(id) {
            return Err(if **running == *value || same_job(running) {
                Sibling::Same(rx.clone())
            } else {
                Sibling::Conflict
            });
        }
        let (done, rx) = watch::channel(false);
        ids.insert(id.to_owned(), (value.into(), rx));
        Ok(Running {
            ids: self,
            id: id.to_owned(),
            done,
        })
    }
}

/// What a job task needs besides its message.
#[derive(Clone)]
pub(super) struct JobContext {
    pub engine: Arc<Engine>,
    pub publisher: Publisher,
    pub codec: Codec,
    pub partitions: Arc<Partitions>,
    pub running: Arc<RunningIds>,
}

impl JobContext {
    /// Runs one job to its published outcome, then marks its offset finished.
    pub async fn run(self, incoming: Incoming, permit: OwnedSemaphorePermit) {
        let _permit = permit;
        let _in_flight = InFlight(&self.engine.metrics);
        let revoked = self.partitions.token(incoming.ticket.partition);
        let delivered = tokio::select! {
            biased;
            _ = revoked.cancelled() => {
                debug!(partition = incoming.ticket.partition, offset = incoming.ticket.offset, "Partition revoked; the job is left to its new owner.");
                return;
            }
            delivered = self.outcome(&incoming) => delivered,
        };
        if delivered {
            self.partitions.completed(incoming.ticket);
        }
    }

    async fn outcome(&self, incoming: &Incoming) -> bool {
        let job = match self.codec.decode_job(&incoming.payload) {
            Ok(job) => job,
            Err(e) => {
                // The reason can quote the job (serde names the bad value): the
                // log gets it cut, the dead letter its own capped copy.
                let reason = e.to_string();
                let mut logged = reason.clone();
                cap_text(&mut logged, LOGGED_REASON_MAX);
                warn!(partition = incoming.ticket.partition, offset = incoming.ticket.offset, kind = e.kind(), reason = %logged, "Dead-lettering a message.");
                return self
                    .publisher
                    .dead_letter(incoming, e.kind(), &reason)
                    .await;
            }
        };
        let envelope = Envelope {
            value: &incoming.payload,
            signed: incoming.signed.clone(),
            released_by: incoming.released_by.clone(),
            partition: incoming.ticket.partition,
            offset: incoming.ticket.offset,
            checked: None,
        };
        let same_job = |running: &[u8]| self.codec.decode_job(running).is_ok_and(|r| r == job);
        let _running = match self.running.claim(&job.job_id, &incoming.payload, same_job) {
            Ok(running) => Some(running),
            // A replayed copy is refused on its own signature (no provider
            // call), with its own result.
            Err(_) if self.engine.refuses_signature(&job, &envelope) => None,
            Err(Sibling::Conflict) => {
                warn!(partition = incoming.ticket.partition, offset = incoming.ticket.offset, job_id = %job.job_id, "Dead-lettering a job whose id is running with other content.");
                let reason = format!(
                    "job id `{}` is already running with other content; a job id must name one job (a resend must be the same message)",
                    job.job_id
                );
                return self
                    .publisher
                    .dead_letter(incoming, "job_id_conflict", &reason)
                    .await;
            }
            Err(Sibling::Same(mut other)) => {
                // The same job id is running here already: its result stands
                // for this copy too, once it is out.
                debug!(job_id = %job.job_id, "Job already running on this worker; not starting it twice.");
                let _ = other.wait_for(|done| *done).await;
                return true;
            }
        };
        match AssertUnwindSafe(self.engine.process_with(job, &envelope))
            .catch_unwind()
            .await
        {
            Ok(outcome) => self.publisher.publish(&outcome, incoming).await,
            Err(panic) => {
                // The job still ends in one result: failed, saying why.
                let why = panic_message(panic.as_ref());
                error!(partition = incoming.ticket.partition, offset = incoming.ticket.offset, reason = %why, "A job's processing panicked; it ends failed.");
                match self.codec.decode_job(&incoming.payload) {
                    Ok(job) => {
                        // The failed result re-runs analysis and policy; should
                        // that panic too, the message is dead-lettered rather
                        // than left to wedge its partition's commit point.
                        let failed = std::panic::catch_unwind(AssertUnwindSafe(|| {
                            self.engine.failed_internally(job, &why)
                        }));
                        match failed {
                            Ok(outcome) => self.publisher.publish(&outcome, incoming).await,
                            Err(again) => {
                                let reason = format!(
                                    "the worker failed while processing the job ({why}), and again while recording that ({})",
                                    panic_message(again.as_ref())
                                );
                                self.publisher
                                    .dead_letter(incoming, "internal_error", &reason)
                                    .await
                            }
                        }
                    }
                    Err(e) => {
                        self.publisher
                            .dead_letter(incoming, e.kind(), &e.to_string())
                            .await
                    }
                }
            }
        }
    }
}

/// The text a panic carried.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
