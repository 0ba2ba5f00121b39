//! A deferred job whose budget runs out while it waits: it was admitted
//! within its node's budget, another worker's spend exhausts the budget (a
//! `hold` one) before its provider batch fails it, and the live run it falls
//! back to is held. An admin approver's override sends it back to the
//! deferred topic released, and it runs live exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchyard_codec::Codec;
use switchyard_core::access::sign;
use switchyard_core::access::{Grant, Keyring, PrivateKey, Role, new_key};
use switchyard_core::budget::BudgetSnapshot;
use switchyard_core::job::{ChatRequest, Job};
use switchyard_core::result::{JobResult, JobStatus, RunMode};
use switchyard_core::vocab::JobMode;
use switchyard_embedded::{Stack, StackOptions};
use switchyard_sim::{BatchBehaviour, SimConfig};

use common::*;

const PROJECT: &str = "acme/bu/t/budgeted";
const BUDGET_USD: f64 = 5.0;
const PARTITIONS: i32 = 2;

fn key(keys: &mut Keyring, seed: u8, principal: &str, roles: &[Role]) -> PrivateKey {
    let grants = roles
        .iter()
        .map(|&role| Grant {
            role,
            scope: "acme/bu".into(),
        })
        .collect();
    let (record, private) = new_key([seed; 32], principal, grants, Utc::now());
    keys.add(record);
    private
}

/// The org, keys and pipeline config in `dir`; (config, submitter, approver).
fn setup(dir: &std::path::Path) -> (std::path::PathBuf, PrivateKey, PrivateKey) {
    let org = format!(
        "[org]\nname = \"acme\"\n[[node]]\npath = \"acme/bu\"\n[[node]]\npath = \"acme/bu/t\"\n[[node]]\npath = \"{PROJECT}\"\nbudget_usd_per_month = {BUDGET_USD}\non_budget_exhausted = \"hold\"\n"
    );
    std::fs::write(dir.join("org.toml"), org).unwrap();
    let mut ring = Keyring::default();
    let submitter = key(&mut ring, 1, "alice", &[Role::Submitter]);
    // A budget hold needs an approver who is also an admin over the node.
    let approver = key(&mut ring, 2, "bob", &[Role::Approver, Role::BuAdmin]);
    std::fs::write(dir.join("keys.json"), ring.to_text()).unwrap();
    std::fs::write(dir.join("audit.key"), "test-audit-hmac-key-not-a-secret").unwrap();
    let text = std::fs::read_to_string(demo_config()).unwrap().replace(
        "catalog = \"models.toml\"",
        &format!("catalog = \"{}\"", path("pipelines/models.toml").display()),
    );
    let text = format!(
        "{text}\n[access]\nkeys_file = \"keys.json\"\nsignature_window = \"2m\"\napproval_ttl = \"5m\"\n\n[audit]\nkey_file = \"audit.key\"\n"
    );
    let config = dir.join("pipeline.toml");
    std::fs::write(&config, text).unwrap();
    (config, submitter, approver)
}

