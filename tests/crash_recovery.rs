//! At-least-once under failure: a worker that dies mid-run loses no job, and a
//! second worker redoes only what was unfinished. In-process (a worker task
//! dropped without draining) and across processes (`kill -9` of a worker while
//! the broker, held by `switchyard broker`, stays up), plus SIGTERM drain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use switchyard_codec::Codec;
use switchyard_core::result::JobStatus;
use switchyard_embedded::{Stack, StackOptions, spawn_worker};
use switchyard_sim::SimConfig;
use tokio_util::sync::CancellationToken;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dropped_mid_run_loses_no_job() {
    let options = StackOptions {
        partitions: 4,
        time_scale: 0.3,
        worker: false,
        ..StackOptions::default()
    };
    let stack = Stack::start(&demo_config(), options).await.unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let consumer = results_consumer(&bootstrap, &topics.results.name);
    let codec = Codec::for_topic(&topics.results);
    let jobs = jobs("drop", 300);
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    produce_jobs(&bootstrap, &topics.jobs, &jobs).await;

    let first = Arc::new(stack.new_engine().unwrap());
    let worker = spawn_worker(
        first.clone(),
        &stack.pipeline.config,
        CancellationToken::new(),
    );
    assert!(
        eventually(Duration::from_secs(60), || first.metrics.finished() >= 60).await,
        "the first worker never got going"
    );
    worker.abort();
    let _ = worker.await;
    let done_by_first = first.metrics.finished();
    assert!(
        done_by_first < 300,
        "the first worker finished everything before it was dropped"
    );

    let second = Arc::new(stack.new_engine().unwrap());
    let stop = CancellationToken::new();
    let worker = spawn_worker(second.clone(), &stack.pipeline.config, stop.clone());
    let results = collect_results(&consumer, &codec, &ids, Duration::from_secs(180)).await;
    stop.cancel();
    worker.await.unwrap().unwrap();
    assert_eq!(results.len(), 300, "every job has a result");
    assert!(
        results
            .values()
            .all(|c| c.iter().any(|r| r.status == JobStatus::Succeeded))
    );
    // The second worker redid only unfinished work: at most what the first had not published.
    assert!(
        second.metrics.finished() <= 300 - done_by_first + 512,
        "second worker did {}",
        second.metrics.finished()
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_loses_no_job_and_sigterm_drains_cleanly() {
    let (_broker, bootstrap) = start_broker(4);
    let catalog = switchyard_core::catalog::Catalog::load(&path("pipelines/models.toml")).unwrap();
    // Real catalog latencies (seconds per call), so that many jobs are in flight at the kill.
    let sim_config = SimConfig::from_catalog(&catalog);
    let sim = switchyard_sim::start(sim_config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_process_config(dir.path(), &format!("http://{}", sim.addr()));
    let pipeline = switchyard_core::config::PipelineConfig::load(&config, &[]).unwrap();
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
