//! The audit log in ClickHouse: the sink mirrors the audit topic into
//! `audit_log` and the checkpoints topic into `audit_checkpoints` (schema
//! `0004_audit.sql`), and `audit verify --from clickhouse` reads them back. A
//! row holds every field of its record, so that the record's hash is
//! recomputed from what the table holds.
//!
//! The mirror is at-least-once (offsets are committed after the INSERT): a
//! record delivered twice is two identical rows at one topic position, which
//! reading drops; two different rows at one position are a finding.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clickhouse::Client;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use serde::{Deserialize, Serialize};
use switchyard_core::audit::{AuditEntry, AuditRecord, Checkpoint, Finding, Position};
use switchyard_core::config::KafkaConfig;
use switchyard_kafka::client::consumer_config;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// One `audit_log` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
pub struct AuditRow {
    /// The process that wrote the record (its chain).
    pub writer: String,
    /// The record's place in its writer's chain, from 1.
    pub seq: u64,
    /// The previous record's hash, hex.
    pub prev_hash: String,
    /// The record's time, exactly as hashed (RFC 3339).
    pub at: String,
    /// What happened (`admission`, `approval_decided`, `key_created`, ...).
    pub kind: String,
    /// What it happened to: a job, key, approval or config.
    pub subject: String,
    /// The org node concerned, when there is one.
    pub node: Option<String>,
    /// Who acted: a key id, or none for the worker itself.
    pub principal: Option<String>,
    /// How it ended (`accepted`, `refused: auth_bad_signature`, ...).
    pub outcome: String,
    /// The entry's detail, JSON.
    pub detail: String,
    /// This record's hash, hex.
    pub hash: String,
    /// The HMAC of the hash under the audit key, hex.
    pub hmac: String,
    /// Where the record was read from.
    pub kafka_partition: i32,
    /// Its offset there.
    pub kafka_offset: i64,
}

/// The columns read and written, in this order.
const COLUMNS: &str = "writer, seq, prev_hash, at, kind, subject, node, principal, outcome, detail, hash, hmac, kafka_partition, kafka_offset";

impl AuditRow {
    /// The row of a record read at (`partition`, `offset`).
    pub fn of(r: &AuditRecord, partition: i32, offset: i64) -> Self {
        Self {
            writer: r.writer.clone(),
            seq: r.seq,
            prev_hash: r.prev_hash.clone(),
            at: serde_json::to_value(r.at)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            kind: r.entry.kind.clone(),
            subject: r.entry.subject.clone(),
            node: r.entry.node.clone(),
            principal: r.entry.principal.clone(),
            outcome: r.entry.outcome.clone(),
            detail: r.entry.detail.to_string(),
            hash: r.hash.clone(),
            hmac: r.hmac.clone(),
            kafka_partition: partition,
            kafka_offset: offset,
        }
    }

    /// The record the row holds, with where it was on the topic; a row whose
    /// time or detail does not parse is itself a finding.
    pub fn record(&self) -> std::result::Result<(AuditRecord, Position), Finding> {
        let position = Position {
            partition: self.kafka_partition,
            offset: self.kafka_offset,
        };
        let bad = |problem: String| Finding {
            writer: self.writer.clone(),
            seq: self.seq,
            position,
            problem,
        };
        let at: DateTime<Utc> = serde_json::from_value(serde_json::Value::String(self.at.clone()))
            .map_err(|e| bad(format!("its time `{}` does not parse: {e}", self.at)))?;
        let detail = serde_json::from_str(&self.detail)
            .map_err(|e| bad(format!("its detail is not JSON: {e}")))?;
        Ok((
            AuditRecord {
                writer: self.writer.clone(),
                seq: self.seq,
                prev_hash: self.prev_hash.clone(),
                at,
                entry: AuditEntry {
                    kind: self.kind.clone(),
                    subject: self.subject.clone(),
                    node: self.node.clone(),
                    principal: self.principal.clone(),
                    outcome: self.outcome.clone(),
                    detail,
                },
                hash: self.hash.clone(),
                hmac: self.hmac.clone(),
            },
            position,
        ))
    }
}

/// One `audit_checkpoints` row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, clickhouse::Row)]
struct CheckpointRow {
    writer: String,
    seq: u64,
    hash: String,
    at: String,
}

/// Every audit record ClickHouse holds, in topic order (exact duplicates of
/// an at-least-once mirror dropped), and each writer's latest checkpoint.
pub async fn read(
    client: &Client,
) -> Result<std::result::Result<(Vec<(AuditRecord, Position)>, Vec<Checkpoint>), Finding>> {
    let rows: Vec<AuditRow> = client
        .query(&format!(
            "SELECT {COLUMNS} FROM audit_log ORDER BY kafka_partition, kafka_offset"
        ))
        .fetch_all()
        .await
        .map_err(|e| Error::Audit(format!("reading audit_log: {e}")))?;
    let mut records = Vec::with_capacity(rows.len());
    let mut last: Option<AuditRow> = None;
    for row in rows {
        if let Some(prev) = &last
            && (prev.kafka_partition, prev.kafka_offset) == (row.kafka_partition, row.kafka_offset)
        {
            if *prev == row {
                continue;
            }
            return Ok(Err(Finding {
                writer: row.writer.clone(),
                seq: row.seq,
                position: Position {
                    partition: row.kafka_partition,
                    offset: row.kafka_offset,
                },
                problem: "two different rows claim the same topic position: one was added".into(),
            }));
        }
        match row.record() {
            Ok(r) => records.push(r),
            Err(f) => return Ok(Err(f)),
        }
        last = Some(row);
    }
    let checkpoints: Vec<CheckpointRow> = client
        .query("SELECT writer, max(seq) AS last_seq, argMax(hash, seq) AS last_hash, argMax(at, seq) AS last_at FROM audit_checkpoints GROUP BY writer")
        .fetch_all()
        .await
        .map_err(|e| Error::Audit(format!("reading audit_checkpoints: {e}")))?;
    let checkpoints = checkpoints
        .into_iter()
        .filter_map(|c| {
            let at = serde_json::from_value(serde_json::Value::String(c.at)).ok()?;
            Some(Checkpoint {
                writer: c.writer,
                seq: c.seq,
                hash: c.hash,
                at,
            })
        })
        .collect();
    Ok(Ok((records, checkpoints)))
}

