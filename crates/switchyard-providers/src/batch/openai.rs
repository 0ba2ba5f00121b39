//! OpenAI's Batch API: the requests go up as a JSONL file (`POST /files`,
//! `purpose=batch`), the batch is created from it (`POST /batches`, endpoint
//! `/v1/chat/completions`, the idempotency key in `metadata`), polled
//! (`GET /batches/{id}`), listed (`GET /batches?after=`), canceled
//! (`POST /batches/{id}/cancel`), and its answers and errors read from its
//! output and error files (`GET /files/{id}/content`).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_core::deferred::LineCounts;
use switchyard_core::job::ChatRequest;

use super::http::{BatchHttp, Patience};
use super::{
    BatchApi, BatchError, BatchPage, KEY_METADATA, LineOutcome, LineResult, NewBatch, RemoteBatch,
    RemoteStatus, epoch, window_text,
};
use crate::{BoxFuture, Completion, HttpProvider};

/// OpenAI's Files and Batches endpoints of one deployment.
pub struct OpenAiBatches {
    http: BatchHttp,
}

#[derive(Deserialize)]
struct FileObject {
    id: String,
}

#[derive(Deserialize)]
struct Batch {
    id: String,
    status: String,
    #[serde(default)]
    created_at: Option<i64>,
    #[serde(default)]
    output_file_id: Option<String>,
    #[serde(default)]
    error_file_id: Option<String>,
    #[serde(default)]
    request_counts: Option<Counts>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    errors: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Counts {
    #[serde(default)]
    total: u64,
    #[serde(default)]
    completed: u64,
    #[serde(default)]
    failed: u64,
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
    #[serde(default)]
    response: Option<LineResponse>,
    #[serde(default)]
    error: Option<LineError>,
}

#[derive(Deserialize)]
struct LineResponse {
    status_code: u16,
    #[serde(default)]
    body: Value,
}

#[derive(Deserialize)]
struct LineError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl OpenAiBatches {
    /// The batch endpoints beside a deployment's chat endpoint.
    pub fn new(provider: Arc<HttpProvider>) -> Self {
        Self {
            http: BatchHttp::new("openai", provider),
        }
    }

    async fn create_batch(&self, batch: NewBatch<'_>) -> Result<RemoteBatch, BatchError> {
        let mut file = Vec::new();
        for r in &batch.requests {
            let line = json!({
                "custom_id": r.custom_id,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": self.http.body(r.call),
            });
            serde_json::to_writer(&mut file, &line).map_err(|e| BatchError::Decode {
                api: "openai",
                message: e.to_string(),
            })?;
            file.push(b'\n');
        }
        let uploaded: FileObject = self
            .http
            .upload(
                "/files",
                &[("purpose", "batch")],
                ("file", &format!("{}.jsonl", batch.key), file),
            )
            .await?;
        let body = json!({
            "input_file_id": uploaded.id,
            "endpoint": "/v1/chat/completions",
            "completion_window": window_text(batch.completion_window),
            "metadata": {KEY_METADATA: batch.key},
        });
        let created: Batch = self.http.post("/batches", &body, Patience::Large).await?;
        Ok(remote(created))
    }

    async fn lines(&self, file_id: &str, out: &mut Vec<LineResult>) -> Result<(), BatchError> {
        let bytes = self
            .http
            .get_raw(&format!("/files/{file_id}/content"))
            .await?;
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
                outcome: self.outcome(line.response, line.error),
                custom_id: line.custom_id,
            });
        }
        Ok(())
    }

    fn outcome(&self, response: Option<LineResponse>, error: Option<LineError>) -> LineOutcome {
        match (response, error) {
            (Some(r), _) => {
                let body = serde_json::to_vec(&r.body).unwrap_or_default();
                if (200..300).contains(&r.status_code) {
                    match self.http.provider.parse_answer(r.status_code, &body) {
                        Ok(c) => LineOutcome::Answered(c),
                        Err(e) => LineOutcome::Failed(e),
                    }
                } else {
                    LineOutcome::Failed(self.http.provider.parse_failure(r.status_code, &body))
                }
            }
            (None, Some(e)) => match e.code.as_deref() {
                Some("batch_expired") => LineOutcome::Expired,
                Some("batch_cancelled") => LineOutcome::Canceled,
                code => LineOutcome::Failed(self.http.provider.scrub_error(
                    crate::ProviderError::Decode(format!(
                        "batch line failed ({}): {}",
                        code.unwrap_or("no code"),
                        e.message.as_deref().unwrap_or("")
                    )),
                )),
            },
            (None, None) => LineOutcome::Failed(crate::ProviderError::Decode(
                "batch line has neither a response nor an error".into(),
            )),
        }
    }
}

/// The shared shape of an OpenAI batch object.
fn remote(b: Batch) -> RemoteBatch {
    let status = match b.status.as_str() {
        "validating" => RemoteStatus::Validating,
        "in_progress" => RemoteStatus::InProgress,
        "finalizing" => RemoteStatus::Finalizing,
        "cancelling" => RemoteStatus::Canceling,
        "failed" => RemoteStatus::Failed,
        // completed, expired, cancelled: every line has its outcome.
        _ => RemoteStatus::Ended,
    };
    let c = b.request_counts.unwrap_or_default();
    let done = c.completed + c.failed;
    RemoteBatch {
        id: b.id,
        status,
        provider_status: b.status,
        key: b.metadata.and_then(|m| m.get(KEY_METADATA).cloned()),
        created_at: epoch(b.created_at),
        requests: c.total,
        counts: LineCounts {
            processing: c.total.saturating_sub(done),
            succeeded: c.completed,
            errored: c.failed,
            expired: 0,
            canceled: 0,
        },
        output_file_id: b.output_file_id,
        error_file_id: b.error_file_id,
        errors: b.errors.filter(|e| !e.is_null()).map(|e| e.to_string()),
    }
}

impl BatchApi for OpenAiBatches {
    fn kind(&self) -> &'static str {
        "openai"
    }

    fn carries(&self, batch: &RemoteBatch, key: &str) -> Option<bool> {
        Some(batch.key.as_deref() == Some(key))
    }

    fn create<'a>(&'a self, batch: NewBatch<'a>) -> BoxFuture<'a, Result<RemoteBatch, BatchError>> {
        Box::pin(self.create_batch(batch))
    }

    fn retrieve<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<RemoteBatch, BatchError>> {
        Box::pin(async move {
            let b: Batch = self.http.get(&format!("/batches/{id}")).await?;
            Ok(remote(b))
        })
    }

    fn list<'a>(&'a self, cursor: Option<&'a str>) -> BoxFuture<'a, Result<BatchPage, BatchError>> {
        Box::pin(async move {
            let path = match cursor {
                Some(after) => format!("/batches?limit=100&after={after}"),
                None => "/batches?limit=100".to_owned(),
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
            let mut out = Vec::new();
            for file in [&batch.output_file_id, &batch.error_file_id]
                .into_iter()
                .flatten()
            {
                self.lines(file, &mut out).await?;
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
                    &format!("/batches/{id}/cancel"),
                    &json!({}),
                    Patience::Small,
                )
                .await?;
            Ok(remote(b))
        })
    }
}
