//! At-least-once under failure: a worker that dies mid-run loses no job, and a
//! second worker redoes only what was unfinished. In-process (a worker task
//! dropped without draining; a drain that finishes its jobs in flight; one whose
//! grace period cuts them) and across processes (`kill -9` of a worker while the
//! broker, held by `switchyard broker`, stays up), plus SIGTERM drain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use switchyard_codec::Codec;
use switchyard_core::config::PipelineConfig;
use switchyard_core::result::JobStatus;
use switchyard_embedded::{Stack, StackOptions, spawn_worker};
use switchyard_sim::SimConfig;
use tokio_util::sync::CancellationToken;

use common::*;

/// The stack, 300 jobs on the topic, and a worker config that keeps few jobs in
/// flight and commits often, so that most of the topic is behind the commit
/// point and a little is in flight at any moment.
async fn stack_with_jobs(
    prefix: &str,
    drain_grace: Duration,
) -> (Stack, PipelineConfig, Vec<String>) {
    let options = StackOptions {
        partitions: 4,
        time_scale: 0.3,
        worker: false,
        ..StackOptions::default()
    };
    let stack = Stack::start(&demo_config(), options).await.unwrap();
    let mut config = stack.pipeline.config.clone();
    config.worker.max_in_flight = IN_FLIGHT;
    config.worker.commit_interval = Duration::from_millis(100);
    config.worker.drain_grace = drain_grace;
    let jobs = jobs(prefix, 300);
    produce_jobs(stack.broker.bootstrap(), &config.kafka.topics.jobs, &jobs).await;
    let ids = jobs.iter().map(|j| j.job_id.clone()).collect();
    (stack, config, ids)
}

/// Jobs a worker may hold at once in these tests.
const IN_FLIGHT: usize = 24;

