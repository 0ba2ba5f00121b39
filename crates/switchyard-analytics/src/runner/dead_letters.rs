//! The sink's dead-letter stage: a task on the runtime that publishes every
//! message of the usage topic that is not a usage event to the sink's own
//! dead-letter topic (`analytics.dlq_topic`), with the original key and bytes
//! and why and where from in headers, and tells the writer once the broker
//! holds it. Only then does the message's offset count as done: the sink never
//! commits past a message whose dead letter is not acknowledged, so a sink
//! stopped or killed in between reads it, and dead-letters it, again.

use std::sync::mpsc;

use switchyard_core::result::cap_text;
use switchyard_kafka::dead_letter::{DeadLetter, DeadLetterTopic};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::decode::Undecodable;

/// Dead letters on their way at once.
const IN_FLIGHT: usize = 256;
/// Longest reason a dead letter carries (a codec's reason may quote the input).
const MAX_REASON: usize = 1024;

/// A message to dead-letter, with its position and assignment epoch.
pub(super) struct Letter {
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) epoch: u64,
    pub(super) undecodable: Box<Undecodable>,
}

/// The broker holds the dead letter of this message.
#[derive(Debug, Clone, Copy)]
pub(super) struct Acknowledged {
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) epoch: u64,
}

/// The running stage: where the writer sends letters and reads
/// acknowledgements, and the task to stop and join.
pub(super) struct DeadLetterStage {
    pub(super) letters: UnboundedSender<Letter>,
    pub(super) acknowledged: mpsc::Receiver<Acknowledged>,
    pub(super) task: JoinHandle<()>,
    /// Cancelled at shutdown: letters not yet acknowledged stay uncommitted.
    pub(super) stop: CancellationToken,
}

impl DeadLetterStage {
    /// Starts the task publishing to `dlq`; `source_topic` names where the
    /// originals were read, in each letter's headers.
    pub(super) fn start(dlq: DeadLetterTopic, source_topic: String) -> Self {
        let (letters, rx) = unbounded_channel();
        let (ack, acknowledged) = mpsc::channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(dlq, source_topic, rx, ack, stop.clone()));
        Self {
            letters,
            acknowledged,
            task,
            stop,
        }
    }
}

/// Publishes letters as they come, up to [`IN_FLIGHT`] at once, until the
/// writer drops its sender and every letter has been sent, or `stop`: then
/// the letters still waiting for the broker are abandoned (their offsets were
/// not committed; the next start dead-letters them again).
async fn run(
    dlq: DeadLetterTopic,
    source_topic: String,
    mut letters: UnboundedReceiver<Letter>,
    ack: mpsc::Sender<Acknowledged>,
    stop: CancellationToken,
) {
    let mut sending = JoinSet::new();
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                sending.abort_all();
                break;
            }
            letter = letters.recv(), if sending.len() < IN_FLIGHT => {
                let Some(letter) = letter else { break };
                let (dlq, topic, ack, stop) = (dlq.clone(), source_topic.clone(), ack.clone(), stop.clone());
                sending.spawn(async move { send(&dlq, &topic, letter, &ack, &stop).await });
            }
            Some(_) = sending.join_next(), if !sending.is_empty() => {}
        }
    }
    // The writer is done: let the letters on their way finish, unless stopped
    // (a letter waiting on a missing topic would otherwise hold the sink's
    // shutdown until librdkafka gives up on it).
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                sending.abort_all();
                while sending.join_next().await.is_some() {}
                break;
            }
            next = sending.join_next() => if next.is_none() { break },
        }
    }
}

/// One dead letter, until acknowledged or stopped.
async fn send(
    dlq: &DeadLetterTopic,
    source_topic: &str,
    letter: Letter,
    ack: &mpsc::Sender<Acknowledged>,
    stop: &CancellationToken,
) {
    let u = &letter.undecodable;
    let mut reason = format!("not a usage event: {}", u.reason);
    cap_text(&mut reason, MAX_REASON);
    let sent = dlq
        .send(
            &DeadLetter {
                kind: u.kind,
                reason: &reason,
                topic: source_topic,
                partition: letter.partition,
                offset: letter.offset,
                key: u.key.as_deref(),
                payload: &u.payload,
            },
            stop,
        )
        .await;
    if sent {
        debug!(partition = letter.partition, offset = letter.offset, dlq = %dlq.name, "Undecodable usage message dead-lettered.");
        let _ = ack.send(Acknowledged {
            partition: letter.partition,
            offset: letter.offset,
            epoch: letter.epoch,
        });
    } else {
        warn!(partition = letter.partition, offset = letter.offset, dlq = %dlq.name, "Stopped before the dead letter was acknowledged; the message stays uncommitted and is read again.");
    }
}
