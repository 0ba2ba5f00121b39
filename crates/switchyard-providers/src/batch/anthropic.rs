//! Anthropic's Message Batches: the requests go inline
//! (`POST /messages/batches`, each `{custom_id, params}`), the batch is polled
//! (`GET /messages/batches/{id}`), listed (`GET /messages/batches?after_id=`),
//! canceled (`POST /messages/batches/{id}/cancel`), and its results read once
//! it has ended (`GET /messages/batches/{id}/results`, JSONL). A message
//! batch has no metadata: its idempotency key is the prefix of every request's
//! custom id, so a batch found by listing is known for one of ours only by its
//! results.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_core::deferred::LineCounts;
use switchyard_core::job::ChatRequest;

use super::http::{BatchHttp, Patience};
use super::{
    BatchApi, BatchError, BatchPage, LineOutcome, LineResult, NewBatch, RemoteBatch, RemoteStatus,
};
use crate::{BoxFuture, Completion, HttpProvider};

/// Anthropic's Message Batches endpoints of one deployment.
pub struct AnthropicBatches {
    http: BatchHttp,
}

#[derive(Deserialize)]
struct Batch {
    id: String,
    processing_status: String,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    request_counts: Option<Counts>,
}

#[derive(Deserialize, Default)]
struct Counts {
    #[serde(default)]
    processing: u64,
    #[serde(default)]
    succeeded: u64,
    #[serde(default)]
    errored: u64,
    #[serde(default)]
    canceled: u64,
    #[serde(default)]
    expired: u64,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    data: Vec<Batch>,
    #[serde(default)]
    has_more: bool,
    #[serde(default)]
    last_id: Option<String>,
}

#[derive(Deserialize)]
struct Line {
    custom_id: String,
    result: LineBody,
}

#[derive(Deserialize)]
struct LineBody {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

impl AnthropicBatches {
    /// The message-batch endpoints beside a deployment's messages endpoint.
    pub fn new(provider: Arc<HttpProvider>) -> Self {
        Self {
            http: BatchHttp::new("anthropic", provider),
        }
    }

    fn outcome(&self, body: LineBody) -> LineOutcome {
        match body.kind.as_str() {
            "succeeded" => {
                let message = body
                    .message
                    .map(|m| serde_json::to_vec(&m).unwrap_or_default())
                    .unwrap_or_default();
                match self.http.provider.parse_answer(200, &message) {
                    Ok(c) => LineOutcome::Answered(c),
                    Err(e) => LineOutcome::Failed(e),
                }
            }
            "expired" => LineOutcome::Expired,
            "canceled" => LineOutcome::Canceled,
            _ => {
                // `{"type": "error", "error": {"type", "message"}}`, as a
                // live error body: classified as that status would be.
                let error = body.error.unwrap_or(Value::Null);
                let kind = error
                    .pointer("/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                let status = match kind {
                    "invalid_request_error" => 400,
                    "authentication_error" => 401,
                    "permission_error" => 403,
                    "not_found_error" => 404,
                    "request_too_large" => 413,
                    "rate_limit_error" => 429,
                    "overloaded_error" => 529,
                    _ => 500,
                };
                let bytes = serde_json::to_vec(&error).unwrap_or_default();
                LineOutcome::Failed(self.http.provider.parse_failure(status, &bytes))
            }
        }
    }
}

fn remote(b: Batch) -> RemoteBatch {
    let status = match b.processing_status.as_str() {
        "in_progress" => RemoteStatus::InProgress,
        "canceling" => RemoteStatus::Canceling,
        _ => RemoteStatus::Ended,
    };
    let c = b.request_counts.unwrap_or_default();
    RemoteBatch {
        id: b.id,
        status,
        provider_status: b.processing_status,
        key: None,
        created_at: b
            .created_at
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.to_utc()),
        requests: c.processing + c.succeeded + c.errored + c.canceled + c.expired,
        counts: LineCounts {
            processing: c.processing,
            succeeded: c.succeeded,
            errored: c.errored,
            expired: c.expired,
            canceled: c.canceled,
        },
        output_file_id: None,
        error_file_id: None,
        errors: None,
    }
}

impl BatchApi for AnthropicBatches {
    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn carries(&self, _batch: &RemoteBatch, _key: &str) -> Option<bool> {
        None
    }

    fn create<'a>(&'a self, batch: NewBatch<'a>) -> BoxFuture<'a, Result<RemoteBatch, BatchError>> {
        Box::pin(async move {
            let requests: Vec<Value> = batch
                .requests
                .iter()
                .map(|r| json!({"custom_id": r.custom_id, "params": self.http.body(r.call)}))
                .collect();
            let created: Batch = self
                .http
                .post(
                    "/messages/batches",
                    &json!({ "requests": requests }),
                    Patience::Large,
                )
                .await?;
            Ok(remote(created))
        })
    }

    fn retrieve<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<RemoteBatch, BatchError>> {
        Box::pin(async move {
            let b: Batch = self.http.get(&format!("/messages/batches/{id}")).await?;
            Ok(remote(b))
        })
    }

    fn list<'a>(&'a self, cursor: Option<&'a str>) -> BoxFuture<'a, Result<BatchPage, BatchError>> {
        Box::pin(async move {
            let path = match cursor {
                Some(after) => format!("/messages/batches?limit=100&after_id={after}"),
                None => "/messages/batches?limit=100".to_owned(),
            };
            let page: Page = self.http.get(&path).await?;
            let next = page.has_more.then_some(page.last_id).flatten();
            Ok(BatchPage {
                batches: page.data.into_iter().map(remote).collect(),
                next,
            })
        })
    }

    fn results<'a>(
        &'a self,
        batch: &'a RemoteBatch,
    ) -> BoxFuture<'a, Result<Vec<LineResult>, BatchError>> {
        Box::pin(async move {
            // The results URL the API gives is on its own host; the
            // configured origin serves the same path (and keeps the key there).
            let bytes = self
                .http
                .get_raw(&format!("/messages/batches/{}/results", batch.id))
                .await?;
            let mut out = Vec::new();
            for raw in bytes
                .split(|b| *b == b'\n')
                .filter(|l| !l.trim_ascii().is_empty())
            {
                // A line that cannot be read counts as missing: its job is handed
                // on rather than the whole batch left uncollected.
                let line: Line = match self.http.decode(raw) {
                    Ok(line) => line,
                    Err(e) => {
                        tracing::warn!(error = %e, "Skipping a batch result line that cannot be read.");
                        continue;
                    }
                };
                out.push(LineResult {
                    outcome: self.outcome(line.result),
                    custom_id: line.custom_id,
                });
            }
            Ok(out)
        })
    }

    fn finish(&self, request: &ChatRequest, answer: Completion) -> Completion {
        self.http.provider.finish_answer(request, answer)
    }

    fn cancel<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<RemoteBatch, BatchError>> {
        Box::pin(async move {
            let b: Batch = self
                .http
                .post(
                    &format!("/messages/batches/{id}/cancel"),
                    &json!({}),
                    Patience::Small,
                )
                .await?;
            Ok(remote(b))
        })
    }
}
