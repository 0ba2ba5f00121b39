//! The audit log: what was decided, by whom, when. Each writer (a worker, a
//! sink, a CLI invocation) keeps its own chain: its records carry the writer's
//! id, a sequence number from 0, the previous record's hash, their own hash
//! (SHA-256 of the record's other fields) and an HMAC of that hash with the
//! audit key, so an altered, reordered, removed or appended record breaks the
//! chain or its HMAC. Each writer also publishes its latest sequence number and
//! hash as a [`Checkpoint`], so that a cut tail is seen too. [`verify`] checks
//! every chain against its checkpoint and names the first bad record.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The previous hash of a chain's first record.
pub const GENESIS: &str = "genesis";

/// What a record is about, before it joins a chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// `admission`, `approval`, `key` or `config`.
    pub kind: String,
    /// The job, approval, key or writer it is about.
    pub subject: String,
    /// The org node, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The principal who acted or submitted, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// What happened: `accepted`, `rejected`, `held`, `approved`, `created`, …
    pub outcome: String,
    /// The rest (reasons, codes, amounts), already redacted.
    #[serde(default)]
    pub detail: serde_json::Value,
}

/// One record of a writer's chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The writer whose chain it is.
    pub writer: String,
    /// Its position in the chain, from 0.
    pub seq: u64,
    /// The previous record's hash ([`GENESIS`] for the first).
    pub prev_hash: String,
    /// When it was written.
    pub at: DateTime<Utc>,
    /// What it records.
    #[serde(flatten)]
    pub entry: AuditEntry,
    /// SHA-256 (hex) of the fields above.
    pub hash: String,
    /// HMAC-SHA256 (hex) of `hash` with the audit key.
    pub hmac: String,
}

/// A writer's latest sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The writer.
    pub writer: String,
    /// Its last record's sequence number.
    pub seq: u64,
    /// Its last record's hash.
    pub hash: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// What is hashed: every field but the hash and the HMAC.
#[derive(Serialize)]
struct Hashed<'a> {
    writer: &'a str,
    seq: u64,
    prev_hash: &'a str,
    at: &'a DateTime<Utc>,
    entry: &'a AuditEntry,
}

impl AuditRecord {
    fn compute_hash(&self) -> String {
        let bytes = serde_json::to_vec(&Hashed {
            writer: &self.writer,
            seq: self.seq,
            prev_hash: &self.prev_hash,
            at: &self.at,
            entry: &self.entry,
        })
        .unwrap_or_default();
        hex::encode(Sha256::digest(bytes))
    }
}

fn hmac_of(key: &[u8], hash: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(hash.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// One writer's chain as it is written.
#[derive(Debug, Clone)]
pub struct Chain {
    writer: String,
    next: u64,
    last_hash: String,
    key: Vec<u8>,
}

impl Chain {
    /// A new chain for `writer`, signing with the audit `key`.
    pub fn new(writer: &str, key: &[u8]) -> Self {
        Self {
            writer: writer.to_owned(),
            next: 0,
            last_hash: GENESIS.to_owned(),
            key: key.to_vec(),
        }
    }

    /// The next record, linked to the previous one.
    pub fn append(&mut self, entry: AuditEntry, at: DateTime<Utc>) -> AuditRecord {
        let mut r = AuditRecord {
            writer: self.writer.clone(),
            seq: self.next,
            prev_hash: self.last_hash.clone(),
            at,
            entry,
            hash: String::new(),
            hmac: String::new(),
        };
        r.hash = r.compute_hash();
        r.hmac = hmac_of(&self.key, &r.hash);
        self.next += 1;
        self.last_hash = r.hash.clone();
        r
    }

    /// Where the chain stands, to publish as a checkpoint.
    pub fn checkpoint(&self, at: DateTime<Utc>) -> Option<Checkpoint> {
        (self.next > 0).then(|| Checkpoint {
            writer: self.writer.clone(),
            seq: self.next - 1,
            hash: self.last_hash.clone(),
            at,
        })
    }
}

/// Replaces what the configured patterns match (personal data) by
/// `[redacted]` before a text is kept in the audit log.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    patterns: Vec<regex::Regex>,
}

impl Redactor {
    /// Compiles the patterns; the error names the one that does not compile.
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let patterns = patterns
            .iter()
            .map(|p| regex::Regex::new(p).map_err(|e| format!("`{p}`: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self { patterns })
    }

    /// The text with every match replaced.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for p in &self.patterns {
            if p.is_match(&out) {
                out = p.replace_all(&out, "[redacted]").into_owned();
            }
        }
        out
    }
}

/// Where a record was read from (a topic position, or a table row).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    /// Partition (0 for a table).
    pub partition: i32,
    /// Offset (row number for a table).
    pub offset: i64,
}

