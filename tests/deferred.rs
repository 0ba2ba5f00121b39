//! Deferred routing end to end: jobs that may wait are handed off to the
//! deferred topic, gathered into provider batches on the simulator's batch
//! APIs, polled, and collected into results at the batch price, each request
//! sent once; lines the provider fails or expires are handed on and complete;
//! a canceled batch's provider batches are canceled; and a worker killed while
//! provider batches are open (or right after the provider accepted one it never
//! heard back about) resumes without sending any request twice; `status`
//! shows which of a batch's jobs wait on which provider batch.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/batch.rs"]
mod batch;
mod common;

use std::collections::HashMap;
use std::time::Duration;

use switchyard_batch::SubmitOptions;
use switchyard_codec::Codec;
use switchyard_core::deferred::ProviderBatchState;
use switchyard_core::job::{ChatRequest, Job};
use switchyard_core::result::{JobResult, JobStatus, RunMode};
use switchyard_core::vocab::JobMode;
use switchyard_embedded::{Stack, StackOptions};
use switchyard_sim::{BatchBehaviour, SimConfig};

use common::*;

/// `[deferred]` settings that make a test's batches quick: gather for a
/// second, poll every 200 ms, and cut provider batches at `max_requests`.
fn quick_deferral(max_requests: usize) -> Vec<(String, String)> {
    [
        ("SWITCHYARD__DEFERRED__MAX_WAIT", "1s".to_owned()),
        ("SWITCHYARD__DEFERRED__POLL_INTERVAL", "200ms".to_owned()),
        ("SWITCHYARD__DEFERRED__MAX_POLL_BACKOFF", "1s".to_owned()),
        ("SWITCHYARD__DEFERRED__SUBMIT_TIMEOUT", "2s".to_owned()),
        (
            "SWITCHYARD__DEFERRED__MAX_REQUESTS",
            max_requests.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// `n` jobs that may wait, each with a prompt of its own (so that the
/// simulator can tell a repeated request from a new one).
fn deferred_jobs(prefix: &str, n: usize, batch_id: Option<&str>) -> Vec<Job> {
    (0..n)
        .map(|i| {
            let (project, workload) = PROJECTS[i % PROJECTS.len()];
            let text = format!(
                "Summarise review {prefix}-{i} in one sentence: the parcel came late but intact."
            );
            let mut job = Job::new(
                format!("{prefix}-{i}"),
                project,
                ChatRequest::from_user(&text),
            );
            job.workload = Some(workload.to_owned());
            job.mode = Some(JobMode::Deferred);
            job.batch_id = batch_id.map(str::to_owned);
            job
        })
        .collect()
}

async fn stack(sim: BatchBehaviour, env: Vec<(String, String)>) -> Stack {
    let pipeline = switchyard_loader::load_pipeline(&demo_config(), &env).unwrap();
    let mut sim_config = SimConfig::from_catalog(&pipeline.catalog);
    sim_config.batch = sim;
    let options = StackOptions {
        partitions: 4,
        time_scale: 1.0,
        sim: Some(sim_config),
        env,
        ..StackOptions::default()
    };
    Stack::start(&demo_config(), options).await.unwrap()
}

async fn results_of(
    stack: &Stack,
    ids: &[String],
    timeout: Duration,
) -> HashMap<String, Vec<JobResult>> {
    let topics = &stack.pipeline.config.kafka.topics;
    let consumer = results_consumer(stack.broker.bootstrap(), &topics.results.name);
    collect_results(&consumer, &Codec::for_topic(&topics.results), ids, timeout).await
}

/// A result served by a provider batch, priced at its model's batch price.
fn assert_deferred_at_batch_price(stack: &Stack, r: &JobResult) {
    assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
    assert_eq!(r.mode, RunMode::Deferred, "{}: {:?}", r.job_id, r.routing);
    let model = stack
        .pipeline
        .catalog
        .get(r.model.as_deref().unwrap())
        .unwrap();
    let batch = model.cost_in(RunMode::Deferred, &r.usage);
    let live = model.cost_in(RunMode::Live, &r.usage);
    assert!(
        (r.cost_usd - batch).abs() < 1e-9,
        "{}: {} vs {batch}",
        r.job_id,
        r.cost_usd
    );
    assert!(
        r.cost_usd < live,
        "{}: batch {} not below live {live}",
        r.job_id,
        r.cost_usd
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_deferred_jobs_are_batched_and_collected_once_at_the_batch_price() {
    let sim = BatchBehaviour {
        processing_time: Duration::from_secs(2),
        ..BatchBehaviour::default()
    };
    let stack = stack(sim, quick_deferral(2_000)).await;
    let jobs = deferred_jobs("many", 5_000, None);
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    produce_jobs(
        stack.broker.bootstrap(),
        &stack.pipeline.config.kafka.topics.jobs,
        &jobs,
    )
    .await;
    let got = results_of(&stack, &ids, Duration::from_secs(240)).await;
    for id in &ids {
        let copies = &got[id];
        assert_eq!(copies.len(), 1, "{id} has {} results", copies.len());
        assert_deferred_at_batch_price(&stack, &copies[0]);
    }
    let stats = stack.sim.stats();
    assert_eq!(stats.batch.requests, 5_000, "{stats:?}");
    assert_eq!(stats.batch.answered, 5_000, "{stats:?}");
    assert!(
        stats.batch.batches >= 3,
        "5,000 jobs at 2,000 per batch: {stats:?}"
    );
    assert_eq!(
        stats.repeated_prompts, 0,
        "a request reached the provider twice: {stats:?}"
    );
    assert_eq!(stack.engine.metrics.snapshot().deferred, 5_000);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errored_and_expired_lines_are_handed_on_and_complete() {
    let sim = BatchBehaviour {
        processing_time: Duration::from_secs(1),
        line_error_rate: 0.2,
        line_expired_rate: 0.2,
        ..BatchBehaviour::default()
    };
    let stack = stack(sim, quick_deferral(1_000)).await;
    let jobs = deferred_jobs("faulty", 300, None);
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    produce_jobs(
        stack.broker.bootstrap(),
        &stack.pipeline.config.kafka.topics.jobs,
        &jobs,
    )
    .await;
    let got = results_of(&stack, &ids, Duration::from_secs(180)).await;
    let mut failed_lines = 0u64;
    for id in &ids {
        let r = got[id].last().unwrap();
        assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
        // Every line a provider batch failed stays in the job's attempts.
        let (answered, failed) = r.attempts.split_last().unwrap();
        assert!(answered.error.is_none(), "{r:?}");
        assert!(failed.iter().all(|a| a.error.is_some()), "{r:?}");
        failed_lines += failed.len() as u64;
    }
    let stats = stack.sim.stats();
    assert!(
        stats.batch.errored > 0 && stats.batch.expired > 0,
        "{stats:?}"
    );
    assert_eq!(
        failed_lines,
        stats.batch.errored + stats.batch.expired,
        "{stats:?}"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_which_jobs_wait_on_which_provider_batch() {
    // Provider batches that stay open: the status sees them submitted.
    let sim = BatchBehaviour {
        processing_time: Duration::from_secs(600),
        ..BatchBehaviour::default()
    };
    let stack = stack(sim, quick_deferral(25)).await;
    let dir = tempfile::tempdir().unwrap();
    let input = batch::write_file(&dir.path().join("jobs.jsonl"), 40, |i| {
        serde_json::json!({
            "job_id": format!("status-{i}"),
            "project": batch::PROJECT,
            "request": {"messages": [{"role": "user", "content": format!(
                "Summarise review status-{i} in one sentence: the parcel came late but intact."
            )}]},
        })
    });
    let options = SubmitOptions {
        mode: Some(JobMode::Deferred),
        ..batch::options()
    };
    let report = batch::submit(&stack.pipeline, &input, options)
        .await
        .unwrap();
    let status = |kafka: switchyard_core::config::KafkaConfig| {
        let id = report.batch_id.clone();
        async move {
            tokio::task::spawn_blocking(move || switchyard_batch::status(&kafka, &id))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let kafka = stack.pipeline.config.kafka.clone();
    let mut last = None;
    for _ in 0..120 {
        let s = status(kafka.clone()).await;
        let submitted = s
            .deferred
            .provider_batches
            .iter()
            .filter(|b| b.state == ProviderBatchState::Submitted)
            .map(|b| b.jobs_waiting)
            .sum::<u64>();
        let done = submitted == 40;
        last = Some(s);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let s = last.unwrap();
    let d = &s.deferred;
    assert!(d.topic_exists);
    assert_eq!(d.waiting, 0, "{d:?}");
    // At most 25 requests a provider batch: at least two.
    assert!(d.provider_batches.len() >= 2, "{d:?}");
    for b in &d.provider_batches {
        assert_eq!(b.state, ProviderBatchState::Submitted, "{d:?}");
        assert!(
            b.provider_batch_id.is_some() && b.provider_status.is_some(),
            "{b:?}"
        );
        assert!(b.requests <= 25 && b.jobs_waiting == b.requests, "{b:?}");
    }
    assert_eq!(
        d.provider_batches
            .iter()
            .map(|b| b.jobs_waiting)
            .sum::<u64>(),
        40,
        "{d:?}"
    );
    let table = s.table();
    assert!(
        table.contains("deferred   0 waiting to be grouped, "),
        "{table}"
    );
    assert!(table.contains(" submitted ("), "{table}");
    assert!(table.contains("jobs wait on it"), "{table}");

    // A cluster without the deferred topic: said, and no error.
    let mut elsewhere = kafka.clone();
    elsewhere.topics.deferred = "switchyard.deferred-absent".into();
    let s = status(elsewhere).await;
    assert!(!s.deferred.topic_exists);
    assert!(
        s.table()
            .contains("deferred   none (topic `switchyard.deferred-absent` does not exist"),
        "{}",
        s.table()
    );
    stack.stop().await.unwrap();
}
