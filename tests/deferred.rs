//! Deferred routing end to end: jobs that may wait are handed off to the
//! deferred topic, gathered into provider batches on the simulator's batch
//! APIs, polled, and collected into results at the batch price, each request
//! sent once; lines the provider fails or expires, and the jobs of a batch
//! whose results cannot be read, are handed on and complete;
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

/// Produces `jobs` to the stack's jobs topic; their ids, in order.
async fn produce_to(stack: &Stack, jobs: &[Job]) -> Vec<String> {
    produce_jobs(
        stack.broker.bootstrap(),
        &stack.pipeline.config.kafka.topics.jobs,
        jobs,
    )
    .await;
    jobs.iter().map(|j| j.job_id.clone()).collect()
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
    let ids = produce_to(&stack, &jobs).await;
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
    let ids = produce_to(&stack, &jobs).await;
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
async fn jobs_of_a_batch_whose_results_cannot_be_read_are_handed_on_and_complete() {
    let sim = BatchBehaviour {
        processing_time: Duration::from_millis(500),
        results_unavailable: true,
        ..BatchBehaviour::default()
    };
    let stack = stack(sim, quick_deferral(1_000)).await;
    let jobs = deferred_jobs("unreadable", 40, None);
    let ids = produce_to(&stack, &jobs).await;
    let got = results_of(&stack, &ids, Duration::from_secs(180)).await;
    for id in &ids {
        let copies = &got[id];
        assert_eq!(copies.len(), 1, "{id} has {} results", copies.len());
        let r = &copies[0];
        assert_eq!(r.status, JobStatus::Succeeded, "{r:?}");
        // Every provider batch it waited on was read in vain; it ran live.
        assert_eq!(r.mode, RunMode::Live, "{r:?}");
        let (answered, unread) = r.attempts.split_last().unwrap();
        assert!(answered.error.is_none(), "{r:?}");
        assert!(!unread.is_empty(), "{r:?}");
        assert!(
            unread.iter().all(|a| a
                .error
                .as_deref()
                .is_some_and(|e| e.contains("results could not be read"))),
            "{r:?}"
        );
    }
    let stats = stack.sim.stats();
    assert!(stats.batch.batches >= 1, "{stats:?}");
    assert_eq!(stats.batch.answered, stats.batch.requests, "{stats:?}");
    stack.stop().await.unwrap();
}

/// A broker process, the simulator with `batch` behaviour in this process, and
/// a worker config for worker processes (which the test kills).
async fn process_stack(
    batch: BatchBehaviour,
) -> (
    Proc,
    String,
    switchyard_sim::SimHandle,
    tempfile::TempDir,
    std::path::PathBuf,
) {
    let (broker, bootstrap) = start_broker(4);
    let catalog = switchyard_loader::load_catalog(&path("pipelines/models.toml")).unwrap();
    let mut sim_config = SimConfig::from_catalog(&catalog);
    sim_config.batch = batch;
    let sim = switchyard_sim::start(sim_config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_process_config(dir.path(), &format!("http://{}", sim.addr()));
    (broker, bootstrap, sim, dir, config)
}

fn start_deferring_worker(config: &std::path::Path, bootstrap: &str, max_requests: usize) -> Proc {
    let env = quick_deferral(max_requests);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    start_worker(config, bootstrap, &env)
}

/// Kills the worker with SIGKILL once `ready` says so (checked every 20 ms).
async fn kill_when(
    worker: Proc,
    sim: &switchyard_sim::SimHandle,
    ready: impl Fn(&switchyard_sim::SimStats) -> bool,
) {
    assert!(
        eventually(Duration::from_secs(60), || ready(&sim.stats())).await,
        "never ready to kill: {:?}",
        sim.stats()
    );
    signal(&worker, "-KILL");
    drop(worker);
}

async fn produce_and_ids(
    bootstrap: &str,
    config: &std::path::Path,
    jobs: &[Job],
) -> (Vec<String>, switchyard_core::config::PipelineConfig) {
    let pipeline = switchyard_loader::load_pipeline(config, &[]).unwrap();
    produce_jobs(bootstrap, &pipeline.config.kafka.topics.jobs, jobs).await;
    (
        jobs.iter().map(|j| j.job_id.clone()).collect(),
        pipeline.config,
    )
}

async fn results_at(
    bootstrap: &str,
    config: &switchyard_core::config::PipelineConfig,
    ids: &[String],
) -> HashMap<String, Vec<JobResult>> {
    let topics = &config.kafka.topics;
    let consumer = results_consumer(bootstrap, &topics.results.name);
    collect_results(
        &consumer,
        &Codec::for_topic(&topics.results),
        ids,
        Duration::from_secs(180),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_while_provider_batches_are_open_resumes_without_sending_twice() {
    let batch = BatchBehaviour {
        processing_time: Duration::from_secs(8),
        ..BatchBehaviour::default()
    };
    let (_broker, bootstrap, sim, _dir, config) = process_stack(batch).await;
    let jobs = deferred_jobs("open", 200, None);
    let (ids, pipeline) = produce_and_ids(&bootstrap, &config, &jobs).await;
    let first = start_deferring_worker(&config, &bootstrap, 50);
    // Every provider batch created and none ended: kill.
    kill_when(first, &sim, |s| s.batch.requests >= 200).await;
    assert_eq!(
        sim.stats().batch.answered,
        0,
        "the batches ended before the kill"
    );
    let _second = start_deferring_worker(&config, &bootstrap, 50);
    let got = results_at(&bootstrap, &pipeline, &ids).await;
    for id in &ids {
        let r = got[id].last().unwrap();
        assert_eq!(
            (r.status, r.mode),
            (JobStatus::Succeeded, RunMode::Deferred),
            "{r:?}"
        );
    }
    let stats = sim.stats();
    assert_eq!(stats.batch.requests, 200, "{stats:?}");
    assert_eq!(
        stats.repeated_prompts, 0,
        "a request reached the provider twice: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_right_after_the_provider_accepted_a_batch_adopts_it() {
    // The provider records the batch at once but answers the create 3 s later:
    // a worker killed meanwhile never heard that its batch exists.
    let batch = BatchBehaviour {
        processing_time: Duration::from_secs(2),
        create_reply_delay: Duration::from_secs(3),
        ..BatchBehaviour::default()
    };
    let (_broker, bootstrap, sim, _dir, config) = process_stack(batch).await;
    let jobs = deferred_jobs("accepted", 60, None);
    let (ids, pipeline) = produce_and_ids(&bootstrap, &config, &jobs).await;
    let first = start_deferring_worker(&config, &bootstrap, 100);
    kill_when(first, &sim, |s| {
        s.batch.batches >= 1 && s.batch.creates_answered == 0
    })
    .await;
    let _second = start_deferring_worker(&config, &bootstrap, 100);
    let got = results_at(&bootstrap, &pipeline, &ids).await;
    for id in &ids {
        let r = got[id].last().unwrap();
        assert_eq!(
            (r.status, r.mode),
            (JobStatus::Succeeded, RunMode::Deferred),
            "{r:?}"
        );
    }
    let stats = sim.stats();
    // Each request reached the provider once: the batches the first worker
    // never heard about were found and adopted, not created again.
    assert_eq!(
        stats.batch.requests, 60,
        "a batch was created again: {stats:?}"
    );
    assert!(
        stats.batch.lists >= 1,
        "the second worker never looked for the batch: {stats:?}"
    );
    assert_eq!(stats.repeated_prompts, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canceling_a_batch_cancels_its_open_provider_batches() {
    use batch::{anthropic_line, options, submit, write_file};
    let sim = BatchBehaviour {
        processing_time: Duration::from_secs(600),
        ..BatchBehaviour::default()
    };
    let stack = stack(sim, quick_deferral(1_000)).await;
    let dir = tempfile::tempdir().unwrap();
    let input = write_file(&dir.path().join("requests.jsonl"), 40, anthropic_line);
    let mut submit_options = options();
    submit_options.mode = Some(JobMode::Deferred);
    let report = submit(&stack.pipeline, &input, submit_options)
        .await
        .unwrap();
    // Lines whose models have no batch API run live; the others wait in
    // provider batches.
    let accounted = |s: &switchyard_sim::SimStats| {
        s.batch.requests + s.models.values().map(|m| m.requests).sum::<u64>() >= 40
    };
    assert!(
        eventually(Duration::from_secs(60), || accounted(&stack.sim.stats())).await,
        "the provider batches were never created: {:?}",
        stack.sim.stats()
    );
    let waiting = stack.sim.stats().batch.requests;
    assert!(waiting > 0, "no job was deferred: {:?}", stack.sim.stats());
    let (kafka, id) = (stack.pipeline.config.kafka.clone(), report.batch_id.clone());
    tokio::task::spawn_blocking(move || switchyard_batch::cancel(&kafka, &id))
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<String> = (0..40)
        .map(|i| format!("{}-{i}", report.batch_id))
        .collect();
    let topics = &stack.pipeline.config.kafka.topics;
    let consumer = results_consumer(stack.broker.bootstrap(), &topics.results.name);
    let codec = Codec::for_topic(&topics.results);
    let mut got: HashMap<String, Vec<JobResult>> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while got.len() < 40 && tokio::time::Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            let r: JobResult = codec
                .decode(rdkafka::Message::payload(&m).unwrap())
                .unwrap();
            if r.batch_id.as_deref() == Some(report.batch_id.as_str()) {
                got.entry(r.job_id.clone()).or_default().push(r);
            }
        }
    }
    assert_eq!(
        got.len(),
        40,
        "results of {} of 40 jobs (ids like {:?})",
        got.len(),
        ids.first()
    );
    let last: Vec<&JobResult> = got.values().map(|c| c.last().unwrap()).collect();
    let canceled = last
        .iter()
        .filter(|r| r.status == JobStatus::Canceled)
        .count() as u64;
    assert_eq!(
        canceled, waiting,
        "every job waiting in a provider batch ends canceled"
    );
    for r in last.iter().filter(|r| r.status != JobStatus::Canceled) {
        assert_eq!(
            (r.status, r.mode),
            (JobStatus::Succeeded, RunMode::Live),
            "{r:?}"
        );
    }
    let stats = stack.sim.stats();
    assert!(
        stats.batch.cancels >= 1,
        "no cancel reached the provider: {stats:?}"
    );
    assert_eq!(stats.batch.canceled, waiting, "{stats:?}");
    assert_eq!(stats.batch.answered, 0, "{stats:?}");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_defers_patient_jobs_and_runs_tight_ones_live() {
    let sim = BatchBehaviour {
        processing_time: Duration::from_secs(1),
        ..BatchBehaviour::default()
    };
    let stack = stack(sim, quick_deferral(1_000)).await;
    let now = chrono::Utc::now();
    let mut jobs = deferred_jobs("auto", 40, None);
    for (i, job) in jobs.iter_mut().enumerate() {
        job.mode = Some(JobMode::Auto);
        // Even jobs may take two days; odd ones are due within the hour,
        // less than a provider's 24 h window.
        let wait = if i % 2 == 0 {
            chrono::TimeDelta::days(2)
        } else {
            chrono::TimeDelta::hours(1)
        };
        job.deadline = Some(now + wait);
    }
    let ids = produce_to(&stack, &jobs).await;
    let got = results_of(&stack, &ids, Duration::from_secs(120)).await;
    for (i, id) in ids.iter().enumerate() {
        let r = got[id].last().unwrap();
        let reason = &r.routing.as_ref().unwrap().reason;
        if i % 2 == 0 {
            assert_deferred_at_batch_price(&stack, r);
            assert!(reason.contains("deferred (auto)"), "{reason}");
        } else {
            assert_eq!(
                (r.status, r.mode),
                (JobStatus::Succeeded, RunMode::Live),
                "{r:?}"
            );
            assert!(reason.contains("live (auto)"), "{reason}");
        }
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_handed_to_a_slow_live_call_is_called_once() {
    // Every batch line fails, so each job ends up live, where every answer
    // takes 3 s: several of the gatherer's steps pass during each call.
    let pipeline = switchyard_loader::load_pipeline(&demo_config(), &[]).unwrap();
    let mut sim_config = SimConfig::from_catalog(&pipeline.catalog);
    sim_config.batch = BatchBehaviour {
        processing_time: Duration::from_secs(1),
        line_error_rate: 1.0,
        ..BatchBehaviour::default()
    };
    for behaviour in sim_config.models.values_mut() {
        behaviour.ttft = Duration::from_secs(3);
    }
    let env = quick_deferral(1_000);
    let options = StackOptions {
        partitions: 2,
        sim: Some(sim_config),
        env,
        ..StackOptions::default()
    };
    let stack = Stack::start(&demo_config(), options).await.unwrap();
    let jobs = deferred_jobs("slow", 20, None);
    let ids = produce_to(&stack, &jobs).await;
    let got = results_of(&stack, &ids, Duration::from_secs(120)).await;
    // Let any second live call a bug would make reach the simulator.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for id in &ids {
        let r = got[id].last().unwrap();
        assert_eq!(
            (r.status, r.mode),
            (JobStatus::Succeeded, RunMode::Live),
            "{r:?}"
        );
        assert!(
            r.attempts[0].error.is_some(),
            "the batch line failed first: {r:?}"
        );
    }
    let stats = stack.sim.stats();
    let live_calls: u64 = stats.models.values().map(|m| m.requests).sum();
    let failed_lines: usize = ids
        .iter()
        .map(|id| got[id].last().unwrap().attempts.len() - 1)
        .sum();
    assert_eq!(failed_lines as u64, stats.batch.errored, "{stats:?}");
    assert_eq!(
        live_calls, 20,
        "a job was called live more than once: {stats:?}"
    );
    stack.stop().await.unwrap();
}
