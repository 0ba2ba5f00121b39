//! Access control in the worker: who signed a job (key, time, signature,
//! scope, replay — checked here, not only by the CLI, since anyone with write
//! access to the jobs topic could bypass a CLI), and whether the decision a
//! released job carries is recent enough to count. The keys are reloaded when
//! the keys file changes.
//!
//! A released job is the held message published again, with its original
//! signature: its signing time may be as old as the signature window plus the
//! approval TTL, and its replays are told apart by the signature together with
//! the decision's (a second guard, remembering that longer window; releases are
//! few).

use std::time::Duration;

use chrono::{DateTime, Utc};
use parking_lot::{Mutex, RwLock};
use switchyard_core::access::Keyring;
use switchyard_core::access::approval::Decision;
use switchyard_core::access::sign::{ReplayGuard, Signed, verify};
use switchyard_core::admission::Signer;
use switchyard_core::config::AccessConfig;
use switchyard_core::job::Job;

/// What a job's message carries besides the job.
#[derive(Debug, Clone, Default)]
pub struct Envelope<'a> {
    /// The message value, as signed.
    pub value: &'a [u8],
    /// The signature headers, when present.
    pub signed: Option<Signed>,
    /// The decision that released the job from a hold, when it carries one.
    pub released_by: Option<Decision>,
    /// Where the message was read: a replay is the same signature elsewhere.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// What was checked when the job was handed off to deferred routing: a
    /// deferred job run live later is admitted on these, not on a signature
    /// whose time window has passed.
    pub checked: Option<Checked>,
}

/// A job's signer and release decision as admission found them earlier.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// The principal whose signature checked out.
    pub signer: Option<String>,
    /// The decision that released it from a hold.
    pub released_by: Option<Box<Decision>>,
}

/// The worker's access-control state.
pub(crate) struct Access {
    keys: RwLock<Keyring>,
    replay: Mutex<ReplayGuard>,
    released_replay: Mutex<ReplayGuard>,
    window: Duration,
    ttl: Duration,
}

impl Access {
    pub fn new(config: &AccessConfig, keys: Keyring) -> Self {
        Self {
            keys: RwLock::new(keys),
            replay: Mutex::new(ReplayGuard::new(config.signature_window)),
            released_replay: Mutex::new(ReplayGuard::new(
                config.signature_window + config.approval_ttl,
            )),
            window: config.signature_window,
            ttl: config.approval_ttl,
        }
    }

    /// The keys now.
    pub fn keys(&self) -> parking_lot::RwLockReadGuard<'_, Keyring> {
        self.keys.read()
    }

    /// Replaces the keys (the keys file changed).
    pub fn set_keys(&self, keys: Keyring) {
        *self.keys.write() = keys;
    }

    /// The release decision the job carries, when it was made within the
    /// approval TTL (whether it counts is decided in admission).
    pub fn release<'e>(&self, env: &'e Envelope<'_>, now: DateTime<Utc>) -> Option<&'e Decision> {
        env.released_by.as_ref().filter(|d| {
            let age = (now - d.at).to_std().unwrap_or_default();
            d.at <= now + chrono::Duration::from_std(self.window).unwrap_or_default()
                && age <= self.ttl + self.window
        })
    }

    /// Who signed the job: checked key, time, signature, scope and replay.
    pub fn signer(&self, env: &Envelope<'_>, job: &Job, now: DateTime<Utc>) -> Signer {
        let Some(signed) = &env.signed else {
            return Signer::Unsigned;
        };
        let release = self.release(env, now);
        let window = match release {
            Some(_) => self.window + self.ttl,
            None => self.window,
        };
        let keys = self.keys.read();
        let key = match verify(&keys, signed, env.value, &job.project, now, window) {
            Ok(key) => key,
            Err(e) => return Signer::Refused(e),
        };
        let seen = match release {
            Some(d) => self.released_replay.lock().check(
                &format!("{}|{}", signed.sig, d.sig),
                env.partition,
                env.offset,
                now,
            ),
            None => self
                .replay
                .lock()
                .check(&signed.sig, env.partition, env.offset, now),
        };
        match seen {
            Ok(()) => Signer::Principal(key.principal.clone()),
            Err(e) => Signer::Refused(e),
        }
    }
}