/// The first bad record of a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("writer `{writer}`, record {seq} (partition {}, offset {}): {problem}", position.partition, position.offset)]
pub struct Finding {
    /// The writer.
    pub writer: String,
    /// The record's sequence number (or the one expected there).
    pub seq: u64,
    /// Where it was read.
    pub position: Position,
    /// What is wrong.
    pub problem: String,
}

/// What a verification saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// Writers whose chains check out.
    pub writers: usize,
    /// Records checked.
    pub records: usize,
}

/// Checks every writer's chain, in the order its records were read, against
/// the audit `key` and the writers' checkpoints; the first bad record is named.
pub fn verify(
    records: impl IntoIterator<Item = (AuditRecord, Position)>,
    checkpoints: &[Checkpoint],
    key: &[u8],
) -> Result<Verified, Finding> {
    let mut by_writer: BTreeMap<String, Vec<(AuditRecord, Position)>> = BTreeMap::new();
    for (r, p) in records {
        by_writer.entry(r.writer.clone()).or_default().push((r, p));
    }
    let mut seen = Verified::default();
    for (writer, chain) in &by_writer {
        verify_chain(writer, chain, key)?;
        seen.writers += 1;
        seen.records += chain.len();
    }
    for c in checkpoints {
        // Records after a checkpoint are normal (written since it was
        // published); the record it names must be there, as it was.
        let chain = by_writer.get(&c.writer);
        let at = chain.and_then(|v| v.iter().find(|(r, _)| r.seq == c.seq));
        let last = chain.and_then(|v| v.last());
        match (at, last) {
            (Some((r, _)), _) if r.hash == c.hash => {}
            (None, Some((r, p))) if r.seq < c.seq => {
                return Err(finding(
                    r,
                    *p,
                    format!(
                        "the chain ends at record {}, but its checkpoint says it reached {}: its tail was cut",
                        r.seq, c.seq
                    ),
                ));
            }
            (Some((r, p)), _) => {
                return Err(finding(
                    r,
                    *p,
                    "the record does not match the writer's checkpoint".into(),
                ));
            }
            _ => {
                return Err(Finding {
                    writer: c.writer.clone(),
                    seq: 0,
                    position: Position::default(),
                    problem: format!(
                        "the checkpoint says record {} exists, but the writer has none",
                        c.seq
                    ),
                });
            }
        }
    }
    Ok(seen)
}

fn verify_chain(
    writer: &str,
    chain: &[(AuditRecord, Position)],
    key: &[u8],
) -> Result<(), Finding> {
    let mut prev = GENESIS.to_owned();
    for (i, (r, p)) in chain.iter().enumerate() {
        let expected = i as u64;
        if r.seq != expected {
            return Err(Finding {
                writer: writer.to_owned(),
                seq: expected,
                position: *p,
                problem: format!(
                    "expected record {expected} here, found {}: a record was removed, added or moved",
                    r.seq
                ),
            });
        }
        if r.prev_hash != prev {
            return Err(finding(
                r,
                *p,
                "its previous hash is not the previous record's: the chain is broken".into(),
            ));
        }
        if r.compute_hash() != r.hash {
            return Err(finding(
                r,
                *p,
                "its content does not match its hash: it was altered".into(),
            ));
        }
        if hmac_of(key, &r.hash) != r.hmac {
            return Err(finding(
                r,
                *p,
                "its HMAC does not verify with the audit key: it was not written by this writer"
                    .into(),
            ));
        }
        prev = r.hash.clone();
    }
    Ok(())
}

