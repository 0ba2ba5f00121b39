//! Submits of the same batch fenced through the registry: two started at once
//! produce each job exactly once; one started while another is producing
//! refuses (heartbeats keep the running one's claim alive past the lease); one
//! started after a submit died waits out the lease, then finishes the batch
//! without duplicates; a submit that fails gives the batch up at once; and a
//! batch canceled while it is submitted keeps its final state as its last
//! registry record (what compaction keeps), even when the submit then dies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/batch.rs"]
mod batch;
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use switchyard_batch::{
    BatchState, Error, NoProgress, Progress, SubmitOptions, SubmitReport, Unit,
};
use switchyard_core::batch::BatchRecord;
use switchyard_core::config::{KafkaConfig, LoadedPipeline};
use switchyard_embedded::{Stack, StackOptions};
use switchyard_kafka::{ScanFrom, scan_to_end};

use batch::*;
use common::demo_config;

const LINES: usize = 5000;

async fn broker_only() -> Stack {
    Stack::start(
        &demo_config(),
        StackOptions {
            partitions: 4,
            worker: false,
            ..StackOptions::default()
        },
    )
    .await
    .unwrap()
}

/// How many copies of each key the jobs topic holds.
fn jobs_by_key(kafka: &KafkaConfig) -> HashMap<String, usize> {
    let mut keys = HashMap::new();
    scan_to_end(
        kafka,
        &kafka.topics.jobs.name,
        ScanFrom::Beginning,
        &Default::default(),
        Duration::from_secs(60),
        |m| {
            let key = String::from_utf8(m.key.unwrap().to_vec()).unwrap();
            *keys.entry(key).or_default() += 1;
        },
    )
    .unwrap();
    keys
}

/// Asserts that the jobs topic holds every job of `batch_id` exactly once.
fn assert_each_job_once(kafka: &KafkaConfig, batch_id: &str) {
    let keys = jobs_by_key(kafka);
    let twice: Vec<_> = keys.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs produced twice: {twice:?}");
    for i in 0..LINES {
        assert!(
            keys.contains_key(&format!("{batch_id}-{i}")),
            "job {i} is missing"
        );
    }
    assert_eq!(keys.len(), LINES);
}

/// Runs `submit` on its own thread with `progress`; a panic there stands for
/// the process dying.
fn submit_with(
    pipeline: &LoadedPipeline,
    file: &Path,
    options: SubmitOptions,
    progress: Arc<dyn Progress>,
) -> std::thread::JoinHandle<switchyard_batch::Result<SubmitReport>> {
    let (pipeline, file) = (pipeline.clone(), file.to_owned());
    std::thread::spawn(move || switchyard_batch::submit(&pipeline, &file, &options, &*progress))
}

async fn join(
    h: std::thread::JoinHandle<switchyard_batch::Result<SubmitReport>>,
) -> std::thread::Result<switchyard_batch::Result<SubmitReport>> {
    tokio::task::spawn_blocking(move || h.join()).await.unwrap()
}

/// Progress that runs `at_jobs` once, when the produce step has sent `jobs` jobs.
struct Hook {
    jobs: u64,
    step: Mutex<String>,
    fired: AtomicBool,
    at_jobs: Box<dyn Fn() + Send + Sync>,
}

impl Hook {
    fn at(jobs: u64, at_jobs: impl Fn() + Send + Sync + 'static) -> Arc<dyn Progress> {
        Arc::new(Self {
            jobs,
            step: Mutex::new(String::new()),
            fired: AtomicBool::new(false),
            at_jobs: Box::new(at_jobs),
        })
    }
}

impl Progress for Hook {
    fn start(&self, step: &str, _unit: Unit, _total: Option<u64>) {
        *self.step.lock().unwrap() = step.to_owned();
    }

    fn advance(&self, done: u64) {
        let producing = *self.step.lock().unwrap() == "submitting";
        if producing && done >= self.jobs && !self.fired.swap(true, Ordering::SeqCst) {
            (self.at_jobs)();
        }
    }

    fn finish(&self) {}
}

fn lease(d: Duration) -> SubmitOptions {
    SubmitOptions {
        claim_lease: d,
        ..options()
    }
}

