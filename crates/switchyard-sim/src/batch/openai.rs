//! OpenAI's Files and Batches as the simulator serves them: a multipart
//! upload with `purpose=batch`, batches created from an uploaded file (which
//! must hold `{custom_id, method: POST, url: /v1/chat/completions, body}`
//! lines with unique custom ids, else the batch `failed`), retrieved, listed
//! newest first with `after` and `limit`, canceled, and their answers and
//! errors written to an output and an error file (expired lines carry
//! `batch_expired`, canceled ones `batch_cancelled`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    BatchSim, LineEnd, Phase, SimBatch, Store, authorize, not_found, now_secs, problem_response,
};
use crate::wire::{Format, Problem};

const FORMAT: Format = Format::OpenAi;

/// `POST /files`: a multipart form with `purpose=batch` and `file`.
pub(super) async fn upload(
    State(sim): State<Arc<BatchSim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authorize(FORMAT, &headers) {
        return refused;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let Some(parts) = multipart(content_type, &body) else {
        return problem_response(
            FORMAT,
            &Problem::bad("The request must be multipart/form-data with `purpose` and `file`."),
        );
    };
    let purpose = parts
        .iter()
        .find(|p| p.name == "purpose")
        .map(|p| String::from_utf8_lossy(&p.content).into_owned());
    if purpose.as_deref() != Some("batch") {
        return problem_response(
            FORMAT,
            &Problem::bad_field(
                "'purpose' must be 'batch' for batch input files.",
                "purpose",
            ),
        );
    }
    let Some(file) = parts.into_iter().find(|p| p.name == "file") else {
        return problem_response(FORMAT, &Problem::bad_field("Missing file.", "file"));
    };
    let id = sim.id("file-");
    let bytes = file.content.len();
    sim.store.lock().files.insert(id.clone(), file.content);
    axum::Json(json!({
        "id": id, "object": "file", "bytes": bytes, "created_at": now_secs(),
        "filename": file.file_name, "purpose": "batch",
    }))
    .into_response()
}

/// `GET /files/{id}/content`.
pub(super) async fn file_content(
    State(sim): State<Arc<BatchSim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = authorize(FORMAT, &headers) {
        return refused;
    }
    if sim.config.batch.results_unavailable {
        return problem_response(FORMAT, &Problem::Internal);
    }
    match sim.store.lock().files.get(&id) {
        Some(content) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            content.clone(),
        )
            .into_response(),
        None => not_found(FORMAT, "file", &id),
    }
}

/// `POST /batches`.
pub(super) async fn create(
    State(sim): State<Arc<BatchSim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authorize(FORMAT, &headers) {
        return refused;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return problem_response(
            FORMAT,
            &Problem::bad("We could not parse the JSON body of your request."),
        );
    };
    let file_id = req["input_file_id"].as_str().unwrap_or_default().to_owned();
    if req["endpoint"] != "/v1/chat/completions" {
        return problem_response(
            FORMAT,
            &Problem::bad_field(
                "The simulator serves batches of /v1/chat/completions.",
                "endpoint",
            ),
        );
    }
    let Some(content) = sim.store.lock().files.get(&file_id).cloned() else {
        return not_found(FORMAT, "file", &file_id);
    };
    let (lines, errors) = match input_lines(&content) {
        Ok(lines) => (lines, None),
        Err(message) => (
            Vec::new(),
            Some(
                json!({"object": "list", "data": [{"code": "invalid_request", "message": message}]}),
            ),
        ),
    };
    let id = sim.id("batch_");
    let batch = SimBatch {
        id: id.clone(),
        format: FORMAT,
        created: Instant::now(),
        created_at: now_secs(),
        metadata: req.get("metadata").cloned().unwrap_or(Value::Null),
        input_file_id: file_id,
        completion_window: req["completion_window"]
            .as_str()
            .unwrap_or("24h")
            .to_owned(),
        lines,
        phase: if errors.is_some() {
            Phase::Failed
        } else {
            Phase::InProgress
        },
        cancel_requested_at: None,
        ended_at: None,
        ends: Vec::new(),
        output_file_id: None,
        error_file_id: None,
        errors,
    };
    sim.record(batch);
    sim.delay_create_reply().await;
    retrieve_json(&sim, &id)
}

