//! Helpers of the batch tests: batch files generated from a handful of realistic
//! prompts, in the OpenAI Batch and Anthropic Message Batches request formats,
//! what the simulator answers to each of their lines, and the library's
//! blocking calls run off the async runtime.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use switchyard_batch::formats::ModelIds;
use switchyard_batch::{
    CollectOptions, CollectReport, NoProgress, StopFlag, SubmitOptions, SubmitReport,
};
use switchyard_core::config::LoadedPipeline;
use switchyard_core::job::Role;
use switchyard_sim::{FinishReason, Reply, ReplyStyle};

/// The project batches are submitted to.
pub const PROJECT: &str = "acme/retail/support/ticket-triage";

/// Prompts of the kinds bulk jobs carry: (system, user, max_tokens). The caps
/// are chosen so that the simulator's answers (8 to 400 tokens) are always cut by
/// the first, never by the third, and sometimes by the others.
const PROMPTS: &[(&str, &str, u32)] = &[
    (
        "You label support tickets.",
        "Classify this ticket as billing, technical or account. One word.\n\n\"I was charged twice for March.\"",
        5,
    ),
    (
        "",
        "Extract the invoice number, date and total as JSON: Invoice #A-1209, 2026-03-02, total $1,204.00",
        120,
    ),
    (
        "You write product copy.",
        "Write a two-sentence description of a stainless steel water bottle that keeps drinks cold for 24 hours.",
        1000,
    ),
    (
        "",
        "Summarise in one sentence: The quarterly review found that returns rose 4% after the packaging change, mostly in the north-east region, while satisfaction scores held steady.",
        60,
    ),
    (
        "",
        "Translate to French: Your order has shipped and will arrive on Tuesday.",
        40,
    ),
    (
        "You are a careful analyst.",
        "A store sells 340 units a week at $12 with a 30% margin. If a 10% price cut lifts volume by 18%, does weekly profit rise? Show the arithmetic.",
        200,
    ),
];

/// The custom id of line `i` (0-based).
pub fn custom_id(i: usize) -> String {
    format!("req-{i:06}")
}

/// What line `i` (0-based) of a generated file asks for.
pub struct LineSpec {
    /// The system prompt, if any.
    pub system: Option<&'static str>,
    /// The user message.
    pub user: String,
    /// The output cap.
    pub max_tokens: u32,
}

/// The request of line `i`.
pub fn spec(i: usize) -> LineSpec {
    let (system, user, max_tokens) = PROMPTS[i % PROMPTS.len()];
    LineSpec {
        system: (!system.is_empty()).then_some(system),
        user: format!("{user} (item {i})"),
        max_tokens,
    }
}

/// What the simulator answers to line `i`, whichever model serves it: usage and
/// finish reason are functions of the request alone.
pub fn expected_reply(i: usize) -> Reply {
    let s = spec(i);
    switchyard_sim::reply_for(
        s.system,
        &[(Role::User, s.user.as_str())],
        Some(s.max_tokens),
        ReplyStyle::Text,
    )
}

/// Whether line `i`'s answer is cut by its `max_tokens`.
pub fn capped(i: usize) -> bool {
    expected_reply(i).finish == FinishReason::Length
}

/// The `model` an OpenAI line names: the catalog model `gpt-4o-mini` on
/// classification lines and `mistral-small-4` (by catalog name) on summaries,
/// both pinned; elsewhere a dated snapshot the catalog does not list, which is
/// ignored (routing chooses).
fn openai_model(i: usize) -> &'static str {
    match i % PROMPTS.len() {
        0 => "gpt-4o-mini",
        3 => "mistral-small-4",
        _ => "gpt-4o-mini-2024-07-18",
    }
}

/// The `model` an Anthropic line names: the catalog model `claude-haiku-4-5` on
/// classification lines and Mistral's API id `mistral-small-2603` on summaries,
/// both pinned; elsewhere a dated snapshot the catalog does not list.
fn anthropic_model(i: usize) -> &'static str {
    match i % PROMPTS.len() {
        0 => "claude-haiku-4-5",
        3 => "mistral-small-2603",
        _ => "claude-haiku-4-5-20251001",
    }
}

/// The provider API model id the output must name for line `i`, when the line
/// pins a model (OpenAI file).
pub fn openai_pin(i: usize) -> Option<&'static str> {
    match i % PROMPTS.len() {
        0 => Some("gpt-4o-mini"),
        3 => Some("mistral-small-2603"),
        _ => None,
    }
}

/// As [`openai_pin`], for the Anthropic file.
pub fn anthropic_pin(i: usize) -> Option<&'static str> {
    match i % PROMPTS.len() {
        0 => Some("claude-haiku-4-5"),
        3 => Some("mistral-small-2603"),
        _ => None,
    }
}

/// One OpenAI Batch input line.
pub fn openai_line(i: usize) -> Value {
    let s = spec(i);
    let mut messages = Vec::new();
    if let Some(system) = s.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": s.user}));
    json!({
        "custom_id": custom_id(i),
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": openai_model(i), "messages": messages, "max_tokens": s.max_tokens, "temperature": 0.2}
    })
}

/// One Anthropic Message Batches request line.
pub fn anthropic_line(i: usize) -> Value {
    let s = spec(i);
    let mut params = json!({
        "model": anthropic_model(i),
        "max_tokens": s.max_tokens,
        "messages": [{"role": "user", "content": [{"type": "text", "text": s.user}]}],
    });
    if let Some(system) = s.system {
        params["system"] = json!(system);
    }
    json!({"custom_id": custom_id(i), "params": params})
}

/// Writes `n` lines made by `line` to `path`.
pub fn write_file(path: &Path, n: usize, line: impl Fn(usize) -> Value) -> PathBuf {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        serde_json::to_writer(&mut f, &line(i)).unwrap();
        f.write_all(b"\n").unwrap();
    }
    f.flush().unwrap();
    path.to_owned()
}

/// Submit options for [`PROJECT`].
pub fn options() -> SubmitOptions {
    SubmitOptions::new(PROJECT)
}

/// Runs `submit` on a blocking thread.
pub async fn submit(
    pipeline: &LoadedPipeline,
    file: &Path,
    options: SubmitOptions,
) -> switchyard_batch::Result<SubmitReport> {
    let pipeline = pipeline.clone();
    let file = file.to_owned();
    tokio::task::spawn_blocking(move || {
        switchyard_batch::submit(&pipeline, &file, &options, &NoProgress)
    })
    .await
    .unwrap()
}

/// Runs `collect` on a blocking thread, giving up after `timeout`; output lines
/// name models by the pipeline's provider API ids, as the CLI's do.
pub async fn collect(
    pipeline: &LoadedPipeline,
    batch_id: &str,
    mut options: CollectOptions,
    timeout: Duration,
) -> CollectReport {
    let kafka = pipeline.config.kafka.clone();
    let batch_id = batch_id.to_owned();
    options.timeout = Some(timeout);
    options.poll_interval = Duration::from_millis(200);
    options.models = ModelIds::from_pipeline(pipeline);
    tokio::task::spawn_blocking(move || {
        switchyard_batch::collect(
            &kafka,
            &batch_id,
            &options,
            &StopFlag::default(),
            &NoProgress,
        )
    })
    .await
    .unwrap()
    .unwrap()
}

/// The lines of a JSONL file, parsed.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Asserts that `lines` carry custom ids `req-000000`… in order, each once.
pub fn assert_in_input_order(lines: &[Value], n: usize) {
    assert_eq!(lines.len(), n, "one output line per input line");
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(
            l["custom_id"],
            custom_id(i),
            "line {} is out of order",
            i + 1
        );
    }
}