/// Every job below its partition's commit point has a result: a commit never
/// passes an unfinished job.
fn assert_commits_cover_only_finished(bootstrap: &str, config: &PipelineConfig) -> i64 {
    let topics = &config.kafka.topics;
    let (left, committed) = uncommitted(bootstrap, &config.kafka.group_id, &topics.jobs.name);
    let results = result_counts(bootstrap, &topics.results);
    for (job_id, (partition, offset)) in positions_by_key(bootstrap, &topics.jobs.name) {
        if offset < committed[&partition] {
            assert!(
                results.contains_key(&job_id),
                "{job_id} at {partition}/{offset} is below the commit point {committed:?} without a result"
            );
        }
    }
    left
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dropped_mid_run_loses_no_job() {
    let (stack, config, ids) = stack_with_jobs("drop", Duration::from_secs(30)).await;
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = config.kafka.topics.clone();
    let group = config.kafka.group_id.clone();
    let consumer = results_consumer(&bootstrap, &topics.results.name);
    let codec = Codec::for_topic(&topics.results);

    let first = Arc::new(stack.new_engine().unwrap());
    let worker = spawn_worker(first.clone(), &config, CancellationToken::new());
    // Drop it once a good part of the topic is committed.
    assert!(
        eventually(Duration::from_secs(90), || uncommitted(
            &bootstrap,
            &group,
            &topics.jobs.name
        )
        .0 <= 200)
        .await,
        "the first worker never committed 100 jobs"
    );
    worker.abort();
    let _ = worker.await;
    let done_by_first = first.metrics.finished();
    assert!(
        done_by_first < 300,
        "the first worker finished everything before it was dropped"
    );
    let left = assert_commits_cover_only_finished(&bootstrap, &config);
    assert!(left > 0 && left <= 200, "{left} jobs left uncommitted");

    let second = Arc::new(stack.new_engine().unwrap());
    let stop = CancellationToken::new();
    let worker = spawn_worker(second.clone(), &config, stop.clone());
    let results = collect_results(&consumer, &codec, &ids, Duration::from_secs(180)).await;
    assert!(
        eventually(Duration::from_secs(30), || uncommitted(
            &bootstrap,
            &group,
            &topics.jobs.name
        )
        .0 == 0)
        .await
    );
    stop.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(results.len(), 300, "every job has a result");
    assert!(
        results
            .values()
            .all(|c| c.iter().any(|r| r.status == JobStatus::Succeeded))
    );
    // The second worker redid at most what was above the commit point: the
    // unfinished jobs and those finished since the last commit. Jobs finished
    // above the commit point before it are listed in the commit's metadata and
    // skipped, so it may redo fewer.
    assert!(second.metrics.finished() <= left as u64);
    assert!(second.metrics.finished() > 0);
    assert!(
        left as u64 <= 300 - done_by_first + IN_FLIGHT as u64 + done_by_first / 2,
        "{left} uncommitted after {done_by_first} finished"
    );
    stack.stop().await.unwrap();
}

/// Runs a worker until it has jobs in flight, asks it to stop, and returns
/// what its drain reported.
async fn drain_with_jobs_in_flight(
    stack: &Stack,
    config: &PipelineConfig,
) -> switchyard_worker::RunReport {
    let engine = Arc::new(stack.new_engine().unwrap());
    let stop = CancellationToken::new();
    let worker = spawn_worker(engine.clone(), config, stop.clone());
    assert!(
        eventually(Duration::from_secs(60), || engine.metrics.finished() >= 20
            && engine.metrics.in_flight() >= 10)
        .await,
        "no jobs in flight"
    );
    stop.cancel();
    worker.await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_finishes_the_jobs_in_flight_and_commits_them() {
    let (stack, config, _) = stack_with_jobs("drain", Duration::from_secs(60)).await;
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = config.kafka.topics.clone();
    let report = drain_with_jobs_in_flight(&stack, &config).await;
    assert_eq!(report.abandoned, 0, "every job in flight finished");
    assert!(
        report.received < 300,
        "the drain stopped taking jobs (took all {})",
        report.received
    );
    let results = result_counts(&bootstrap, &topics.results);
    assert_eq!(
        results.len() as u64,
        report.received,
        "one result per job taken"
    );
    assert!(results.values().all(|n| *n == 1));
    let left = assert_commits_cover_only_finished(&bootstrap, &config);
    assert_eq!(
        300 - left,
        report.received as i64,
        "everything taken is committed, nothing more"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_still_running_when_the_grace_period_ends_stay_uncommitted() {
    let (stack, config, ids) = stack_with_jobs("grace", Duration::from_millis(1)).await;
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = config.kafka.topics.clone();
    let report = drain_with_jobs_in_flight(&stack, &config).await;
    assert!(report.abandoned > 0, "nothing was cut by the grace period");
    let left = assert_commits_cover_only_finished(&bootstrap, &config);
    let results = result_counts(&bootstrap, &topics.results);
    assert!(
        left as usize >= 300 - results.len(),
        "every job without a result is above the commit point"
    );

    // The next worker finishes everything the first abandoned or never took.
    let consumer = results_consumer(&bootstrap, &topics.results.name);
    let codec = Codec::for_topic(&topics.results);
    let stop = CancellationToken::new();
    let worker = spawn_worker(Arc::new(stack.new_engine().unwrap()), &config, stop.clone());
    let all = collect_results(&consumer, &codec, &ids, Duration::from_secs(180)).await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(all.len(), 300);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_no_job_and_sigterm_drains_cleanly() {
    let (_broker, bootstrap) = start_broker(4);
    let catalog = switchyard_loader::load_catalog(&path("pipelines/models.toml")).unwrap();
    // Real catalog latencies (seconds per call), so that many jobs are in flight at the kill.
    let sim_config = SimConfig::from_catalog(&catalog);
    let sim = switchyard_sim::start(sim_config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_process_config(dir.path(), &format!("http://{}", sim.addr()));
    let pipeline = switchyard_loader::load_pipeline(&config, &[]).unwrap();
    let topics = pipeline.config.kafka.topics.clone();
    let consumer = results_consumer(&bootstrap, &topics.results.name);
    let codec = Codec::for_topic(&topics.results);
    let jobs = jobs("kill", 400);
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    produce_jobs(&bootstrap, &topics.jobs, &jobs).await;

    let first = start_worker(&config, &bootstrap, &[]);
    // Wait until the first worker has published some results, then kill it hard.
    let mut results = std::collections::HashMap::new();
    collect_into(
        &consumer,
        &codec,
        &ids[..1],
        Duration::from_secs(90),
        &mut results,
    )
    .await;
    signal(&first, "-KILL");
    drop(first);
    // Everything published before the kill, counted once the topic is read to its end.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let published_before_kill = topic_size(&bootstrap, &topics.results.name);
    assert!(
        published_before_kill < 400,
        "the first worker finished everything before the kill"
    );

    let mut second = start_worker(&config, &bootstrap, &[]);
    collect_into(
        &consumer,
        &codec,
        &ids,
        Duration::from_secs(240),
        &mut results,
    )
    .await;
    assert_eq!(results.len(), 400, "every job has a result after the kill");
    assert!(topic_size(&bootstrap, &topics.results.name) >= 400);
    assert!(
        results
            .values()
            .all(|c| c.iter().any(|r| r.status == JobStatus::Succeeded))
    );

    // SIGTERM: the second worker drains, commits and exits 0.
    signal(&second, "-TERM");
    let status = tokio::task::spawn_blocking(move || second.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "worker exit status {status:?}");
    let (committed, ends) = committed_and_end(
        &bootstrap,
        &pipeline.config.kafka.group_id,
        &topics.jobs.name,
    );
    assert_eq!(committed, ends, "nothing left uncommitted after the drain");
    sim.shutdown().await.unwrap();
}
