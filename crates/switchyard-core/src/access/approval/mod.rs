//! Approvals: work held by a node's policy waits on the compacted approvals
//! topic as one [`ApprovalRequest`] per held job (grouped by approval id: a
//! batch is approved as a whole), until an approver's signed [`Decision`]
//! releases or rejects it, or it expires. A decision counts only when it is
//! signed by a key holding `approver` over the node, whose principal is not the
//! one who submitted the work (another key of the same principal is the same
//! principal), and, to release work held by a budget (an override of the cap),
//! also `org-admin` or `bu-admin` over the node.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Verifier};
use serde::{Deserialize, Serialize};

use super::cover::{self, Cover, Hash, Tree};
use super::keys::{KeyRecord, Keyring, PrivateKey};
use super::roles::{Action, Role};
use super::sign::Signed;
use crate::job::Job;

/// Why work is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// A node's budget policy is `hold`: releasing it overrides the cap.
    Budget,
    /// The job's worst case is above the node's `approval_required_above_usd`.
    Threshold,
    /// The job is routed to a model in `approval_required_models`.
    Model,
}

/// The approval id of a job: its batch's, or its own.
pub fn approval_id(job: &Job) -> String {
    match &job.batch_id {
        Some(b) => format!("appr-{b}"),
        None => format!("appr-{}", job.job_id),
    }
}

/// One held job waiting for a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The approval id (shared by a batch's jobs).
    pub id: String,
    /// The held job.
    pub job_id: String,
    /// The job's project.
    pub node: String,
    /// The principal who signed the job; `None` for an unsigned job.
    pub submitted_by: Option<String>,
    /// Why it is held.
    pub kind: HoldKind,
    /// What a person reads.
    pub reason: String,
    /// The job's worst case, USD.
    pub worst_case_usd: f64,
    /// The whole batch's worst case, USD, when it is what passed the node's
    /// threshold: the batch is held, and approved, as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_worst_case_usd: Option<f64>,
    /// When it was held.
    pub created_at: DateTime<Utc>,
    /// When the request expires (the work then ends `rejected`, reason `expired`).
    pub expires_at: DateTime<Utc>,
    /// The held message, to publish again once released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldCopy>,
}

/// A held job's message as it was read: what a release publishes again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldCopy {
    /// The message value, base64.
    pub value: String,
    /// The message key, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its signature headers, when it was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed: Option<Signed>,
    /// The topic the message was read from, where a release puts it back.
    #[serde(default, skip_serializing_if = "HeldFrom::is_jobs")]
    pub from: HeldFrom,
}

/// Where a held job's message was read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldFrom {
    /// The jobs topic: the job as its producer wrote it. A release publishes
    /// it again there, with its signature and the decision in headers.
    #[default]
    Jobs,
    /// The deferred topic: a deferred job held when it came to run live (its
    /// worst case at the live price, or its budget, needs an approver). The
    /// value is its deferred record; a release writes the record back there
    /// with the decision in `released_by`, and the gatherer runs it again.
    Deferred,
}

impl HeldFrom {
    fn is_jobs(&self) -> bool {
        *self == HeldFrom::Jobs
    }
}

impl HeldCopy {
    /// A copy of a message read from `from`.
    pub fn of(value: &[u8], key: Option<&[u8]>, signed: Option<Signed>, from: HeldFrom) -> Self {
        Self {
            value: B64.encode(value),
            key: key.map(|k| B64.encode(k)),
            signed,
            from,
        }
    }

    /// The value's bytes (`None` when the copy is corrupt).
    pub fn value(&self) -> Option<Vec<u8>> {
        B64.decode(&self.value).ok()
    }

    /// The key's bytes.
    pub fn key(&self) -> Option<Vec<u8>> {
        self.key.as_ref().and_then(|k| B64.decode(k).ok())
    }
}

/// How a held job's request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settlement {
    /// Published again with the decision that released it: to the jobs
    /// topic, or (a deferred job held on its live run) the deferred topic.
    Released,
    /// Ended `rejected` by an approver.
    Rejected,
    /// Ended `rejected`: nobody decided within the approval TTL.
    Expired,
}

/// The end of one held job's request: it replaces the request on the compacted
/// topic (same key), so that the held message does not stay there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settled {
    /// The approval id.
    pub id: String,
    /// The job.
    pub job_id: String,
    /// Its node.
    pub node: String,
    /// How it ended.
    pub outcome: Settlement,
    /// When.
    pub at: DateTime<Utc>,
    /// A released job's place in its approval's cover: the cover's root and
    /// the job's leaf (hex), so that a releaser reading the topic again can
    /// rebuild the set the decision covers once some of it is settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_in: Option<ReleasedIn>,
}

