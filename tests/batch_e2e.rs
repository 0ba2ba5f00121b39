//! Batches end to end on the embedded broker with the real worker: ten thousand
//! OpenAI and Anthropic requests submitted, collected and checked line by line
//! against the input; resubmission produces nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/batch.rs"]
mod batch;
mod common;

use std::time::Duration;

use serde_json::Value;
use switchyard_batch::{BatchFormat, BatchState, CollectOptions};
use switchyard_embedded::{Stack, StackOptions};

use batch::*;
use common::{demo_config, topic_size};

const LINES: usize = 10_000;

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
    let errors = collected.errors_output.unwrap();
    assert_eq!(std::fs::read_to_string(errors).unwrap(), "");

    let lines = read_jsonl(&out);
    assert_in_input_order(&lines, LINES);
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
        let usage = &body["usage"];
        let (p, c) = (
            usage["prompt_tokens"].as_u64().unwrap(),
            usage["completion_tokens"].as_u64().unwrap(),
        );
        assert!(p > 0 && c > 0, "line {}: {usage}", i + 1);
        assert_eq!(usage["total_tokens"].as_u64().unwrap(), p + c);
    }
    // Where the request names a catalog model the job is pinned to it; elsewhere routing chose.
    assert!(
        lines
            .iter()
            .step_by(6)
            .all(|l| l["response"]["body"]["model"] == "gpt-4o-mini")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["response"]["body"]["model"] != "gpt-4o-mini")
    );
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
    for (i, l) in lines.iter().enumerate() {
        let r = &l["result"];
        assert_eq!(r["type"], "succeeded", "line {}: {l}", i + 1);
        let m = &r["message"];
        assert_eq!(m["type"], "message");
        assert_eq!(m["role"], "assistant");
        assert_eq!(m["content"][0]["type"], "text");
        assert!(!m["content"][0]["text"].as_str().unwrap().is_empty());
        assert!(m["usage"]["input_tokens"].as_u64().unwrap() > 0);
        assert!(m["usage"]["output_tokens"].as_u64().unwrap() > 0);
    }
    // And a third submission after the batch is done still adds nothing.
    let third = submit(&stack.pipeline, &input, options()).await.unwrap();
    assert!(third.already_submitted);
    assert_eq!(topic_size(&bootstrap, &jobs_topic), LINES);
    stack.stop().await.unwrap();
}
