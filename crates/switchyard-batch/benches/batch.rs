//! Batch throughput and memory on the embedded broker (librdkafka's mock
//! cluster, in this process):
//!
//! - `submit/openai/50000`: a 50,000-line OpenAI Batch file submitted end to end
//!   (two streaming passes: parse + validate + hash, then parse + encode +
//!   produce with acks=all, and the registry records). Reported as jobs/s.
//! - `collect/100000`: 100,000 results (1% re-delivered copies, shuffled) read
//!   from the results topic, deduplicated, spilled and written in input order.
//! - Then, outside criterion, the peak RSS of a child process that does one
//!   collect of 1,000, 25,000, 100,000 and 400,000 results, against the
//!   ordering index's size.
//!
//! Run: `cargo bench -p switchyard-batch --bench batch`

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use criterion::{Criterion, Throughput};
use switchyard_batch::sender::Sender;
use switchyard_batch::{
    BatchFormat, BatchRecord, BatchState, CollectOptions, NoProgress, StopFlag, SubmitOptions, ids,
    registry,
};
use switchyard_codec::Codec;
use switchyard_core::config::{LoadedPipeline, Topics};
use switchyard_core::result::{JobResult, JobStatus, Output, TokenUsage};
use switchyard_kafka::EmbeddedBroker;

const SUBMIT_LINES: usize = 50_000;
const COLLECT_RESULTS: u64 = 100_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn start() -> (EmbeddedBroker, LoadedPipeline) {
    let t = Topics::default();
    let broker = EmbeddedBroker::start(&[
        (t.jobs.name.as_str(), 8),
        (t.results.name.as_str(), 8),
        (t.batches.as_str(), 1),
    ])
    .unwrap();
    let mut pipeline =
        switchyard_loader::load_pipeline(&repo().join("pipelines/demo.toml"), &[]).unwrap();
    pipeline.config.kafka.brokers = broker.bootstrap().to_owned();
    (broker, pipeline)
}

const PROMPTS: &[&str] = &[
    "Classify this ticket as billing, technical or account. One word.\n\n\"I was charged twice for March.\"",
    "Extract the invoice number, date and total as JSON: Invoice #A-1209, 2026-03-02, total $1,204.00",
    "Summarise in one sentence: The quarterly review found that returns rose 4% after the packaging change.",
    "Translate to French: Your order has shipped and will arrive on Tuesday.",
];

fn openai_file(dir: &Path, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 300);
    for i in 0..n {
        let line = serde_json::json!({
            "custom_id": format!("req-{i}"), "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "max_tokens": 100, "temperature": 0.2, "messages": [
                {"role": "system", "content": "You are a careful assistant."},
                {"role": "user", "content": format!("{} (item {i})", PROMPTS[i % PROMPTS.len()])}]}
        });
        serde_json::to_writer(&mut out, &line).unwrap();
        out.push(b'\n');
    }
    std::fs::write(dir.join("sample.jsonl"), &out).unwrap();
    out
}

fn bench_submit(c: &mut Criterion) {
    let (_broker, pipeline) = start();
    let dir = tempfile::tempdir().unwrap();
    let base = openai_file(dir.path(), SUBMIT_LINES);
    let mut round = 0usize;
    let mut group = c.benchmark_group("submit");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(SUBMIT_LINES as u64));
    group.bench_function("openai/50000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                // Trailing blank lines change the file's hash, not its jobs: a new batch each round.
                round += 1;
                let path = dir.path().join("batch.jsonl");
                let mut f = std::fs::File::create(&path).unwrap();
                f.write_all(&base).unwrap();
                f.write_all(&vec![b'\n'; round]).unwrap();
                drop(f);
                let options = SubmitOptions::new("acme/retail/support/ticket-triage");
                let t = Instant::now();
                let r = switchyard_batch::submit(&pipeline, &path, &options, &NoProgress).unwrap();
                total += t.elapsed();
                assert_eq!(r.produced, SUBMIT_LINES as u64);
            }
            total
        })
    });
    group.finish();
}