/// `GET /batches/{id}`.
pub(super) async fn retrieve(
    State(sim): State<Arc<BatchSim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = authorize(FORMAT, &headers) {
        return refused;
    }
    retrieve_json(&sim, &id)
}

fn retrieve_json(sim: &BatchSim, id: &str) -> Response {
    match sim.with_batch(FORMAT, id, object) {
        Some(v) => axum::Json(v).into_response(),
        None => not_found(FORMAT, "batch", id),
    }
}

/// `GET /batches?limit=&after=`: newest first.
pub(super) async fn list(
    State(sim): State<Arc<BatchSim>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = authorize(FORMAT, &headers) {
        return refused;
    }
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let all = sim.list(FORMAT, object);
    let start = match query.get("after") {
        Some(after) => all
            .iter()
            .position(|(id, _)| id == after)
            .map_or(all.len(), |i| i + 1),
        None => 0,
    };
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|(_, v)| v.clone())
        .collect();
    let has_more = start + page.len() < all.len();
    axum::Json(json!({
        "object": "list",
        "data": page,
        "first_id": page.first().map(|b| b["id"].clone()),
        "last_id": page.last().map(|b| b["id"].clone()),
        "has_more": has_more,
    }))
    .into_response()
}

/// `POST /batches/{id}/cancel`.
pub(super) async fn cancel(
    State(sim): State<Arc<BatchSim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = authorize(FORMAT, &headers) {
        return refused;
    }
    // The answer shows `cancelling`; the next look finds it cancelled.
    let answer = sim.with_batch(FORMAT, &id, object);
    if sim.cancel(FORMAT, &id).is_none() {
        return not_found(FORMAT, "batch", &id);
    }
    match answer {
        Some(mut v) if v["status"] == "in_progress" => {
            v["status"] = json!("cancelling");
            v["cancelling_at"] = json!(now_secs());
            axum::Json(v).into_response()
        }
        Some(v) => axum::Json(v).into_response(),
        None => not_found(FORMAT, "batch", &id),
    }
}

/// The lines of an input file, checked as OpenAI checks them.
fn input_lines(content: &[u8]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut seen = HashSet::new();
    let mut lines = Vec::new();
    for (n, raw) in content
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.trim_ascii().is_empty())
    {
        let line: Value = serde_json::from_slice(raw)
            .map_err(|e| format!("line {}: invalid JSON: {e}", n + 1))?;
        let custom_id = line["custom_id"]
            .as_str()
            .ok_or_else(|| format!("line {}: missing custom_id", n + 1))?;
        if line["method"] != "POST" || line["url"] != "/v1/chat/completions" {
            return Err(format!(
                "line {}: method must be POST and url /v1/chat/completions",
                n + 1
            ));
        }
        if !seen.insert(custom_id.to_owned()) {
            return Err(format!("line {}: duplicate custom_id {custom_id}", n + 1));
        }
        let body = serde_json::to_vec(&line["body"]).map_err(|e| e.to_string())?;
        lines.push((custom_id.to_owned(), body));
    }
    if lines.is_empty() {
        return Err("the input file has no requests".into());
    }
    Ok(lines)
}

/// The batch object, as `GET /batches/{id}` answers it.
fn object(b: &SimBatch, _store: &Store) -> Value {
    let total = b.lines.len() as u64;
    let completed = b
        .ends
        .iter()
        .filter(|e| matches!(e, LineEnd::Answered(_)))
        .count() as u64;
    let failed = b.ends.len() as u64 - completed;
    let expired = b.ends.iter().any(|e| matches!(e, LineEnd::Expired));
    let status = match b.phase {
        Phase::InProgress => "in_progress",
        Phase::Canceling => "cancelling",
        Phase::Failed => "failed",
        Phase::Ended if b.cancel_requested_at.is_some() => "cancelled",
        Phase::Ended if expired => "expired",
        Phase::Ended => "completed",
    };
    json!({
        "id": b.id, "object": "batch", "endpoint": "/v1/chat/completions",
        "errors": b.errors, "input_file_id": b.input_file_id,
        "completion_window": b.completion_window, "status": status,
        "output_file_id": b.output_file_id, "error_file_id": b.error_file_id,
        "created_at": b.created_at, "in_progress_at": b.created_at,
        "expires_at": b.created_at + 24 * 3600,
        "completed_at": b.ended_at.filter(|_| status == "completed"),
        "expired_at": b.ended_at.filter(|_| status == "expired"),
        "cancelling_at": b.cancel_requested_at,
        "cancelled_at": b.ended_at.filter(|_| status == "cancelled"),
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "metadata": b.metadata,
    })
}

