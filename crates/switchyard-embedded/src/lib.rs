//! The embedded stack behind `demo`, `dev` and the integration tests: an
//! in-process Kafka broker, the simulated providers, the routing worker and the
//! usage sink, on the caller's runtime, started and stopped together.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use switchyard_analytics::SinkReport;
use switchyard_core::catalog::Catalog;
use switchyard_core::config::LoadedPipeline;
use switchyard_kafka::EmbeddedBroker;
use switchyard_providers::{ApiKey, BuildOptions, build_deployments_with};
use switchyard_sim::{SimConfig, SimHandle};
use switchyard_worker::{Engine, RunReport};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use switchyard_core::config::{AnalyticsConfig, PipelineConfig, Topics};

/// The simulator address the shipped demo config points at; rewritten to the port bound.
pub const CONFIG_SIM_BASE: &str = "http://127.0.0.1:9100";

/// The topics a Switchyard cluster needs, with `partitions` for the busy ones.
pub fn default_topics(partitions: i32) -> Vec<(String, i32)> {
    let t = Topics::default();
    vec![
        (t.jobs.name, partitions),
        (t.results.name, partitions),
        (t.usage.name, partitions),
        (t.dlq, 1),
        (t.held, 1),
        (t.batches, 1),
        (t.budgets, 1),
        (t.alerts, 1),
        (t.approvals, 2),
        (t.deferred, 2),
        (t.audit, 2),
        (t.audit_checkpoints, 1),
        (AnalyticsConfig::default().dlq_topic, 1),
    ]
}

/// How to start the stack.
pub struct StackOptions {
    /// Partitions of the busy topics.
    pub partitions: i32,
    /// Simulated time scale.
    pub time_scale: f64,
    /// Simulator behaviour; `None` derives it from the catalog.
    pub sim: Option<SimConfig>,
    /// `SWITCHYARD__…` overrides applied to the config file (tests use them to
    /// switch encodings or limits without touching the environment).
    pub env: Vec<(String, String)>,
    /// Whether to start the worker (tests that drive workers themselves say no).
    pub worker: bool,
    /// Whether to start the usage sink (Parquet, and ClickHouse when configured).
    pub sink: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            partitions: 4,
            time_scale: 1.0,
            sim: None,
            env: Vec::new(),
            worker: true,
            sink: false,
        }
    }
}

/// A running embedded stack.
pub struct Stack {
    /// The broker (kept alive for the stack's lifetime).
    pub broker: EmbeddedBroker,
    /// The simulated providers.
    pub sim: SimHandle,
    /// The pipeline, with brokers pointing at the embedded one.
    pub pipeline: LoadedPipeline,
    /// The worker's engine (metrics, health).
    pub engine: Arc<Engine>,
    stop: CancellationToken,
    worker: Option<JoinHandle<Result<RunReport, switchyard_worker::WorkerError>>>,
    sink: Option<(CancellationToken, JoinHandle<SinkResult>)>,
}

type SinkResult = Result<SinkReport, switchyard_analytics::Error>;