/// Where a released job sat in the cover of the decision that released it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedIn {
    /// The cover's root, hex.
    pub root: String,
    /// The job's leaf, hex.
    pub leaf: String,
}

impl ReleasedIn {
    /// A job of leaf `leaf` released under `cover`.
    pub fn of(cover: &Cover, leaf: &Hash) -> Self {
        Self {
            root: cover.root.clone(),
            leaf: hex::encode(leaf),
        }
    }
}

impl ApprovalRequest {
    /// Its key on the approvals topic.
    pub fn key(&self) -> String {
        format!("{}|{}", self.id, self.job_id)
    }

    /// The job's leaf in an approval's cover (`None` without a readable held copy).
    pub fn leaf(&self) -> Option<Hash> {
        let value = self.held.as_ref()?.value()?;
        Some(cover::leaf(&self.job_id, &value))
    }
}

/// An approver's signed decision on an approval id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The approval id.
    pub id: String,
    /// The node the held work belongs to.
    pub node: String,
    /// Release (`true`) or reject.
    pub approve: bool,
    /// Why (a rejection's reason is the rejected results' message).
    #[serde(default)]
    pub reason: String,
    /// Whether the held work was held by a budget: releasing it overrides the cap.
    pub override_budget: bool,
    /// The signing key.
    pub key_id: String,
    /// Its principal.
    pub principal: String,
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// What an approval releases: the held jobs its approver saw. An approval
    /// without one releases nothing. Signed with the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covers: Option<Cover>,
    /// On a released job's copy of the decision only: the job's path to
    /// `covers.root`, given by the releaser. Not signed: it proves itself
    /// against the signed root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
    /// Ed25519 signature (base64) over the other fields, as [`Decision::signed_bytes`].
    #[serde(default)]
    pub sig: String,
}

/// An entry on the approvals topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ApprovalRecord {
    /// A held job.
    Request(ApprovalRequest),
    /// A decision.
    Decision(Decision),
    /// A held job's request ended.
    Settled(Settled),
}

impl ApprovalRecord {
    /// The approval id it is about: every record of one id goes to the same
    /// partition (see [`partition_of`]), so that one releaser owns it.
    pub fn approval_id(&self) -> &str {
        match self {
            ApprovalRecord::Request(r) => &r.id,
            ApprovalRecord::Decision(d) => &d.id,
            ApprovalRecord::Settled(s) => &s.id,
        }
    }

    /// Its key on the compacted approvals topic.
    pub fn key(&self) -> String {
        match self {
            ApprovalRecord::Request(r) => r.key(),
            ApprovalRecord::Decision(d) => format!("{}|decision", d.id),
            ApprovalRecord::Settled(s) => format!("{}|{}", s.id, s.job_id),
        }
    }
}

/// The approvals-topic partition of an approval id among `partitions`: a
/// stable hash (FNV-1a), the same in every process and version.
pub fn partition_of(approval_id: &str, partitions: usize) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in approval_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % partitions.max(1) as u64) as i32
}

/// Why a decision does not count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    /// The signing key is unknown, revoked, or does not match the signature.
    #[error("the decision is not validly signed: {0}")]
    Signature(String),
    /// The key lacks a role over the node.
    #[error("{0}")]
    Role(String),
    /// The approver submitted the work.
    #[error("`{0}` submitted this work and may not approve it (with any of their keys)")]
    OwnWork(String),
}

impl Decision {
    /// A decision signed by `key` (whose principal is `principal`).
    #[allow(clippy::too_many_arguments)]
    pub fn signed(
        key: &PrivateKey,
        principal: &str,
        id: &str,
        node: &str,
        approve: bool,
        reason: &str,
        override_budget: bool,
        at: DateTime<Utc>,
    ) -> Self {
        let mut d = Decision {
            id: id.to_owned(),
            node: node.to_owned(),
            approve,
            reason: reason.to_owned(),
            override_budget,
            key_id: key.key_id.clone(),
            principal: principal.to_owned(),
            at,
            covers: None,
            proof: None,
            sig: String::new(),
        };
        d.sig = key.sign(&d.signed_bytes());
        d
    }

    /// The decision covering `cover` (the jobs it releases), signed again by `key`.
    pub fn covering(mut self, key: &PrivateKey, cover: Cover) -> Self {
        self.covers = Some(cover);
        self.sig = key.sign(&self.signed_bytes());
        self
    }

