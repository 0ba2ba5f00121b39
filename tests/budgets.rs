//! Budgets survive restarts and are shared by workers: a worker replays this
//! month's usage topic before taking jobs, and follows other workers' spend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use switchyard_codec::Codec;
use switchyard_core::result::JobStatus;
use switchyard_embedded::{Stack, StackOptions, spawn_worker};
use tokio_util::sync::CancellationToken;

use common::*;

fn pipeline(dir: &std::path::Path) -> std::path::PathBuf {
    let org = r#"
[org]
name = "acme"
[[node]]
path = "acme/retail"
[[node]]
path = "acme/retail/support"
[[node]]
path = "acme/retail/support/ticket-triage"
budget_usd_per_month = 0.003
on_budget_exhausted = "reject"
"#;
    std::fs::write(dir.join("org.toml"), org).unwrap();
    let text = std::fs::read_to_string(demo_config()).unwrap().replace(
        "catalog = \"models.toml\"",
        &format!("catalog = \"{}\"", path("pipelines/models.toml").display()),
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn triage_jobs(prefix: &str, n: usize) -> Vec<switchyard_core::job::Job> {
    jobs(prefix, n * PROJECTS.len())
        .into_iter()
        .filter(|j| j.project == "acme/retail/support/ticket-triage")
        .take(n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_worker_remembers_what_was_spent_and_workers_share_budgets() {
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(dir.path());
    let stack = Stack::start(
        &config,
        StackOptions {
            partitions: 2,
            time_scale: 0.01,
            worker: false,
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let consumer = results_consumer(&bootstrap, &topics.results.name);
    let codec = Codec::for_topic(&topics.results);

    // One worker spends the budget: the first jobs succeed, the rest are refused.
    let first = Arc::new(stack.new_engine().unwrap());
    let stop = CancellationToken::new();
    let worker = spawn_worker(first.clone(), &stack.pipeline.config, stop.clone());
    let wave = triage_jobs("spend", 40);
    for j in &wave {
        produce_jobs(&bootstrap, &topics.jobs, std::slice::from_ref(j)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ids: Vec<String> = wave.iter().map(|j| j.job_id.clone()).collect();
    let results = collect_results(&consumer, &codec, &ids, Duration::from_secs(60)).await;
    let succeeded = results
        .values()
        .filter(|c| c[0].status == JobStatus::Succeeded)
        .count();
    let refused = results
        .values()
        .filter(|c| {
            c[0].error
                .as_ref()
                .is_some_and(|e| e.code == "budget_exhausted")
        })
        .count();
    assert!(
        succeeded > 0 && refused > 0,
        "{succeeded} succeeded, {refused} refused"
    );
    stop.cancel();
    worker.await.unwrap().unwrap();

    // A new worker (a restart, or another machine) starts with the spend replayed.
    let second = Arc::new(stack.new_engine().unwrap());
    let stop = CancellationToken::new();
    let worker = spawn_worker(second.clone(), &stack.pipeline.config, stop.clone());
    let after = triage_jobs("after-restart", 3);
    produce_jobs(&bootstrap, &topics.jobs, &after).await;
    let ids: Vec<String> = after.iter().map(|j| j.job_id.clone()).collect();
    let later = collect_results(&consumer, &codec, &ids, Duration::from_secs(60)).await;
    // It knows what the first one spent, to the cent's billionth...
    let spent_before: f64 = results.values().map(|c| c[0].cost_usd).sum();
    let node = "acme/retail/support/ticket-triage";
    let spent_after: f64 = later.values().map(|c| c[0].cost_usd).sum();
    let known = second.node_budget(node).unwrap().spent_usd;
    assert!(
        (known - (spent_before + spent_after)).abs() < 1e-9,
        "the restarted worker knows ${known} spent, the results say ${}",
        spent_before + spent_after
    );
    // ...so what it admits still fits the budget: one worker never overshoots.
    assert!(
        spent_before + spent_after <= 0.003 + 1e-12,
        "billed ${} against $0.003",
        spent_before + spent_after
    );
    for id in &ids {
        let r = &later[id][0];
        assert!(
            r.status == JobStatus::Succeeded
                || r.error
                    .as_ref()
                    .is_some_and(|e| e.code == "budget_exhausted"),
            "{id}: {:?}",
            r.error
        );
    }
    stop.cancel();
    worker.await.unwrap().unwrap();
    stack.stop().await.unwrap();
}

/// A pipeline whose project `acme/bu/team/capped` has a budget of `usd`
/// (reject), with the demo's deployments.
fn capped(dir: &std::path::Path, usd: f64, extra: &str) -> std::path::PathBuf {
    let org = format!(
        "[org]\nname = \"acme\"\n[[node]]\npath = \"acme/bu\"\n[[node]]\npath = \"acme/bu/team\"\n[[node]]\npath = \"acme/bu/team/capped\"\nbudget_usd_per_month = {usd}\non_budget_exhausted = \"reject\"\n{extra}\n"
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

/// Every model answers after `latency` with as many tokens as the request allows.
fn worst_case_sim(latency: Duration) -> switchyard_sim::SimConfig {
    switchyard_sim::SimConfig {
        default: switchyard_sim::ModelBehaviour {
            ttft: latency,
            tokens_per_second: 1e9,
            output_tokens: switchyard_sim::OutputTokens::Max,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn pinned_jobs(
    prefix: &str,
    n: usize,
    model: &str,
    max_tokens: u32,
) -> Vec<switchyard_core::job::Job> {
    (0..n)
        .map(|i| switchyard_core::job::Job {
            model: Some(model.into()),
            ..switchyard_core::job::Job::new(
                format!("{prefix}-{i:05}"),
                "acme/bu/team/capped",
                switchyard_core::job::ChatRequest {
                    max_tokens: Some(max_tokens),
                    ..switchyard_core::job::ChatRequest::from_user(format!(
                        "Write a long essay about harbours, part {i}."
                    ))
                },
            )
        })
        .collect()
}

/// What the results say was billed, and how many were refused with a budget code.
fn billed_and_refused(
    results: &std::collections::HashMap<String, Vec<switchyard_core::result::JobResult>>,
) -> (f64, usize) {
    let billed: f64 = results.values().map(|c| c[0].cost_usd).sum();
    let refused = results
        .values()
        .filter(|c| c[0].status == JobStatus::Rejected)
        .inspect(|c| {
            let code = c[0]
                .error
                .as_ref()
                .map(|e| e.code.clone())
                .unwrap_or_default();
            assert!(code.starts_with("budget_"), "refused with {code}");
        })
        .count();
    (billed, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hard_cap_holds_against_answers_that_use_every_allowed_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = capped(dir.path(), 1.0, "");
    let mut stack = Stack::start(
        &config,
        StackOptions {
            partitions: 4,
            sim: Some(worst_case_sim(Duration::from_secs(1))),
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let consumer = results_consumer(&bootstrap, &topics.results.name);
    let codec = Codec::for_topic(&topics.results);
    let jobs = pinned_jobs("cap", 1500, "claude-fable-5-1", 4000);
    produce_jobs(&bootstrap, &topics.jobs, &jobs).await;
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    let results = collect_results(&consumer, &codec, &ids, Duration::from_secs(120)).await;
    stack.stop_worker().await.unwrap();
    let (billed, refused) = billed_and_refused(&results);
    assert!(billed > 0.0, "nothing ran");
    assert!(billed <= 1.0, "billed ${billed:.4} against a $1.00 cap");
    assert_eq!(
        refused
            + results
                .values()
                .filter(|c| c[0].status == JobStatus::Succeeded)
                .count(),
        1500
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_sharing_a_budget_stay_within_the_stated_bound() {
    let dir = tempfile::tempdir().unwrap();
    let config = capped(dir.path(), 2.0, "");
    let stack = Stack::start(
        &config,
        StackOptions {
            partitions: 4,
            worker: false,
            sim: Some(worst_case_sim(Duration::from_millis(500))),
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
    let a = spawn_worker(
        Arc::new(stack.new_engine().unwrap()),
        &stack.pipeline.config,
        stop.clone(),
    );
    let b = spawn_worker(
        Arc::new(stack.new_engine().unwrap()),
        &stack.pipeline.config,
        stop.clone(),
    );
    // Jobs arrive a few at a time, as work does.
    let jobs = pinned_jobs("shared", 200, "claude-fable-5-1", 4000);
    for chunk in jobs.chunks(4) {
        produce_jobs(&bootstrap, &topics.jobs, chunk).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    let results = collect_results(&consumer, &codec, &ids, Duration::from_secs(120)).await;
    stop.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    let (billed, _) = billed_and_refused(&results);
    // The stated bound: the budget, plus one job's worst case per other worker
    // (what each may admit while nothing of its own is unseen by the other),
    // however the jobs arrive: here the backlog that builds while the group
    // forms comes in one burst.
    let worst_job = 4000.0 * 50.0 / 1e6 + 0.001;
    assert!(billed > 0.0);
    assert!(
        billed <= 2.0 + 2.0 * worst_job,
        "billed ${billed:.4} against $2.00 shared by two workers"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_show_matches_the_usage_topics_sums() {
    let dir = tempfile::tempdir().unwrap();
    let config = capped(dir.path(), 50.0, "jobs_per_day = 100000");
    let mut stack = Stack::start(
        &config,
        StackOptions {
            partitions: 2,
            time_scale: 0.01,
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let consumer = results_consumer(&bootstrap, &topics.results.name);
    let codec = Codec::for_topic(&topics.results);
    let jobs = pinned_jobs("show", 30, "gpt-5-nano", 200);
    produce_jobs(&bootstrap, &topics.jobs, &jobs).await;
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    collect_results(&consumer, &codec, &ids, Duration::from_secs(60)).await;
    stack.stop_worker().await.unwrap();

    let usage_codec = Codec::for_topic(&topics.usage);
    let mut from_usage = 0.0;
    switchyard_kafka::scan_to_end(
        &kafka_config(&bootstrap),
        &topics.usage.name,
        switchyard_kafka::ScanFrom::Beginning,
        &Default::default(),
        Duration::from_secs(20),
        |m| {
            let e: switchyard_core::usage::UsageEvent = usage_codec.decode(m.payload).unwrap();
            from_usage += e.cost_usd;
        },
    )
    .unwrap();
    let out = switchyard()
        .args(["org", "show", "--format", "json", "--config"])
        .arg(&config)
        .args(["--brokers", &bootstrap])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let node = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["path"] == "acme/bu/team/capped")
        .unwrap();
    let shown = node["spend"]["spent_usd"].as_f64().unwrap();
    assert!(from_usage > 0.0);
    assert!(
        (shown - from_usage).abs() < 1e-9,
        "org show ${shown} vs usage topic ${from_usage}"
    );
    assert_eq!(node["spend"]["in_flight_usd"].as_f64(), Some(0.0));
    assert_eq!(node["quota_use"]["jobs_day"].as_u64(), Some(30));
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_limits_the_rate_across_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let config = capped(dir.path(), 1000.0, "jobs_per_minute = 20");
    let stack = Stack::start(
        &config,
        StackOptions {
            partitions: 4,
            worker: false,
            time_scale: 0.01,
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
    let a = spawn_worker(
        Arc::new(stack.new_engine().unwrap()),
        &stack.pipeline.config,
        stop.clone(),
    );
    let b = spawn_worker(
        Arc::new(stack.new_engine().unwrap()),
        &stack.pipeline.config,
        stop.clone(),
    );
    let jobs = pinned_jobs("rate", 120, "gpt-5-nano", 100);
    for chunk in jobs.chunks(4) {
        produce_jobs(&bootstrap, &topics.jobs, chunk).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    let results = collect_results(&consumer, &codec, &ids, Duration::from_secs(120)).await;
    stop.cancel();
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    let mut per_minute: std::collections::BTreeMap<i64, usize> = Default::default();
    let mut refused = 0;
    for r in results.values().map(|c| &c[0]) {
        match r.status {
            JobStatus::Succeeded => {
                *per_minute
                    .entry(r.completed_at.timestamp() / 60)
                    .or_default() += 1
            }
            _ => {
                let code = &r.error.as_ref().unwrap().code;
                assert_eq!(code, "quota_jobs_per_minute");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the quota never acted: {per_minute:?}");
    // 20 per minute over both workers, give or take what one admits before it
    // sees the other's count (one snapshot, a second: 4 jobs arrive per 150 ms).
    for (minute, admitted) in &per_minute {
        assert!(*admitted <= 20 + 8, "minute {minute}: {admitted} admitted");
    }
    stack.stop().await.unwrap();
}