/// Puts `n` results (plus 1% re-delivered copies) of a new batch on the results
/// topic, shuffled, and registers the batch. Returns its id.
fn seed_results(pipeline: &LoadedPipeline, n: u64, tag: &str) -> String {
    let kafka = &pipeline.config.kafka;
    let batch_id = ids::batch_id("acme/retail/support/ticket-triage", tag);
    registry::publish(
        kafka,
        &BatchRecord {
            mode: None,
            batch_id: batch_id.clone(),
            project: "acme/retail/support/ticket-triage".into(),
            format: BatchFormat::Openai,
            state: BatchState::Submitted,
            jobs: n,
            source_sha256: tag.into(),
            file_name: "bench.jsonl".into(),
            strategy: None,
            workload: None,
            submitted_at: Utc::now(),
            canceled_at: None,
            refused: 0,
            submitter: None,
            worst_case_usd: None,
        },
    )
    .unwrap();
    let codec = Codec::for_topic(&kafka.topics.results);
    let mut sender = Sender::new(kafka).unwrap();
    let content = "The ticket is about billing: a duplicate charge for March. ".repeat(4);
    // A fixed stride through 0..n visits every ordinal once in a shuffled order.
    let stride = 7_919u64;
    for i in 0..n + n / 100 {
        let ordinal = (i % n) * stride % n;
        let job_id = ids::job_id(&batch_id, ordinal);
        let mut metadata = std::collections::BTreeMap::new();
        metadata.insert("custom_id".to_owned(), format!("req-{ordinal}"));
        metadata.insert("line".to_owned(), (ordinal + 1).to_string());
        let r = JobResult {
            mode: switchyard_core::result::RunMode::Live,
            job_id: job_id.clone(),
            batch_id: Some(batch_id.clone()),
            project: "acme/retail/support/ticket-triage".into(),
            status: JobStatus::Succeeded,
            provider: Some("openai".into()),
            model: Some("gpt-4o-mini".into()),
            output: Some(Output {
                content: content.clone(),
                finish_reason: "stop".into(),
            }),
            usage: TokenUsage {
                input_tokens: 120,
                output_tokens: 60,
                cached_input_tokens: 0,
                cache_write_input_tokens: 0,
            },
            cost_usd: 0.000_054,
            latency_ms: 800,
            attempts: Vec::new(),
            routing: None,
            error: None,
            metadata,
            completed_at: Utc::now(),
            approval_id: None,
        };
        sender
            .send(
                &kafka.topics.results.name,
                job_id.as_bytes(),
                &codec.encode(&r).unwrap(),
            )
            .unwrap();
    }
    sender.flush(Duration::from_secs(120)).unwrap();
    batch_id
}

fn collect_once(
    pipeline: &LoadedPipeline,
    batch_id: &str,
    out: &Path,
) -> switchyard_batch::CollectReport {
    let options = CollectOptions {
        timeout: Some(Duration::from_secs(300)),
        ..CollectOptions::new(out)
    };
    switchyard_batch::collect(
        &pipeline.config.kafka,
        batch_id,
        &options,
        &StopFlag::default(),
        &NoProgress,
    )
    .unwrap()
}

fn bench_collect(c: &mut Criterion) {
    let (_broker, pipeline) = start();
    let dir = tempfile::tempdir().unwrap();
    let batch_id = seed_results(&pipeline, COLLECT_RESULTS, "collect-bench");
    let out = dir.path().join("out.jsonl");
    let mut group = c.benchmark_group("collect");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(COLLECT_RESULTS));
    group.bench_function("100000", |b| {
        b.iter(|| {
            let r = collect_once(&pipeline, &batch_id, &out);
            assert_eq!(r.output_lines, COLLECT_RESULTS);
            assert_eq!(r.duplicates, COLLECT_RESULTS / 100);
        })
    });
    group.finish();
}

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// In a child process (so nothing else has touched its heap): one collect, then
/// the process's peak RSS, index size and spill size on stdout.
fn memory_child(args: &[String]) {
    let [bootstrap, batch_id, out] = [&args[0], &args[1], &args[2]];
    let mut pipeline =
        switchyard_loader::load_pipeline(&repo().join("pipelines/demo.toml"), &[]).unwrap();
    pipeline.config.kafka.brokers = bootstrap.clone();
    let before = status_kb("VmRSS:");
    let r = collect_once(&pipeline, batch_id, Path::new(out));
    println!(
        "{} {} {} {} {}",
        before,
        status_kb("VmHWM:"),
        r.index_bytes,
        r.spill_bytes,
        r.output_lines
    );
}

/// Peak RSS of a process that does one collect, per batch size: what grows with
/// the batch is the 9-byte-per-job index; the rest is fixed.
fn memory_report() {
    let (broker, pipeline) = start();
    let dir = tempfile::tempdir().unwrap();
    println!();
    println!(
        "collect memory: peak RSS of a child process doing one collect (results ~0.7 KB each)"
    );
    println!(
        "{:>9} {:>12} {:>12} {:>13} {:>11} {:>12}",
        "results", "RSS before", "peak RSS", "peak growth", "index", "spill file"
    );
    for n in [1_000u64, 25_000, 100_000, 400_000] {
        let tag = format!("memory-{n}");
        let batch_id = seed_results(&pipeline, n, &tag);
        let out = dir.path().join(format!("{tag}.jsonl"));
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--memory-child", broker.bootstrap(), &batch_id])
            .arg(&out)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&child.stdout);
        let v: Vec<u64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        assert_eq!(
            v.len(),
            5,
            "child said: {text} {}",
            String::from_utf8_lossy(&child.stderr)
        );
        assert_eq!(v[4], n);
        let mb = |kb: u64| kb as f64 / 1024.0;
        println!(
            "{:>9} {:>9.1} MB {:>9.1} MB {:>10.1} MB {:>8.2} MB {:>9.1} MB",
            n,
            mb(v[0]),
            mb(v[1]),
            mb(v[1].saturating_sub(v[0])),
            v[2] as f64 / (1 << 20) as f64,
            v[3] as f64 / (1 << 20) as f64
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-child") {
        memory_child(&args[i + 1..]);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_submit(&mut c);
    bench_collect(&mut c);
    c.final_summary();
    if args.iter().any(|a| a == "--bench") {
        memory_report();
    }
}
