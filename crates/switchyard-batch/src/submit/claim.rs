//! Fencing submits of the same batch through the registry. Before producing, a
//! submit run publishes a claim (a `submitting` record naming it) and reads the
//! registry back past it: the registry's rules ([`crate::registry::log`]) make
//! exactly one claim count, and a run whose claim does not count refuses. While
//! it produces, a heartbeat thread re-publishes the claim every sixth of the
//! lease and checks that it still holds the batch; a run that stops without
//! finishing releases it. A run that died (no heartbeat for the lease) is taken
//! over by the next submit, which produces only the jobs still missing.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{OnceLock, mpsc};
use std::time::Duration;

use chrono::Utc;
use switchyard_core::batch::{BatchRecord, BatchState, Submitter};
use switchyard_core::config::KafkaConfig;

use crate::registry::{self, Holder, RegistryReader};
use crate::sender::Sender;
use crate::{Error, Result};

/// How long a submit run not heard from keeps its claim by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Heartbeats per lease.
const BEATS_PER_LEASE: u32 = 6;

/// A claim this run holds.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    /// The batch as registered, with this run as its submitter.
    pub record: BatchRecord,
    /// Offset of this run's claim.
    pub offset: i64,
    /// An earlier run had produced (some of) the batch's jobs.
    pub resumed: bool,
}

impl Claim {
    fn me(&self) -> Option<&Submitter> {
        self.record.submitter.as_ref()
    }
}

/// Claims the batch `fresh` describes (a new record, used when the registry has
/// none). `check` vets a registered batch against this submission first.
/// `None`: the batch is already `submitted`, nothing to do.
pub(crate) fn acquire(
    reader: &RegistryReader,
    sender: &mut Sender,
    kafka: &KafkaConfig,
    fresh: BatchRecord,
    lease: Duration,
    check: impl Fn(&BatchRecord) -> Result<()>,
) -> Result<Option<Claim>> {
    let batch_id = fresh.batch_id.clone();
    let priced = fresh.worst_case_usd;
    let now = Utc::now();
    let (base, after, resumed) = match reader.view(&batch_id)? {
        None => (fresh, None, false),
        Some(view) => {
            check(&view.record)?;
            match view.record.state {
                BatchState::Submitted => return Ok(None),
                BatchState::Canceled => return Err(canceled(&view.record)),
                BatchState::Submitting => {}
            }
            if let Some(h) = &view.holder {
                if !h.is_stale(lease, now) {
                    return Err(busy(&batch_id, h, lease));
                }
                tracing::info!(
                    batch_id = %batch_id,
                    holder = %h.submitter.id,
                    silent_s = h.silent_for(now).as_secs(),
                    "The run submitting this batch is silent; taking it over."
                );
            }
            (view.record, Some(view.last_offset), true)
        }
    };
    let me = Submitter {
        id: uuid::Uuid::new_v4().to_string(),
        host: host_name(),
        pid: std::process::id(),
        since: now,
        heartbeat_at: now,
        after,
        released: false,
    };
    let record = BatchRecord {
        state: BatchState::Submitting,
        submitter: Some(me.clone()),
        canceled_at: None,
        // A run taking a batch over stamps the jobs it produces with what it
        // priced, or what the first run did if that is more.
        worst_case_usd: match (base.worst_case_usd, priced) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        },
        ..base
    };
    let offset = registry::publish_with(sender, kafka, &record)?;
    let Some(view) = reader.view(&batch_id)? else {
        return Err(Error::Conflict(format!(
            "batch `{batch_id}` vanished from the registry (topic `{}`) right after it was claimed; is something deleting records from it?",
            kafka.topics.batches
        )));
    };
    match view.record.state {
        // Another run finished (or someone canceled) between the two reads: this
        // claim is a late record, and the batch's state is published again after it.
        BatchState::Submitted => {
            registry::restore_from(&view, sender, kafka)?;
            Ok(None)
        }
        BatchState::Canceled => {
            registry::restore_from(&view, sender, kafka)?;
            Err(canceled(&view.record))
        }
        BatchState::Submitting => match &view.holder {
            Some(h) if h.submitter.id == me.id => {
                tracing::debug!(batch_id = %batch_id, offset, "Batch claimed.");
                Ok(Some(Claim {
                    record: view.record,
                    offset,
                    resumed,
                }))
            }
            Some(h) => Err(busy(&batch_id, h, lease)),
            None => Err(Error::Conflict(format!(
                "batch `{batch_id}` could not be claimed: another process released or changed it at the same moment; run this command again"
            ))),
        },
    }
}

/// Gives the batch up after this run failed, so that the next submit need not
/// wait for the lease. Best effort: when even this fails, the lease frees it.
pub(crate) fn release(kafka: &KafkaConfig, claim: &Claim, after: i64) {
    let Some(me) = claim.me() else {
        return;
    };
    let record = BatchRecord {
        submitter: Some(Submitter {
            heartbeat_at: Utc::now(),
            after: Some(after),
            released: true,
            ..me.clone()
        }),
        ..claim.record.clone()
    };
    // A batch canceled meanwhile keeps its final state as its last record.
    let released = Sender::new(kafka).and_then(|mut s| {
        registry::publish_with(&mut s, kafka, &record)?;
        let reader = RegistryReader::new(kafka)?;
        registry::restore_final_state(&reader, &mut s, kafka, &record.batch_id)
    });
    match released {
        Ok(_) => tracing::info!(batch_id = %record.batch_id, "Batch released for the next submit."),
        Err(e) => {
            tracing::warn!(batch_id = %record.batch_id, error = %e, "Could not release the batch; the next submit takes it over once this run's lease has passed.")
        }
    }
}