/// Inserts JSON rows into `table`.
async fn insert<T: Serialize>(client: &Client, table: &str, rows: &[T]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut body = Vec::new();
    for r in rows {
        serde_json::to_writer(&mut body, r).map_err(|e| Error::Audit(e.to_string()))?;
        body.push(b'\n');
    }
    let mut insert =
        client.insert_formatted_with(format!("INSERT INTO {table} FORMAT JSONEachRow"));
    insert
        .send(bytes::Bytes::from(body))
        .await
        .map_err(|e| Error::Audit(format!("inserting into {table}: {e}")))?;
    insert
        .end()
        .await
        .map_err(|e| Error::Audit(format!("inserting into {table}: {e}")))
}

/// Longest a batch of audit records waits before it is inserted.
const MIRROR_LINGER: Duration = Duration::from_millis(500);

/// Mirrors the audit and checkpoint topics into ClickHouse until `stop`, in
/// the consumer group `group`: each batch is inserted, then its offsets are
/// committed. A failed insert is retried (the batch is kept).
pub async fn mirror(
    kafka: &KafkaConfig,
    group: &str,
    client: Client,
    stop: CancellationToken,
) -> Result<()> {
    let topics = &kafka.topics;
    let mut settings = consumer_config(kafka, group, Duration::from_secs(1));
    settings.set("enable.auto.commit", "false");
    let consumer: StreamConsumer = settings
        .create()
        .map_err(|e| Error::Audit(format!("audit mirror: {e}")))?;
    consumer
        .subscribe(&[topics.audit.as_str(), topics.audit_checkpoints.as_str()])
        .map_err(|e| Error::Audit(format!("audit mirror: {e}")))?;
    info!(group, "Mirroring the audit log into ClickHouse.");
    let mut records: Vec<AuditRow> = Vec::new();
    let mut checkpoints: Vec<CheckpointRow> = Vec::new();
    let mut deadline = tokio::time::Instant::now() + MIRROR_LINGER;
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => None,
            m = tokio::time::timeout_at(deadline, consumer.recv()) => Some(m),
        };
        let stopping = message.is_none();
        if let Some(Ok(Ok(m))) = message {
            let payload = m.payload().unwrap_or(&[]);
            if m.topic() == topics.audit {
                match serde_json::from_slice::<AuditRecord>(payload) {
                    Ok(r) => records.push(AuditRow::of(&r, m.partition(), m.offset())),
                    // Kept as it is: verify then names it.
                    Err(e) => {
                        warn!(partition = m.partition(), offset = m.offset(), error = %e, "An audit record does not parse; mirrored as a row verify will flag.");
                        records.push(unparsable(payload, m.partition(), m.offset()));
                    }
                }
            } else if let Ok(c) = serde_json::from_slice::<Checkpoint>(payload) {
                checkpoints.push(CheckpointRow {
                    writer: c.writer,
                    seq: c.seq,
                    hash: c.hash,
                    at: c.at.to_rfc3339(),
                });
            }
        }
        if stopping || tokio::time::Instant::now() >= deadline || records.len() >= 10_000 {
            match flush(&client, &consumer, &records, &checkpoints).await {
                Ok(()) => {
                    records.clear();
                    checkpoints.clear();
                }
                Err(e) => {
                    warn!(error = %e, "Mirroring audit records failed; retrying.");
                    if stopping {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            deadline = tokio::time::Instant::now() + MIRROR_LINGER;
        }
        if stopping {
            return Ok(());
        }
    }
}

async fn flush(
    client: &Client,
    consumer: &StreamConsumer,
    records: &[AuditRow],
    checkpoints: &[CheckpointRow],
) -> Result<()> {
    if records.is_empty() && checkpoints.is_empty() {
        return Ok(());
    }
    insert(client, "audit_log", records).await?;
    insert(client, "audit_checkpoints", checkpoints).await?;
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .map_err(|e| Error::Audit(format!("audit mirror commit: {e}")))
}

/// A row for a message that is not an audit record (it fails verification).
fn unparsable(payload: &[u8], partition: i32, offset: i64) -> AuditRow {
    AuditRow {
        writer: "(unparsable)".into(),
        seq: 0,
        prev_hash: String::new(),
        at: String::new(),
        kind: String::new(),
        subject: String::new(),
        node: None,
        principal: None,
        outcome: String::new(),
        detail: serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
            .to_string(),
        hash: String::new(),
        hmac: String::new(),
        kafka_partition: partition,
        kafka_offset: offset,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::audit::Chain;

    #[test]
    fn a_row_gives_back_the_record_it_was_made_of() {
        let mut chain = Chain::new("cli:test:1", b"k");
        let r = chain.append(
            AuditEntry {
                kind: "key".into(),
                subject: "k1".into(),
                node: Some("acme".into()),
                principal: None,
                outcome: "created".into(),
                detail: serde_json::json!({"roles": ["approver"], "n": 1.5}),
            },
            "2026-12-06T12:00:00.123456789Z".parse().unwrap(),
        );
        let row = AuditRow::of(&r, 1, 7);
        let (back, at) = row.record().unwrap();
        assert_eq!(back, r);
        assert_eq!((at.partition, at.offset), (1, 7));
    }
}
