//! The keys file: public keys with their principal and roles, created and
//! revoked times; and the private key a principal holds, printed once when the
//! key is created, as `sy1.<key_id>.<base64 seed>`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::roles::{Action, Denied, Role, covers};

/// A role over an org node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// The role.
    pub role: Role,
    /// The org node it covers (with everything below it).
    pub scope: String,
}

/// One key as the keys file holds it: public material only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    /// Derived from the public key: `k` and 16 hex digits of its SHA-256.
    pub key_id: String,
    /// Who holds the private key.
    pub principal: String,
    /// The Ed25519 public key, base64.
    pub public_key: String,
    /// What the key may do, and where.
    pub grants: Vec<Grant>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it was revoked; it signs nothing valid from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl KeyRecord {
    /// Whether the key is valid at `at`.
    pub fn valid_at(&self, at: DateTime<Utc>) -> bool {
        self.created_at <= at + chrono::Duration::minutes(5)
            && self.revoked_at.is_none_or(|r| at < r)
    }

    /// The public key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeysError> {
        let bytes: [u8; 32] = B64
            .decode(&self.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| KeysError::BadPublicKey(self.key_id.clone()))?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| KeysError::BadPublicKey(self.key_id.clone()))
    }

    /// Whether one of the key's roles allows `action` on `node`.
    pub fn may(&self, action: Action, node: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.role.permits(action) && covers(&g.scope, node))
    }

    /// Whether the key holds `role` over `node`.
    pub fn holds(&self, role: Role, node: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.role == role && covers(&g.scope, node))
    }

    /// `Ok` when the key may do `action` on `node`, else what it would need.
    pub fn authorize(&self, action: Action, node: &str) -> Result<(), Denied> {
        if self.may(action, node) {
            return Ok(());
        }
        let roles: Vec<&str> = action.roles().iter().map(|r| r.as_str()).collect();
        Err(Denied {
            principal: self.principal.clone(),
            action: action.describe(),
            node: node.to_owned(),
            roles: roles.join(" or "),
        })
    }
}

/// Why the keys file or a key is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// The file does not parse.
    #[error("the keys file is not valid: {0}")]
    Parse(String),
    /// A public key is not 32 bytes of base64.
    #[error("key `{0}` has a public key that is not an Ed25519 key in base64")]
    BadPublicKey(String),
    /// A private key is not `sy1.<key_id>.<base64 seed>`.
    #[error(
        "the private key is not of the form sy1.<key_id>.<base64 seed> (check SWITCHYARD_API_KEY)"
    )]
    BadPrivateKey,
    /// The private key's id is not in the keys file.
    #[error("key `{0}` is not in the keys file")]
    Unknown(String),
    /// The private key does not match the public key of its id.
    #[error("the private key does not match the public key of `{0}`")]
    Mismatch(String),
    /// The key was revoked.
    #[error("key `{0}` was revoked")]
    Revoked(String),
}

/// The keys file's document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeyRecord>,
}

/// Every key, by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Keyring {
    keys: Vec<KeyRecord>,
}

impl Keyring {
    /// Parses the keys file's text (empty text is an empty keyring).
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        let file: KeysFile = toml::from_str(text).map_err(|e| KeysError::Parse(e.to_string()))?;
        for k in &file.keys {
            k.verifying_key()?;
        }
        Ok(Self { keys: file.keys })
    }

    /// The keys file's text.
    pub fn to_text(&self) -> String {
        let file = KeysFile {
            keys: self.keys.clone(),
        };
        let body = toml::to_string_pretty(&file).unwrap_or_default();
        format!(
            "# Switchyard keys: public material only (key id, public key, principal,\n# roles and their scopes). Private keys are printed once, at creation.\n{body}"
        )
    }

    /// Whether the keyring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every key.
    pub fn keys(&self) -> &[KeyRecord] {
        &self.keys
    }

    /// A key by id.
    pub fn get(&self, key_id: &str) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| k.key_id == key_id)
    }

    /// Adds a key.
    pub fn add(&mut self, key: KeyRecord) {
        self.keys.push(key);
    }

    /// Marks a key revoked at `at`; false when there is no such key.
    pub fn revoke(&mut self, key_id: &str, at: DateTime<Utc>) -> bool {
        match self.keys.iter_mut().find(|k| k.key_id == key_id) {
            Some(k) => {
                k.revoked_at.get_or_insert(at);
                true
            }
            None => false,
        }
    }

    /// The key a private key belongs to, checked: known, matching, not revoked.
    pub fn holder(&self, private: &PrivateKey, at: DateTime<Utc>) -> Result<&KeyRecord, KeysError> {
        let record = self
            .get(&private.key_id)
            .ok_or_else(|| KeysError::Unknown(private.key_id.clone()))?;
        if record.verifying_key()? != private.signing.verifying_key() {
            return Err(KeysError::Mismatch(private.key_id.clone()));
        }
        if !record.valid_at(at) {
            return Err(KeysError::Revoked(private.key_id.clone()));
        }
        Ok(record)
    }
}

