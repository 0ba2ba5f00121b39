//! Who may spend and who may decide. Principals hold Ed25519 key pairs; the
//! keys file ([`Keyring`]) holds only public material: each key's id, public
//! key, principal, roles with the org node each is scoped to (a role covers its
//! node and everything below it), and when it was created and revoked. Jobs
//! are signed in Kafka headers ([`sign`]); commands and approval decisions are
//! authorised by the same roles ([`Action`]). Pure: the keys file is parsed
//! from text, time comes in as an argument.

pub mod approval;
pub mod cover;
mod keys;
mod roles;
pub mod sign;

pub use keys::{Grant, KeyRecord, Keyring, KeysError, PrivateKey, new_key};
pub use roles::{Action, Denied, Role, covers};
