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
use switchyard_core::access::approval::{Decision, approval_id};
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

    /// The release decision the job carries, when it is a genuine one for this
    /// job (signed by a known key, approving the job's approval id on its
    /// project, its cover holding this very message) made within the approval
    /// TTL. Only such a decision widens the
    /// job's signature window, so a made-up header cannot make an old signed
    /// job replayable; whether it releases a hold (key unrevoked, role, kind,
    /// own work) is decided in admission, so a job whose approver's key was
    /// revoked meanwhile is held again rather than refused as expired.
    pub fn release<'e>(
        &self,
        env: &'e Envelope<'_>,
        job: &Job,
        now: DateTime<Utc>,
    ) -> Option<&'e Decision> {
        env.released_by.as_ref().filter(|d| {
            let age = (now - d.at).to_std().unwrap_or_default();
            d.at <= now + chrono::Duration::from_std(self.window).unwrap_or_default()
                && age <= self.ttl + self.window
                && d.approve
                && d.id == approval_id(job)
                && d.node == job.project
                && d.covers_job(&job.job_id, env.value)
                && d.authentic(&self.keys.read_recursive()).is_ok()
        })
    }

    /// Who signed the job: checked key, time, signature, scope and replay.
    pub fn signer(&self, env: &Envelope<'_>, job: &Job, now: DateTime<Utc>) -> Signer {
        let Some(signed) = &env.signed else {
            return Signer::Unsigned;
        };
        let release = self.release(env, job, now);
        let window = match release {
            Some(_) => self.window + self.ttl,
            None => self.window,
        };
        // Recursive: admission holds a read guard of the keys around this
        // call, and a plain read would queue behind a reload waiting to write.
        let keys = self.keys.read_recursive();
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

#[cfg(test)]
mod tests {
    use switchyard_core::access::cover::{Tree, leaf};
    use switchyard_core::access::sign::sign;
    use switchyard_core::access::{Grant, Role, new_key};
    use switchyard_core::job::ChatRequest;

    use super::*;

    /// A released job may be as old as the window plus the approval TTL, but
    /// only with a genuine decision for it: a made-up release header (a fresh
    /// date, any signature) must not make an old signed job replayable, and a
    /// genuine one releases only the messages its cover holds.
    #[test]
    fn only_a_genuine_release_widens_the_signature_window() {
        let now: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().unwrap();
        let grant = |role, scope: &str| Grant {
            role,
            scope: scope.into(),
        };
        let created = now - chrono::Duration::days(1);
        let (erin, erin_key) = new_key(
            [3; 32],
            "erin",
            vec![grant(Role::Submitter, "acme")],
            created,
        );
        let (carol, carol_key) = new_key(
            [1; 32],
            "carol",
            vec![grant(Role::Approver, "acme")],
            created,
        );
        let mut keys = Keyring::default();
        keys.add(erin);
        keys.add(carol);
        let config = AccessConfig {
            keys_file: "keys.toml".into(),
            signature_window: Duration::from_secs(300),
            approval_ttl: Duration::from_secs(24 * 3600),
        };
        let access = Access::new(&config, keys);
        let job = Job::new(
            "j1",
            "acme/finance/fpa/pricing",
            ChatRequest::from_user("hi"),
        );
        let value = serde_json::to_vec(&job).unwrap();
        let two_hours_ago = now - chrono::Duration::hours(2);
        let uncovered = Decision::signed(
            &carol_key,
            "carol",
            &approval_id(&job),
            &job.project,
            true,
            "ok",
            false,
            now - chrono::Duration::minutes(1),
        );
        // The approval covers this job and one other, as the approver saw them.
        let tree = Tree::new(vec![leaf("j1", &value), leaf("j0", b"{}")]);
        let mut genuine = uncovered.clone().covering(&carol_key, tree.cover());
        genuine.proof = tree.proof(&leaf("j1", &value));
        let mut forged = genuine.clone();
        forged.sig = B64_SIG.into();
        let mut elsewhere = genuine.clone();
        elsewhere.id = "appr-other".into();
        let mut unproven = genuine.clone();
        unproven.proof = None;
        let mut others_proof = genuine.clone();
        others_proof.proof = tree.proof(&leaf("j0", b"{}"));
        let envelope = |released_by: Option<Decision>, offset| Envelope {
            value: &value,
            signed: Some(sign(&erin_key, &value, two_hours_ago)),
            released_by,
            partition: 0,
            offset,
            checked: None,
        };
        for (offset, d) in [
            (1, None),
            (2, Some(forged)),
            (3, Some(elsewhere)),
            (5, Some(uncovered)),
            (6, Some(unproven)),
            (7, Some(others_proof)),
        ] {
            let env = envelope(d, offset);
            assert!(access.release(&env, &job, now).is_none());
            assert!(
                matches!(access.signer(&env, &job, now), Signer::Refused(_)),
                "offset {offset}: a two-hour-old signature without a genuine release"
            );
        }
        let env = envelope(Some(genuine), 4);
        assert!(access.release(&env, &job, now).is_some());
        assert_eq!(
            access.signer(&env, &job, now),
            Signer::Principal("erin".into())
        );

        // The same job id with other content: the genuine release, copied
        // onto it, does not cover it.
        let mut other = job.clone();
        other.request = ChatRequest::from_user("something else to run");
        let other_value = serde_json::to_vec(&other).unwrap();
        let env = Envelope {
            value: &other_value,
            signed: Some(sign(&erin_key, &other_value, now)),
            released_by: env.released_by.clone(),
            partition: 0,
            offset: 8,
            checked: None,
        };
        assert!(access.release(&env, &other, now).is_none());
    }

    /// 64 bytes of zeros in base64: well-formed, never a valid signature.
    const B64_SIG: &str =
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";
}