    /// What is signed: every field but the signature and the proof, as JSON
    /// in field order.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let unsigned = Decision {
            sig: String::new(),
            proof: None,
            ..self.clone()
        };
        serde_json::to_vec(&unsigned).unwrap_or_default()
    }

    /// Whether this copy of the decision releases the job `job_id` whose
    /// message is `value`: its proof leads from the job to the signed cover.
    pub fn covers_job(&self, job_id: &str, value: &[u8]) -> bool {
        match (&self.covers, &self.proof) {
            (Some(c), Some(p)) => cover::verify(c, &cover::leaf(job_id, value), p),
            _ => false,
        }
    }

    /// The key that signed the decision, checked: known, never revoked, and
    /// the signature matching. A revoked key's decisions stop counting whatever
    /// date they carry (the date is the signer's word, so a key could
    /// otherwise keep approving by backdating).
    pub fn verify<'k>(&self, keys: &'k Keyring) -> Result<&'k KeyRecord, DecisionError> {
        let key = self.authentic(keys)?;
        if key.revoked_at.is_some() || !key.valid_at(self.at) {
            return Err(DecisionError::Signature(format!(
                "key `{}` was revoked",
                self.key_id
            )));
        }
        Ok(key)
    }

    /// The key that signed the decision, if it did: known, its principal's,
    /// and the signature matching, revoked or not. That the decision was made;
    /// whether it still counts is [`Decision::verify`]'s question.
    pub fn authentic<'k>(&self, keys: &'k Keyring) -> Result<&'k KeyRecord, DecisionError> {
        let key = keys
            .get(&self.key_id)
            .ok_or_else(|| DecisionError::Signature(format!("key `{}` is unknown", self.key_id)))?;
        let bytes: [u8; 64] = B64
            .decode(&self.sig)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                DecisionError::Signature("the signature is not base64 Ed25519".into())
            })?;
        key.verifying_key()
            .map_err(|e| DecisionError::Signature(e.to_string()))?
            .verify(&self.signed_bytes(), &Signature::from_bytes(&bytes))
            .map_err(|_| DecisionError::Signature("the signature does not match".into()))?;
        if key.principal != self.principal {
            return Err(DecisionError::Signature(format!(
                "key `{}` belongs to `{}`, not `{}`",
                key.key_id, key.principal, self.principal
            )));
        }
        Ok(key)
    }

    /// Whether the decision counts for work of `submitted_by` held for `kind`.
    pub fn check(
        &self,
        keys: &Keyring,
        submitted_by: Option<&str>,
        kind: HoldKind,
    ) -> Result<(), DecisionError> {
        let key = self.verify(keys)?;
        key.authorize(Action::Approve, &self.node)
            .map_err(|e| DecisionError::Role(e.to_string()))?;
        if self.approve && kind == HoldKind::Budget {
            let admin =
                key.holds(Role::OrgAdmin, &self.node) || key.holds(Role::BuAdmin, &self.node);
            if !admin || !self.override_budget {
                return Err(DecisionError::Role(format!(
                    "releasing work held by the budget of `{}` overrides the cap: it needs `approver` with `org-admin` or `bu-admin` over the node, and the decision must say it is an override",
                    self.node
                )));
            }
        }
        if submitted_by == Some(self.principal.as_str()) {
            return Err(DecisionError::OwnWork(self.principal.clone()));
        }
        Ok(())
    }
}

/// Held work as the approvals topic tells it: undecided requests and the
/// latest decision per approval id.
#[derive(Debug, Clone, Default)]
pub struct ApprovalBook {
    pending: BTreeMap<(String, String), ApprovalRequest>,
    decisions: HashMap<String, Decision>,
    /// The leaf of each waiting request with a readable held copy, computed
    /// once when it is taken in.
    leaves: HashMap<(String, String), Hash>,
    /// Leaves of released jobs, by approval id and the root of the cover
    /// that released them.
    released: HashMap<(String, String), BTreeSet<Hash>>,
}

/// One approval id's undecided work, for `approvals list`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PendingApproval {
    /// The approval id.
    pub id: String,
    /// The node.
    pub node: String,
    /// Who submitted the work (when signed).
    pub submitted_by: Option<String>,
    /// Why it is held (the first job's reason).
    pub reason: String,
    /// The worst case of all its jobs, USD: their sum, or the whole batch's
    /// when that was priced and is larger (some of its jobs may not be held
    /// yet, or not be held at all).
    pub worst_case_usd: f64,
    /// How many jobs wait.
    pub jobs: usize,
    /// When the first of them expires.
    pub expires_at: DateTime<Utc>,
    /// Whether releasing it overrides a budget.
    pub budget_override: bool,
}

