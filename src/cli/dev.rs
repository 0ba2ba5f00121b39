//! `switchyard dev`: the embedded stack left running for any Kafka client, with
//! the worker's telemetry endpoint when `--metrics-addr` is given.

use std::path::PathBuf;
use std::process::ExitCode;

use super::common::{MetricsArgs, shutdown_signal, telemetry};
use switchyard_embedded::{Stack, StackOptions};

/// Arguments of `dev`.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline config (brokers and simulator URLs are replaced by the embedded ones).
    #[arg(long, default_value = "pipelines/demo.toml")]
    config: PathBuf,
    /// Partitions of the jobs, results and usage topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Simulated provider time runs at this fraction of real time.
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// Prints the bootstrap address and topics, runs until Ctrl-C, drains.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal();
    let stack = Stack::start(
        &args.config,
        StackOptions {
            partitions: args.partitions,
            time_scale: args.time_scale,
            sink: true,
            env: switchyard_loader::env_overrides(),
            ..StackOptions::default()
        },
    )
    .await?;
    let config = &stack.pipeline.config;
    let mut telemetry = telemetry("dev");
    switchyard_worker::telemetry::register(&mut telemetry, &stack.engine, &config.kafka.group_id);
    let t = &config.kafka.topics;
    println!("bootstrap: {}", stack.broker.bootstrap());
    let endpoint = args.metrics.serve(config, telemetry).await?;
    println!("topic jobs: {}", t.jobs.name);
    println!("topic results: {}", t.results.name);
    println!("topic usage: {}", t.usage.name);
    println!("topic dlq: {}", t.dlq);
    println!("topic held: {}", t.held);
    println!("topic batches: {}", t.batches);
    println!("sim-provider: http://{}", stack.sim.addr());
    println!(
        "usage parquet: {}",
        stack.pipeline.config.analytics.parquet_dir.display()
    );
    println!("projects: {}", stack.pipeline.org.projects().join(", "));
    println!("ready (Ctrl-C drains and exits)");
    shutdown.await;
    if let Some(endpoint) = endpoint {
        endpoint.stop().await;
    }
    let report = stack.stop().await?;
    eprintln!("Stopped after {} jobs.", report.received);
    Ok(ExitCode::SUCCESS)
}