fn finding(r: &AuditRecord, position: Position, problem: String) -> Finding {
    Finding {
        writer: r.writer.clone(),
        seq: r.seq,
        position,
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"test-audit-key";

    fn entry(i: u64) -> AuditEntry {
        AuditEntry {
            kind: "admission".into(),
            subject: format!("job-{i}"),
            node: Some("acme/bu/t/p".into()),
            principal: None,
            outcome: "accepted".into(),
            detail: serde_json::json!({"i": i}),
        }
    }

    fn chain(n: u64) -> (Vec<(AuditRecord, Position)>, Checkpoint) {
        let mut c = Chain::new("w1", KEY);
        let at: DateTime<Utc> = "2026-12-06T12:00:00Z".parse().unwrap();
        let records = (0..n)
            .map(|i| {
                (
                    c.append(entry(i), at),
                    Position {
                        partition: 0,
                        offset: i as i64,
                    },
                )
            })
            .collect();
        (records, c.checkpoint(at).unwrap())
    }

    #[test]
    fn records_with_awkward_amounts_verify_after_a_trip_through_json() {
        // Sums of prices are rarely short decimals; the record read back must
        // hash to what was written (serde_json parses floats exactly only
        // with its `float_roundtrip` feature, which the workspace enables).
        let mut c = Chain::new("w1", KEY);
        let at: DateTime<Utc> = "2026-12-06T12:00:00.123456789Z".parse().unwrap();
        let amounts = [
            0.20015000000000002,
            1.6012000000000002,
            1e-9 / 3.0,
            0.1 + 0.2,
        ];
        let read: Vec<(AuditRecord, Position)> = amounts
            .iter()
            .enumerate()
            .map(|(i, usd)| {
                let mut e = entry(i as u64);
                e.detail = serde_json::json!({"worst_case_usd": usd, "nested": {"x": [usd]}});
                let bytes = serde_json::to_vec(&c.append(e, at)).unwrap();
                let back: AuditRecord = serde_json::from_slice(&bytes).unwrap();
                let position = Position {
                    partition: 0,
                    offset: i as i64,
                };
                (back, position)
            })
            .collect();
        let checkpoint = c.checkpoint(at).unwrap();
        assert!(verify(read, &[checkpoint], KEY).is_ok());
    }

    #[test]
    fn the_default_patterns_redact_emails_cards_and_phone_numbers() {
        let r = Redactor::new(&crate::config::AuditConfig::default().redact).unwrap();
        let text = "Mail jane.doe@example.com, card 4111 1111 1111 1111, call +44 20 7946 0958 about order 1234.";
        let out = r.redact(text);
        assert!(!out.contains("jane.doe"), "{out}");
        assert!(!out.contains("4111"), "{out}");
        assert!(!out.contains("7946"), "{out}");
        assert!(out.contains("order 1234"), "{out}");
        let url = r.redact("clickhouse_url = http://ops:hunter2@ch.internal:8123");
        assert!(
            !url.contains("hunter2") && url.contains("ch.internal:8123"),
            "{url}"
        );
        assert!(Redactor::new(&["(".into()]).is_err());
    }

    #[test]
    fn an_intact_chain_verifies() {
        let (records, cp) = chain(5);
        assert_eq!(
            verify(records, &[cp], KEY),
            Ok(Verified {
                writers: 1,
                records: 5
            })
        );
    }

    #[test]
    fn every_tampering_is_named_at_its_record() {
        let (records, cp) = chain(6);
        let check = |r: Vec<(AuditRecord, Position)>| {
            verify(r, std::slice::from_ref(&cp), KEY).unwrap_err()
        };
        // Altered.
        let mut altered = records.clone();
        altered[3].0.entry.outcome = "rejected".into();
        let f = check(altered);
        assert_eq!((f.seq, f.position.offset), (3, 3));
        assert!(f.problem.contains("altered"), "{f}");
        // Altered with its hash recomputed: the HMAC gives it away.
        let mut rehashed = records.clone();
        rehashed[2].0.entry.outcome = "rejected".into();
        rehashed[2].0.hash = rehashed[2].0.compute_hash();
        assert_eq!(check(rehashed).seq, 2);
        // Removed.
        let mut removed = records.clone();
        removed.remove(1);
        assert_eq!(check(removed).seq, 1);
        // Reordered.
        let mut swapped = records.clone();
        swapped.swap(2, 4);
        assert_eq!(check(swapped).seq, 2);
        // Appended by someone without the key.
        let mut appended = records.clone();
        let mut forged = appended[5].0.clone();
        forged.seq = 6;
        forged.prev_hash = forged.hash.clone();
        forged.hash = forged.compute_hash();
        forged.hmac = hmac_of(b"not the key", &forged.hash);
        appended.push((
            forged,
            Position {
                partition: 0,
                offset: 6,
            },
        ));
        let f = verify(appended, &[], KEY).unwrap_err();
        assert_eq!(f.seq, 6);
        assert!(f.problem.contains("HMAC"), "{f}");
        // A cut tail.
        let mut cut = records.clone();
        cut.truncate(4);
        let f = check(cut);
        assert!(f.problem.contains("tail was cut"), "{f}");
    }
}