impl ApprovalBook {
    /// Takes in one record; returns the approval id it is about.
    pub fn apply(&mut self, record: ApprovalRecord) -> String {
        match record {
            ApprovalRecord::Request(r) => {
                let id = r.id.clone();
                let key = (r.id.clone(), r.job_id.clone());
                match r.leaf() {
                    Some(leaf) => self.leaves.insert(key.clone(), leaf),
                    None => self.leaves.remove(&key),
                };
                self.pending.insert(key, r);
                id
            }
            ApprovalRecord::Decision(d) => {
                let id = d.id.clone();
                self.decisions.insert(d.id.clone(), d);
                id
            }
            ApprovalRecord::Settled(s) => {
                let key = (s.id.clone(), s.job_id);
                self.pending.remove(&key);
                self.leaves.remove(&key);
                if let Some(r) = s.released_in
                    && let Some(leaf) = hex::decode(&r.leaf)
                        .ok()
                        .and_then(|b| Hash::try_from(b).ok())
                {
                    self.released
                        .entry((s.id.clone(), r.root))
                        .or_default()
                        .insert(leaf);
                }
                s.id
            }
        }
    }

    /// A waiting request's leaf (`None` without a readable held copy).
    pub fn leaf_of(&self, request: &ApprovalRequest) -> Option<Hash> {
        self.leaves
            .get(&(request.id.clone(), request.job_id.clone()))
            .copied()
    }

    /// The set an approval covers, when this book holds it: the tree, and the
    /// requests in it still to release. The set is every waiting request of
    /// the id with the jobs the same cover released already; failing that,
    /// without the requests held after the decision was made (they arrived
    /// after the approver looked). A waiting copy of a job the cover released
    /// already (held again) is in the set but not released twice. `None` when
    /// the decision has no cover or the set cannot be rebuilt here: its jobs
    /// then stay held.
    pub fn covered(&self, decision: &Decision) -> Option<(Tree, Vec<&ApprovalRequest>)> {
        let cover = decision.covers.as_ref()?;
        let empty = BTreeSet::new();
        let released = self
            .released
            .get(&(decision.id.clone(), cover.root.clone()))
            .unwrap_or(&empty);
        let waiting: Vec<(&ApprovalRequest, Hash)> = self
            .requests_of(&decision.id)
            .into_iter()
            .filter_map(|r| Some((r, self.leaf_of(r)?)))
            .collect();
        let before = |r: &ApprovalRequest| r.created_at <= decision.at;
        for cut in [false, true] {
            let members: Vec<_> = waiting.iter().filter(|(r, _)| !cut || before(r)).collect();
            let leaves = members
                .iter()
                .map(|(_, l)| *l)
                .chain(released.iter().copied());
            let tree = Tree::new(leaves.collect());
            if tree.cover() == *cover {
                let to_release = members
                    .into_iter()
                    .filter(|(_, l)| !released.contains(l))
                    .map(|(r, _)| *r)
                    .collect();
                return Some((tree, to_release));
            }
        }
        None
    }

    /// The undecided requests of an approval id.
    pub fn requests_of(&self, id: &str) -> Vec<&ApprovalRequest> {
        self.pending
            .range((id.to_owned(), String::new())..)
            .take_while(|((i, _), _)| i == id)
            .map(|(_, r)| r)
            .collect()
    }

    /// The latest decision on an approval id.
    pub fn decision(&self, id: &str) -> Option<&Decision> {
        self.decisions.get(id)
    }

    /// Every undecided request.
    pub fn pending(&self) -> impl Iterator<Item = &ApprovalRequest> {
        self.pending.values()
    }

    /// Undecided work grouped by approval id.
    pub fn summary(&self) -> Vec<PendingApproval> {
        let mut out: Vec<PendingApproval> = Vec::new();
        // Per entry of `out`: the largest batch worst case its requests carry.
        let mut batch: Vec<f64> = Vec::new();
        for r in self.pending.values() {
            let batch_usd = r.batch_worst_case_usd.unwrap_or(0.0);
            match out.last_mut().filter(|p| p.id == r.id) {
                Some(p) => {
                    p.jobs += 1;
                    p.worst_case_usd += r.worst_case_usd;
                    p.expires_at = p.expires_at.min(r.expires_at);
                    p.budget_override |= r.kind == HoldKind::Budget;
                    if let Some(b) = batch.last_mut() {
                        *b = b.max(batch_usd);
                    }
                }
                None => {
                    out.push(PendingApproval {
                        id: r.id.clone(),
                        node: r.node.clone(),
                        submitted_by: r.submitted_by.clone(),
                        reason: r.reason.clone(),
                        worst_case_usd: r.worst_case_usd,
                        jobs: 1,
                        expires_at: r.expires_at,
                        budget_override: r.kind == HoldKind::Budget,
                    });
                    batch.push(batch_usd);
                }
            }
        }
        for (p, b) in out.iter_mut().zip(batch) {
            p.worst_case_usd = p.worst_case_usd.max(b);
        }
        out
    }
}

#[cfg(test)]
mod tests;