/// The output and error files of an ended batch (none when empty, as OpenAI
/// writes no empty file).
pub(super) fn write_files(b: &SimBatch, ends: &[LineEnd]) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let (mut output, mut errors) = (Vec::new(), Vec::new());
    for (i, ((custom_id, _), end)) in b.lines.iter().zip(ends).enumerate() {
        let id = format!("batch_req_{}_{i}", b.id);
        let (line, ok) = match end {
            LineEnd::Answered(body) => (
                json!({"id": id, "custom_id": custom_id, "response": {"status_code": 200, "request_id": id, "body": body}, "error": null}),
                true,
            ),
            LineEnd::Errored(status, body) => (
                json!({"id": id, "custom_id": custom_id, "response": {"status_code": status, "request_id": id, "body": body}, "error": null}),
                false,
            ),
            LineEnd::Expired => (
                json!({"id": id, "custom_id": custom_id, "response": null, "error": {"code": "batch_expired", "message": "This request could not be executed before the completion window expired."}}),
                false,
            ),
            LineEnd::Canceled => (
                json!({"id": id, "custom_id": custom_id, "response": null, "error": {"code": "batch_cancelled", "message": "This request was cancelled before it could be executed."}}),
                false,
            ),
        };
        let out = if ok { &mut output } else { &mut errors };
        if serde_json::to_writer(&mut *out, &line).is_ok() {
            out.push(b'\n');
        }
    }
    let some = |v: Vec<u8>| (!v.is_empty()).then_some(v);
    (some(output), some(errors))
}

/// One part of a multipart form.
struct Part {
    name: String,
    file_name: String,
    content: Vec<u8>,
}

/// The parts of a `multipart/form-data` body.
fn multipart(content_type: &str, body: &[u8]) -> Option<Vec<Part>> {
    let boundary = content_type
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(at) = find(rest, delimiter.as_bytes()) {
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let rest_trim = rest.strip_prefix(b"\r\n").unwrap_or(rest);
        let head_end = find(rest_trim, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&rest_trim[..head_end]).into_owned();
        let content_start = &rest_trim[head_end + 4..];
        let end = find(content_start, delimiter.as_bytes())?;
        let content = content_start[..end]
            .strip_suffix(b"\r\n")
            .unwrap_or(&content_start[..end]);
        let disposition = head
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))
            .unwrap_or_default();
        let attr = |key: &str| {
            disposition
                .split(';')
                .map(str::trim)
                .find_map(|p| p.strip_prefix(&format!("{key}=")))
                .map(|v| v.trim_matches('"').to_owned())
                .unwrap_or_default()
        };
        parts.push(Part {
            name: attr("name"),
            file_name: attr("filename"),
            content: content.to_vec(),
        });
        rest = content_start;
    }
    (!parts.is_empty()).then_some(parts)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn multipart_forms_are_split_into_their_fields() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"k.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{\"a\":1}\n{\"b\":2}\n\r\n--XyZ--\r\n";
        let parts = multipart("multipart/form-data; boundary=XyZ", body).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].name.as_str(), parts[0].content.as_slice()),
            ("purpose", &b"batch"[..])
        );
        assert_eq!(parts[1].name, "file");
        assert_eq!(parts[1].file_name, "k.jsonl");
        assert_eq!(parts[1].content, b"{\"a\":1}\n{\"b\":2}\n");
        assert!(multipart("application/json", body).is_none());
    }

    #[test]
    fn input_files_are_checked_as_openai_checks_them() {
        let ok = b"{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{}}\n";
        assert_eq!(input_lines(ok).unwrap().len(), 1);
        let twice = [&ok[..], &ok[..]].concat();
        assert!(input_lines(&twice).unwrap_err().contains("duplicate"));
        assert!(input_lines(b"\n").is_err());
    }
}
