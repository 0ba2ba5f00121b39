//! The simulated batch APIs: OpenAI's Files and Batches and Anthropic's
//! Message Batches, on the same port as the live endpoints. A batch ends
//! `processing_time` (scaled) after its creation, when its lines are answered
//! exactly as live requests would be (the same replies and usage), except the
//! lines `line_error_rate` fails and `line_expired_rate` expires, each decided
//! by the line's custom id and the seed; a cancel ends every line not yet
//! answered as canceled. Every prompt that reaches the simulator, live or in a
//! batch, is noted, so that a test can prove that no work was sent twice.

mod anthropic;
mod openai;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use parking_lot::Mutex;
use serde_json::Value;
use switchyard_core::job::Role;
use tokio::time::Instant;

use crate::admission::LimitReport;
use crate::config::{OutputTokens, SimConfig};
use crate::stats::BatchStats;
use crate::synthesis::{Fnv, ReplyStyle, reply_of_length, splitmix64, unit};
use crate::wire::{Context, Format, Parsed, Problem};

/// Salt of the roll deciding whether a line expires.
const EXPIRE_ROLL: u64 = 0x6578_7069_7265_645f;
/// Salt of the roll deciding whether a line fails.
const ERROR_ROLL: u64 = 0x6572_726f_725f_726f;

/// Every prompt that reached the simulator, by a hash of the model, system
/// prompt and messages.
#[derive(Debug, Default)]
pub(crate) struct PromptLog {
    seen: Mutex<HashSet<u64>>,
    repeated: AtomicU64,
}

impl PromptLog {
    /// Notes a prompt; counts it as repeated when it came before.
    pub(crate) fn note(&self, parsed: &Parsed) {
        let mut h = Fnv::new();
        h.write(parsed.model.as_bytes());
        h.write(&[0]);
        h.write(parsed.system.as_deref().unwrap_or_default().as_bytes());
        for (role, text) in &parsed.messages {
            h.write(&[0, *role as u8]);
            h.write(text.as_bytes());
        }
        if !self.seen.lock().insert(h.finish()) {
            self.repeated.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (distinct, repeated) prompts so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.seen.lock().len() as u64,
            self.repeated.load(Ordering::Relaxed),
        )
    }
}

/// How one line of a batch ended.
#[derive(Debug, Clone)]
enum LineEnd {
    /// The reply's body, as the live endpoint would send it.
    Answered(Value),
    /// An error answer: status and body.
    Errored(u16, Value),
    Expired,
    Canceled,
}

/// Where a simulated batch is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    InProgress,
    Canceling,
    Ended,
    /// OpenAI: the input file did not validate.
    Failed,
}

/// One batch, of either API.
#[derive(Debug)]
struct SimBatch {
    id: String,
    format: Format,
    created: Instant,
    created_at: i64,
    /// OpenAI: its metadata, input file and window.
    metadata: Value,
    input_file_id: String,
    completion_window: String,
    /// (custom id, request body) in order.
    lines: Vec<(String, Vec<u8>)>,
    phase: Phase,
    cancel_requested_at: Option<i64>,
    ended_at: Option<i64>,
    ends: Vec<LineEnd>,
    /// OpenAI: the files its answers and errors were written to.
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    errors: Option<Value>,
}

/// Batches and files.
#[derive(Debug, Default)]
struct Store {
    files: HashMap<String, Vec<u8>>,
    batches: Vec<SimBatch>,
    next_id: u64,
    stats: BatchStats,
}

/// The batch APIs' state, shared by their handlers.
#[derive(Debug)]
pub(crate) struct BatchSim {
    config: SimConfig,
    store: Mutex<Store>,
    prompts: Arc<PromptLog>,
}

impl BatchSim {
    pub(crate) fn new(config: SimConfig, prompts: Arc<PromptLog>) -> Self {
        Self {
            config,
            store: Mutex::new(Store::default()),
            prompts,
        }
    }

    /// What the batch APIs saw.
    pub(crate) fn stats(&self) -> BatchStats {
        self.store.lock().stats.clone()
    }

    /// A new id with the API's prefix, unique in this run.
    fn id(&self, prefix: &str) -> String {
        let mut store = self.store.lock();
        store.next_id += 1;
        let n = splitmix64(self.config.seed ^ store.next_id);
        format!("{prefix}{n:016x}{:04x}", store.next_id)
    }

