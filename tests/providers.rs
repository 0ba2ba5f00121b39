//! Provider behaviour against the simulator over real HTTP: 429 storms absorbed
//! within the configured rate limit, an outage moving traffic to the fallback and
//! back once the circuit's probes succeed, a hanging provider cut at its timeout,
//! final errors failing fast with the provider's message, and keys never leaking.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchyard_codec::Codec;
use switchyard_core::job::Job;
use switchyard_core::result::{AttemptOutcome, JobResult, JobStatus};
use switchyard_embedded::{Stack, StackOptions};
use switchyard_sim::{ModelBehaviour, SimConfig};

use common::*;

/// A pipeline with the given deployments (TOML) and routing tweaks, written to `dir`.
fn pipeline(dir: &Path, deployments: &str, routing: &str) -> PathBuf {
    let text = format!(
        r#"catalog = "{catalog}"
org = "{org}"

[kafka]
brokers = "127.0.0.1:9092"

[worker]
max_in_flight = 256
drain_grace = "20s"

[routing]
baseline_model = "claude-opus-5-5"
{routing}

{deployments}
"#,
        catalog = path("pipelines/models.toml").display(),
        org = path("pipelines/org.toml").display(),
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn deployment(name: &str, model: &str, prefix: &str, extra: &str) -> String {
    format!(
        "[[deployments]]\nname = \"{name}\"\nmodel = \"{model}\"\nbase_url = \"http://127.0.0.1:9100/{prefix}\"\napi_key_env = \"UNUSED_IN_TESTS\"\n{extra}\n"
    )
}

fn fast(ttft_ms: u64) -> ModelBehaviour {
    ModelBehaviour {
        ttft: Duration::from_millis(ttft_ms),
        tokens_per_second: 5_000.0,
        ..ModelBehaviour::default()
    }
}

fn sim(models: &[(&str, ModelBehaviour)], time_scale: f64) -> SimConfig {
    SimConfig {
        time_scale,
        models: models
            .iter()
            .map(|(m, b)| ((*m).to_owned(), b.clone()))
            .collect::<BTreeMap<_, _>>(),
        ..SimConfig::default()
    }
}

fn restricted(jobs: Vec<Job>, models: &[&str]) -> Vec<Job> {
    jobs.into_iter()
        .map(|mut j| {
            j.allowed_models = models.iter().map(|m| (*m).to_owned()).collect();
            j
        })
        .collect()
}

async fn run_jobs(stack: &Stack, jobs: &[Job], timeout: Duration) -> Vec<JobResult> {
    run_paced(stack, jobs, Duration::ZERO, timeout).await
}

/// Produces the jobs `gap` apart (as live traffic arrives), then waits for their results.
async fn run_paced(
    stack: &Stack,
    jobs: &[Job],
    gap: Duration,
    timeout: Duration,
) -> Vec<JobResult> {
    let bootstrap = stack.broker.bootstrap();
    let topics = &stack.pipeline.config.kafka.topics;
    let consumer = results_consumer(bootstrap, &topics.results.name);
    if gap.is_zero() {
        produce_jobs(bootstrap, &topics.jobs, jobs).await;
    } else {
        for j in jobs {
            produce_jobs(bootstrap, &topics.jobs, std::slice::from_ref(j)).await;
            tokio::time::sleep(gap).await;
        }
    }
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    let got = collect_results(&consumer, &Codec::for_topic(&topics.results), &ids, timeout).await;
    ids.iter().map(|id| got[id][0].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_storms_are_absorbed_without_exceeding_the_configured_limit() {
    // The provider allows 30 requests per 3 s window and also throws 429s at random
    // (30% of requests). The deployment is configured with the same limit.
    let dir = tempfile::tempdir().unwrap();
    let config = pipeline(
        dir.path(),
        &deployment(
            "nano",
            "gpt-5-nano",
            "openai/v1",
            "rpm = 30\nlimit_window = \"3s\"",
        ),
        "[routing.retry]\nattempts_per_deployment = 8\nbase_backoff = \"50ms\"\nmax_backoff = \"1s\"",
    );
    let behaviour = ModelBehaviour {
        rpm: Some(30),
        rate_limit_rate: 0.3,
        retry_after: Duration::from_millis(400),
        ..fast(20)
    };
    let options = StackOptions {
        partitions: 2,
        time_scale: 0.05,
        sim: Some(sim(&[("gpt-5-nano", behaviour)], 0.05)),
        ..StackOptions::default()
    };
    let stack = Stack::start(&config, options).await.unwrap();
    let jobs = restricted(jobs("storm", 90), &["gpt-5-nano"]);
    let started = Instant::now();
    let results = run_jobs(&stack, &jobs, Duration::from_secs(120)).await;
    let stats = stack.sim.stats().model("gpt-5-nano");
    stack.stop().await.unwrap();

    assert!(
        results.iter().all(|r| r.status == JobStatus::Succeeded),
        "a job failed: {:?}",
        results.iter().find(|r| r.status != JobStatus::Succeeded)
    );
    let throttled = results
        .iter()
        .filter(|r| {
            r.attempts
                .iter()
                .any(|a| a.outcome == AttemptOutcome::RateLimited)
        })
        .count();
    assert!(
        throttled > 10,
        "the storm should have hit many jobs, hit {throttled}"
    );
    assert!(
        stats.peak_requests_per_window <= 30,
        "sent {} requests in one 3 s window; the limit is 30",
        stats.peak_requests_per_window
    );
    // 90 jobs plus retries at 30 per 3 s cannot take less than ~9 s: the limiter held them.
    assert!(started.elapsed() > Duration::from_secs(8));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_moves_traffic_to_the_fallback_and_the_circuit_brings_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let deployments = [
        deployment("primary", "gpt-5-nano", "openai/v1", ""),
        deployment("fallback", "claude-haiku-5-5", "anthropic/v1", ""),
    ]
    .concat();
    let config = pipeline(
        dir.path(),
        &deployments,
        "[routing.retry]\nattempts_per_deployment = 2\nbase_backoff = \"20ms\"\nmax_backoff = \"100ms\"\n[routing.health]\nfailure_threshold = 3\nopen_for = \"1s\"\nhalf_open_probes = 2",
    );
    let sim_config = sim(
        &[("gpt-5-nano", fast(30)), ("claude-haiku-5-5", fast(30))],
        1.0,
    );
    let options = StackOptions {
        partitions: 2,
        time_scale: 1.0,
        sim: Some(sim_config),
        ..StackOptions::default()
    };
    let stack = Stack::start(&config, options).await.unwrap();
    let models = ["gpt-5-nano", "claude-haiku-5-5"];
    // Cost-first puts the cheaper gpt-5-nano first and claude-haiku-5-5 second.
    let wave = |prefix: &str| {
        restricted(jobs(prefix, 60), &models)
            .into_iter()
            .map(|mut j| {
                j.strategy = Some(switchyard_core::routing::Strategy::CostFirst);
                j
            })
            .collect::<Vec<_>>()
    };
    let before = run_jobs(&stack, &wave("before"), Duration::from_secs(60)).await;
    assert!(
        before
            .iter()
            .all(|r| r.model.as_deref() == Some("gpt-5-nano")),
        "healthy primary serves everything"
    );

    stack.sim.set_outage("gpt-5-nano", Some(503));
    let during = run_paced(
        &stack,
        &wave("during"),
        Duration::from_millis(25),
        Duration::from_secs(60),
    )
    .await;
    assert!(
        during.iter().all(|r| r.status == JobStatus::Succeeded),
        "every job still succeeds during the outage"
    );
    assert!(
        during
            .iter()
            .all(|r| r.model.as_deref() == Some("claude-haiku-5-5"))
    );
    let failed_over = during.iter().filter(|r| r.failovers() > 0).count();
    let called_primary = during
        .iter()
        .filter(|r| {
            r.attempts
                .iter()
                .any(|a| a.deployment == "primary" && a.outcome != AttemptOutcome::Skipped)
        })
        .count();
    assert!(failed_over >= 1, "the first jobs fail over");
    assert!(
        called_primary < 20,
        "once the circuit is open, jobs stop calling the failing primary ({called_primary} of 60 did)"
    );

    stack.sim.set_outage("gpt-5-nano", None);
    // Live traffic keeps arriving; once the open period ends, probes go through,
    // succeed, close the circuit, and the primary takes the traffic back.
    let after = run_paced(
        &stack,
        &wave("after"),
        Duration::from_millis(150),
        Duration::from_secs(60),
    )
    .await;
    let back = after
        .iter()
        .filter(|r| r.model.as_deref() == Some("gpt-5-nano"))
        .count();
    assert!(
        back > 20,
        "after successful probes the primary takes traffic again ({back} of 60)"
    );
    let last_ten_on_primary = after[50..]
        .iter()
        .all(|r| r.model.as_deref() == Some("gpt-5-nano"));
    assert!(
        last_ten_on_primary,
        "the circuit is closed again by the end"
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_provider_is_cut_at_its_timeout_and_the_job_fails_over() {
    let dir = tempfile::tempdir().unwrap();
    let deployments = [
        deployment(
            "hangs",
            "gpt-5-nano",
            "openai/v1",
            "timeouts = { connect = \"1s\", first_byte = \"800ms\", total = \"2s\" }",
        ),
        deployment("works", "claude-haiku-5-5", "anthropic/v1", ""),
    ]
    .concat();
    let config = pipeline(
        dir.path(),
        &deployments,
        "[routing.retry]\nattempts_per_deployment = 1",
    );
    let sim_config = sim(
        &[
            (
                "gpt-5-nano",
                ModelBehaviour {
                    hang_rate: 1.0,
                    ..fast(10)
                },
            ),
            ("claude-haiku-5-5", fast(10)),
        ],
        1.0,
    );
    let stack = Stack::start(
        &config,
        StackOptions {
            partitions: 1,
            sim: Some(sim_config),
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    let mut job = restricted(jobs("hang", 1), &["gpt-5-nano", "claude-haiku-5-5"]).remove(0);
    job.strategy = Some(switchyard_core::routing::Strategy::CostFirst);
    let r = run_jobs(&stack, &[job], Duration::from_secs(30))
        .await
        .remove(0);
    stack.stop().await.unwrap();
    assert_eq!(r.status, JobStatus::Succeeded);
    let first = &r.attempts[0];
    assert_eq!(first.outcome, AttemptOutcome::Timeout, "{first:?}");
    assert!(
        first
            .error
            .as_deref()
            .unwrap_or("")
            .contains("first byte timeout"),
        "{first:?}"
    );
    assert!(
        (700..2_000).contains(&first.latency_ms),
        "cut at ~800 ms, took {} ms",
        first.latency_ms
    );
    assert_eq!(r.model.as_deref(), Some("claude-haiku-5-5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_errors_fail_fast_with_the_providers_message_and_keys_never_leak() {
    let dir = tempfile::tempdir().unwrap();
    let deployments = [
        deployment("strict", "gpt-5-nano", "openai/v1", ""),
        deployment("other", "claude-haiku-5-5", "anthropic/v1", ""),
    ]
    .concat();
    let config = pipeline(
        dir.path(),
        &deployments,
        "[routing.retry]\nattempts_per_deployment = 5",
    );
    // The simulator accepts at most 100 output tokens for this model, as a real API would refuse.
    let sim_config = sim(
        &[
            (
                "gpt-5-nano",
                ModelBehaviour {
                    max_output_tokens: Some(100),
                    ..fast(10)
                },
            ),
            ("claude-haiku-5-5", fast(10)),
        ],
        1.0,
    );
    let stack = Stack::start(
        &config,
        StackOptions {
            partitions: 1,
            sim: Some(sim_config),
            ..StackOptions::default()
        },
    )
    .await
    .unwrap();
    let mut job = restricted(jobs("final", 1), &["gpt-5-nano", "claude-haiku-5-5"]).remove(0);
    job.strategy = Some(switchyard_core::routing::Strategy::CostFirst);
    job.request.max_tokens = Some(500);
    let started = Instant::now();
    let r = run_jobs(&stack, &[job], Duration::from_secs(30))
        .await
        .remove(0);
    let elapsed = started.elapsed();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let everything = [
        topic_dump(&bootstrap, &topics.results.name),
        topic_dump(&bootstrap, &topics.usage.name),
    ]
    .concat();
    stack.stop().await.unwrap();

    assert_eq!(r.status, JobStatus::Failed);
    assert_eq!(
        r.attempts.len(),
        1,
        "no retry and no failover for a request the provider calls invalid: {:?}",
        r.attempts
    );
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Rejected);
    let error = r.error.unwrap();
    assert_eq!(error.code, "invalid_request");
    assert!(
        error.message.contains("max_tokens is too large: 500"),
        "{}",
        error.message
    );
    assert!(elapsed < Duration::from_secs(10));
    // The embedded stack's key: it must not appear in anything published.
    assert!(!String::from_utf8_lossy(&everything).contains("sim-key-embedded"));
}

fn topic_dump(bootstrap: &str, topic: &str) -> Vec<u8> {
    let mut out = Vec::new();
    switchyard_kafka::scan_to_end(
        &kafka_config(bootstrap),
        topic,
        switchyard_kafka::ScanFrom::Beginning,
        &Default::default(),
        Duration::from_secs(20),
        |m| {
            out.extend_from_slice(m.payload);
            out.push(b'\n');
        },
    )
    .unwrap();
    out
}

/// `switchyard sim-provider` with per-model flags over the catalog defaults, read
/// back through real requests and `GET /sim/stats`; bad values are refused with
/// the flag and the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_provider_flags_override_models_and_bad_values_are_named() {
    use std::io::BufRead;
    let mut child = switchyard()
        .args([
            "sim-provider",
            "--port",
            "0",
            "--set",
            "default.max_output_tokens=50",
            "--set",
            "gpt-4.1-mini.ttft=5ms",
            "--set",
            "gpt-4.1-mini.tokens_per_second=100000",
            "--set",
            "gpt-5-nano.error_rate=1.0",
            "--set",
            "gemini-3.8-flash.invalid_key_rate=1",
            "--set",
            "gpt-4.1.rate_limit_rate=1",
            "--set",
            "gpt-4.1.rate_limit_hint=reset_headers",
            "--outage",
            "claude-haiku-5-5=0s..10m:529",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Proc(child);
    let mut lines = std::io::BufReader::new(stdout).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("sim-provider printed its address")
            .unwrap();
        if let Some(b) = line.strip_prefix("sim-provider: ") {
            break b.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let client = reqwest::Client::new();
    let openai = |model: &str| {
        client
            .post(format!("{base}/openai/v1/chat/completions"))
            .bearer_auth("k")
            .header("content-type", "application/json").body(serde_json::to_vec(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})).unwrap())
            .send()
    };
    assert_eq!(openai("gpt-5-nano").await.unwrap().status(), 500);
    let limited = openai("gpt-4.1").await.unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().get("retry-after").is_none());
    assert_eq!(limited.headers()["x-ratelimit-remaining-requests"], "0");
    let started = Instant::now();
    assert_eq!(openai("gpt-4.1-mini").await.unwrap().status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "gpt-4.1-mini.ttft replaced the catalog's speed: {:?}",
        started.elapsed()
    );
    // default.* reaches every catalog model that does not set the key itself.
    let too_long = client
        .post(format!("{base}/openai/v1/chat/completions"))
        .bearer_auth("k")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&serde_json::json!({"model": "gpt-4o-mini", "max_completion_tokens": 60, "messages": [{"role": "user", "content": "hi"}]}))
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(too_long.status(), 400);
    let anthropic = client
        .post(format!("{base}/anthropic/v1/messages"))
        .header("x-api-key", "k")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json").body(serde_json::to_vec(&serde_json::json!({"model": "claude-haiku-5-5", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(anthropic.status(), 529);
    let gemini = client
        .post(format!(
            "{base}/gemini/v1beta/models/gemini-3.8-flash:generateContent"
        ))
        .header("x-goog-api-key", "k")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&serde_json::json!({"contents": [{"parts": [{"text": "hi"}]}]}))
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(gemini.status(), 400);
    // A reasoning model from the catalog refuses `stop`, as OpenAI does.
    let refused = client
        .post(format!("{base}/openai/v1/chat/completions"))
        .bearer_auth("k")
        .header("content-type", "application/json").body(serde_json::to_vec(&serde_json::json!({"model": "gpt-5-mini", "messages": [{"role": "user", "content": "hi"}], "stop": ["x"]})).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let body: serde_json::Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "unsupported_parameter");
    let stats = client
        .get(format!("{base}/sim/stats"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&stats).unwrap();
    assert_eq!(stats["models"]["gpt-5-nano"]["errors_by_status"]["500"], 1);
    assert_eq!(
        stats["models"]["claude-haiku-5-5"]["errors_by_status"]["529"],
        1
    );
    assert!(stats["peak_in_flight"].as_u64().unwrap() >= 1);
    drop(child);

    for (args, expected) in [
        (
            vec!["--set", "gpt-5-nano.error_rate=2"],
            "gpt-5-nano.error_rate = 2: 2 is not a fraction",
        ),
        (
            vec!["--set", "gpt-5-nano.eror_rate=0.1"],
            "unknown field `eror_rate`",
        ),
        (vec!["--set", "gpt-5-nano.ttft=soon"], "gpt-5-nano.ttft"),
        (vec!["--set", "error_rate=0.1"], "names no key"),
        (vec!["--outage", "gpt-4.1=5m..1m"], "ends before it starts"),
        (
            vec!["--outage", "gpt-4.1=1m..2m:200"],
            "not an error status",
        ),
        (
            vec![
                "--config",
                "pipelines/sim.toml",
                "--set",
                "default.error_rate=0.995",
            ],
            "at most 1",
        ),
    ] {
        let out = switchyard()
            .args(["sim-provider", "--port", "0"])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}