/// Reads `topic` from the beginning until a record keyed `key` arrives.
fn wait_for_key(bootstrap: &str, topic: &str, key: &str, timeout: Duration) {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let until = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < until {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(200))
            && m.key() == Some(key.as_bytes())
        {
            return;
        }
    }
    panic!("no record keyed {key} on {topic} within {timeout:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_job_held_on_its_live_run_runs_live_once_approved() {
    let dir = tempfile::tempdir().unwrap();
    let (config, submitter, approver) = setup(dir.path());
    let catalog = switchyard_loader::load_pipeline(&config, &[])
        .unwrap()
        .catalog;
    // Every batch line fails, after long enough for the budget to run out
    // meanwhile; the job then runs live.
    let mut sim = SimConfig::from_catalog(&catalog);
    sim.batch = BatchBehaviour {
        processing_time: Duration::from_secs(8),
        line_error_rate: 1.0,
        ..BatchBehaviour::default()
    };
    let env: Vec<(String, String)> = [
        ("SWITCHYARD__DEFERRED__MAX_WAIT", "1s"),
        ("SWITCHYARD__DEFERRED__POLL_INTERVAL", "200ms"),
        ("SWITCHYARD__DEFERRED__MAX_POLL_BACKOFF", "1s"),
        ("SWITCHYARD__DEFERRED__SUBMIT_TIMEOUT", "2s"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let options = StackOptions {
        partitions: PARTITIONS,
        sim: Some(sim),
        env,
        ..StackOptions::default()
    };
    let stack = Stack::start(&config, options).await.unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();

    let mut job = Job::new(
        "deferred-budgeted-1",
        PROJECT,
        ChatRequest {
            max_tokens: Some(400),
            ..ChatRequest::from_user("Summarise the harbour report in one paragraph.")
        },
    );
    job.model = Some("gpt-5.4".into());
    job.mode = Some(JobMode::Deferred);
    let value = Codec::for_topic(&topics.jobs).encode(&job).unwrap();
    let s = sign::sign(&submitter, &value, Utc::now());
    let headers = signature_headers(&s);
    let producer = producer(&bootstrap);
    producer
        .send(
            FutureRecord::to(&topics.jobs.name)
                .key(&job.job_id)
                .payload(&value)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    // Once the job waits on the deferred topic, another worker reports the
    // node's whole budget spent.
    let (b, t, id) = (
        bootstrap.clone(),
        topics.deferred.clone(),
        job.job_id.clone(),
    );
    tokio::task::spawn_blocking(move || wait_for_key(&b, &t, &id, Duration::from_secs(60)))
        .await
        .unwrap();
    let now = Utc::now();
    let spent = BudgetSnapshot {
        instance: "another-worker".into(),
        node: PROJECT.into(),
        month: now.format("%Y-%m").to_string(),
        settled_usd: BUDGET_USD,
        in_flight_usd: 0.0,
        minute: 0,
        jobs_minute: 0,
        tokens_minute: 0,
        day: String::new(),
        jobs_day: 0,
        tokens_day: 0,
        issued_usd: 0.0,
        issued_jobs: 0,
        issued_tokens: 0,
        at: now,
    };
    let bytes = serde_json::to_vec(&spent).unwrap();
    producer
        .send(
            FutureRecord::to(&topics.budgets)
                .key(&spent.key())
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let results = results_consumer(&bootstrap, &topics.results.name);
    let codec = Codec::for_topic(&topics.results);
    let mut got: Vec<JobResult> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while got.last().is_none_or(|r| r.status == JobStatus::Held) {
        let m = tokio::time::timeout_at(deadline, results.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out: {got:#?}"))
            .unwrap();
        let r: JobResult = codec.decode(m.payload().unwrap()).unwrap();
        if r.status == JobStatus::Held {
            assert!(
                got.is_empty(),
                "held again after the approval: {got:#?} {r:#?}"
            );
            assert_eq!(r.error.as_ref().unwrap().code, "approval_required");
            let id = r.approval_id.clone().unwrap();
            let out = switchyard()
                .args(["approve", &id, "--config", config.to_str().unwrap()])
                .args(["--brokers", &bootstrap])
                .env("SWITCHYARD_API_KEY", approver.expose())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        got.push(r);
    }
    assert_eq!(got.len(), 2, "held once, then final: {got:#?}");
    let last = got.last().unwrap();
    assert_eq!(
        (last.status, last.mode),
        (JobStatus::Succeeded, RunMode::Live),
        "{last:?}"
    );
    assert!(
        last.attempts[0].error.is_some(),
        "its batch line failed before it ran live: {last:?}"
    );
    // Let a second live call, if a bug made one, reach the simulator.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls: u64 = stack.sim.stats().models.values().map(|m| m.requests).sum();
    assert_eq!(calls, 1, "live calls");
    stack.stop().await.unwrap();
}
