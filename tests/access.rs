//! Access control end to end: signed jobs (and the ways a signature is
//! refused), held work that runs only once an approver who did not submit it
//! releases it (a batch as a whole when together its jobs pass the
//! threshold), rejection and expiry, roles on the CLI, a tampered audit log
//! caught by `audit verify`, and no private key anywhere in what a run writes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/analytics.rs"]
mod analytics;
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Header, Message};
use rdkafka::producer::FutureRecord;
use switchyard_codec::Codec;
use switchyard_core::access::sign::{self, Signed};
use switchyard_core::access::{Grant, Keyring, PrivateKey, Role, new_key};
use switchyard_core::job::{ChatRequest, Job};
use switchyard_core::result::{JobResult, JobStatus};
use switchyard_embedded::{Stack, StackOptions};

use common::*;

const AUDIT_KEY_ENV: &str = "SWITCHYARD_TEST_ACCESS_AUDIT_KEY";
const AUDIT_KEY: &str = "test-audit-hmac-key-not-a-secret";

/// A key with one grant, made from a fixed seed so runs are alike.
fn key(keys: &mut Keyring, seed: u8, principal: &str, role: Role, scope: &str) -> PrivateKey {
    let grants = vec![Grant {
        role,
        scope: scope.into(),
    }];
    let (record, private) = new_key([seed; 32], principal, grants, Utc::now());
    keys.add(record);
    private
}

struct Keys {
    alice_submit: PrivateKey,
    alice_approve: PrivateKey,
    bob_approve: PrivateKey,
    admin: PrivateKey,
    auditor: PrivateKey,
    viewer: PrivateKey,
}