    /// Records a new batch (noting every prompt it carries) and returns its id.
    fn record(&self, mut batch: SimBatch) -> String {
        for (_, body) in &batch.lines {
            if let Ok(parsed) = batch.format.parse(None, body) {
                self.prompts.note(&parsed);
            }
        }
        let id = batch.id.clone();
        let mut store = self.store.lock();
        store.stats.batches += 1;
        store.stats.requests += batch.lines.len() as u64;
        batch.created = Instant::now();
        store.batches.push(batch);
        id
    }

    /// Waits `create_reply_delay` (scaled) before a create is answered.
    async fn delay_create_reply(&self) {
        let delay = self.config.scaled(self.config.batch.create_reply_delay);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.store.lock().stats.creates_answered += 1;
    }

    /// Runs `f` on batch `id` of `format`, brought up to date first.
    fn with_batch<T>(
        &self,
        format: Format,
        id: &str,
        f: impl FnOnce(&SimBatch, &Store) -> T,
    ) -> Option<T> {
        let mut store = self.store.lock();
        let i = store
            .batches
            .iter()
            .position(|b| b.id == id && b.format == format)?;
        self.advance(&mut store, i);
        Some(f(&store.batches[i], &store))
    }

    /// Every batch of `format`, newest first, brought up to date.
    fn list<T>(&self, format: Format, f: impl Fn(&SimBatch, &Store) -> T) -> Vec<(String, T)> {
        let mut store = self.store.lock();
        store.stats.lists += 1;
        let indexes: Vec<usize> = (0..store.batches.len())
            .rev()
            .filter(|i| store.batches[*i].format == format)
            .collect();
        for i in &indexes {
            self.advance(&mut store, *i);
        }
        indexes
            .into_iter()
            .map(|i| (store.batches[i].id.clone(), f(&store.batches[i], &store)))
            .collect()
    }

    /// Asks batch `id` to cancel; none when there is no such batch.
    fn cancel(&self, format: Format, id: &str) -> Option<()> {
        let mut store = self.store.lock();
        let i = store
            .batches
            .iter()
            .position(|b| b.id == id && b.format == format)?;
        store.stats.cancels += 1;
        let batch = &mut store.batches[i];
        if batch.phase == Phase::InProgress {
            batch.phase = Phase::Canceling;
            batch.cancel_requested_at = Some(now_secs());
        }
        Some(())
    }

    /// Ends batch `i` when its time has come (or it was canceled).
    fn advance(&self, store: &mut Store, i: usize) {
        let batch = &store.batches[i];
        let due = self.config.scaled(self.config.batch.processing_time);
        let canceled = match batch.phase {
            Phase::InProgress if batch.created.elapsed() >= due => false,
            // A cancel ends the batch at the next look.
            Phase::Canceling => true,
            _ => return,
        };
        let ends: Vec<LineEnd> = batch
            .lines
            .iter()
            .map(|(custom_id, body)| self.end_line(batch.format, custom_id, body, canceled))
            .collect();
        for end in &ends {
            let counter = match end {
                LineEnd::Answered(_) => &mut store.stats.answered,
                LineEnd::Errored(..) => &mut store.stats.errored,
                LineEnd::Expired => &mut store.stats.expired,
                LineEnd::Canceled => &mut store.stats.canceled,
            };
            *counter += 1;
        }
        let format = batch.format;
        let files = if format == Format::OpenAi {
            openai::write_files(&store.batches[i], &ends)
        } else {
            (None, None)
        };
        let (output, errors) = files;
        let mut ids = (None, None);
        for (slot, file) in [(&mut ids.0, output), (&mut ids.1, errors)] {
            if let Some(content) = file {
                store.next_id += 1;
                let id = format!("file-{:016x}", splitmix64(self.config.seed ^ store.next_id));
                store.files.insert(id.clone(), content);
                *slot = Some(id);
            }
        }
        let batch = &mut store.batches[i];
        batch.output_file_id = ids.0;
        batch.error_file_id = ids.1;
        batch.ends = ends;
        batch.phase = Phase::Ended;
        batch.ended_at = Some(now_secs());
    }

