//! The demo's deferred pass: after the live run, the same jobs again (new ids,
//! `"mode": "auto"`, due in two days) through the simulated providers' batch
//! APIs, to show what deferral saves on top of routing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use switchyard_codec::Codec;
use switchyard_core::catalog::Catalog;
use switchyard_core::job::Job;
use switchyard_core::result::{JobResult, JobStatus, RunMode};
use switchyard_core::vocab::JobMode;
use switchyard_embedded::Stack;
use switchyard_kafka::produce::{acknowledged, enqueue};

/// Prefix of the deferred pass's job ids.
const PREFIX: &str = "deferred-";

/// How long the deferred pass may take.
const PATIENCE: Duration = Duration::from_secs(300);

/// What the deferred pass cost, against the live run of the same jobs.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DeferredPass {
    /// Jobs sent again.
    pub jobs: usize,
    /// Of them, served through a provider batch.
    pub served_deferred: usize,
    /// Of them, succeeded (deferred or live).
    pub succeeded: usize,
    /// What the pass cost, USD.
    pub cost_usd: f64,
    /// What the same jobs cost in the live run, USD.
    pub live_cost_usd: f64,
    /// What the pass's tokens would cost on the flagship, live, USD.
    pub baseline_cost_usd: f64,
}

/// Sends `jobs` again as patient jobs and sums their results.
pub async fn run(
    stack: &Stack,
    jobs: &[Job],
    live: &HashMap<String, JobResult>,
    baseline: &str,
) -> anyhow::Result<DeferredPass> {
    let bootstrap = stack.broker.bootstrap();
    let topics = &stack.pipeline.config.kafka.topics;
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("switchyard-demo-deferred-{}", uuid::Uuid::new_v4()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topics.results.name.as_str()])?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()?;
    let codec = Codec::for_topic(&topics.jobs);
    let due = chrono::Utc::now() + chrono::TimeDelta::days(2);
    let mut pending = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut again = job.clone();
        again.job_id = format!("{PREFIX}{}", job.job_id);
        again.mode = Some(JobMode::Auto);
        again.deadline = Some(due);
        let bytes = codec.encode(&again)?;
        let key = again.job_id.as_bytes();
        pending.push(enqueue(&producer, &topics.jobs.name, Some(key), &bytes, None).await?);
    }
    for r in futures::future::join_all(pending.into_iter().map(acknowledged)).await {
        r?;
    }
    let results_codec = Codec::for_topic(&topics.results);
    let mut results: HashMap<String, JobResult> = HashMap::with_capacity(jobs.len());
    let deadline = Instant::now() + PATIENCE;
    while results.len() < jobs.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, consumer.recv())
            .await
            .context("timed out waiting for the deferred pass's results")??;
        if let Some(payload) = message.payload()
            && let Ok(r) = results_codec.decode::<JobResult>(payload)
            && let Some(original) = r.job_id.strip_prefix(PREFIX)
            && r.status != JobStatus::Held
        {
            results.insert(original.to_owned(), r);
        }
    }
    Ok(tally(&results, live, stack.catalog(), baseline))
}

/// Sums the pass's results against the live run of the same jobs.
fn tally(
    deferred: &HashMap<String, JobResult>,
    live: &HashMap<String, JobResult>,
    catalog: &Catalog,
    baseline: &str,
) -> DeferredPass {
    let flagship = catalog.get(baseline);
    let mut pass = DeferredPass {
        jobs: deferred.len(),
        ..DeferredPass::default()
    };
    for (id, r) in deferred {
        pass.cost_usd += r.cost_usd;
        pass.live_cost_usd += live.get(id).map_or(0.0, |l| l.cost_usd);
        pass.baseline_cost_usd += flagship.map_or(0.0, |f| f.cost_usd(&r.usage));
        pass.succeeded += usize::from(r.status == JobStatus::Succeeded);
        pass.served_deferred += usize::from(r.mode == RunMode::Deferred);
    }
    pass
}

/// Prints the pass for a person.
pub fn print(pass: &DeferredPass) {
    println!();
    println!("Deferred routing (the same jobs again, \"mode\": \"auto\", due in two days)");
    println!(
        "  {} jobs, {} served through a provider batch, {} succeeded",
        pass.jobs, pass.served_deferred, pass.succeeded
    );
    println!("  live, routed     ${:.4}", pass.live_cost_usd);
    println!("  deferred, routed ${:.4}", pass.cost_usd);
    println!("  all on flagship  ${:.4}", pass.baseline_cost_usd);
    if pass.live_cost_usd > 0.0 && pass.baseline_cost_usd > 0.0 {
        println!(
            "  deferral saves {:.1}% of the routed live cost; routed and deferred is {:.1}% of the flagship",
            100.0 * (1.0 - pass.cost_usd / pass.live_cost_usd),
            100.0 * pass.cost_usd / pass.baseline_cost_usd
        );
    }
}
