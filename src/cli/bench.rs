//! `switchyard bench`: worker throughput through a Kafka broker against a
//! zero-latency in-process provider, so the figure is the worker's own cost:
//! consume, decode, analyse, route, call, encode, publish result and usage event,
//! commit. The broker runs in a child process (`switchyard broker`) so the CPU
//! time measured here is the worker's alone; jobs are produced before the clock
//! starts. With `--provider-latency`, calls go over HTTP to a `sim-provider`
//! child, which counts the HTTP requests in flight: the concurrency reported is
//! measured at the provider, not inferred from the worker's jobs in flight.

use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, Producer};
use switchyard_codec::Codec;
use switchyard_embedded::CONFIG_SIM_BASE;
use switchyard_kafka::produce::{acknowledged, enqueue};
use switchyard_providers::{
    ApiKey, BuildOptions, Deployment, DeploymentLimiter, build_deployments_with,
};
use switchyard_sim::InProcessProvider;
use switchyard_worker::Engine;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::common::{BadInput, Overrides, load_pipeline};
use super::demo::Corpus;

/// Arguments of `bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Jobs to process.
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Partitions of the jobs topic.
    #[arg(long, default_value_t = 16)]
    partitions: i32,
    /// Jobs in flight.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Pipeline config for catalog, org and deployments (providers are replaced).
    #[arg(long, default_value = "pipelines/demo.toml")]
    config: std::path::PathBuf,
    /// Prompt corpus the jobs are drawn from.
    #[arg(long, default_value = "pipelines/corpus/prompts.jsonl")]
    corpus: std::path::PathBuf,
    /// Use this broker instead of starting `switchyard broker` in a child process.
    #[arg(long, env = "SWITCHYARD_BROKERS")]
    brokers: Option<String>,
    /// Call simulated providers over HTTP (a `switchyard sim-provider` child
    /// process) that answer after this long, instead of the in-process provider:
    /// measures how many calls one worker keeps in flight, and its memory.
    #[arg(long, value_parser = humantime::parse_duration)]
    provider_latency: Option<Duration>,
}

/// A child `switchyard` process, killed on drop, with the task that keeps
/// reading its stdout (so it never writes to a closed pipe), stopped with it.
pub(super) struct ChildCommand {
    _process: tokio::process::Child,
    drain: tokio::task::JoinHandle<()>,
}

impl Drop for ChildCommand {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

/// Starts a child `switchyard` command and returns it with the value of the
/// first stdout line starting with `prefix`.
pub(super) async fn spawn_child(
    args: &[&str],
    prefix: &str,
) -> anyhow::Result<(ChildCommand, String)> {
    let exe = std::env::current_exe().context("locating the switchyard binary")?;
    let mut child = tokio::process::Command::new(exe)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting `switchyard {}`", args.join(" ")))?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(v) = line.strip_prefix(prefix) {
            let drain =
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            let child = ChildCommand {
                _process: child,
                drain,
            };
            return Ok((child, v.trim().to_owned()));
        }
    }
    anyhow::bail!("`switchyard {}` did not print `{prefix}`", args.join(" "))
}

/// Produces `(key, value)` messages to `topic`, lz4-compressed in large batches
/// (the embedded broker keeps 5 MB per partition; compressed batches hold far
/// more), and waits for every acknowledgement.
pub(super) async fn produce_all(
    brokers: &str,
    topic: &str,
    messages: impl Iterator<Item = anyhow::Result<(String, Vec<u8>)>>,
) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "2000000")
        .create()?;
    let mut sends = Vec::with_capacity(4096);
    for message in messages {
        let (key, bytes) = message?;
        sends.push(enqueue(&producer, topic, Some(key.as_bytes()), &bytes, None).await?);
        if sends.len() == 4096 {
            for r in futures::future::join_all(sends.drain(..).map(acknowledged)).await {
                r?;
            }
        }
    }
    for r in futures::future::join_all(sends.into_iter().map(acknowledged)).await {
        r?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// What the simulated provider at `base` (`http://HOST:PORT`) counted, from its
/// `GET /sim/stats` (plain HTTP/1.0, so no client library is needed).
async fn sim_stats(base: &str) -> anyhow::Result<switchyard_sim::SimStats> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base
        .strip_prefix("http://")
        .with_context(|| format!("simulator URL {base} is not http://HOST:PORT"))?;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to the simulator at {addr}"))?;
    stream
        .write_all(format!("GET /sim/stats HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the simulator's answer has no body")?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "the simulator answered {}",
        head.lines().next().unwrap_or_default()
    );
    serde_json::from_str(body).context("reading the simulator's stats")
}

