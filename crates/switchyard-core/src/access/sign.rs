//! Signed jobs. A producer signs `ts + "\n" + value` (the RFC 3339 UTC time
//! it signs at, a newline, and the Kafka message value's bytes) with its
//! Ed25519 key and sends three headers: [`KEY_ID`], [`TS`] and [`SIG`] (the
//! signature in base64). The worker checks the key (known, not revoked, a role
//! that may submit for the job's project), the time (within the signature
//! window of now), the signature, and that the same signature was not seen at
//! another offset within the window (a replay; the redelivery of the same
//! offset that at-least-once makes normal is not one).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Verifier};

use super::keys::{KeyRecord, Keyring, PrivateKey};
use super::roles::{Action, Denied};

/// Header naming the signing key.
pub const KEY_ID: &str = "switchyard.key_id";
/// Header holding the signing time, RFC 3339 UTC.
pub const TS: &str = "switchyard.ts";
/// Header holding the base64 Ed25519 signature over `ts + "\n" + value`.
pub const SIG: &str = "switchyard.sig";

/// The three signature headers of a message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Signed {
    /// [`KEY_ID`].
    pub key_id: String,
    /// [`TS`].
    pub ts: String,
    /// [`SIG`].
    pub sig: String,
}

/// What is signed: the time, a newline, the value's bytes.
pub fn message(ts: &str, value: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(ts.len() + 1 + value.len());
    m.extend_from_slice(ts.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(value);
    m
}

/// Signs a message value at `now`.
pub fn sign(key: &PrivateKey, value: &[u8], now: DateTime<Utc>) -> Signed {
    let ts = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Signed {
        key_id: key.key_id.clone(),
        sig: key.sign(&message(&ts, value)),
        ts,
    }
}

/// Why a job's signature is refused. The result's error code is [`AuthError::code`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// The node requires signed jobs and the message has no signature headers.
    #[error(
        "the project requires signed jobs and this one is not signed (headers switchyard.key_id, switchyard.ts, switchyard.sig)"
    )]
    Unsigned,
    /// A header is missing or not readable.
    #[error("the signature headers are not readable: {0}")]
    Malformed(String),
    /// The key id is not in the keys file.
    #[error("the job is signed by key `{0}`, which is not in the keys file")]
    UnknownKey(String),
    /// The key was revoked.
    #[error("the job is signed by key `{0}`, which was revoked")]
    Revoked(String),
    /// The signing time is outside the window around now.
    #[error("the job was signed at {ts}, outside the signature window of {window:?} around now")]
    Expired {
        /// The signing time.
        ts: String,
        /// The window.
        window: Duration,
    },
    /// The signature does not verify.
    #[error("the signature does not match the job and key `{0}`")]
    Forged(String),
    /// The same signature was seen at another offset within the window.
    #[error(
        "the same signed job was already received at partition {partition}, offset {offset}: a replay"
    )]
    Replayed {
        /// Where it was first seen.
        partition: i32,
        /// Its offset there.
        offset: i64,
    },
    /// The key's roles do not cover submitting for the project.
    #[error("{0}")]
    OutOfScope(Denied),
}

impl AuthError {
    /// The result's error code (`auth_…`).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Unsigned => "auth_unsigned",
            AuthError::Malformed(_) => "auth_malformed",
            AuthError::UnknownKey(_) => "auth_unknown_key",
            AuthError::Revoked(_) => "auth_revoked",
            AuthError::Expired { .. } => "auth_expired",
            AuthError::Forged(_) => "auth_forged",
            AuthError::Replayed { .. } => "auth_replayed",
            AuthError::OutOfScope(_) => "auth_out_of_scope",
        }
    }
}

/// Checks a signed job for `project` at `now`: key, time, signature, scope.
/// Replays are checked apart ([`ReplayGuard`]), with the message's position.
pub fn verify<'k>(
    keys: &'k Keyring,
    signed: &Signed,
    value: &[u8],
    project: &str,
    now: DateTime<Utc>,
    window: Duration,
) -> Result<&'k KeyRecord, AuthError> {
    let key = keys
        .get(&signed.key_id)
        .ok_or_else(|| AuthError::UnknownKey(signed.key_id.clone()))?;
    let ts = DateTime::parse_from_rfc3339(&signed.ts)
        .map_err(|e| AuthError::Malformed(format!("switchyard.ts: {e}")))?
        .with_timezone(&Utc);
    let off = (now - ts).abs().to_std().unwrap_or(Duration::MAX);
    if off > window {
        return Err(AuthError::Expired {
            ts: signed.ts.clone(),
            window,
        });
    }
    if !key.valid_at(now) || !key.valid_at(ts) {
        return Err(AuthError::Revoked(key.key_id.clone()));
    }
    let bytes: [u8; 64] = B64
        .decode(&signed.sig)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            AuthError::Malformed("switchyard.sig is not a base64 Ed25519 signature".into())
        })?;
    let public = key
        .verifying_key()
        .map_err(|_| AuthError::UnknownKey(key.key_id.clone()))?;
    public
        .verify(&message(&signed.ts, value), &Signature::from_bytes(&bytes))
        .map_err(|_| AuthError::Forged(key.key_id.clone()))?;
    key.authorize(Action::Submit, project)
        .map_err(AuthError::OutOfScope)?;
    Ok(key)
}