fn registry_record(kafka: &KafkaConfig, batch_id: &str) -> BatchRecord {
    switchyard_batch::registry::read(kafka, batch_id)
        .unwrap()
        .unwrap()
}

fn input(dir: &Path) -> PathBuf {
    write_file(&dir.join("requests.jsonl"), LINES, openai_line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_submits_started_at_once_produce_each_job_once() {
    let stack = broker_only().await;
    let kafka = stack.pipeline.config.kafka.clone();
    let dir = tempfile::tempdir().unwrap();
    let file = input(dir.path());
    let progress: Arc<dyn Progress> = Arc::new(NoProgress);
    let a = submit_with(&stack.pipeline, &file, options(), progress.clone());
    let b = submit_with(&stack.pipeline, &file, options(), progress);
    let outcomes = [join(a).await.unwrap(), join(b).await.unwrap()];
    let produced: Vec<&SubmitReport> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok())
        .filter(|r| r.produced > 0)
        .collect();
    assert_eq!(produced.len(), 1, "{outcomes:?}");
    assert_eq!(produced[0].produced, LINES as u64);
    let batch_id = produced[0].batch_id.clone();
    // The other one either lost the race for the claim or came after the end.
    for o in &outcomes {
        match o {
            Ok(r) if r.produced == 0 => assert!(r.already_submitted, "{r:?}"),
            Ok(_) => {}
            Err(e @ Error::Busy { .. }) => {
                assert!(!e.is_bad_input());
                assert!(
                    e.to_string()
                        .contains("is being submitted by another process"),
                    "{e}"
                );
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let k = kafka.clone();
    let id = batch_id.clone();
    tokio::task::spawn_blocking(move || assert_each_job_once(&k, &id))
        .await
        .unwrap();
    assert_eq!(
        registry_record(&kafka, &batch_id).state,
        BatchState::Submitted
    );
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubmit_while_a_submit_is_producing_refuses() {
    let stack = broker_only().await;
    let kafka = stack.pipeline.config.kafka.clone();
    let dir = tempfile::tempdir().unwrap();
    let file = input(dir.path());
    // The first submit stops halfway until told to go on, for longer than the lease.
    let (reached_tx, reached) = mpsc::channel::<()>();
    let (go, go_rx) = mpsc::channel::<()>();
    let (reached_tx, go_rx) = (Mutex::new(reached_tx), Mutex::new(go_rx));
    let hold = Hook::at(2048, move || {
        reached_tx.lock().unwrap().send(()).unwrap();
        go_rx.lock().unwrap().recv().unwrap();
    });
    let short = Duration::from_secs(3);
    let first = submit_with(&stack.pipeline, &file, lease(short), hold);
    tokio::task::spawn_blocking(move || reached.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(short + Duration::from_secs(1)).await;

    let second = submit_with(&stack.pipeline, &file, lease(short), Arc::new(NoProgress));
    let err = join(second).await.unwrap().unwrap_err();
    let Error::Busy { pid, batch_id, .. } = &err else {
        panic!("expected the batch to be busy, got {err}");
    };
    assert_eq!(*pid, std::process::id());
    let text = err.to_string();
    assert!(
        text.contains("is being submitted by another process")
            && text.contains("wait for it to finish, or run this command again after it stops"),
        "{text}"
    );
    // Status shows who is submitting it.
    let (k, id) = (kafka.clone(), batch_id.clone());
    let status = tokio::task::spawn_blocking(move || switchyard_batch::status(&k, &id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.record.state, BatchState::Submitting);
    assert!(
        status.table().contains("being submitted by pid"),
        "{}",
        status.table()
    );

    go.send(()).unwrap();
    let report = join(first).await.unwrap().unwrap();
    assert_eq!(
        (report.produced, report.state),
        (LINES as u64, BatchState::Submitted)
    );
    let (k, id) = (kafka.clone(), report.batch_id.clone());
    tokio::task::spawn_blocking(move || assert_each_job_once(&k, &id))
        .await
        .unwrap();
    let again = submit(&stack.pipeline, &file, options()).await.unwrap();
    assert!(again.already_submitted);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_after_one_died_waits_out_the_lease_then_finishes_without_duplicates() {
    let stack = broker_only().await;
    let kafka = stack.pipeline.config.kafka.clone();
    let dir = tempfile::tempdir().unwrap();
    let file = input(dir.path());
    let short = Duration::from_secs(6);
    let dies = Hook::at(2048, || panic!("the submitting process dies here"));
    let first = submit_with(&stack.pipeline, &file, lease(short), dies);
    assert!(join(first).await.is_err(), "the first submit did not die");

    // Its claim is fresh: the batch is still held.
    let err = submit(&stack.pipeline, &file, lease(short))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err}");

    // No heartbeat for longer than the lease: the next submit takes over.
    tokio::time::sleep(short + Duration::from_millis(500)).await;
    let report = submit(&stack.pipeline, &file, lease(short)).await.unwrap();
    assert!(report.resumed, "{report:?}");
    assert_eq!(report.state, BatchState::Submitted);
    assert!(report.produced < LINES as u64, "{report:?}");
    let (k, id) = (kafka.clone(), report.batch_id.clone());
    tokio::task::spawn_blocking(move || assert_each_job_once(&k, &id))
        .await
        .unwrap();
    let r = registry_record(&kafka, &report.batch_id);
    assert_eq!((r.state, r.submitter), (BatchState::Submitted, None));
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_that_fails_releases_the_batch_at_once() {
    let stack = broker_only().await;
    let kafka = stack.pipeline.config.kafka.clone();
    let dir = tempfile::tempdir().unwrap();
    let file = input(dir.path());
    let original = std::fs::read(&file).unwrap();
    // The file changes while its jobs are produced: the submit fails.
    let changed = file.clone();
    let change = Hook::at(1024, move || {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&changed)
            .unwrap();
        f.write_all(b"\n").unwrap();
    });
    let first = submit_with(&stack.pipeline, &file, options(), change);
    let err = join(first).await.unwrap().unwrap_err();
    assert!(matches!(err, Error::FileChanged { .. }), "{err}");

    // The original file again, at once (well within the default 30 s lease).
    std::fs::write(&file, &original).unwrap();
    let report = submit(&stack.pipeline, &file, options()).await.unwrap();
    assert!(report.resumed, "{report:?}");
    assert_eq!(report.state, BatchState::Submitted);
    let (k, id) = (kafka.clone(), report.batch_id.clone());
    tokio::task::spawn_blocking(move || assert_each_job_once(&k, &id))
        .await
        .unwrap();
    stack.stop().await.unwrap();
}

/// The batch ids on the registry topic and their newest raw record, as a
/// compacted topic would keep them.
fn last_raw_records(kafka: &KafkaConfig) -> HashMap<String, BatchRecord> {
    let mut last = HashMap::new();
    scan_to_end(
        kafka,
        &kafka.topics.batches,
        ScanFrom::Beginning,
        &Default::default(),
        Duration::from_secs(30),
        |m| {
            let key = String::from_utf8(m.key.unwrap().to_vec()).unwrap();
            last.insert(key, serde_json::from_slice(m.payload).unwrap());
        },
    )
    .unwrap();
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_canceled_while_submitted_keeps_its_final_state_last_when_the_submit_dies() {
    let stack = broker_only().await;
    let kafka = stack.pipeline.config.kafka.clone();
    let dir = tempfile::tempdir().unwrap();
    let file = input(dir.path());
    let short = Duration::from_secs(3);
    let k = kafka.clone();
    // Mid-submit: cancel the batch, let heartbeats go on, then die.
    let dies = Hook::at(1024, move || {
        let records = last_raw_records(&k);
        let batch_id = records.keys().next().unwrap().clone();
        switchyard_batch::cancel(&k, &batch_id).unwrap();
        std::thread::sleep(short);
        panic!("the submitting process dies here");
    });
    let first = submit_with(&stack.pipeline, &file, lease(short), dies);
    assert!(join(first).await.is_err(), "the submit did not die");
    let records = last_raw_records(&kafka);
    let (batch_id, last) = records.iter().next().unwrap();
    assert_eq!(
        last.state,
        BatchState::Canceled,
        "the last record of {batch_id} is {last:?}"
    );
    stack.stop().await.unwrap();
}
