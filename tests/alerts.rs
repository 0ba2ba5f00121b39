//! Alerts end to end: two workers watch a budget, a quota and their dead
//! letters, publish each crossing to the alerts topic, and the usage sink
//! POSTs each crossing to a local webhook once, though both workers see it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_codec::Codec;
use switchyard_core::result::JobStatus;
use switchyard_embedded::{Stack, StackOptions, spawn_worker};
use tokio_util::sync::CancellationToken;

use common::webhook::Receiver;
use common::*;

const NODE: &str = "acme/bu/team/capped";

/// A $0.0004 budget and 6 jobs a day on one project: six answers of 100
/// tokens from gpt-5-nano spend about 60% of it, the seventh job is over quota.
fn pipeline(dir: &std::path::Path) -> std::path::PathBuf {
    let org = format!(
        "[org]\nname = \"acme\"\n[[node]]\npath = \"acme/bu\"\n[[node]]\npath = \"acme/bu/team\"\n[[node]]\npath = \"{NODE}\"\nbudget_usd_per_month = 0.0004\non_budget_exhausted = \"reject\"\njobs_per_day = 6\non_quota_exhausted = \"reject\"\n"
    );
    std::fs::write(dir.join("org.toml"), org).unwrap();
    let text = std::fs::read_to_string(demo_config()).unwrap().replace(
        "catalog = \"models.toml\"",
        &format!("catalog = \"{}\"", path("pipelines/models.toml").display()),
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn worst_case_sim() -> switchyard_sim::SimConfig {
    switchyard_sim::SimConfig {
        default: switchyard_sim::ModelBehaviour {
            ttft: Duration::from_millis(20),
            tokens_per_second: 1e9,
            output_tokens: switchyard_sim::OutputTokens::Max,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn pinned_jobs(n: usize) -> Vec<switchyard_core::job::Job> {
    (0..n)
        .map(|i| switchyard_core::job::Job {
            model: Some("gpt-5-nano".into()),
            ..switchyard_core::job::Job::new(
                format!("alerted-{i:03}"),
                NODE,
                switchyard_core::job::ChatRequest {
                    max_tokens: Some(100),
                    ..switchyard_core::job::ChatRequest::from_user(format!("Hello {i}."))
                },
            )
        })
        .collect()
}

/// (kind, state, node, threshold) of what the webhook accepted, with counts.
fn delivered(receiver: &Receiver) -> BTreeMap<(String, String, String, String), usize> {
    let mut seen = BTreeMap::new();
    for v in receiver.accepted() {
        let key = (
            v["kind"].as_str().unwrap().to_owned(),
            v["state"].as_str().unwrap().to_owned(),
            v["node"].as_str().unwrap().to_owned(),
            v["threshold"].to_string(),
        );
        *seen.entry(key).or_insert(0) += 1;
    }
    seen
}

fn has(seen: &BTreeMap<(String, String, String, String), usize>, kind: &str, node: &str) -> bool {
    seen.keys()
        .any(|(k, s, n, _)| k == kind && s == "firing" && n == node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_alerts_reach_the_webhook_once_per_crossing() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path());
    let receiver = Receiver::start(0).await;
    let parquet = dir.path().join("parquet");
    let env = vec![
        (
            "SWITCHYARD__ALERTS__WEBHOOK_URL".to_owned(),
            format!("\"{}\"", receiver.url),
        ),
        (
            "SWITCHYARD__ALERTS__WEBHOOK_BASE_BACKOFF".to_owned(),
            "\"20ms\"".to_owned(),
        ),
        (
            "SWITCHYARD__ANALYTICS__PARQUET_DIR".to_owned(),
            format!("\"{}\"", parquet.display()),
        ),
    ];
    let stack = Stack::start(
        &config,
        StackOptions {
            partitions: 2,
            worker: false,
            sink: true,
            sim: Some(worst_case_sim()),
            env,
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let consumer = results_consumer(&bootstrap, &topics.results.name);
    let codec = Codec::for_topic(&topics.results);
    let stop = CancellationToken::new();
    let workers = [
        spawn_worker(
            Arc::new(stack.new_engine().unwrap()),
            &stack.pipeline.config,
            stop.clone(),
        ),
        spawn_worker(
            Arc::new(stack.new_engine().unwrap()),
            &stack.pipeline.config,
            stop.clone(),
        ),
    ];

    let jobs = pinned_jobs(10);
    for job in &jobs {
        produce_jobs(&bootstrap, &topics.jobs, std::slice::from_ref(job)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    produce_raw(&bootstrap, &topics.jobs.name, Some(b"poison"), b"not a job").await;
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    let results = collect_results(&consumer, &codec, &ids, Duration::from_secs(60)).await;
    let succeeded = results
        .values()
        .filter(|c| c[0].status == JobStatus::Succeeded)
        .count();
    // Two workers: the quota's documented bound is one job per other worker
    // beyond it (README, "The overshoot bound").
    assert!(
        (1..=7).contains(&succeeded),
        "{succeeded} succeeded of 10 with 6 a day and two workers"
    );

    let arrived = eventually(Duration::from_secs(30), || {
        let seen = delivered(&receiver);
        has(&seen, "budget_threshold", NODE)
            && has(&seen, "quota_exhausted", NODE)
            && has(&seen, "dead_letters", &topics.dlq)
    })
    .await;
    // Both workers see the budget and the quota cross; give the second copies
    // time to arrive (each worker ticks every second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = delivered(&receiver);
    assert!(arrived, "{seen:?}");
    for (key, count) in &seen {
        assert_eq!(*count, 1, "{key:?} reached the webhook {count} times");
    }
    let budget: Vec<&String> = seen
        .keys()
        .filter(|(k, _, _, _)| k == "budget_threshold")
        .map(|(_, _, _, t)| t)
        .collect();
    assert!(budget.contains(&&"0.5".to_owned()), "{seen:?}");
    assert!(
        seen.keys().all(|(_, state, _, _)| state == "firing"),
        "nothing came back: {seen:?}"
    );
    for v in receiver.accepted() {
        let mut fields: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["at", "kind", "node", "state", "threshold", "value"]
        );
    }

    stop.cancel();
    for w in workers {
        w.await.unwrap().unwrap();
    }

    // A restarted worker sees the same budget and quota past their
    // thresholds, and publishes nothing the topic already has.
    let published = topic_size(&bootstrap, &topics.alerts);
    let stop = CancellationToken::new();
    let restarted = spawn_worker(
        Arc::new(stack.new_engine().unwrap()),
        &stack.pipeline.config,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.cancel();
    restarted.await.unwrap().unwrap();
    assert_eq!(
        topic_size(&bootstrap, &topics.alerts),
        published,
        "the restarted worker repeated an alert"
    );
    assert_eq!(delivered(&receiver), seen);
    stack.stop().await.unwrap();
}
