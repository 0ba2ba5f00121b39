//! Writing the audit log: one writer's chain of HMAC'd, hash-linked records
//! on the audit topic (keyed by the writer, so that its records keep their
//! order on one partition; the producer is idempotent), and the writer's
//! latest sequence number and hash on the compacted checkpoints topic, every
//! second and when it closes, so that a cut tail is detected.
//!
//! The HMAC key comes from the environment variable `[audit] key_env` names
//! (`SWITCHYARD_AUDIT_KEY`), or from the file its `_FILE` variant names.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use parking_lot::Mutex;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use switchyard_core::audit::{AuditEntry, Chain, Redactor};
use switchyard_core::config::{AuditConfig, KafkaConfig, Topics};
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::client::producer_config;
use crate::produce::{acknowledged, enqueue};

/// Why the audit log cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// No HMAC key.
    #[error(
        "the audit log needs its HMAC key: set {0} (or {0}_FILE to a file holding it, or [audit] key_file); every writer of one deployment uses the same key"
    )]
    NoKey(String),
    /// The key file cannot be read.
    #[error("cannot read the audit key file {0}: {1}")]
    KeyFile(String, std::io::Error),
    /// A redaction pattern does not compile.
    #[error("[audit] redact: {0}")]
    Redact(String),
    /// The producer cannot be created.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
}

/// The audit HMAC key, from `{key_env}`, the file `{key_env}_FILE` names, or
/// `[audit] key_file`, in that order.
pub fn audit_key(config: &AuditConfig) -> Result<Vec<u8>, AuditError> {
    let file = config.key_file.as_ref().map(|p| p.display().to_string());
    key_from(&config.key_env, file, |v| std::env::var(v).ok())
}

fn key_from(
    var: &str,
    config_file: Option<String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<u8>, AuditError> {
    if let Some(k) = env(var).filter(|k| !k.is_empty()) {
        return Ok(k.into_bytes());
    }
    let file_var = format!("{var}_FILE");
    let file = env(&file_var).filter(|p| !p.is_empty()).or(config_file);
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path).map_err(|e| AuditError::KeyFile(path, e))?;
        let key = text.trim_end_matches(['\n', '\r']);
        if !key.is_empty() {
            return Ok(key.as_bytes().to_vec());
        }
    }
    Err(AuditError::NoKey(var.to_owned()))
}

/// One writer's audit chain.
pub struct AuditLog {
    chain: Mutex<Chain>,
    redactor: Redactor,
    producer: FutureProducer,
    topic: String,
    checkpoints: String,
    writer: String,
}

impl AuditLog {
    /// A new chain named `writer` (unique per process: a kind, a name and a
    /// random suffix, so that two processes never write one chain).
    pub fn new(
        kafka: &KafkaConfig,
        topics: &Topics,
        config: &AuditConfig,
        writer: String,
    ) -> Result<Arc<Self>, AuditError> {
        let key = audit_key(config)?;
        let redactor = Redactor::new(&config.redact).map_err(AuditError::Redact)?;
        let producer: FutureProducer = producer_config(kafka).create()?;
        Ok(Arc::new(Self {
            chain: Mutex::new(Chain::new(&writer, &key)),
            redactor,
            producer,
            topic: topics.audit.clone(),
            checkpoints: topics.audit_checkpoints.clone(),
            writer,
        }))
    }

    /// A writer name: `kind:name:` and 8 random hex digits.
    pub fn writer_name(kind: &str, name: &str) -> String {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        format!("{kind}:{name}:{}", &suffix[..8])
    }

    /// This writer's name.
    pub fn writer(&self) -> &str {
        &self.writer
    }

    /// The redactor texts pass through before they are kept.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// Appends an entry (its texts redacted) and hands it to the producer, in
    /// chain order; delivery failures are logged.
    pub fn record(&self, mut entry: AuditEntry) {
        redact_json(&self.redactor, &mut entry.detail);
        entry.outcome = self.redactor.redact(&entry.outcome);
        let mut chain = self.chain.lock();
        let record = chain.append(entry, Utc::now());
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        let sent = self.producer.send_result(
            FutureRecord::to(&self.topic)
                .key(self.writer.as_bytes())
                .payload(&bytes),
        );
        drop(chain);
        match sent {
            Ok(delivery) => {
                let seq = record.seq;
                let writer = self.writer.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        if let Err(e) = acknowledged(delivery).await {
                            error!(writer = %writer, seq, error = %e, "An audit record was not delivered; `audit verify` will name the gap.");
                        }
                    });
                }
            }
            Err((e, _)) => {
                error!(writer = %self.writer, seq = record.seq, error = %e, "An audit record could not be queued; `audit verify` will name the gap.")
            }
        }
    }

    /// Publishes where the chain stands (nothing before its first record).
    pub async fn checkpoint(&self) -> Result<(), KafkaError> {
        let Some(c) = self.chain.lock().checkpoint(Utc::now()) else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(&c).unwrap_or_default();
        let delivery = enqueue(
            &self.producer,
            &self.checkpoints,
            Some(self.writer.as_bytes()),
            &bytes,
            None,
        )
        .await?;
        acknowledged(delivery).await
    }

    /// Waits until every record is delivered, then publishes the checkpoint.
    pub async fn close(&self) {
        let producer = self.producer.clone();
        let flushed =
            tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(30))).await;
        if !matches!(flushed, Ok(Ok(()))) {
            error!(writer = %self.writer, "Audit records were still undelivered after 30 s.");
        }
        if let Err(e) = self.checkpoint().await {
            error!(writer = %self.writer, error = %e, "The audit checkpoint was not published.");
        }
    }

    /// Publishes a checkpoint every second until `stop`, then closes.
    pub async fn keep_checkpointing(self: Arc<Self>, stop: CancellationToken) {
        let mut last = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let now = self.chain.lock().checkpoint(Utc::now()).map(|c| c.seq);
            if now != last {
                match self.checkpoint().await {
                    Ok(()) => last = now,
                    Err(e) => {
                        error!(writer = %self.writer, error = %e, "Publishing the audit checkpoint failed; retrying.")
                    }
                }
            }
        }
        self.close().await;
    }
}

/// Redacts every string in a JSON value.
fn redact_json(redactor: &Redactor, value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => *s = redactor.redact(s),
        serde_json::Value::Array(items) => {
            for v in items {
                redact_json(redactor, v);
            }
        }
        serde_json::Value::Object(map) => {
            for v in map.values_mut() {
                redact_json(redactor, v);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_from_the_variable_or_its_file() {
        assert_eq!(
            key_from("K", None, |v| (v == "K").then(|| "secret".to_owned())).unwrap(),
            b"secret"
        );
        let dir = std::env::temp_dir().join(format!("sy-audit-key-{}", std::process::id()));
        std::fs::write(&dir, "from-file\n").unwrap();
        let path = dir.display().to_string();
        assert_eq!(
            key_from("K", None, |v| (v == "K_FILE").then(|| path.clone())).unwrap(),
            b"from-file"
        );
        std::fs::remove_file(&dir).unwrap();
        let e = key_from("K", None, |_| None).unwrap_err().to_string();
        assert!(e.contains("set K (or K_FILE"), "{e}");
    }
}
