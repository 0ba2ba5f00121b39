//! Who may act and what is kept of it: `[access]` (the keys file, the
//! signature window, how long held work waits) and `[audit]` (the HMAC key of
//! the audit chains and what is redacted from them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::pipeline::PipelineConfig;
use super::source::{ConfigError, ReadFile};

/// The keys file's keyring; an absent file is an empty keyring (no key yet).
pub fn read_keys(path: &Path, files: &dyn ReadFile) -> Result<crate::access::Keyring, ConfigError> {
    let text = match files.read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(ConfigError {
                origin: path.display().to_string(),
                line: None,
                key: "(file)".into(),
                problem: format!("cannot read the keys file: {e}"),
                fix: "check [access] keys_file in the pipeline config".into(),
            });
        }
    };
    crate::access::Keyring::parse(&text).map_err(|e| ConfigError {
        origin: path.display().to_string(),
        line: None,
        key: "keys".into(),
        problem: e.to_string(),
        fix: "the keys file is written by `switchyard keys`; restore it from a copy".into(),
    })
}

/// Access control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// The keys file (public keys, principals, roles), relative to this file.
    pub keys_file: PathBuf,
    /// How far a signed job's `switchyard.ts` may be from now; a replay is the
    /// same signature at another offset within it.
    #[serde(default = "five_minutes", with = "humantime_serde")]
    pub signature_window: Duration,
    /// How long an approval request waits before it expires (its work ends
    /// `rejected`, reason `expired`).
    #[serde(default = "one_day", with = "humantime_serde")]
    pub approval_ttl: Duration,
}

impl PipelineConfig {
    /// How long held work waits for a decision: `[access] approval_ttl`, or a
    /// day without `[access]` (held work then expires, since nobody can sign
    /// a decision).
    pub fn approval_ttl(&self) -> Duration {
        self.access
            .as_ref()
            .map_or_else(one_day, |a| a.approval_ttl)
    }
}

fn five_minutes() -> Duration {
    Duration::from_secs(300)
}

fn one_day() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// The audit log: one HMAC'd hash chain per writer on the audit topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Whether workers write an audit record per admission decision (approvals,
    /// keys and start-up configurations are always recorded when `[access]` is
    /// set).
    pub enabled: bool,
    /// Environment variable holding the HMAC key of the chains (or
    /// `<key_env>_FILE`, naming a file that holds it).
    pub key_env: String,
    /// A file holding the HMAC key (relative to this config), read when the
    /// variables are unset: for a key mounted as a secret file.
    pub key_file: Option<PathBuf>,
    /// Regular expressions whose matches are replaced by `[redacted]` in every
    /// text an audit record keeps (prompts and outputs only where a node's
    /// policy asks for them).
    pub redact: Vec<String>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            key_env: "SWITCHYARD_AUDIT_KEY".into(),
            key_file: None,
            redact: vec![
                // Credentials in URLs (`scheme://user:password@`).
                r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]+@".into(),
                // E-mail addresses.
                r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}".into(),
                // Card-like digit runs (13 to 19 digits, spaces or dashes between).
                r"\b(?:\d[ -]?){13,19}\b".into(),
                // Phone numbers with a country code.
                r"\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){2,4}".into(),
            ],
        }
    }
}
