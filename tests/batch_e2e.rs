//! Batches end to end on the embedded broker with the real worker: ten thousand
//! OpenAI and Anthropic requests submitted, collected and checked line by line
//! against the input (custom_id at the same position, the pinned model, the
//! tokens the simulator bills for that very request, the cap and the finish
//! reason); resubmission produces nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/batch.rs"]
mod batch;
mod common;

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;
use switchyard_batch::{BatchFormat, BatchState, CollectOptions};
use switchyard_embedded::{Stack, StackOptions};

use batch::*;
use common::{demo_config, topic_size};

const LINES: usize = 10_000;

/// The API model ids of the catalog: what an unpinned line may name.
fn api_ids(stack: &Stack) -> HashSet<String> {
    stack
        .catalog()
        .models()
        .iter()
        .map(|m| m.api_model.clone())
        .collect()
}

/// What an output line says about its answer, in either format.
struct Answer<'a> {
    model: &'a Value,
    /// Prompt tokens, cached ones included.
    prompt_tokens: u64,
    cached_tokens: u64,
    completion_tokens: u64,
    /// The finish reason says `max_tokens` cut it.
    cut: bool,
}

/// Checks the answer of output line `i` against input line `i`: `model` is the
/// pinned model's API id where the input pins one (a catalog API id elsewhere),
/// the prompt tokens are what the simulator bills for that request, the
/// answer's tokens are the simulator's and within `max_tokens`, and the answer
/// was cut exactly when the cap was hit.
fn check_line(i: usize, a: Answer<'_>, pin: Option<&str>, ids: &HashSet<String>) {
    let Answer {
        model,
        prompt_tokens,
        cached_tokens,
        completion_tokens,
        cut,
    } = a;
    let want = expected_reply(i);
    let at = format!("line {} ({})", i + 1, custom_id(i));
    match pin {
        Some(m) => assert_eq!(model, m, "{at}: the pinned model"),
        None => assert!(
            model.as_str().is_some_and(|m| ids.contains(m)),
            "{at}: {model} is no provider model id of the catalog"
        ),
    }
    assert_eq!(
        prompt_tokens,
        want.usage.input_tokens + want.usage.cached_input_tokens,
        "{at}: prompt tokens"
    );
    assert_eq!(
        cached_tokens, want.usage.cached_input_tokens,
        "{at}: cached tokens"
    );
    assert!(
        completion_tokens <= u64::from(spec(i).max_tokens),
        "{at}: {completion_tokens} tokens over max_tokens {}",
        spec(i).max_tokens
    );
    assert_eq!(
        completion_tokens, want.usage.output_tokens,
        "{at}: output tokens"
    );
    assert_eq!(cut, capped(i), "{at}: cut by max_tokens");
}

