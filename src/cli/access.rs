//! Who runs a command: the private key in `SWITCHYARD_API_KEY` (or in the file
//! `SWITCHYARD_API_KEY_FILE` names), checked against the keys file of the
//! pipeline's `[access]`, and authorised for an action on an org node. Without
//! `[access]` the system runs open and every command says so.

use std::sync::Arc;

use anyhow::bail;
use chrono::Utc;
use switchyard_core::access::{Action, KeyRecord, Keyring, PrivateKey};
use switchyard_core::audit::AuditEntry;
use switchyard_core::config::LoadedPipeline;
use switchyard_kafka::audit::AuditLog;

/// The variable holding a principal's private key.
pub const API_KEY_ENV: &str = "SWITCHYARD_API_KEY";

/// A checked caller: their private key and its record in the keys file.
pub struct Caller {
    pub key: PrivateKey,
    pub record: KeyRecord,
}

/// The private key in `SWITCHYARD_API_KEY` or `SWITCHYARD_API_KEY_FILE`, if
/// any. Errors never repeat the value.
pub fn api_key() -> anyhow::Result<Option<PrivateKey>> {
    let text = match std::env::var(API_KEY_ENV) {
        Ok(v) if !v.is_empty() => v,
        _ => match std::env::var(format!("{API_KEY_ENV}_FILE")) {
            Ok(path) if !path.is_empty() => std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read {API_KEY_ENV}_FILE ({path}): {e}"))?,
            _ => return Ok(None),
        },
    };
    Ok(Some(PrivateKey::parse(&text)?))
}

/// The keys of the pipeline's `[access]`, or `None` (running open, said on stderr).
pub fn keys(pipeline: &LoadedPipeline) -> Option<&Keyring> {
    if pipeline.keys.is_none() {
        eprintln!(
            "note: {} has no [access] section: Switchyard runs open (no key is checked)",
            pipeline.path.display()
        );
    }
    pipeline.keys.as_ref()
}

/// The caller, checked against the keys file (`None` when running open).
pub fn caller(
    pipeline: &LoadedPipeline,
    action: Action,
    node: &str,
) -> anyhow::Result<Option<Caller>> {
    let Some(keys) = keys(pipeline) else {
        return Ok(None);
    };
    let Some(key) = api_key()? else {
        let roles: Vec<&str> = action.roles().iter().map(|r| r.as_str()).collect();
        bail!(
            "this command needs a key that may {} on `{node}` (the role {} over it): set {API_KEY_ENV} to your private key",
            action.describe(),
            roles.join(" or ")
        );
    };
    let record = keys.holder(&key, Utc::now())?.clone();
    Ok(Some(Caller { key, record }))
}

/// The caller, authorised for `action` on `node` (`None` when running open).
/// A refusal names the role and node it needs (exit 1).
pub fn authorize(
    pipeline: &LoadedPipeline,
    action: Action,
    node: &str,
) -> anyhow::Result<Option<Caller>> {
    let caller = caller(pipeline, action, node)?;
    if let Some(c) = &caller {
        c.record.authorize(action, node)?;
    }
    Ok(caller)
}

/// The root of the org tree (what a whole-org command is authorised on).
pub fn org_root(pipeline: &LoadedPipeline) -> String {
    pipeline.org.name().to_owned()
}

/// The CLI's audit chain for one command, when `[access]` is set.
pub fn audit_log(pipeline: &LoadedPipeline) -> anyhow::Result<Option<Arc<AuditLog>>> {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "cli".into());
    audit_log_as(pipeline, "cli", &host)
}

/// The audit writer of a process of `kind` (`cli`, `sink`) named `name`, with
/// `[access]` or `[audit] enabled`.
pub fn audit_log_as(
    pipeline: &LoadedPipeline,
    kind: &str,
    name: &str,
) -> anyhow::Result<Option<Arc<AuditLog>>> {
    if pipeline.config.access.is_none() && !pipeline.config.audit.enabled {
        return Ok(None);
    }
    Ok(Some(AuditLog::new(
        &pipeline.config.kafka,
        &pipeline.config.kafka.topics,
        &pipeline.config.audit,
        AuditLog::writer_name(kind, name),
    )?))
}

/// Records one entry and waits until it (and its checkpoint) is delivered.
pub async fn record(log: Option<&Arc<AuditLog>>, entry: AuditEntry) {
    if let Some(log) = log {
        log.record(entry);
        log.close().await;
    }
}