/// A principal's private key.
#[derive(Clone)]
pub struct PrivateKey {
    /// The key's id.
    pub key_id: String,
    signing: SigningKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Parses `sy1.<key_id>.<base64 seed>`.
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        let mut parts = text.trim().splitn(3, '.');
        let (Some("sy1"), Some(key_id), Some(seed)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(KeysError::BadPrivateKey);
        };
        let seed: [u8; 32] = B64
            .decode(seed)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(KeysError::BadPrivateKey)?;
        Ok(Self {
            key_id: key_id.to_owned(),
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The form printed once at creation (a secret: never log it).
    pub fn expose(&self) -> String {
        format!(
            "sy1.{}.{}",
            self.key_id,
            B64.encode(self.signing.to_bytes())
        )
    }

    /// Signs `message`; the signature in base64.
    pub fn sign(&self, message: &[u8]) -> String {
        B64.encode(self.signing.sign(message).to_bytes())
    }
}

/// The id of a public key: `k` and 16 hex digits of its SHA-256.
pub fn key_id_of(public: &VerifyingKey) -> String {
    let digest = Sha256::digest(public.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("k{hex}")
}

/// A new key for `principal` with `grants`, from 32 random bytes (the caller
/// draws them): its public record and the private key to print once.
pub fn new_key(
    seed: [u8; 32],
    principal: &str,
    grants: Vec<Grant>,
    now: DateTime<Utc>,
) -> (KeyRecord, PrivateKey) {
    let signing = SigningKey::from_bytes(&seed);
    let public = signing.verifying_key();
    let key_id = key_id_of(&public);
    let record = KeyRecord {
        key_id: key_id.clone(),
        principal: principal.to_owned(),
        public_key: B64.encode(public.as_bytes()),
        grants,
        created_at: now,
        revoked_at: None,
    };
    (record, PrivateKey { key_id, signing })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-12-06T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn keys_round_trip_through_the_file_and_private_keys_print_once_in_one_form() {
        let (record, private) = new_key(
            [7; 32],
            "alice",
            vec![Grant {
                role: Role::Approver,
                scope: "acme/finance".into(),
            }],
            now(),
        );
        let mut ring = Keyring::default();
        ring.add(record.clone());
        let text = ring.to_text();
        assert!(
            !text.contains(&private.expose()[4..]),
            "no private material in the file"
        );
        let back = Keyring::parse(&text).unwrap();
        assert_eq!(back.get(&record.key_id), Some(&record));
        let parsed = PrivateKey::parse(&private.expose()).unwrap();
        assert_eq!(back.holder(&parsed, now()).unwrap().principal, "alice");
        assert!(
            private
                .expose()
                .starts_with(&format!("sy1.{}.", record.key_id))
        );
    }

    #[test]
    fn revoked_mismatched_and_unknown_keys_are_refused() {
        let (a, pa) = new_key([1; 32], "a", vec![], now());
        let (_, pb) = new_key([2; 32], "b", vec![], now());
        let mut ring = Keyring::default();
        ring.add(a.clone());
        assert!(matches!(
            ring.holder(&pb, now()),
            Err(KeysError::Unknown(_))
        ));
        let forged = PrivateKey {
            key_id: a.key_id.clone(),
            signing: SigningKey::from_bytes(&[2; 32]),
        };
        assert!(matches!(
            ring.holder(&forged, now()),
            Err(KeysError::Mismatch(_))
        ));
        assert!(ring.revoke(&a.key_id, now()));
        assert!(matches!(
            ring.holder(&pa, now()),
            Err(KeysError::Revoked(_))
        ));
        assert!(PrivateKey::parse("sy1.k1.not-base64!").is_err());
    }

    #[test]
    fn refusals_name_the_role_and_the_node() {
        let (k, _) = new_key(
            [3; 32],
            "bob",
            vec![Grant {
                role: Role::Submitter,
                scope: "acme/retail".into(),
            }],
            now(),
        );
        assert!(
            k.authorize(Action::Submit, "acme/retail/support/triage")
                .is_ok()
        );
        let e = k
            .authorize(Action::Submit, "acme/finance/fpa/pricing")
            .unwrap_err();
        assert!(e.to_string().contains("`acme/finance/fpa/pricing`"), "{e}");
        assert!(e.to_string().contains("submitter"), "{e}");
        let e = k.authorize(Action::Approve, "acme/retail").unwrap_err();
        assert!(e.to_string().contains("approver"), "{e}");
    }
}
