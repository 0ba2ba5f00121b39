//! `switchyard demo`: the whole pipeline in one process on a realistic workload.
//! Jobs from the shipped corpus are produced at a steady pace onto the embedded
//! broker (with a few malformed messages among them), the worker routes them to
//! simulated providers, one provider suffers an outage part-way, and the
//! results topic is read back to report outcomes, model mix, failovers, latency
//! and cost against sending everything to the flagship.

mod corpus;
mod deferred;
mod summary;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use switchyard_codec::Codec;
use switchyard_core::result::JobResult;
use switchyard_kafka::produce::{acknowledged, enqueue};

pub use corpus::Corpus;
use switchyard_embedded::{Stack, StackOptions};

/// Jobs the demo draws from the corpus by default.
pub const DEFAULT_JOBS: usize = 2400;
/// Seed of the demo's job order by default.
pub const DEFAULT_SEED: u64 = 7;

/// Arguments of `demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline config (brokers and simulator URLs are replaced by the embedded ones).
    #[arg(long, default_value = "pipelines/demo.toml")]
    config: PathBuf,
    /// Prompt corpus (JSONL; `workloads.toml` beside it maps workloads to projects).
    #[arg(long, default_value = "pipelines/corpus/prompts.jsonl")]
    corpus: PathBuf,
    /// Number of jobs.
    #[arg(long, default_value_t = DEFAULT_JOBS)]
    jobs: usize,
    /// Seconds over which the jobs are produced.
    #[arg(long, default_value_t = 12.0)]
    spread: f64,
    /// Simulated provider time runs at this fraction of real time.
    #[arg(long, default_value_t = 0.2)]
    time_scale: f64,
    /// Seed of the job order.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
    /// Skip the provider outage.
    #[arg(long)]
    no_outage: bool,
    /// Skip the deferred pass (the same jobs again through providers' batch APIs).
    #[arg(long)]
    no_deferred: bool,
    /// Report as tables for a person, or as one JSON object for scripts.
    #[arg(long, value_enum, default_value_t = DemoFormat::Table)]
    format: DemoFormat,
}

/// How the demo reports.
#[derive(Clone, Copy, clap::ValueEnum)]
enum DemoFormat {
    Table,
    Json,
}

