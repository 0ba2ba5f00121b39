//! Helpers shared by the integration tests: paths, job factories, producing to and
//! reading from the embedded broker, committed offsets.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchyard_codec::Codec;
use switchyard_core::access::sign::{self, Signed};
use switchyard_core::config::{KafkaConfig, TopicConfig};
use switchyard_core::job::{ChatRequest, Job};
use switchyard_core::result::JobResult;
use switchyard_kafka::produce::{acknowledged, enqueue};
use switchyard_kafka::{ScanFrom, scan_to_end};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `switchyard` binary, run from the repository root with warnings-only logs.
pub fn switchyard() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    c.current_dir(root()).env("RUST_LOG", "warn");
    c
}

/// A child process killed (and reaped) when the test lets go of it, so a failing
/// test leaves nothing running.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends `sig` (as `kill` takes it: `-TERM`, `-KILL`, `-INT`) to `p`.
pub fn signal(p: &Proc, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &p.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {sig} failed");
}

/// Starts `switchyard broker` (the embedded broker in a process of its own, so
/// that workers can be killed while it stays up) and returns it with its
/// bootstrap address.
pub fn start_broker(partitions: u32) -> (Proc, String) {
    use std::io::{BufRead, BufReader};
    let mut child = switchyard()
        .args(["broker", "--partitions", &partitions.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let bootstrap = loop {
        let line = lines.next().expect("broker exited").unwrap();
        if let Some(b) = line.strip_prefix("bootstrap: ") {
            break b.to_owned();
        }
    };
    // Keep draining stdout so the broker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Proc(child), bootstrap)
}

/// Starts a worker process (`switchyard run`) on `config` against `bootstrap`,
/// with `env` added (e.g. `SWITCHYARD__WORKER__…` overrides).
/// With `SWITCHYARD_TEST_LOGS=DIR`, each worker's log goes to a file there.
pub fn start_worker(config: &Path, bootstrap: &str, env: &[(&str, &str)]) -> Proc {
    let logs = std::env::var_os("SWITCHYARD_TEST_LOGS");
    let level = if logs.is_some() { "info" } else { "warn" };
    let stderr = match logs {
        Some(dir) => {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let file = Path::new(&dir).join(format!("worker-{}-{n}.log", std::process::id()));
            std::process::Stdio::from(std::fs::File::create(file).unwrap())
        }
        None => std::process::Stdio::null(),
    };
    spawn_worker(config, bootstrap, env, level, stderr)
}

/// Starts `switchyard run` logging at `info` into `log`, for a test that reads
/// what the worker did.
pub fn start_worker_logged(config: &Path, bootstrap: &str, log: &Path) -> Proc {
    let stderr = std::process::Stdio::from(std::fs::File::create(log).unwrap());
    spawn_worker(config, bootstrap, &[], "info", stderr)
}

fn spawn_worker(
    config: &Path,
    bootstrap: &str,
    env: &[(&str, &str)],
    level: &str,
    stderr: std::process::Stdio,
) -> Proc {
    let child = switchyard()
        .args(["run", "--config"])
        .arg(config)
        .env("SWITCHYARD_BROKERS", bootstrap)
        .env("SWITCHYARD_SIM_KEY", "test-key")
        .env("RUST_LOG", level)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    Proc(child)
}

/// The demo pipeline config.
pub fn demo_config() -> PathBuf {
    root().join("pipelines/demo.toml")
}

/// Projects of pipelines/org.toml, a few of each business unit.
pub const PROJECTS: &[(&str, &str)] = &[
    ("acme/retail/support/ticket-triage", "ticket-triage"),
    ("acme/retail/support/customer-chat", "support-chat"),
    (
        "acme/finance/payables/invoice-processing",
        "invoice-extract",
    ),
    ("acme/operations/planning/analyst-desk", "planning-analyst"),
    ("acme/engineering/platform/code-assist", "code-assist"),
    ("acme/people/hr/hr-assistant", "hr-assistant"),
];

const PROMPTS: &[&str] = &[
    "Classify this ticket as billing, technical or account. One word.\n\n\"I was charged twice for March.\"",
    "Hi! Can you help me change the delivery address on my order 4471?",
    "Extract the invoice number, date and total as JSON: Invoice #A-1209, 2026-03-02, total $1,204.00",
    "Should we open a second warehouse in Ohio given 12% margins and a two-year payback? Weigh the trade-offs.",
    "Write a Python function that deduplicates a list while keeping the order, with unit tests.",
    "How many vacation days do I get after three years here?",
];

/// `n` valid jobs spread over projects, ids `{prefix}-00001`…
pub fn jobs(prefix: &str, n: usize) -> Vec<Job> {
    (0..n)
        .map(|i| {
            let (project, workload) = PROJECTS[i % PROJECTS.len()];
            Job {
                workload: Some(workload.into()),
                ..Job::new(
                    format!("{prefix}-{:05}", i + 1),
                    project,
                    ChatRequest {
                        max_tokens: Some(200),
                        temperature: Some(0.2),
                        ..ChatRequest::from_user(format!(
                            "{} (case {i})",
                            PROMPTS[i % PROMPTS.len()]
                        ))
                    },
                )
            }
        })
        .collect()
}

/// A producer for the broker.
pub fn producer(bootstrap: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        .create()
        .unwrap()
}

/// Produces JSON jobs keyed by job id and waits for every acknowledgement.
pub async fn produce_jobs(bootstrap: &str, topic: &TopicConfig, jobs: &[Job]) {
    let p = producer(bootstrap);
    let codec = Codec::for_topic(topic);
    let mut acks = Vec::new();
    for j in jobs {
        let bytes = codec.encode(j).unwrap();
        acks.push(
            enqueue(&p, &topic.name, Some(j.job_id.as_bytes()), &bytes, None)
                .await
                .unwrap(),
        );
    }
    for a in acks {
        acknowledged(a).await.unwrap();
    }
}

/// Produces raw bytes.
pub async fn produce_raw(bootstrap: &str, topic: &str, key: Option<&[u8]>, payload: &[u8]) {
    let p = producer(bootstrap);
    acknowledged(enqueue(&p, topic, key, payload, None).await.unwrap())
        .await
        .unwrap();
}

/// A consumer of the results topic in a group of its own, reading from the start.
pub fn results_consumer(bootstrap: &str, topic: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-reader-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    c
}

/// Reads results until every id in `want` has one (or the timeout), counting copies per id.
pub async fn collect_results(
    consumer: &StreamConsumer,
    codec: &Codec,
    want: &[String],
    timeout: Duration,
) -> HashMap<String, Vec<JobResult>> {
    let mut got = HashMap::new();
    collect_into(consumer, codec, want, timeout, &mut got).await;
    got
}

/// As [`collect_results`], adding to what earlier calls collected.
pub async fn collect_into(
    consumer: &StreamConsumer,
    codec: &Codec,
    want: &[String],
    timeout: Duration,
    got: &mut HashMap<String, Vec<JobResult>>,
) {
    let deadline = Instant::now() + timeout;
    let missing = |got: &HashMap<String, Vec<JobResult>>| {
        want.iter().filter(|id| !got.contains_key(*id)).count()
    };
    while missing(got) > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(m) = tokio::time::timeout(left, consumer.recv()).await else {
            panic!(
                "timed out with {} of {} results missing",
                missing(got),
                want.len()
            );
        };
        let m = m.unwrap();
        let r: JobResult = codec.decode(m.payload().unwrap()).unwrap();
        got.entry(r.job_id.clone()).or_default().push(r);
    }
}

/// A dead letter: original key and bytes, and headers.
#[derive(Debug)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// Everything on a topic now.
pub fn read_dead_letters(bootstrap: &str, topic: &str) -> Vec<DeadLetter> {
    let kafka = kafka_config(bootstrap);
    let consumer: BaseConsumer = switchyard_kafka::client::reader_config(&kafka)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(5))
        .unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (out.len() as i64) < high && Instant::now() < deadline {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let mut headers = HashMap::new();
        if let Some(h) = m.headers() {
            for header in h.iter() {
                headers.insert(
                    header.key.to_owned(),
                    String::from_utf8_lossy(header.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        out.push(DeadLetter {
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    out
}

/// Number of messages on a topic.
pub fn topic_size(bootstrap: &str, topic: &str) -> usize {
    let mut n = 0;
    scan_all(bootstrap, topic, |_| n += 1);
    n
}

/// Calls `visit` with every message on `topic` now.
fn scan_all(bootstrap: &str, topic: &str, visit: impl FnMut(switchyard_kafka::Scanned<'_>)) {
    scan_to_end(
        &kafka_config(bootstrap),
        topic,
        ScanFrom::Beginning,
        &Default::default(),
        Duration::from_secs(30),
        visit,
    )
    .unwrap();
}

/// Where each keyed message of a topic sits: key (as text) → (partition, offset).
pub fn positions_by_key(bootstrap: &str, topic: &str) -> HashMap<String, (i32, i64)> {
    let mut out = HashMap::new();
    scan_all(bootstrap, topic, |m| {
        if let Some(k) = m.key {
            out.insert(
                String::from_utf8_lossy(k).into_owned(),
                (m.partition, m.offset),
            );
        }
    });
    out
}

/// Job ids that have a result on the results topic now, with their count.
pub fn result_counts(bootstrap: &str, topic: &TopicConfig) -> HashMap<String, usize> {
    let codec = Codec::for_topic(topic);
    let mut out = HashMap::new();
    scan_all(bootstrap, &topic.name, |m| {
        let r: JobResult = codec.decode(m.payload).unwrap();
        *out.entry(r.job_id).or_insert(0) += 1;
    });
    out
}

/// Messages of `group` not yet committed on `topic`, and the committed offsets
/// (a partition with no commit counts from 0).
pub fn uncommitted(bootstrap: &str, group: &str, topic: &str) -> (i64, BTreeMap<i32, i64>) {
    let (committed, ends) = committed_and_end(bootstrap, group, topic);
    let committed: BTreeMap<i32, i64> = ends
        .keys()
        .map(|p| (*p, committed.get(p).copied().unwrap_or(-1).max(0)))
        .collect();
    let left = ends.iter().map(|(p, end)| end - committed[p]).sum();
    (left, committed)
}

/// A Kafka config pointing at the broker.
pub fn kafka_config(bootstrap: &str) -> KafkaConfig {
    KafkaConfig {
        brokers: bootstrap.to_owned(),
        group_id: "switchyard-workers".into(),
        topics: Default::default(),
        client: Default::default(),
        client_secret_env: Default::default(),
    }
}

/// Committed offsets of `group` on `topic` and the topic's end offsets.
pub fn committed_and_end(
    bootstrap: &str,
    group: &str,
    topic: &str,
) -> (BTreeMap<i32, i64>, BTreeMap<i32, i64>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .unwrap();
    let partitions: Vec<i32> = metadata.topics()[0]
        .partitions()
        .iter()
        .map(|p| p.id())
        .collect();
    let mut tpl = TopicPartitionList::new();
    let mut ends = BTreeMap::new();
    for &p in &partitions {
        tpl.add_partition(topic, p);
        ends.insert(
            p,
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .unwrap()
                .1,
        );
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .unwrap();
    let committed = committed
        .elements()
        .iter()
        .map(|e| {
            (
                e.partition(),
                match e.offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                },
            )
        })
        .collect();
    (committed, ends)
}

/// Waits until `f` holds, polling.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// The path of a file under the repository.
pub fn path(rel: &str) -> PathBuf {
    root().join(rel)
}

/// The demo config's text with its catalog and org paths made absolute, so that
/// a copy in a temp dir still finds them.
pub fn demo_config_text() -> String {
    std::fs::read_to_string(demo_config())
        .unwrap()
        .replace(
            "catalog = \"models.toml\"",
            &format!("catalog = \"{}\"", path("pipelines/models.toml").display()),
        )
        .replace(
            "org = \"org.toml\"",
            &format!("org = \"{}\"", path("pipelines/org.toml").display()),
        )
}

/// Writes a copy of the demo config whose catalog/org paths are absolute and whose
/// simulator URL is `sim_base`, for worker processes started from a temp dir.
pub fn write_process_config(dir: &Path, sim_base: &str) -> PathBuf {
    let text = demo_config_text().replace("http://127.0.0.1:9100", sim_base);
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Starts a worker process as [`start_worker`] does, with `--metrics-addr
/// 127.0.0.1:0`, and returns it with the base URL of its telemetry endpoint
/// (`http://127.0.0.1:PORT`), read from the `metrics: …` line it prints.
pub fn start_worker_with_metrics(
    config: &Path,
    bootstrap: &str,
    env: &[(&str, &str)],
) -> (Proc, String) {
    start_with_metrics("run", config, bootstrap, env)
}

/// Starts `switchyard COMMAND` (`run` or `sink`) with `--metrics-addr
/// 127.0.0.1:0` on `config` and `bootstrap`, and returns it with the base URL
/// of its telemetry endpoint, read from the `metrics: …` line it prints.
pub fn start_with_metrics(
    command: &str,
    config: &Path,
    bootstrap: &str,
    env: &[(&str, &str)],
) -> (Proc, String) {
    use std::io::{BufRead, BufReader};
    let mut child = switchyard()
        .args([command, "--metrics-addr", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("SWITCHYARD_BROKERS", bootstrap)
        .env("SWITCHYARD_SIM_KEY", "test-key")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("`switchyard {command}` exited"))
            .unwrap();
        if let Some(u) = line.strip_prefix("metrics: ") {
            break u.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let base = url
        .strip_suffix("/metrics")
        .unwrap_or_else(|| panic!("`{url}` does not end in /metrics"))
        .to_owned();
    (proc, base)
}

/// `promtool` on PATH (Debian's `prometheus` package; scripts/test.sh installs
/// it). Missing, the test fails and says how to install it.
pub fn promtool() -> PathBuf {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "promtool is not on PATH: install Debian's `prometheus` package \
         (`apt-get install -y --no-install-recommends prometheus`; scripts/test.sh does it)"
    );
    PathBuf::from("promtool")
}

/// Runs `promtool` with `args`, `stdin` piped in; panics with its output when it fails.
pub fn run_promtool(promtool: &Path, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = std::process::Command::new(promtool)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The metric families `docs/metrics.md` documents under each `## ` section:
/// the first column of its tables, as section title → names.
pub fn documented_families() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(path("docs/metrics.md")).unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title.to_owned();
            continue;
        }
        let Some(cell) = line.strip_prefix("| `") else {
            continue;
        };
        let Some(name) = cell.split('`').next() else {
            continue;
        };
        if name.starts_with("switchyard_") || name.starts_with("process_") {
            out.entry(section.clone())
                .or_default()
                .push(name.to_owned());
        }
    }
    out
}

/// The three signature headers of a signed job.
pub fn signature_headers(s: &Signed) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: sign::KEY_ID,
            value: Some(&s.key_id),
        })
        .insert(Header {
            key: sign::TS,
            value: Some(&s.ts),
        })
        .insert(Header {
            key: sign::SIG,
            value: Some(&s.sig),
        })
}