impl Stack {
    /// Starts broker, simulator and worker for the config at `config`.
    pub async fn start(config: &Path, options: StackOptions) -> anyhow::Result<Self> {
        let topics = default_topics(options.partitions);
        let refs: Vec<(&str, i32)> = topics.iter().map(|(n, p)| (n.as_str(), *p)).collect();
        let broker = EmbeddedBroker::start(&refs)?;
        let mut pipeline = switchyard_loader::load_pipeline(config, &options.env)?;
        pipeline.config.kafka.brokers = broker.bootstrap().to_owned();
        let mut sim_config = match options.sim {
            Some(c) => c,
            None => SimConfig::from_catalog(&pipeline.catalog),
        };
        sim_config.time_scale = options.time_scale;
        let sim = switchyard_sim::start(sim_config, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let engine = Arc::new(new_engine(&pipeline, &sim)?);
        let stop = CancellationToken::new();
        let worker = options
            .worker
            .then(|| spawn_worker(engine.clone(), &pipeline.config, stop.clone()));
        if options.sink {
            prepare_parquet_dir(&pipeline.config.analytics.parquet_dir)?;
        }
        let sink = options.sink.then(|| {
            let stop = CancellationToken::new();
            let config = pipeline.config.clone();
            let token = stop.clone();
            let task = tokio::spawn(async move {
                switchyard_analytics::run_sink(&config, token.cancelled_owned()).await
            });
            (stop, task)
        });
        Ok(Self {
            broker,
            sim,
            pipeline,
            engine,
            stop,
            worker,
            sink,
        })
    }

    /// A fresh engine (own health, ledger and metrics) on this stack's simulator:
    /// what a second worker process would have.
    pub fn new_engine(&self) -> anyhow::Result<Engine> {
        new_engine(&self.pipeline, &self.sim)
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.pipeline.catalog
    }

    /// Drains the worker (SIGTERM semantics); the broker and simulator stay up.
    pub async fn stop_worker(&mut self) -> anyhow::Result<RunReport> {
        self.stop.cancel();
        match self.worker.take() {
            Some(w) => Ok(w.await.context("worker task")??),
            None => Ok(RunReport::default()),
        }
    }

    /// Waits (up to `timeout`) until the usage sink has committed every usage
    /// event on the topic, so that stopping it loses nothing it should have
    /// written. Returns whether it caught up.
    pub async fn sink_caught_up(&self, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        let kafka = self.pipeline.config.kafka.clone();
        let group = self.pipeline.config.analytics.group_id.clone();
        let topic = self.pipeline.config.kafka.topics.usage.name.clone();
        loop {
            let (k, g, t) = (kafka.clone(), group.clone(), topic.clone());
            let lag = tokio::task::spawn_blocking(move || {
                switchyard_kafka::group_lag(&k, &g, &t, Duration::from_secs(5))
            })
            .await
            .context("lag check")??;
            if lag == 0 {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Stops the usage sink: it writes out and commits what it holds.
    pub async fn stop_sink(&mut self) -> anyhow::Result<Option<SinkReport>> {
        match self.sink.take() {
            Some((stop, task)) => {
                stop.cancel();
                Ok(Some(task.await.context("usage sink task")??))
            }
            None => Ok(None),
        }
    }

    /// Drains the worker, stops the sink, the simulator, then the broker.
    pub async fn stop(mut self) -> anyhow::Result<RunReport> {
        let report = self.stop_worker().await?;
        self.stop_sink().await?;
        self.sim.shutdown().await?;
        drop(self.broker);
        Ok(report)
    }
}

/// Marks a Parquet directory written by an embedded run.
const EMBEDDED_MARK: &str = "_switchyard/embedded";

/// Makes `dir` ready for an embedded run's usage sink. The embedded broker starts
/// empty, so the files and manifests of an earlier embedded run would not match
/// its offsets: a directory an embedded run wrote (it carries
/// `_switchyard/embedded`) is emptied, a missing or empty one is used, and any
/// other is refused rather than touched.
fn prepare_parquet_dir(dir: &Path) -> anyhow::Result<()> {
    let marked = dir.join(EMBEDDED_MARK).is_file();
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    if !marked && !empty {
        anyhow::bail!(
            "{} holds files that an embedded run did not write; the embedded stack starts a new broker, so give analytics.parquet_dir an empty or new directory",
            dir.display()
        );
    }
    if marked {
        // Clearing it under a running sink would pull its files (and its lock)
        // away: another demo or dev on the same directory is refused instead.
        let holders = switchyard_analytics::sinks::parquet::DirLock::holders(dir)?;
        if !holders.is_empty() {
            anyhow::bail!(
                "{} is in use by {}: another embedded run (demo or dev) is writing it; stop it first, or give analytics.parquet_dir another directory",
                dir.display(),
                holders.join(", ")
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("clearing the previous embedded run's {}", dir.display()))?;
    }
    let mark = dir.join(EMBEDDED_MARK);
    if let Some(parent) = mark.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(
        &mark,
        "written by switchyard demo/dev; emptied at their next start\n",
    )
    .with_context(|| format!("writing {}", mark.display()))?;
    Ok(())
}

/// An engine whose deployments call this simulator.
fn new_engine(pipeline: &LoadedPipeline, sim: &SimHandle) -> anyhow::Result<Engine> {
    let deployments = build_deployments_with(
        &pipeline.config,
        &pipeline.catalog,
        &BuildOptions {
            rewrite_from: Some(CONFIG_SIM_BASE.to_owned()),
            rewrite_to: Some(format!("http://{}", sim.addr())),
            key_override: Some(ApiKey::new("sim-key-embedded".into())),
        },
    )?;
    Ok(Engine::new(pipeline, deployments)?)
}

/// Runs a worker for `engine` until `stop` is cancelled.
pub fn spawn_worker(
    engine: Arc<Engine>,
    config: &PipelineConfig,
    stop: CancellationToken,
) -> JoinHandle<Result<RunReport, switchyard_worker::WorkerError>> {
    let config = config.clone();
    tokio::spawn(
        async move { switchyard_worker::run(engine, &config, stop.cancelled_owned()).await },
    )
}