/// Whether this run still holds its claim, as the heartbeat thread last saw.
pub(crate) struct Lease {
    batch_id: String,
    lease: Duration,
    /// The run that took the batch over, once one has.
    taken_by: OnceLock<Submitter>,
    last_offset: AtomicI64,
}

impl Lease {
    /// Fails once another run has taken the batch over.
    pub fn check(&self) -> Result<()> {
        match self.taken_by.get() {
            None => Ok(()),
            Some(by) => Err(Error::ClaimLost {
                batch_id: self.batch_id.clone(),
                host: by.host.clone(),
                pid: by.pid,
                lease: self.lease,
            }),
        }
    }

    /// Offset of this run's newest registry record.
    pub fn last_offset(&self) -> i64 {
        self.last_offset.load(Ordering::Relaxed)
    }
}

/// Runs `work` while a heartbeat thread keeps `claim` alive. `work` should call
/// [`Lease::check`] now and then and stop when it fails. The thread ends with
/// `work`, also when `work` panics (the claim then lapses after the lease, as
/// when the process dies).
pub(crate) fn with_heartbeat<T>(
    claim: &Claim,
    kafka: &KafkaConfig,
    lease: Duration,
    work: impl FnOnce(&Lease) -> Result<T>,
) -> (Result<T>, i64) {
    let state = Lease {
        batch_id: claim.record.batch_id.clone(),
        lease,
        taken_by: OnceLock::new(),
        last_offset: AtomicI64::new(claim.offset),
    };
    let (stop, stopped) = mpsc::channel::<()>();
    let shared = &state;
    let out = std::thread::scope(|scope| {
        let beats = std::thread::Builder::new()
            .name("batch-heartbeat".into())
            .spawn_scoped(scope, move || {
                heartbeat(claim, kafka, lease, &stopped, shared)
            });
        let out = work(shared);
        drop(stop);
        if let Ok(handle) = beats {
            let _ = handle.join();
        }
        out
    });
    // A run that stopped because it lost the claim says so, whatever stopped it.
    let out = match (out, state.check()) {
        (Err(e), Err(lost)) => {
            tracing::debug!(error = %e, "Stopped after losing the claim.");
            Err(lost)
        }
        (out, _) => out,
    };
    (out, state.last_offset())
}

fn heartbeat(
    claim: &Claim,
    kafka: &KafkaConfig,
    lease: Duration,
    stopped: &mpsc::Receiver<()>,
    state: &Lease,
) {
    let Some(me) = claim.me() else {
        return;
    };
    let every = lease / BEATS_PER_LEASE;
    let mut me = me.clone();
    let mut tools: Option<(Sender, RegistryReader)> = None;
    let batch_id = &claim.record.batch_id;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
        let (sender, reader) = match tools.as_mut() {
            Some(t) => t,
            None => match Sender::new(kafka).and_then(|s| Ok((s, RegistryReader::new(kafka)?))) {
                Ok(t) => tools.insert(t),
                Err(e) => {
                    tracing::warn!(batch_id = %batch_id, error = %e, "Cannot reach the registry for a heartbeat; retrying.");
                    continue;
                }
            },
        };
        me.heartbeat_at = Utc::now();
        me.after = Some(state.last_offset());
        let record = BatchRecord {
            submitter: Some(me.clone()),
            ..claim.record.clone()
        };
        match registry::publish_with(sender, kafka, &record) {
            Ok(offset) => state.last_offset.store(offset, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(batch_id = %batch_id, error = %e, "Heartbeat not published; retrying.");
                tools = None;
                continue;
            }
        }
        match reader.view(batch_id) {
            Ok(Some(v)) if v.record.state != BatchState::Submitting => {
                // Canceled (or otherwise ended) while this run submits: the
                // heartbeat just published must not be the batch's last record,
                // or compaction would keep it and drop the final state.
                if let Err(e) = registry::restore_from(&v, sender, kafka) {
                    tracing::warn!(batch_id = %batch_id, error = %e, "Could not publish the batch's final state again; the submit's end will.");
                }
                tracing::info!(batch_id = %batch_id, state = ?v.record.state, "The batch ended while being submitted; heartbeats stop.");
                return;
            }
            Ok(Some(v)) => {
                if let Some(h) = v.holder.filter(|h| h.submitter.id != me.id) {
                    tracing::warn!(batch_id = %batch_id, by = %h.submitter.id, "Another submit took this batch over.");
                    let _ = state.taken_by.set(h.submitter);
                    return;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(batch_id = %batch_id, error = %e, "Cannot read the registry after a heartbeat; retrying.")
            }
        }
    }
}

fn busy(batch_id: &str, h: &Holder, lease: Duration) -> Error {
    Error::Busy {
        batch_id: batch_id.to_owned(),
        host: h.submitter.host.clone(),
        pid: h.submitter.pid,
        since: h.submitter.since,
        silent_for: Duration::from_secs(h.silent_for(Utc::now()).as_secs()),
        lease,
    }
}

fn canceled(r: &BatchRecord) -> Error {
    Error::Conflict(format!(
        "batch `{}` (this file, project `{}`) was canceled{}; a canceled batch is not run again (collect it, or submit a changed file as a new batch)",
        r.batch_id,
        r.project,
        r.canceled_at
            .map(|t| format!(" at {t}"))
            .unwrap_or_default()
    ))
}

/// This machine's name, for people reading a claim.
fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".to_owned())
}