/// Malformed messages mixed into the workload: each must land in the DLQ.
const MALFORMED: &[(&str, &[u8])] = &[
    ("truncated JSON", br#"{"job_id": "bad-1", "project": "acme/retail/support/ticket-triage", "request": {"messages": [{"role": "user", "con"#),
    ("wrong type", br#"{"job_id": 42, "project": "acme/retail/support/ticket-triage", "request": {"messages": [{"role": "user", "content": "hi"}]}}"#),
    ("no messages", br#"{"job_id": "bad-3", "project": "acme/retail/support/ticket-triage", "request": {"messages": []}}"#),
    ("unknown field", br#"{"job_id": "bad-4", "project": "acme/retail/support/ticket-triage", "priority": "high", "request": {"messages": [{"role": "user", "content": "hi"}]}}"#),
    ("invalid UTF-8", b"{\"job_id\": \"bad-5\xff\xfe\", \"project\": \"a/b/c/d\"}"),
];

/// Runs the demo and prints the report.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let corpus = Corpus::load(&args.corpus)?;
    eprintln!("Starting the embedded broker, simulated providers and worker…");
    // Providers as they behave in production: now and then a 5xx, a 429 or a reply
    // that is not the JSON it was asked for (billed all the same).
    let catalog = switchyard_loader::load_pipeline(&args.config, &[])?.catalog;
    let mut sim = switchyard_sim::SimConfig::from_catalog(&catalog);
    for behaviour in sim.models.values_mut() {
        behaviour.error_rate = 0.005;
        behaviour.rate_limit_rate = 0.01;
        behaviour.retry_after = Duration::from_millis(500);
        behaviour.invalid_json_rate = 0.03;
    }
    let stack = Stack::start(
        &args.config,
        StackOptions {
            partitions: 8,
            time_scale: args.time_scale,
            sim: Some(sim),
            sink: true,
            env: switchyard_loader::env_overrides(),
            ..StackOptions::default()
        },
    )
    .await?;
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();

    // Read results back from the topic, as any downstream consumer would.
    let results_consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set(
            "group.id",
            format!("switchyard-demo-{}", uuid::Uuid::new_v4()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    results_consumer.subscribe(&[topics.results.name.as_str()])?;

    let jobs = corpus.jobs(args.jobs, args.seed);
    let again: Vec<switchyard_core::job::Job> = if args.no_deferred {
        Vec::new()
    } else {
        jobs.iter().map(|(j, _)| j.clone()).collect()
    };
    let labels: HashMap<String, (String, String)> = jobs
        .iter()
        .map(|(j, p)| (j.job_id.clone(), (p.category.clone(), p.difficulty.clone())))
        .collect();
    let unknown_project = {
        let mut j = jobs[0].0.clone();
        j.job_id = "demo-unknown-project".into();
        j.project = "acme/retail/support/no-such-project".into();
        j
    };
    let expected_results = jobs.len() + 1;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .create()?;
    let codec = Codec::for_topic(&topics.jobs);
    let engine = stack.engine.clone();
    let sim_outage = &stack.sim;
    let catalog = stack.catalog().clone();
    let no_outage = args.no_outage;
    let spread = Duration::from_secs_f64(args.spread.max(0.0));
    let jobs_topic = topics.jobs.name.clone();
    let produce = async move {
        let mut outage: Vec<String> = Vec::new();
        let mut outage_began: Option<usize> = None;
        let total = jobs.len();
        let t0 = Instant::now();
        let mut pending = Vec::new();
        for (i, (job, _)) in jobs.iter().enumerate() {
            let bytes = codec.encode(job)?;
            pending.push(
                enqueue(
                    &producer,
                    &jobs_topic,
                    Some(job.job_id.as_bytes()),
                    &bytes,
                    None,
                )
                .await?,
            );
            if i % 400 == 0 {
                let (_, bad) = MALFORMED[(i / 400) % MALFORMED.len()];
                pending.push(enqueue(&producer, &jobs_topic, None, bad, None).await?);
            }
            if pending.len() >= 64 {
                for r in futures::future::join_all(pending.drain(..).map(acknowledged)).await {
                    r?;
                }
            }
            // Outage: the provider of the most-used model so far goes down (every
            // one of its models answers 503) from 30% of the jobs (or the first
            // job after that by which one has been answered) for 35% of them.
            if !no_outage && outage_began.is_none() && i >= total * 3 / 10 {
                let top = engine
                    .metrics
                    .by_model()
                    .into_iter()
                    .max_by_key(|(_, t)| t.jobs)
                    .and_then(|(m, _)| catalog.get(&m).map(|s| s.provider.clone()));
                if let Some(provider) = top {
                    outage = catalog
                        .models()
                        .iter()
                        .filter(|m| m.provider == provider)
                        .map(|m| m.api_model.clone())
                        .collect();
                    eprintln!(
                        "Outage: provider {provider} ({} models, all their traffic) starts failing with 503 at job {i}.",
                        outage.len()
                    );
                    for api_model in &outage {
                        sim_outage.set_outage(api_model, Some(503));
                    }
                    outage_began = Some(i);
                }
            }
            if !outage.is_empty() && outage_began.is_some_and(|b| i >= b + total * 35 / 100) {
                eprintln!("Outage over at job {i}.");
                for api_model in outage.drain(..) {
                    sim_outage.set_outage(&api_model, None);
                }
            }
            let due = spread.mul_f64((i + 1) as f64 / total as f64);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        if !outage.is_empty() {
            eprintln!("Outage over with the last job.");
            for api_model in outage.drain(..) {
                sim_outage.set_outage(&api_model, None);
            }
        }
        let extra = codec.encode(&unknown_project)?;
        pending.push(
            enqueue(
                &producer,
                &jobs_topic,
                Some(b"demo-unknown-project"),
                &extra,
                None,
            )
            .await?,
        );
        for r in futures::future::join_all(pending.into_iter().map(acknowledged)).await {
            r?;
        }
        Ok::<usize, anyhow::Error>(total)
    };

    let results_codec = Codec::for_topic(&topics.results);
    let collect = async {
        let mut results: HashMap<String, JobResult> = HashMap::with_capacity(expected_results);
        let deadline = Instant::now() + Duration::from_secs(300);
        while results.len() < expected_results {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, results_consumer.recv())
                .await
                .context("timed out waiting for results")??;
            if let Some(payload) = message.payload()
                && let Ok(r) = results_codec.decode::<JobResult>(payload)
            {
                results.insert(r.job_id.clone(), r);
            }
        }
        Ok::<_, anyhow::Error>(results)
    };
    let (produced, results) = tokio::join!(produce, collect);
    produced?;
    let results = results?;
    drop(results_consumer);
    let dead_lettered = stack.engine.metrics.dead_letters();
    let baseline = stack.pipeline.config.routing.baseline_model.clone();
    // The live run's figures end here; the deferred pass's usage comes after.
    let live_until = chrono::Utc::now() + chrono::TimeDelta::seconds(1);
    let deferred_pass = if again.is_empty() {
        None
    } else {
        eprintln!(
            "Deferred pass: the same {} jobs again, patient, through the providers' batch APIs…",
            again.len()
        );
        Some(deferred::run(&stack, &again, &results, &baseline).await?)
    };
    let parquet_dir = stack.pipeline.config.analytics.parquet_dir.clone();
    let catalog = stack.catalog().clone();
    if !stack.sink_caught_up(Duration::from_secs(60)).await? {
        eprintln!(
            "The usage sink is still behind after 60 s; stopping it anyway (it commits only what it wrote)."
        );
    }
    stack.stop().await?;
    let by_bu = switchyard_analytics::report::parquet::report(
        &parquet_dir,
        &switchyard_analytics::ReportQuery {
            by: vec![switchyard_analytics::Dimension::Bu],
            since: None,
            until: deferred_pass.as_ref().map(|_| live_until),
        },
    )
    .context("reading the demo's Parquet files back")?;
    let summary = summary::summarize(&summary::Inputs {
        results: &results,
        labels: &labels,
        catalog: &catalog,
        baseline: &baseline,
        dead_lettered,
        malformed_sent: args.jobs.div_ceil(400),
        elapsed: started.elapsed(),
        time_scale: args.time_scale,
        parquet_dir: &parquet_dir,
        by_bu: &by_bu,
    });
    match args.format {
        DemoFormat::Table => {
            summary::print(&summary, &by_bu);
            if let Some(pass) = &deferred_pass {
                deferred::print(pass);
            }
        }
        DemoFormat::Json => {
            let mut json = serde_json::to_value(&summary)?;
            if let (Some(pass), Some(object)) = (&deferred_pass, json.as_object_mut()) {
                object.insert("deferred".into(), serde_json::to_value(pass)?);
            }
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}