/// Signatures seen within the window, with where: the same signature at
/// another offset is a replay, at the same offset a redelivery.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    seen: HashMap<String, (i32, i64, DateTime<Utc>)>,
    window: Duration,
    since_prune: usize,
}

impl ReplayGuard {
    /// Remembers signatures for `window` (the signature window: older ones
    /// are refused as expired anyway).
    pub fn new(window: Duration) -> Self {
        Self {
            seen: HashMap::new(),
            window,
            since_prune: 0,
        }
    }

    /// Notes `sig` at (`partition`, `offset`), seen at `now`; a replay when it
    /// was seen elsewhere within the window.
    pub fn check(
        &mut self,
        sig: &str,
        partition: i32,
        offset: i64,
        now: DateTime<Utc>,
    ) -> Result<(), AuthError> {
        self.since_prune += 1;
        if self.since_prune >= 1024 {
            self.prune(now);
        }
        match self.seen.get(sig) {
            Some(&(p, o, at)) if (p, o) != (partition, offset) && !self.stale(at, now) => {
                Err(AuthError::Replayed {
                    partition: p,
                    offset: o,
                })
            }
            Some(&(p, o, at)) if (p, o) == (partition, offset) && !self.stale(at, now) => Ok(()),
            _ => {
                self.seen.insert(sig.to_owned(), (partition, offset, now));
                Ok(())
            }
        }
    }

    fn stale(&self, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        (now - at).to_std().is_ok_and(|age| age > self.window * 2)
    }

    fn prune(&mut self, now: DateTime<Utc>) {
        self.since_prune = 0;
        let window = self.window * 2;
        self.seen
            .retain(|_, (_, _, at)| (now - *at).to_std().map_or(true, |age| age <= window));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::{Grant, Role, new_key};

    fn now() -> DateTime<Utc> {
        "2026-12-06T12:00:00Z".parse().unwrap()
    }

    const W: Duration = Duration::from_secs(300);

    fn ring() -> (Keyring, PrivateKey) {
        let (record, private) = new_key(
            [9; 32],
            "svc",
            vec![Grant {
                role: Role::Submitter,
                scope: "acme/retail".into(),
            }],
            now() - chrono::Duration::days(1),
        );
        let mut ring = Keyring::default();
        ring.add(record);
        (ring, private)
    }

    #[test]
    fn a_signed_job_verifies_and_each_fault_has_its_code() {
        let (mut keys, private) = ring();
        let value = br#"{"job_id":"j"}"#;
        let project = "acme/retail/support/triage";
        let s = sign(&private, value, now());
        assert!(verify(&keys, &s, value, project, now(), W).is_ok());
        let code = |r: Result<&KeyRecord, AuthError>| r.map(|_| ()).unwrap_err().code();
        assert_eq!(
            code(verify(&keys, &s, b"{\"job_id\":\"k\"}", project, now(), W)),
            "auth_forged"
        );
        let later = now() + chrono::Duration::minutes(6);
        assert_eq!(
            code(verify(&keys, &s, value, project, later, W)),
            "auth_expired"
        );
        assert_eq!(
            code(verify(
                &keys,
                &s,
                value,
                "acme/finance/fpa/pricing",
                now(),
                W
            )),
            "auth_out_of_scope"
        );
        let unknown = Signed {
            key_id: "k0000".into(),
            ..s.clone()
        };
        assert_eq!(
            code(verify(&keys, &unknown, value, project, now(), W)),
            "auth_unknown_key"
        );
        keys.revoke(&private.key_id, now() - chrono::Duration::minutes(1));
        assert_eq!(
            code(verify(&keys, &s, value, project, now(), W)),
            "auth_revoked"
        );
    }

    #[test]
    fn a_replay_is_the_same_signature_elsewhere_and_a_redelivery_is_not() {
        let mut guard = ReplayGuard::new(W);
        assert!(guard.check("sig-a", 0, 10, now()).is_ok());
        assert!(guard.check("sig-a", 0, 10, now()).is_ok(), "redelivery");
        assert_eq!(
            guard.check("sig-a", 1, 3, now()).unwrap_err().code(),
            "auth_replayed"
        );
        assert!(guard.check("sig-a", 0, 11, now()).is_err());
        // Long after the window (the signature itself would be expired by then).
        let later = now() + chrono::Duration::minutes(11);
        assert!(guard.check("sig-a", 2, 1, later).is_ok());
    }
}
