//! Batches when things go wrong: a worker dropped mid-batch (every custom_id
//! still comes back exactly once), a file with broken lines (refused with line
//! numbers, or submitted without them under `skip_invalid`), and a cancel
//! (unstarted jobs come back `canceled`, written as Anthropic `canceled` results
//! and OpenAI error lines).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/batch.rs"]
mod batch;
mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchyard_batch::{BatchFormat, BatchState, CollectOptions, Error};
use switchyard_embedded::{Stack, StackOptions, spawn_worker};
use tokio_util::sync::CancellationToken;

use batch::*;
use common::{demo_config, eventually, path, topic_size};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dropped_mid_batch_still_yields_each_custom_id_once() {
    const LINES: usize = 3000;
    let stack = Stack::start(
        &demo_config(),
        StackOptions {
            partitions: 4,
            time_scale: 0.05,
            worker: false,
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let results_topic = stack.pipeline.config.kafka.topics.results.name.clone();
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(&dir.path().join("requests.jsonl"), LINES, openai_line);
    let report = submit(&stack.pipeline, &input, options()).await.unwrap();

    let first = Arc::new(stack.new_engine().unwrap());
    let worker = spawn_worker(
        first.clone(),
        &stack.pipeline.config,
        CancellationToken::new(),
    );
    assert!(
        eventually(Duration::from_secs(120), || first.metrics.finished() >= 500).await,
        "the first worker never got going"
    );
    worker.abort();
    let _ = worker.await;
    assert!(
        first.metrics.finished() < LINES as u64,
        "the first worker finished the batch before it was dropped"
    );

    let second = Arc::new(stack.new_engine().unwrap());
    let stop = CancellationToken::new();
    let worker = spawn_worker(second.clone(), &stack.pipeline.config, stop.clone());
    let out = dir.path().join("results.jsonl");
    let collected = collect(
        &stack.pipeline,
        &report.batch_id,
        CollectOptions::new(&out),
        Duration::from_secs(600),
    )
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();

    assert_eq!(collected.counts.succeeded, LINES as u64);
    let lines = read_jsonl(&out);
    assert_in_input_order(&lines, LINES);
    assert!(lines.iter().all(|l| l["response"]["status_code"] == 200));
    // Every copy on the topic was either kept or counted as a duplicate.
    let copies = topic_size(&bootstrap, &results_topic) as u64;
    assert!(copies >= LINES as u64);
    assert_eq!(collected.duplicates, copies - LINES as u64);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_lines_are_refused_with_their_numbers_unless_skipped() {
    let stack = Stack::start(
        &demo_config(),
        StackOptions {
            partitions: 2,
            worker: false,
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let jobs_topic = stack.pipeline.config.kafka.topics.jobs.name.clone();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("broken.jsonl");
    std::fs::copy(path("tests/data/batch/broken_openai.jsonl"), &input).unwrap();

    let err = submit(&stack.pipeline, &input, options())
        .await
        .unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    let Error::InvalidLines {
        lines,
        invalid,
        examples,
        ..
    } = &err
    else {
        panic!("expected invalid lines, got {err}");
    };
    assert_eq!((*lines, *invalid), (49, 4));
    let numbers: Vec<u64> = examples.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [3, 7, 12, 20]);
    let text = err.to_string();
    for want in [
        "line 3: invalid JSON",
        "line 7: body: missing field `messages`",
        "line 12: custom_id `ticket-5` is already used on line 5",
        "line 20: this line is in the anthropic format but the file is openai",
    ] {
        assert!(text.contains(want), "`{want}` not in:\n{text}");
    }
    assert_eq!(
        topic_size(&bootstrap, &jobs_topic),
        0,
        "nothing is submitted"
    );

    let rejects = dir.path().join("rejects.jsonl");
    let report = submit(
        &stack.pipeline,
        &input,
        switchyard_batch::SubmitOptions {
            skip_invalid: true,
            rejects_path: Some(rejects.clone()),
            ..options()
        },
    )
    .await
    .unwrap();
    assert_eq!((report.jobs, report.invalid), (45, 4));
    assert_eq!(report.rejects_file.as_deref(), Some(rejects.as_path()));
    assert_eq!(topic_size(&bootstrap, &jobs_topic), 45);
    let rejected = read_jsonl(&rejects);
    let numbers: Vec<u64> = rejected
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [3, 7, 12, 20]);
    assert_eq!(rejected[2]["custom_id"], "ticket-5");
    assert!(
        rejected
            .iter()
            .all(|r| r["reason"].as_str().is_some_and(|s| !s.is_empty()))
    );
    assert!(
        rejected[0]["input"]
            .as_str()
            .unwrap()
            .starts_with("{\"custom_id\": \"ticket-3\"")
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_ends_unstarted_jobs_as_canceled_in_both_output_formats() {
    const LINES: usize = 400;
    let stack = Stack::start(
        &demo_config(),
        StackOptions {
            partitions: 2,
            time_scale: 0.3,
            env: vec![("SWITCHYARD__WORKER__MAX_IN_FLIGHT".into(), "8".into())],
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    let kafka = stack.pipeline.config.kafka.clone();
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(&dir.path().join("requests.jsonl"), LINES, anthropic_line);
    let report = submit(&stack.pipeline, &input, options()).await.unwrap();
    // Cancel once some jobs have started, so both kinds of outcome occur.
    let engine = stack.engine.clone();
    assert!(eventually(Duration::from_secs(60), || engine.metrics.finished() >= 20).await);
    let (k, id) = (kafka.clone(), report.batch_id.clone());
    let canceled = tokio::task::spawn_blocking(move || switchyard_batch::cancel(&k, &id))
        .await
        .unwrap()
        .unwrap();
    assert!(!canceled.already_canceled);
    assert_eq!(canceled.record.state, BatchState::Canceled);

    let out = dir.path().join("results.jsonl");
    let anthropic = collect(
        &stack.pipeline,
        &report.batch_id,
        CollectOptions::new(&out),
        Duration::from_secs(300),
    )
    .await;
    let c = anthropic.counts;
    assert!(c.canceled > 0, "no job was canceled: {c:?}");
    assert!(c.succeeded > 0, "no job had started: {c:?}");
    assert_eq!(c.succeeded + c.canceled, LINES as u64, "{c:?}");
    let lines = read_jsonl(&out);
    assert_in_input_order(&lines, LINES);
    let kinds: Vec<&str> = lines
        .iter()
        .map(|l| l["result"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "canceled").count() as u64,
        c.canceled
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "succeeded").count() as u64,
        c.succeeded
    );

    // The same batch written as OpenAI output: canceled requests are error lines.
    let out = dir.path().join("openai.jsonl");
    let openai = collect(
        &stack.pipeline,
        &report.batch_id,
        CollectOptions {
            format: Some(BatchFormat::Openai),
            ..CollectOptions::new(&out)
        },
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        (openai.output_lines, openai.error_lines),
        (c.succeeded, c.canceled)
    );
    let errors = read_jsonl(openai.errors_output.as_ref().unwrap());
    assert!(
        errors
            .iter()
            .all(|l| l["response"] == Value::Null && l["error"]["code"] == "batch_cancelled")
    );
    let mut ids: Vec<String> = read_jsonl(&out)
        .iter()
        .chain(errors.iter())
        .map(|l| l["custom_id"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), LINES, "every custom_id exactly once");
    ids.sort();
    assert_eq!(ids, (0..LINES).map(custom_id).collect::<Vec<_>>());

    // Status agrees, and nothing is left queued.
    let (k, id) = (kafka.clone(), report.batch_id.clone());
    let status = tokio::task::spawn_blocking(move || switchyard_batch::status(&k, &id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.record.state, BatchState::Canceled);
    assert_eq!(status.counts, c);
    assert!(status.cost_usd > 0.0);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_that_races_the_end_of_a_submit_stands() {
    use switchyard_batch::registry::{self, RegistryReader};
    use switchyard_batch::sender::Sender;
    use switchyard_core::batch::BatchRecord;

    let stack = Stack::start(
        &demo_config(),
        StackOptions {
            worker: false,
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    let kafka = stack.pipeline.config.kafka.clone();
    tokio::task::spawn_blocking(move || {
        let record = |id: &str, state| BatchRecord {
            batch_id: id.into(),
            project: "acme/retail/support/ticket-triage".into(),
            format: BatchFormat::Openai,
            state,
            jobs: 10,
            source_sha256: "0".repeat(64),
            file_name: "requests.jsonl".into(),
            strategy: None,
            workload: None,
            submitted_at: chrono::Utc::now(),
            canceled_at: (state == BatchState::Canceled).then(chrono::Utc::now),
        };
        let reader = RegistryReader::new(&kafka).unwrap();
        let mut sender = Sender::new(&kafka).unwrap();
        // The log as a cancel landing between submit's last check and its
        // `submitted` record leaves it.
        let raced = "batch_00000000000000000000raced";
        for state in [
            BatchState::Submitting,
            BatchState::Canceled,
            BatchState::Submitted,
        ] {
            registry::publish(&kafka, &record(raced, state)).unwrap();
        }
        let state = registry::keep_cancel(&reader, &mut sender, &kafka, raced).unwrap();
        assert_eq!(state, Some(BatchState::Canceled));
        assert_eq!(
            registry::read(&kafka, raced).unwrap().unwrap().state,
            BatchState::Canceled
        );
        // Without a cancel, nothing is published.
        let plain = "batch_000000000000000000000plain";
        for state in [BatchState::Submitting, BatchState::Submitted] {
            registry::publish(&kafka, &record(plain, state)).unwrap();
        }
        let before = reader.history(plain).unwrap().len();
        let state = registry::keep_cancel(&reader, &mut sender, &kafka, plain).unwrap();
        assert_eq!(state, Some(BatchState::Submitted));
        assert_eq!(reader.history(plain).unwrap().len(), before);
    })
    .await
    .unwrap();
    stack.stop().await.unwrap();
}