async fn fast_stack() -> Stack {
    Stack::start(
        &demo_config(),
        StackOptions {
            partitions: 4,
            time_scale: 0.01,
            ..StackOptions::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_openai_requests_come_back_in_order_once_each() {
    let stack = fast_stack().await;
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(&dir.path().join("requests.jsonl"), LINES, openai_line);
    let report = submit(&stack.pipeline, &input, options()).await.unwrap();
    assert_eq!(report.format, BatchFormat::Openai);
    assert_eq!((report.jobs, report.produced), (LINES as u64, LINES as u64));
    assert_eq!(report.state, BatchState::Submitted);

    let out = dir.path().join("results.jsonl");
    // An errors file an earlier collect left beside the output.
    std::fs::write(dir.path().join("results.errors.jsonl"), "stale\n").unwrap();
    let collected = collect(
        &stack.pipeline,
        &report.batch_id,
        CollectOptions::new(&out),
        Duration::from_secs(600),
    )
    .await;
    assert_eq!(collected.counts.succeeded, LINES as u64, "{collected:?}");
    assert_eq!(collected.output_lines, LINES as u64);
    assert_eq!(collected.error_lines, 0);

    // No request failed, so there is no errors file (OpenAI writes none then),
    // not even the one an earlier collect left there.
    assert_eq!(collected.errors_output, None);
    assert!(!dir.path().join("results.errors.jsonl").exists());

    let lines = read_jsonl(&out);
    assert_in_input_order(&lines, LINES);
    let ids = api_ids(&stack);
    let mut cut = 0;
    for (i, l) in lines.iter().enumerate() {
        assert!(l["id"].as_str().unwrap().starts_with("batch_req_"));
        assert_eq!(l["error"], Value::Null);
        let r = &l["response"];
        assert_eq!(r["status_code"], 200, "line {}: {l}", i + 1);
        let body = &r["body"];
        assert_eq!(body["object"], "chat.completion");
        let choice = &body["choices"][0];
        assert_eq!(choice["message"]["role"], "assistant");
        assert!(!choice["message"]["content"].as_str().unwrap().is_empty());
        let finish = choice["finish_reason"].as_str().unwrap();
        assert!(
            finish == "stop" || finish == "length",
            "line {}: {finish}",
            i + 1
        );
        let usage = &body["usage"];
        let (p, c) = (
            usage["prompt_tokens"].as_u64().unwrap(),
            usage["completion_tokens"].as_u64().unwrap(),
        );
        assert_eq!(usage["total_tokens"].as_u64().unwrap(), p + c);
        let answer = Answer {
            model: &body["model"],
            prompt_tokens: p,
            cached_tokens: usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap(),
            completion_tokens: c,
            cut: finish == "length",
        };
        check_line(i, answer, openai_pin(i), &ids);
        cut += usize::from(finish == "length");
    }
    // The file has both kinds: answers cut by their cap and answers that ended.
    assert!(cut > 0 && cut < LINES, "{cut} of {LINES} answers cut");
    // Where no model is pinned, routing chose: the dated snapshot the file
    // names is not in the catalog, and no line was sent to it.
    let chosen: HashSet<&str> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| openai_pin(*i).is_none())
        .map(|(_, l)| l["response"]["body"]["model"].as_str().unwrap())
        .collect();
    assert!(!chosen.is_empty());
    assert!(!chosen.contains("gpt-4o-mini-2024-07-18"), "{chosen:?}");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_anthropic_requests_come_back_and_a_resubmission_adds_nothing() {
    let stack = fast_stack().await;
    let jobs_topic = stack.pipeline.config.kafka.topics.jobs.name.clone();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(&dir.path().join("requests.jsonl"), LINES, anthropic_line);
    let first = submit(&stack.pipeline, &input, options()).await.unwrap();
    assert_eq!(first.format, BatchFormat::Anthropic);
    assert_eq!(first.produced, LINES as u64);
    assert_eq!(topic_size(&bootstrap, &jobs_topic), LINES);

    // The same file to the same project: same batch, nothing produced.
    let second = submit(&stack.pipeline, &input, options()).await.unwrap();
    assert_eq!(second.batch_id, first.batch_id);
    assert!(second.already_submitted);
    assert_eq!(second.produced, 0);
    assert_eq!(
        topic_size(&bootstrap, &jobs_topic),
        LINES,
        "the jobs topic grew"
    );

    let out = dir.path().join("results.jsonl");
    let collected = collect(
        &stack.pipeline,
        &first.batch_id,
        CollectOptions::new(&out),
        Duration::from_secs(600),
    )
    .await;
    assert_eq!(collected.format, BatchFormat::Anthropic);
    assert!(collected.errors_output.is_none());
    assert_eq!(collected.counts.succeeded, LINES as u64);
    let lines = read_jsonl(&out);
    assert_in_input_order(&lines, LINES);
    let ids = api_ids(&stack);
    let mut cut = 0;
    for (i, l) in lines.iter().enumerate() {
        let r = &l["result"];
        assert_eq!(r["type"], "succeeded", "line {}: {l}", i + 1);
        let m = &r["message"];
        assert_eq!(m["type"], "message");
        assert_eq!(m["role"], "assistant");
        assert_eq!(m["content"][0]["type"], "text");
        assert!(!m["content"][0]["text"].as_str().unwrap().is_empty());
        let stop = m["stop_reason"].as_str().unwrap();
        assert!(
            stop == "end_turn" || stop == "max_tokens",
            "line {}: {stop}",
            i + 1
        );
        assert_eq!(m["stop_sequence"], Value::Null);
        let usage = &m["usage"];
        let (input, cached, output) = (
            usage["input_tokens"].as_u64().unwrap(),
            usage["cache_read_input_tokens"].as_u64().unwrap(),
            usage["output_tokens"].as_u64().unwrap(),
        );
        // Anthropic counts cache reads apart from input_tokens.
        let answer = Answer {
            model: &m["model"],
            prompt_tokens: input + cached,
            cached_tokens: cached,
            completion_tokens: output,
            cut: stop == "max_tokens",
        };
        check_line(i, answer, anthropic_pin(i), &ids);
        cut += usize::from(stop == "max_tokens");
    }
    assert!(cut > 0 && cut < LINES, "{cut} of {LINES} answers cut");
    // And a third submission after the batch is done still adds nothing.
    let third = submit(&stack.pipeline, &input, options()).await.unwrap();
    assert!(third.already_submitted);
    assert_eq!(topic_size(&bootstrap, &jobs_topic), LINES);
    stack.stop().await.unwrap();
}
