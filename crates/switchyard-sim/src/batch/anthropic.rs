//! Anthropic's Message Batches as the simulator serves them: created with the
//! requests inline (custom ids of 1 to 64 letters, digits, `_` or `-`,
//! unique, as the API requires), retrieved, listed newest first with
//! `after_id` and `limit`, canceled, and their results served as JSONL once
//! they have ended (`succeeded`, `errored`, `expired`, `canceled`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    BatchSim, LineEnd, Phase, SimBatch, Store, authorize, not_found, now_secs, problem_response,
};
use crate::wire::{Format, Problem};

const FORMAT: Format = Format::Anthropic;

/// `POST /messages/batches`: `{"requests": [{custom_id, params}]}`.
pub(super) async fn create(
    State(sim): State<Arc<BatchSim>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(refused) = authorize(FORMAT, &headers) {
        return refused;
    }
    let lines = match requests(&body) {
        Ok(lines) => lines,
        Err(problem) => return problem_response(FORMAT, &problem),
    };
    let id = sim.id("msgbatch_");
    let batch = SimBatch {
        id: id.clone(),
        format: FORMAT,
        created: Instant::now(),
        created_at: now_secs(),
        metadata: Value::Null,
        input_file_id: String::new(),
        completion_window: "24h".into(),
        lines,
        phase: Phase::InProgress,
        cancel_requested_at: None,
        ended_at: None,
        ends: Vec::new(),
        output_file_id: None,
        error_file_id: None,
        errors: None,
    };
    sim.record(batch);
    sim.delay_create_reply().await;
    retrieve_json(&sim, &id)
}

/// The requests of a create, checked as the API checks them.
fn requests(body: &[u8]) -> Result<Vec<(String, Vec<u8>)>, Problem> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| Problem::bad(format!("invalid JSON body: {e}")))?;
    let items = req["requests"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Problem::bad_field("requests: Field required", "requests"))?;
    let mut seen = HashSet::new();
    let mut lines = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let custom_id = item["custom_id"].as_str().unwrap_or_default();
        let valid = (1..=64).contains(&custom_id.len())
            && custom_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(Problem::bad_field(
                format!(
                    "requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                ),
                format!("requests.{i}.custom_id"),
            ));
        }
        if !seen.insert(custom_id.to_owned()) {
            return Err(Problem::bad(format!(
                "requests.{i}.custom_id: duplicate custom_id {custom_id}"
            )));
        }
        let params =
            serde_json::to_vec(&item["params"]).map_err(|e| Problem::bad(e.to_string()))?;
        lines.push((custom_id.to_owned(), params));
    }
    Ok(lines)
}

/// `GET /messages/batches/{id}`.
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
        None => not_found(FORMAT, "message batch", id),
    }
}

/// `GET /messages/batches?limit=&after_id=`: newest first.
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
        .clamp(1, 1000);
    let all = sim.list(FORMAT, object);
    let start = match query.get("after_id") {
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
    axum::Json(json!({
        "data": page,
        "has_more": start + page.len() < all.len(),
        "first_id": page.first().map(|b| b["id"].clone()),
        "last_id": page.last().map(|b| b["id"].clone()),
    }))
    .into_response()
}

/// `GET /messages/batches/{id}/results`: JSONL, once the batch has ended.
pub(super) async fn results(
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
    let Some(lines) = sim.with_batch(FORMAT, &id, |b, _| {
        (b.phase == Phase::Ended).then(|| result_lines(b))
    }) else {
        return not_found(FORMAT, "message batch", &id);
    };
    match lines {
        Some(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-jsonl")],
            body,
        )
            .into_response(),
        None => problem_response(
            FORMAT,
            &Problem::bad(format!(
                "Message Batch {id} has not yet ended; results are not available."
            )),
        ),
    }
}

/// `POST /messages/batches/{id}/cancel`.
pub(super) async fn cancel(
    State(sim): State<Arc<BatchSim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(refused) = authorize(FORMAT, &headers) {
        return refused;
    }
    if sim.cancel(FORMAT, &id).is_none() {
        return not_found(FORMAT, "message batch", &id);
    }
    // The answer shows `canceling`; the next look finds it ended.
    match sim.with_batch(FORMAT, &id, |b, s| {
        let mut v = object(b, s);
        if b.phase == Phase::Canceling {
            v["processing_status"] = json!("canceling");
        }
        v
    }) {
        Some(v) => axum::Json(v).into_response(),
        None => not_found(FORMAT, "message batch", &id),
    }
}

fn rfc3339(secs: i64) -> Value {
    DateTime::<Utc>::from_timestamp(secs, 0).map_or(Value::Null, |t| {
        json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    })
}

/// The message batch object.
fn object(b: &SimBatch, _store: &Store) -> Value {
    let count = |f: fn(&LineEnd) -> bool| b.ends.iter().filter(|e| f(e)).count() as u64;
    let ended = b.phase == Phase::Ended;
    json!({
        "id": b.id,
        "type": "message_batch",
        "processing_status": match b.phase {
            Phase::InProgress => "in_progress",
            Phase::Canceling => "canceling",
            Phase::Ended | Phase::Failed => "ended",
        },
        "request_counts": {
            "processing": if ended { 0 } else { b.lines.len() as u64 },
            "succeeded": count(|e| matches!(e, LineEnd::Answered(_))),
            "errored": count(|e| matches!(e, LineEnd::Errored(..))),
            "canceled": count(|e| matches!(e, LineEnd::Canceled)),
            "expired": count(|e| matches!(e, LineEnd::Expired)),
        },
        "ended_at": b.ended_at.map_or(Value::Null, rfc3339),
        "created_at": rfc3339(b.created_at),
        "expires_at": rfc3339(b.created_at + 24 * 3600),
        "archived_at": null,
        "cancel_initiated_at": b.cancel_requested_at.map_or(Value::Null, rfc3339),
        "results_url": if ended { json!(format!("https://api.anthropic.com/v1/messages/batches/{}/results", b.id)) } else { Value::Null },
    })
}

/// The results file of an ended batch.
fn result_lines(b: &SimBatch) -> Vec<u8> {
    let mut out = Vec::new();
    for ((custom_id, _), end) in b.lines.iter().zip(&b.ends) {
        let result = match end {
            LineEnd::Answered(message) => json!({"type": "succeeded", "message": message}),
            LineEnd::Errored(_, body) => json!({"type": "errored", "error": body}),
            LineEnd::Expired => json!({"type": "expired"}),
            LineEnd::Canceled => json!({"type": "canceled"}),
        };
        if serde_json::to_writer(&mut out, &json!({"custom_id": custom_id, "result": result}))
            .is_ok()
        {
            out.push(b'\n');
        }
    }
    out
}
