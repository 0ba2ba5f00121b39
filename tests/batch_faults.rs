//! Batches when things go wrong: a worker process killed mid-batch (every
//! custom_id still comes back exactly once, though the results topic holds
//! redone copies), a file with broken lines (refused with line numbers, or
//! submitted without them under `skip_invalid`), and a cancel (unstarted jobs
//! come back `canceled`, written as Anthropic `canceled` results and OpenAI
//! error lines; what ran before it stays on the usage topic, with its cost; a
//! worker started after it runs none of the batch's jobs).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/batch.rs"]
mod batch;
mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use switchyard_batch::{BatchFormat, BatchState, CollectOptions, Error};
use switchyard_codec::Codec;
use switchyard_core::config::KafkaConfig;
use switchyard_core::result::JobResult;
use switchyard_core::usage::UsageEvent;
use switchyard_embedded::{Stack, StackOptions, spawn_worker};
use switchyard_kafka::{ScanFrom, scan_to_end};
use switchyard_sim::SimConfig;
use tokio_util::sync::CancellationToken;

use batch::*;
use common::{
    demo_config, eventually, path, signal, start_broker, start_worker, topic_size,
    write_process_config,
};

/// The usage events of `batch_id` on the usage topic now.
fn usage_events(kafka: &KafkaConfig, batch_id: &str) -> Vec<UsageEvent> {
    let codec = Codec::for_topic(&kafka.topics.usage);
    let mut events = Vec::new();
    scan_to_end(
        kafka,
        &kafka.topics.usage.name,
        ScanFrom::Beginning,
        &Default::default(),
        Duration::from_secs(30),
        |m| {
            let e: UsageEvent = codec.decode(m.payload).unwrap();
            if e.batch_id.as_deref() == Some(batch_id) {
                events.push(e);
            }
        },
    )
    .unwrap();
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_batch_still_yields_each_custom_id_once() {
    const LINES: usize = 2000;
    // The broker in a process of its own, so that a worker process can be
    // killed with SIGKILL while the cluster stays up.
    let (_broker, bootstrap) = start_broker(4);
    let catalog = switchyard_loader::load_catalog(&path("pipelines/models.toml")).unwrap();
    let mut sim_config = SimConfig::from_catalog(&catalog);
    sim_config.time_scale = 0.05;
    let sim = switchyard_sim::start(sim_config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_process_config(dir.path(), &format!("http://{}", sim.addr()));
    let mut pipeline = switchyard_loader::load_pipeline(&config, &[]).unwrap();
    pipeline.config.kafka.brokers = bootstrap.clone();
    let results_topic = pipeline.config.kafka.topics.results.name.clone();
    let input = write_file(&dir.path().join("requests.jsonl"), LINES, openai_line);
    let report = submit(&pipeline, &input, options()).await.unwrap();

    // The first worker never commits an offset (its commit timer is an hour) and
    // is killed without a chance to: every job it finished is delivered again.
    let first = start_worker(
        &config,
        &bootstrap,
        &[
            ("SWITCHYARD__WORKER__COMMIT_INTERVAL", "1h"),
            ("SWITCHYARD__WORKER__MAX_IN_FLIGHT", "32"),
        ],
    );
    let (b, t) = (bootstrap.clone(), results_topic.clone());
    assert!(
        eventually(Duration::from_secs(120), || topic_size(&b, &t) >= 100).await,
        "the first worker never got going"
    );
    signal(&first, "-KILL");
    drop(first);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before_kill = topic_size(&bootstrap, &results_topic);
    assert!(
        before_kill < LINES,
        "the first worker finished the batch before it was killed"
    );

    let mut second = start_worker(&config, &bootstrap, &[]);
    let out = dir.path().join("results.jsonl");
    let collected = collect(
        &pipeline,
        &report.batch_id,
        CollectOptions::new(&out),
        Duration::from_secs(600),
    )
    .await;
    assert_eq!(collected.counts.succeeded, LINES as u64);
    let lines = read_jsonl(&out);
    assert_in_input_order(&lines, LINES);
    assert!(lines.iter().all(|l| l["response"]["status_code"] == 200));

    // The second worker drains what it started (the first jobs of every
    // partition, which the first worker had done, came first) and stops; then
    // the topic holds every copy there will be.
    signal(&second, "-TERM");
    let status = tokio::task::spawn_blocking(move || second.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "worker exit status {status:?}");
    let copies = topic_size(&bootstrap, &results_topic) as u64;
    assert!(
        copies > LINES as u64,
        "no job was redone: {copies} results for {LINES} jobs ({before_kill} before the kill)"
    );
    // Collected again: each custom_id once, every extra copy counted as a duplicate.
    let out = dir.path().join("again.jsonl");
    let again = collect(
        &pipeline,
        &report.batch_id,
        CollectOptions::new(&out),
        Duration::from_secs(60),
    )
    .await;
    assert_in_input_order(&read_jsonl(&out), LINES);
    assert_eq!(again.duplicates, copies - LINES as u64);
    assert_eq!(again.counts.succeeded, LINES as u64);
    sim.shutdown().await.unwrap();
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
    let default_rejects = format!("{}.rejects.jsonl", input.display());
    for want in [
        "4 of 49 lines of",
        "line 3: invalid JSON",
        "line 7: body: missing field `messages`",
        "line 12: custom_id `ticket-5` is already used on line 5",
        "line 20: this line is in the anthropic format but the file is openai",
        "pass --skip-invalid to submit the 45 valid lines and write every invalid one",
        default_rejects.as_str(),
    ] {
        assert!(text.contains(want), "`{want}` not in:\n{text}");
    }
    assert!(!text.contains("more"), "all four are listed:\n{text}");
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
    // The registry and status know how many lines were refused.
    let (k, id) = (stack.pipeline.config.kafka.clone(), report.batch_id.clone());
    let status = tokio::task::spawn_blocking(move || switchyard_batch::status(&k, &id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((status.record.jobs, status.refused), (45, 4));
    assert!(status.table().contains("refused    4 lines at submit"));
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

    // Nothing billed is lost from analytics: every job that ran before the
    // cancel has its usage events on the usage topic, costing what its result
    // says; canceled jobs billed nothing.
    let out = dir.path().join("native.jsonl");
    collect(
        &stack.pipeline,
        &report.batch_id,
        CollectOptions {
            format: Some(BatchFormat::Native),
            ..CollectOptions::new(&out)
        },
        Duration::from_secs(60),
    )
    .await;
    let results: Vec<JobResult> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut billed: HashMap<String, (usize, f64)> = HashMap::new();
    for e in usage_events(&kafka, &report.batch_id) {
        assert!(e.cost_usd > 0.0, "{e:?}");
        let b = billed.entry(e.job_id).or_default();
        b.0 += 1;
        b.1 += e.cost_usd;
    }
    for (i, r) in results.iter().enumerate() {
        let job_id = format!("{}-{i}", report.batch_id);
        match r.status {
            switchyard_core::result::JobStatus::Succeeded => {
                let (events, cost) = billed
                    .get(&job_id)
                    .unwrap_or_else(|| panic!("no usage event for {job_id}, which ran"));
                assert_eq!(
                    *events,
                    r.attempts.iter().filter(|a| !a.usage.is_zero()).count()
                );
                assert!(
                    (cost - r.cost_usd).abs() < 1e-12,
                    "{job_id}: {cost} vs {}",
                    r.cost_usd
                );
            }
            _ => assert!(
                !billed.contains_key(&job_id),
                "{job_id} was canceled yet billed"
            ),
        }
    }
    assert_eq!(billed.len() as u64, c.succeeded);
    let total: f64 = billed.values().map(|(_, c)| c).sum();
    assert!(
        (total - status.cost_usd).abs() < 1e-9,
        "{total} vs {}",
        status.cost_usd
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_after_a_cancel_runs_none_of_the_batch() {
    const LINES: usize = 300;
    let stack = Stack::start(
        &demo_config(),
        StackOptions {
            partitions: 2,
            time_scale: 0.05,
            worker: false,
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    let kafka = stack.pipeline.config.kafka.clone();
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(&dir.path().join("requests.jsonl"), LINES, openai_line);
    let report = submit(&stack.pipeline, &input, options()).await.unwrap();
    let (k, id) = (kafka.clone(), report.batch_id.clone());
    tokio::task::spawn_blocking(move || switchyard_batch::cancel(&k, &id))
        .await
        .unwrap()
        .unwrap();

    // A worker that starts now reads the registry before it takes a job.
    let engine = Arc::new(stack.new_engine().unwrap());
    let stop = CancellationToken::new();
    let worker = spawn_worker(engine.clone(), &stack.pipeline.config, stop.clone());
    let out = dir.path().join("results.jsonl");
    let collected = collect(
        &stack.pipeline,
        &report.batch_id,
        CollectOptions::new(&out),
        Duration::from_secs(300),
    )
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(
        collected.counts.canceled, LINES as u64,
        "{:?}",
        collected.counts
    );
    assert_eq!(collected.cost_usd, 0.0);
    assert!(usage_events(&kafka, &report.batch_id).is_empty());
    let calls: u64 = stack.sim.stats().models.values().map(|m| m.requests).sum();
    assert_eq!(calls, 0, "a provider was called");
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
            mode: None,
            submitted_at: chrono::Utc::now(),
            canceled_at: (state == BatchState::Canceled).then(chrono::Utc::now),
            refused: 0,
            submitter: None,
            worst_case_usd: None,
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
        // The folded state is the cancel already; the newest record is made to agree.
        assert_eq!(
            registry::read(&kafka, raced).unwrap().unwrap().state,
            BatchState::Canceled
        );
        let state = registry::restore_final_state(&reader, &mut sender, &kafka, raced).unwrap();
        assert_eq!(state, Some(BatchState::Canceled));
        let history = reader.history(raced).unwrap();
        assert_eq!(history.len(), 4);
        assert_eq!(history.last().unwrap().1.state, BatchState::Canceled);
        // Without a cancel, nothing is published.
        let plain = "batch_000000000000000000000plain";
        for state in [BatchState::Submitting, BatchState::Submitted] {
            registry::publish(&kafka, &record(plain, state)).unwrap();
        }
        let before = reader.history(plain).unwrap().len();
        let state = registry::restore_final_state(&reader, &mut sender, &kafka, plain).unwrap();
        assert_eq!(state, Some(BatchState::Submitted));
        assert_eq!(reader.history(plain).unwrap().len(), before);
    })
    .await
    .unwrap();
    stack.stop().await.unwrap();
}