/// Process CPU time (user + system), from /proc/self/stat.
pub(super) fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI Switchyard targets.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Peak resident set size, from /proc/self/status.
pub(super) fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs the benchmark and prints jobs/s and CPU per job.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.jobs == 0 {
        return Err(BadInput("--jobs must be positive".into()).into());
    }
    let mut children = Vec::new();
    let brokers = match args.brokers.clone() {
        Some(b) => b,
        None => {
            let (child, bootstrap) = spawn_child(
                &["broker", "--partitions", &args.partitions.to_string()],
                "bootstrap:",
            )
            .await?;
            children.push(child);
            bootstrap
        }
    };
    let mut pipeline = load_pipeline(
        &args.config,
        &Overrides {
            brokers: Some(brokers.clone()),
            clickhouse_url: None,
        },
    )?;
    pipeline.config.worker.max_in_flight = args.max_in_flight;
    pipeline.config.worker.drain_grace = Duration::from_secs(60);
    let (deployments, sim_url) = bench_deployments(&args, &pipeline, &mut children).await?;
    let engine = Arc::new(Engine::new(&pipeline, deployments)?);

    eprintln!("Producing {} jobs…", args.jobs);
    let corpus = Corpus::load(&args.corpus)?;
    let codec = Codec::for_topic(&pipeline.config.kafka.topics.jobs);
    let messages = corpus.jobs(args.jobs, 1).into_iter().map(|(job, _)| {
        let bytes = codec.encode(&job)?;
        Ok((job.job_id, bytes))
    });
    produce_all(&brokers, &pipeline.config.kafka.topics.jobs.name, messages).await?;

    let measured = measure(&engine, &pipeline, args.jobs as u64).await?;
    measured.print(&engine, args.jobs);
    if let Some(url) = &sim_url {
        match sim_stats(url).await {
            Ok(stats) => println!(
                "HTTP in flight:  {} requests at peak, counted by the simulated provider",
                stats.peak_in_flight
            ),
            Err(e) => eprintln!("Could not read the simulator's stats: {e:#}"),
        }
    }
    if let Some(rss) = peak_rss_mb() {
        println!("peak RSS:        {rss:.0} MB (worker process)");
    }
    println!("failed jobs:     {}", engine.metrics.snapshot().failed);
    println!("dead letters:    {}", engine.metrics.dead_letters());
    drop(children);
    Ok(ExitCode::SUCCESS)
}

/// The deployments the worker calls: the config's, pointed at a `sim-provider`
/// child that answers after `--provider-latency`, or at the in-process provider.
/// Returns the simulator's URL when there is one.
async fn bench_deployments(
    args: &Args,
    pipeline: &switchyard_core::config::LoadedPipeline,
    children: &mut Vec<ChildCommand>,
) -> anyhow::Result<(Vec<Deployment>, Option<String>)> {
    let Some(latency) = args.provider_latency else {
        let provider = Arc::new(InProcessProvider::new());
        let deployments = pipeline
            .config
            .deployments
            .iter()
            .filter_map(|d| {
                let spec = pipeline.catalog.get(&d.model)?;
                Some(Deployment {
                    name: d.name.clone(),
                    model: spec.name.clone(),
                    provider: spec.provider.clone(),
                    api_model: spec.api_model.clone(),
                    client: provider.clone(),
                    batch: None,
                    limiter: DeploymentLimiter::unlimited(),
                })
            })
            .collect();
        return Ok((deployments, None));
    };
    let dir = tempfile::tempdir().context("temporary directory")?;
    let sim_config = dir.path().join("sim.toml");
    let ttft = format!("{}ms", latency.as_millis());
    std::fs::write(
        &sim_config,
        format!("[default]\nttft = \"{ttft}\"\ntokens_per_second = 1000000.0\n"),
    )?;
    let config_arg = sim_config.display().to_string();
    let (child, url) = spawn_child(
        &["sim-provider", "--port", "0", "--config", &config_arg],
        "sim-provider:",
    )
    .await?;
    children.push(child);
    let deployments = build_deployments_with(
        &pipeline.config,
        &pipeline.catalog,
        &BuildOptions {
            rewrite_from: Some(CONFIG_SIM_BASE.to_owned()),
            rewrite_to: Some(url.clone()),
            key_override: Some(ApiKey::new("bench-key".into())),
        },
    )?;
    Ok((deployments, Some(url)))
}

/// What one measured run took.
struct Measured {
    jobs_measured: u64,
    elapsed: Duration,
    cpu: Option<Duration>,
}

/// Runs the worker over the produced jobs; the clock starts at the first
/// finished job (after the group join) and stops at the last.
async fn measure(
    engine: &Arc<Engine>,
    pipeline: &switchyard_core::config::LoadedPipeline,
    jobs: u64,
) -> anyhow::Result<Measured> {
    eprintln!("Running the worker…");
    let stop = CancellationToken::new();
    let worker = {
        let engine = engine.clone();
        let config = pipeline.config.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            switchyard_worker::run(engine, &config, stop.cancelled_owned()).await
        })
    };
    // The clock starts at the first finished job, after the group join.
    while engine.metrics.finished() == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (t0, cpu0) = (Instant::now(), cpu_time());
    let n0 = engine.metrics.finished();
    let mut last_report = Instant::now();
    while engine.metrics.finished() < jobs {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            eprintln!(
                "  {} finished, {} in flight, {} dead letters",
                engine.metrics.finished(),
                engine.metrics.in_flight(),
                engine.metrics.dead_letters()
            );
        }
    }
    stop.cancel();
    worker.await.context("worker task")??;
    let (elapsed, cpu1) = (t0.elapsed(), cpu_time());
    Ok(Measured {
        jobs_measured: jobs - n0,
        elapsed,
        cpu: cpu0.zip(cpu1).map(|(a, b)| b - a),
    })
}

impl Measured {
    fn print(&self, engine: &Engine, jobs: usize) {
        let rate = self.jobs_measured as f64 / self.elapsed.as_secs_f64();
        println!("jobs:            {jobs}");
        println!(
            "wall time:       {:.2} s (from the first result to the last, drain included)",
            self.elapsed.as_secs_f64()
        );
        println!("throughput:      {rate:.0} jobs/s");
        if let Some(cpu) = self.cpu {
            let per_job_us = cpu.as_secs_f64() * 1e6 / self.jobs_measured as f64;
            println!(
                "worker CPU:      {per_job_us:.1} µs per job (user + system, all threads of the worker process)"
            );
        }
        println!(
            "peak in flight:  {} jobs (worker)",
            engine.metrics.snapshot().peak_in_flight
        );
    }
}