    /// How one line ends: canceled, expired or failed by its rolls, else
    /// answered as the live endpoint would answer it.
    fn end_line(&self, format: Format, custom_id: &str, body: &[u8], canceled: bool) -> LineEnd {
        if canceled {
            return LineEnd::Canceled;
        }
        let mut h = Fnv::new();
        h.write(&self.config.seed.to_le_bytes());
        h.write(custom_id.as_bytes());
        let roll = h.finish();
        let b = &self.config.batch;
        if unit(splitmix64(roll ^ EXPIRE_ROLL)) < b.line_expired_rate {
            return LineEnd::Expired;
        }
        let request_id = format!("{:016x}", splitmix64(roll));
        let parsed = match format.parse(None, body) {
            Ok(p) => p,
            Err(problem) => return failed(format, "", request_id, &problem),
        };
        if unit(splitmix64(roll ^ ERROR_ROLL)) < b.line_error_rate {
            return failed(format, &parsed.model, request_id, &Problem::Internal);
        }
        if let Some(problem) =
            parsed.refused(&self.config.behaviour(&parsed.model).unsupported_params)
        {
            return failed(format, &parsed.model, request_id, &problem);
        }
        let fill = self.config.behaviour(&parsed.model).output_tokens == OutputTokens::Max;
        let messages: Vec<(Role, &str)> = parsed
            .messages
            .iter()
            .map(|(r, t)| (*r, t.as_str()))
            .collect();
        let style = if parsed.json_mode {
            ReplyStyle::Json
        } else {
            ReplyStyle::Text
        };
        let reply = reply_of_length(
            parsed.system.as_deref(),
            &messages,
            parsed.max_tokens,
            style,
            fill,
        );
        let ctx = Context {
            model: &parsed.model,
            request_id,
            limits: LimitReport::default(),
        };
        let (_, body) = match format {
            Format::Anthropic => crate::wire::anthropic::success(&ctx, &reply),
            _ => crate::wire::openai::success(&ctx, &reply),
        };
        LineEnd::Answered(body)
    }
}

/// An error line: the status and body the live endpoint would answer.
fn failed(format: Format, model: &str, request_id: String, problem: &Problem) -> LineEnd {
    let ctx = Context {
        model,
        request_id,
        limits: LimitReport::default(),
    };
    let status = format.status_of(problem);
    let (_, body) = match format {
        Format::Anthropic => crate::wire::anthropic::failure(&ctx, status, problem),
        _ => crate::wire::openai::failure(&ctx, status, problem),
    };
    LineEnd::Errored(status, body)
}

/// Seconds since the epoch now.
fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Refuses a request without the API's credentials, as the live endpoints do.
#[allow(clippy::result_large_err)] // an axum response, returned as is
fn authorize(format: Format, headers: &HeaderMap) -> Result<(), Response> {
    format
        .authorize(headers, None)
        .map_err(|problem| problem_response(format, &problem))
}

/// The API's error answer for `problem`.
fn problem_response(format: Format, problem: &Problem) -> Response {
    format.failure(
        &Context {
            model: "",
            request_id: "0".into(),
            limits: LimitReport::default(),
        },
        problem,
    )
}

/// The answer for an unknown batch or file id.
fn not_found(format: Format, what: &str, id: &str) -> Response {
    problem_response(
        format,
        &Problem::NotFound {
            message: format!("No {what} found with id '{id}'."),
        },
    )
}

/// The batch routes of both APIs.
pub(crate) fn router(sim: Arc<BatchSim>) -> Router {
    Router::new()
        .route("/openai/v1/files", post(openai::upload))
        .route("/openai/v1/files/{id}/content", get(openai::file_content))
        .route("/openai/v1/batches", post(openai::create).get(openai::list))
        .route("/openai/v1/batches/{id}", get(openai::retrieve))
        .route("/openai/v1/batches/{id}/cancel", post(openai::cancel))
        .route(
            "/anthropic/v1/messages/batches",
            post(anthropic::create).get(anthropic::list),
        )
        .route(
            "/anthropic/v1/messages/batches/{id}",
            get(anthropic::retrieve),
        )
        .route(
            "/anthropic/v1/messages/batches/{id}/results",
            get(anthropic::results),
        )
        .route(
            "/anthropic/v1/messages/batches/{id}/cancel",
            post(anthropic::cancel),
        )
        .with_state(sim)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn parsed(model: &str, text: &str) -> Parsed {
        Parsed {
            model: model.into(),
            system: None,
            messages: vec![(Role::User, text.into())],
            max_tokens: None,
            json_mode: false,
            temperature: None,
            top_p: None,
            stop: false,
        }
    }

    #[test]
    fn the_prompt_log_counts_work_sent_twice() {
        let log = PromptLog::default();
        log.note(&parsed("m", "a"));
        log.note(&parsed("m", "b"));
        log.note(&parsed("n", "a"));
        assert_eq!(log.counts(), (3, 0));
        log.note(&parsed("m", "a"));
        assert_eq!(log.counts(), (3, 1));
    }
}
