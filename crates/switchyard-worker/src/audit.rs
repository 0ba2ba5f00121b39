//! What the worker writes to the audit log: the configuration it starts
//! with; every admission decision when `[audit] enabled` (with access control
//! alone, the refusals of signatures and the holds); each job's final state
//! when enabled; and the decisions its releaser acts on. Prompts and outputs
//! are kept only where the node's policy sets `audit_content`; every text
//! passes the configured redaction patterns first.

use std::sync::Arc;

use serde_json::{Value, json};
use switchyard_core::audit::AuditEntry;
use switchyard_core::job::Job;
use switchyard_core::result::JobResult;
use switchyard_kafka::audit::AuditLog;

/// One admission decision, as the audit log keeps it.
pub(crate) enum Admitted<'a> {
    /// Admitted to dispatch, routed to this model.
    Accepted { model: &'a str, worst_case_usd: f64 },
    /// Refused (or canceled) before any call.
    Refused {
        status: &'a str,
        code: &'a str,
        message: &'a str,
    },
    /// Held for approval.
    Held {
        approval_id: &'a str,
        reason: &'a str,
        worst_case_usd: f64,
    },
    /// Waiting for a quota's period to roll over.
    Waiting { code: &'a str },
}

/// The worker's audit writer.
pub(crate) struct Auditor {
    pub log: Arc<AuditLog>,
    /// `[audit] enabled`: every admission decision and final state.
    pub all: bool,
}

impl Auditor {
    /// Records an admission decision (signature refusals and holds always,
    /// the rest when enabled); `content` adds the prompt.
    pub fn admission(&self, job: &Job, principal: Option<&str>, what: Admitted<'_>, content: bool) {
        let (outcome, mut detail) = match what {
            Admitted::Accepted {
                model,
                worst_case_usd,
            } => {
                if !self.all {
                    return;
                }
                (
                    "accepted".to_owned(),
                    json!({"model": model, "worst_case_usd": worst_case_usd}),
                )
            }
            Admitted::Refused {
                status,
                code,
                message,
            } => {
                if !self.all && !code.starts_with("auth_") {
                    return;
                }
                (status.to_owned(), json!({"code": code, "message": message}))
            }
            Admitted::Held {
                approval_id,
                reason,
                worst_case_usd,
            } => (
                "held".to_owned(),
                json!({"approval_id": approval_id, "reason": reason, "worst_case_usd": worst_case_usd}),
            ),
            Admitted::Waiting { code } => {
                if !self.all {
                    return;
                }
                ("waiting".to_owned(), json!({"code": code}))
            }
        };
        if let Some(b) = &job.batch_id {
            detail["batch_id"] = Value::String(b.clone());
        }
        if content {
            detail["request"] = serde_json::to_value(&job.request).unwrap_or(Value::Null);
        }
        self.log.record(AuditEntry {
            kind: "admission".into(),
            subject: job.job_id.clone(),
            node: Some(job.project.clone()),
            principal: principal.map(str::to_owned),
            outcome,
            detail,
        });
    }

    /// Records a job's final state (when enabled); `content` adds the output.
    pub fn finished(&self, result: &JobResult, content: bool) {
        if !self.all {
            return;
        }
        let mut detail = json!({
            "model": result.model,
            "provider": result.provider,
            "cost_usd": result.cost_usd,
            "input_tokens": result.usage.input_tokens,
            "output_tokens": result.usage.output_tokens,
            "error": result.error.as_ref().map(|e| e.code.clone()),
        });
        if content {
            detail["output"] = result
                .output
                .as_ref()
                .map_or(Value::Null, |o| Value::String(o.content.clone()));
        }
        self.log.record(AuditEntry {
            kind: "result".into(),
            subject: result.job_id.clone(),
            node: Some(result.project.clone()),
            principal: None,
            outcome: result.status.as_str().to_owned(),
            detail,
        });
    }
}