/// `acme/bu/t/signed` requires signatures; `acme/bu/t/gated` holds any job whose
/// worst case passes a tenth of a cent; `acme/bu/t/batches` requires
/// signatures and holds work (a job, or a whole batch) whose worst case passes
/// a cent.
fn setup(dir: &Path, ttl: &str) -> (PathBuf, Keys) {
    let org = r#"
[org]
name = "acme"
[[node]]
path = "acme/bu"
[[node]]
path = "acme/bu/t"
[[node]]
path = "acme/bu/t/signed"
require_signed = true
[[node]]
path = "acme/bu/t/gated"
approval_required_above_usd = 0.001
[[node]]
path = "acme/bu/t/batches"
require_signed = true
approval_required_above_usd = 0.01
[[node]]
path = "acme/other"
[[node]]
path = "acme/other/t"
[[node]]
path = "acme/other/t/p"
require_signed = true
"#;
    std::fs::write(dir.join("org.toml"), org).unwrap();
    let mut ring = Keyring::default();
    let keys = Keys {
        alice_submit: key(&mut ring, 1, "alice", Role::Submitter, "acme/bu"),
        alice_approve: key(&mut ring, 2, "alice", Role::Approver, "acme/bu"),
        bob_approve: key(&mut ring, 3, "bob", Role::Approver, "acme/bu"),
        admin: key(&mut ring, 4, "root", Role::OrgAdmin, "acme"),
        auditor: key(&mut ring, 5, "carol", Role::Auditor, "acme"),
        viewer: key(&mut ring, 6, "dave", Role::FinanceViewer, "acme/bu"),
    };
    std::fs::write(dir.join("keys.json"), ring.to_text()).unwrap();
    // The HMAC key as a mounted secret file (the CLI gets the variable).
    std::fs::write(dir.join("audit.key"), AUDIT_KEY).unwrap();
    let text = std::fs::read_to_string(demo_config()).unwrap().replace(
        "catalog = \"models.toml\"",
        &format!("catalog = \"{}\"", path("pipelines/models.toml").display()),
    );
    let text = format!(
        "{text}\n[access]\nkeys_file = \"keys.json\"\nsignature_window = \"2m\"\napproval_ttl = \"{ttl}\"\n\n[audit]\nenabled = true\nkey_env = \"{AUDIT_KEY_ENV}\"\nkey_file = \"audit.key\"\n"
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    (p, keys)
}

fn job(id: &str, project: &str, model: Option<&str>, max_tokens: u32) -> Job {
    Job {
        model: model.map(Into::into),
        ..Job::new(
            id,
            project,
            ChatRequest {
                max_tokens: Some(max_tokens),
                ..ChatRequest::from_user(format!("Summarise the harbour report {id}."))
            },
        )
    }
}

/// Produces `value` keyed by job id, with signature headers when given.
async fn send(bootstrap: &str, topic: &str, id: &str, value: &[u8], signed: Option<&Signed>) {
    send_to(bootstrap, topic, None, id, value, signed).await;
}

/// As [`send`], to a given partition.
async fn send_to(
    bootstrap: &str,
    topic: &str,
    partition: Option<i32>,
    id: &str,
    value: &[u8],
    signed: Option<&Signed>,
) {
    let producer = producer(bootstrap);
    let mut record = FutureRecord::to(topic).key(id).payload(value);
    if let Some(p) = partition {
        record = record.partition(p);
    }
    if let Some(s) = signed {
        record = record.headers(signature_headers(s));
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Reads results until `done` holds for every id (or panics at the timeout).
async fn results_until(
    consumer: &StreamConsumer,
    codec: &Codec,
    got: &mut HashMap<String, Vec<JobResult>>,
    ids: &[&str],
    done: impl Fn(&[JobResult]) -> bool,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if ids.iter().all(|id| got.get(*id).is_some_and(|rs| done(rs))) {
            return;
        }
        let m = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {ids:?}: {got:#?}"))
            .unwrap();
        let r: JobResult = codec.decode(m.payload().unwrap()).unwrap();
        got.entry(r.job_id.clone()).or_default().push(r);
    }
}

fn last_status(rs: &[JobResult]) -> JobStatus {
    rs.last().unwrap().status
}

fn is_final(rs: &[JobResult]) -> bool {
    last_status(rs) != JobStatus::Held
}

fn code(r: &JobResult) -> &str {
    r.error.as_ref().map_or("", |e| e.code.as_str())
}

/// Runs the CLI with a private key in the environment; (success, stdout, stderr).
fn cli(
    config: &Path,
    bootstrap: &str,
    key: Option<&PrivateKey>,
    args: &[&str],
) -> (bool, String, String) {
    let mut cmd = switchyard();
    cmd.args(args)
        .args(["--config", config.to_str().unwrap(), "--brokers", bootstrap])
        .env(AUDIT_KEY_ENV, AUDIT_KEY)
        .env_remove("SWITCHYARD_API_KEY")
        .env_remove("SWITCHYARD_API_KEY_FILE");
    if let Some(k) = key {
        cmd.env("SWITCHYARD_API_KEY", k.expose());
    }
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    // Whatever the command printed, it never repeats a secret it was given.
    let mut secrets = vec![AUDIT_KEY.to_owned()];
    if let Some(k) = key {
        let exposed = k.expose();
        secrets.push(exposed.rsplit('.').next().unwrap().to_owned());
        secrets.push(exposed);
    }
    for s in &secrets {
        assert!(
            !stdout.contains(s.as_str()) && !stderr.contains(s.as_str()),
            "`switchyard {}` printed a secret",
            args.join(" ")
        );
    }
    (out.status.success(), stdout, stderr)
}

/// Signs like a producer written in Python with the `cryptography` package.
fn python_signature(private: &PrivateKey, value: &[u8]) -> Signed {
    let python = std::env::var("SWITCHYARD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = r#"
import base64, sys, datetime
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
_, key_id, seed = sys.argv[1].split(".", 2)
value = sys.stdin.buffer.read()
ts = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(seed))
sig = base64.b64encode(key.sign(ts.encode() + b"\n" + value)).decode()
print(key_id, ts, sig)
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script, &private.expose()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(value).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Python signer failed (is `cryptography` installed?)"
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.split_whitespace();
    Signed {
        key_id: parts.next().unwrap().into(),
        ts: parts.next().unwrap().into(),
        sig: parts.next().unwrap().into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_are_checked_and_held_work_runs_only_after_an_approver_releases_it() {
    let dir = tempfile::tempdir().unwrap();
    let (config, keys) = setup(dir.path(), "10m");
    let stack = Stack::start(&config, StackOptions::default())
        .await
        .unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let codec = Codec::for_topic(&topics.jobs);
    let results = results_consumer(&bootstrap, &topics.results.name);
    let rcodec = Codec::for_topic(&topics.results);
    let jobs_topic = topics.jobs.name.clone();
    let enc = |j: &Job| codec.encode(j).unwrap();

    // Signed by a submitter over the project: runs.
    let ok = enc(&job("signed-ok", "acme/bu/t/signed", None, 64));
    let good = sign::sign(&keys.alice_submit, &ok, Utc::now());
    send(&bootstrap, &jobs_topic, "signed-ok", &ok, Some(&good)).await;
    // Signed long ago.
    let old = enc(&job("signed-old", "acme/bu/t/signed", None, 64));
    let stale = sign::sign(
        &keys.alice_submit,
        &old,
        Utc::now() - chrono::Duration::minutes(30),
    );
    send(&bootstrap, &jobs_topic, "signed-old", &old, Some(&stale)).await;
    // A signature over other bytes.
    let forged_value = enc(&job("signed-forged", "acme/bu/t/signed", None, 64));
    let mut forged = sign::sign(&keys.alice_submit, b"something else", Utc::now());
    forged.ts = sign::sign(&keys.alice_submit, &forged_value, Utc::now()).ts;
    send(
        &bootstrap,
        &jobs_topic,
        "signed-forged",
        &forged_value,
        Some(&forged),
    )
    .await;
    // A key nobody registered.
    let (_, stranger) = new_key([99; 32], "mallory", vec![], Utc::now());
    let unknown = enc(&job("signed-unknown", "acme/bu/t/signed", None, 64));
    let s = sign::sign(&stranger, &unknown, Utc::now());
    send(
        &bootstrap,
        &jobs_topic,
        "signed-unknown",
        &unknown,
        Some(&s),
    )
    .await;
    // Not signed, for a project that requires it.
    let unsigned = enc(&job("unsigned", "acme/bu/t/signed", None, 64));
    send(&bootstrap, &jobs_topic, "unsigned", &unsigned, None).await;
    // Signed, but for a project outside the key's scope.
    let outside = enc(&job("out-of-scope", "acme/other/t/p", None, 64));
    let s = sign::sign(&keys.alice_submit, &outside, Utc::now());
    send(&bootstrap, &jobs_topic, "out-of-scope", &outside, Some(&s)).await;
    // Signed by a producer in Python.
    let py = enc(&job("signed-python", "acme/bu/t/signed", None, 64));
    let s = python_signature(&keys.alice_submit, &py);
    send(&bootstrap, &jobs_topic, "signed-python", &py, Some(&s)).await;

    let mut got = HashMap::new();
    let ids = [
        "signed-ok",
        "signed-old",
        "signed-forged",
        "signed-unknown",
        "unsigned",
        "out-of-scope",
        "signed-python",
    ];
    results_until(
        &results,
        &rcodec,
        &mut got,
        &ids,
        |_| true,
        Duration::from_secs(60),
    )
    .await;
    // The same message again, at another offset, once the original is done:
    // a replay, on its own partition and on every other one (this worker owns
    // them all), sent at once so that the copies run side by side. Each is
    // refused with its own result, not folded into another copy of the same
    // job id.
    futures::future::join_all((0..4).map(|partition| {
        send_to(
            &bootstrap,
            &jobs_topic,
            Some(partition),
            "signed-ok",
            &ok,
            Some(&good),
        )
    }))
    .await;
    results_until(
        &results,
        &rcodec,
        &mut got,
        &["signed-ok"],
        |rs| rs.len() >= 5,
        Duration::from_secs(30),
    )
    .await;
    let first = |id: &str| got[id][0].clone();
    assert_eq!(
        first("signed-ok").status,
        JobStatus::Succeeded,
        "{:?}",
        first("signed-ok").error
    );
    assert_eq!(
        first("signed-python").status,
        JobStatus::Succeeded,
        "{:?}",
        first("signed-python").error
    );
    for replay in &got["signed-ok"][1..] {
        assert_eq!(replay.status, JobStatus::Rejected);
        assert_eq!(code(replay), "auth_replayed");
    }
    for (id, want) in [
        ("signed-old", "auth_expired"),
        ("signed-forged", "auth_forged"),
        ("signed-unknown", "auth_unknown_key"),
        ("unsigned", "auth_unsigned"),
        ("out-of-scope", "auth_out_of_scope"),
    ] {
        let r = first(id);
        assert_eq!(r.status, JobStatus::Rejected, "{id}");
        assert_eq!(code(&r), want, "{id}: {:?}", r.error);
    }

    // Held work: a job whose worst case passes the node's approval threshold.
    let calls_before = sim_requests(&stack).await;
    let mut held_ids = Vec::new();
    for id in ["held-approved", "held-rejected"] {
        let v = enc(&job(id, "acme/bu/t/gated", Some("claude-fable-5-1"), 4000));
        let s = sign::sign(&keys.alice_submit, &v, Utc::now());
        send(&bootstrap, &jobs_topic, id, &v, Some(&s)).await;
        held_ids.push(id);
    }
    results_until(
        &results,
        &rcodec,
        &mut got,
        &held_ids,
        |_| true,
        Duration::from_secs(60),
    )
    .await;
    let approval = |id: &str| {
        let r = &got[id][0];
        assert_eq!(r.status, JobStatus::Held, "{id}: {:?}", r.error);
        r.approval_id
            .clone()
            .expect("a held result names its approval")
    };
    let (approve_id, reject_id) = (approval("held-approved"), approval("held-rejected"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sim_requests(&stack).await,
        calls_before,
        "held work reached a provider"
    );
    // The approver list shows both.
    let (ok, out, err) = cli(
        &config,
        &bootstrap,
        Some(&keys.bob_approve),
        &["approvals", "list", "--format", "json"],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains(&approve_id) && out.contains(&reject_id),
        "{out}"
    );
    // The submitter may not approve her own work, with any of her keys.
    let (ok, _, err) = cli(
        &config,
        &bootstrap,
        Some(&keys.alice_approve),
        &["approve", &approve_id],
    );
    assert!(!ok, "the submitter approved her own work");
    assert!(err.contains("submitted"), "{err}");
    // Nor may someone without the approver role.
    let (ok, _, err) = cli(
        &config,
        &bootstrap,
        Some(&keys.viewer),
        &["approve", &approve_id],
    );
    assert!(!ok && err.contains("approver"), "{err}");
    // Another approver may.
    let (ok, _, err) = cli(
        &config,
        &bootstrap,
        Some(&keys.bob_approve),
        &["approve", &approve_id, "--reason", "quarterly review"],
    );
    assert!(ok, "{err}");
    let (ok, _, err) = cli(
        &config,
        &bootstrap,
        Some(&keys.bob_approve),
        &["reject", &reject_id, "--reason", "too dear"],
    );
    assert!(ok, "{err}");
    results_until(
        &results,
        &rcodec,
        &mut got,
        &held_ids,
        is_final,
        Duration::from_secs(90),
    )
    .await;
    let approved = got["held-approved"].last().unwrap();
    assert_eq!(
        approved.status,
        JobStatus::Succeeded,
        "{:?}",
        approved.error
    );
    let rejected = got["held-rejected"].last().unwrap();
    assert_eq!(rejected.status, JobStatus::Rejected);
    assert_eq!(code(rejected), "approval_rejected");
    assert!(
        rejected
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("too dear")
    );

    // Roles on the CLI: each command names the role it needs.
    let (ok, _, err) = cli(
        &config,
        &bootstrap,
        Some(&keys.alice_submit),
        &["audit", "verify"],
    );
    assert!(!ok && err.contains("auditor"), "{err}");
    let (ok, _, err) = cli(
        &config,
        &bootstrap,
        Some(&keys.alice_submit),
        &[
            "keys",
            "create",
            "--principal",
            "eve",
            "--role",
            "org-admin",
            "--scope",
            "acme",
        ],
    );
    assert!(!ok, "a submitter made a key: {err}");
    let (ok, _, err) = cli(&config, &bootstrap, None, &["approvals", "list"]);
    assert!(!ok && err.contains("SWITCHYARD_API_KEY"), "{err}");
    let (ok, out, err) = cli(&config, &bootstrap, Some(&keys.admin), &["keys", "list"]);
    assert!(ok, "{err}");
    assert!(out.contains("alice") && out.contains("bob"), "{out}");

    // The audit log of the run verifies, then a record appended by hand
    // (kcat, with no HMAC key) is caught.
    let (ok, out, err) = cli(
        &config,
        &bootstrap,
        Some(&keys.auditor),
        &["audit", "verify"],
    );
    assert!(ok, "audit verify failed on an untouched log: {out}{err}");
    let forged_record = r#"{"writer":"worker:intruder","seq":1,"prev_hash":"","at":"2026-12-06T00:00:00Z","kind":"approval_decided","subject":"x","outcome":"approved","detail":{},"hash":"00","hmac":"00"}"#;
    let status = std::process::Command::new("kcat")
        .args(["-P", "-b", &bootstrap, "-t", &topics.audit, "-p", "0"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(forged_record.as_bytes())?;
            c.wait()
        })
        .expect("kcat runs (scripts/test.sh installs it)");
    assert!(status.success());
    let (ok, out, err) = cli(
        &config,
        &bootstrap,
        Some(&keys.auditor),
        &["audit", "verify"],
    );
    assert!(!ok, "a forged record passed audit verify: {out}");
    assert!(format!("{out}{err}").contains("intruder"), "{out}{err}");

    // No private key appears in anything the run wrote.
    let secrets: Vec<String> = [
        &keys.alice_submit,
        &keys.alice_approve,
        &keys.bob_approve,
        &keys.admin,
        &keys.auditor,
        &keys.viewer,
    ]
    .iter()
    .flat_map(|k| {
        let exposed = k.expose();
        let seed = exposed.rsplit('.').next().unwrap().to_owned();
        [exposed, seed]
    })
    .chain([AUDIT_KEY.to_owned()])
    .collect();
    for topic in [
        topics.results.name.as_str(),
        topics.usage.name.as_str(),
        topics.audit.as_str(),
        topics.approvals.as_str(),
        topics.held.as_str(),
        topics.jobs.name.as_str(),
    ] {
        for m in read_dead_letters(&bootstrap, topic) {
            let text = String::from_utf8_lossy(&m.payload);
            let heads: String = m.headers.values().cloned().collect();
            for s in &secrets {
                assert!(
                    !text.contains(s.as_str()) && !heads.contains(s.as_str()),
                    "a secret is on {topic}"
                );
            }
        }
    }
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_work_nobody_decides_on_expires_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (config, keys) = setup(dir.path(), "3s");
    let stack = Stack::start(&config, StackOptions::default())
        .await
        .unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let codec = Codec::for_topic(&topics.jobs);
    let results = results_consumer(&bootstrap, &topics.results.name);
    let rcodec = Codec::for_topic(&topics.results);
    let v = codec
        .encode(&job(
            "held-expiring",
            "acme/bu/t/gated",
            Some("claude-fable-5-1"),
            4000,
        ))
        .unwrap();
    let s = sign::sign(&keys.alice_submit, &v, Utc::now());
    send(&bootstrap, &topics.jobs.name, "held-expiring", &v, Some(&s)).await;
    let mut got = HashMap::new();
    results_until(
        &results,
        &rcodec,
        &mut got,
        &["held-expiring"],
        |_| true,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(got["held-expiring"][0].status, JobStatus::Held);
    results_until(
        &results,
        &rcodec,
        &mut got,
        &["held-expiring"],
        is_final,
        Duration::from_secs(60),
    )
    .await;
    let last = got["held-expiring"].last().unwrap();
    assert_eq!(last.status, JobStatus::Rejected);
    assert_eq!(code(last), "approval_expired");
    // A decision after expiry changes nothing.
    let id = got["held-expiring"][0].approval_id.clone().unwrap();
    let _ = cli(
        &config,
        &bootstrap,
        Some(&keys.bob_approve),
        &["approve", &id],
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut late = HashMap::new();
    let fresh = results_consumer(&bootstrap, &topics.results.name);
    results_until(
        &fresh,
        &rcodec,
        &mut late,
        &["held-expiring"],
        |rs| rs.len() >= 2,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        late["held-expiring"]
            .iter()
            .all(|r| r.status != JobStatus::Succeeded),
        "expired work ran after a late approval"
    );
    stack.stop().await.unwrap();
}

/// A batch whose jobs are each under the node's approval threshold but whose
/// whole worst case is above it: `submit` prices it and stamps the figure on
/// every (signed) job, the workers hold all of it under the batch's one
/// approval id, `approvals list` shows the batch's worst case and its job
/// count, and one approval runs every job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_above_the_threshold_in_all_is_held_and_released_as_a_whole() {
    const PROJECT: &str = "acme/bu/t/batches";
    const LIMIT: f64 = 0.01;
    const JOBS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let (config, keys) = setup(dir.path(), "10m");
    let stack = Stack::start(&config, StackOptions::default())
        .await
        .unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let results = results_consumer(&bootstrap, &topics.results.name);
    let rcodec = Codec::for_topic(&topics.results);
    let calls_before = sim_requests(&stack).await;

    // Short answers: even on the dearest model each job stays under a cent
    // (50 tokens at $50 per million), while five of them pass it.
    let file = dir.path().join("requests.jsonl");
    let lines: Vec<String> = (0..JOBS)
        .map(|i| {
            serde_json::json!({
                "custom_id": format!("req-{i}"),
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini-2024-07-18",
                    "messages": [{"role": "user", "content": format!("Summarise the harbour report {i} in one line.")}],
                    "max_tokens": 50
                }
            })
            .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (ok, out, err) = cli(
        &config,
        &bootstrap,
        Some(&keys.alice_submit),
        &[
            "submit",
            file.to_str().unwrap(),
            "--project",
            PROJECT,
            "--format",
            "json",
        ],
    );
    assert!(ok, "{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let batch_id = report["batch_id"].as_str().unwrap().to_owned();
    let batch_worst = report["worst_case_usd"]
        .as_f64()
        .unwrap_or_else(|| panic!("the batch was not priced: {report}"));
    assert!(
        batch_worst > LIMIT && batch_worst / (JOBS as f64) < LIMIT,
        "{batch_worst}"
    );

    // Every job is held, under the batch's one approval id, and none is called.
    let ids: Vec<String> = (0..JOBS).map(|i| format!("{batch_id}-{i}")).collect();
    let want: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut got = HashMap::new();
    results_until(
        &results,
        &rcodec,
        &mut got,
        &want,
        |_| true,
        Duration::from_secs(60),
    )
    .await;
    let approval_id = format!("appr-{batch_id}");
    for id in &want {
        let r = &got[*id][0];
        assert_eq!(r.status, JobStatus::Held, "{id}: {:?}", r.error);
        assert_eq!(r.approval_id.as_deref(), Some(approval_id.as_str()), "{id}");
        // Held for the batch's worst case, not for its own.
        let why = &r.error.as_ref().unwrap().message;
        assert!(why.contains("its batch's worst case"), "{id}: {why}");
    }

    // The approver sees one request: the batch's worst case and its jobs.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let pending = loop {
        let (ok, out, err) = cli(
            &config,
            &bootstrap,
            Some(&keys.bob_approve),
            &["approvals", "list", "--format", "json"],
        );
        assert!(ok, "{err}");
        let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let ours: Vec<_> = list.into_iter().filter(|p| p["node"] == PROJECT).collect();
        if ours.first().is_some_and(|p| p["jobs"] == JOBS) {
            assert_eq!(ours.len(), 1, "{ours:?}");
            break ours[0].clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the batch's {JOBS} jobs never waited under one approval: {ours:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(pending["id"], approval_id.as_str());
    assert_eq!(pending["submitted_by"], "alice");
    assert_eq!(pending["worst_case_usd"].as_f64(), Some(batch_worst));
    assert_eq!(
        sim_requests(&stack).await,
        calls_before,
        "held work reached a provider"
    );

    // One approval runs the whole batch.
    let (ok, _, err) = cli(
        &config,
        &bootstrap,
        Some(&keys.bob_approve),
        &["approve", &approval_id, "--reason", "month-end run"],
    );
    assert!(ok, "{err}");
    results_until(
        &results,
        &rcodec,
        &mut got,
        &want,
        is_final,
        Duration::from_secs(90),
    )
    .await;
    for id in &want {
        let last = got[*id].last().unwrap();
        assert_eq!(last.status, JobStatus::Succeeded, "{id}: {:?}", last.error);
    }
    assert!(sim_requests(&stack).await >= calls_before + JOBS as u64);

    // The approval covers the jobs the approver saw, no other: a job of the
    // same batch that copies a released job's header (signed by its
    // submitter, with new work in it) is held, and stays held.
    let jobs_topic = &topics.jobs.name;
    let (released, header) = released_copy(&bootstrap, jobs_topic, want[0]).await;
    let jcodec = Codec::for_topic(&topics.jobs);
    let mut extra: Job = jcodec.decode(&released).unwrap();
    extra.job_id = format!("{batch_id}-extra");
    extra.request = ChatRequest {
        max_tokens: Some(50),
        ..ChatRequest::from_user("Write the quarterly report in full.")
    };
    let value = jcodec.encode(&extra).unwrap();
    let signed = sign::sign(&keys.alice_submit, &value, Utc::now());
    let calls_after = sim_requests(&stack).await;
    let producer = producer(&bootstrap);
    producer
        .send(
            FutureRecord::to(jobs_topic)
                .key(&extra.job_id)
                .payload(&value)
                .headers(signature_headers(&signed).insert(Header {
                    key: switchyard_codec::headers::RELEASED_BY,
                    value: Some(&header),
                })),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let extra_ids = [extra.job_id.as_str()];
    results_until(
        &results,
        &rcodec,
        &mut got,
        &extra_ids,
        |_| true,
        Duration::from_secs(60),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mine = &got[extra_ids[0]];
    assert_eq!(mine[0].status, JobStatus::Held, "{:?}", mine[0].error);
    assert_eq!(mine.len(), 1, "the copied approval decided it: {mine:?}");
    assert_eq!(
        sim_requests(&stack).await,
        calls_after,
        "work the approver never saw reached a provider"
    );
    stack.stop().await.unwrap();
}

/// A released job's message on the jobs topic and its release header.
async fn released_copy(bootstrap: &str, topic: &str, job_id: &str) -> (Vec<u8>, String) {
    use rdkafka::message::Headers;
    let consumer = results_consumer(bootstrap, topic);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .expect("the released job is on the jobs topic")
            .unwrap();
        if m.key() != Some(job_id.as_bytes()) {
            continue;
        }
        let header = m.headers().and_then(|hs| {
            hs.iter()
                .find(|h| h.key == switchyard_codec::headers::RELEASED_BY)
                .and_then(|h| h.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        if let Some(header) = header {
            return (m.payload().unwrap().to_vec(), header);
        }
    }
}

/// HTTP requests the simulated providers have answered so far.
async fn sim_requests(stack: &Stack) -> u64 {
    let url = format!("http://{}/sim/stats", stack.sim.addr());
    let body = reqwest::get(url).await.unwrap().text().await.unwrap();
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    stats["models"]
        .as_object()
        .unwrap_or_else(|| panic!("no models in {stats}"))
        .values()
        .map(|m| m["requests"].as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_mirrors_the_audit_log_and_a_row_altered_in_clickhouse_is_caught() {
    let db = analytics::TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let (config, keys) = setup(dir.path(), "10m");
    let stack = Stack::start(&config, StackOptions::default())
        .await
        .unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let codec = Codec::for_topic(&topics.jobs);
    let results = results_consumer(&bootstrap, &topics.results.name);
    let rcodec = Codec::for_topic(&topics.results);
    let ids: Vec<String> = (0..5).map(|i| format!("mirrored-{i}")).collect();
    for id in &ids {
        let v = codec
            .encode(&job(id, "acme/bu/t/signed", None, 64))
            .unwrap();
        let s = sign::sign(&keys.alice_submit, &v, Utc::now());
        send(&bootstrap, &topics.jobs.name, id, &v, Some(&s)).await;
    }
    let mut got = HashMap::new();
    let want: Vec<&str> = ids.iter().map(String::as_str).collect();
    results_until(
        &results,
        &rcodec,
        &mut got,
        &want,
        |_| true,
        Duration::from_secs(60),
    )
    .await;

    // The real sink process, with ClickHouse: it mirrors the audit topics.
    let parquet = dir.path().join("usage");
    let sink = switchyard()
        .args([
            "sink",
            "--config",
            config.to_str().unwrap(),
            "--brokers",
            &bootstrap,
        ])
        .args(["--clickhouse-url", &db.url])
        .env("SWITCHYARD__ANALYTICS__CLICKHOUSE_DATABASE", &db.name)
        .env(
            "SWITCHYARD__ANALYTICS__PARQUET_DIR",
            parquet.to_str().unwrap(),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sink = Proc(sink);
    let mirrored = sql_until(
        &db,
        "SELECT count() FROM audit_log WHERE kind = 'admission'",
        |n| n >= 5,
    )
    .await;
    assert!(
        mirrored,
        "the sink did not mirror the audit log into ClickHouse"
    );
    let from_ch = |k: &PrivateKey| {
        let mut cmd = switchyard();
        cmd.args([
            "audit",
            "verify",
            "--from",
            "clickhouse",
            "--config",
            config.to_str().unwrap(),
        ])
        .args(["--brokers", &bootstrap, "--clickhouse-url", &db.url])
        .env("SWITCHYARD__ANALYTICS__CLICKHOUSE_DATABASE", &db.name)
        .env(AUDIT_KEY_ENV, AUDIT_KEY)
        .env("SWITCHYARD_API_KEY", k.expose());
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = from_ch(&keys.auditor);
    assert!(ok, "the mirrored log does not verify: {text}");
    // Someone with database access rewrites an admission's outcome.
    db.sql("ALTER TABLE audit_log UPDATE outcome = 'refused' WHERE kind = 'admission' AND subject = 'mirrored-2'")
        .await;
    let altered = sql_until(
        &db,
        "SELECT count() FROM audit_log WHERE outcome = 'refused'",
        |n| n > 0,
    )
    .await;
    assert!(altered, "the mutation did not apply");
    let (ok, text) = from_ch(&keys.auditor);
    assert!(!ok, "an altered row passed audit verify: {text}");
    assert!(text.contains("altered"), "{text}");
    signal(&sink, "-TERM");
    drop(sink);
    stack.stop().await.unwrap();
    db.drop_database().await;
}

/// Polls a count until `done` holds (60 s at most).
async fn sql_until(db: &analytics::TestDb, sql: &str, done: impl Fn(u64) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        let n = analytics::try_sql_at(&db.url, &db.name, sql)
            .await
            .ok()
            .and_then(|rows| rows.first().and_then(|r| r[0].parse::<u64>().ok()))
            .unwrap_or(0);
        if done(n) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}
