//! `switchyard validate FILE`: checks a pipeline config, its catalog and org file.

use std::path::PathBuf;
use std::process::ExitCode;

use super::common::{Overrides, load_pipeline};

/// Arguments of `validate`.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline config file.
    file: PathBuf,
    #[command(flatten)]
    overrides: Overrides,
}

/// Prints what the config defines; exits 2 with the file, line and fix when it is wrong.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let p = load_pipeline(&args.file, &args.overrides)?;
    let c = &p.config;
    println!("{}: ok", args.file.display());
    println!(
        "  catalog     {} ({} models)",
        c.catalog.display(),
        p.catalog.models().len()
    );
    println!(
        "  org         {} ({} projects)",
        c.org.display(),
        p.org.projects().len()
    );
    println!("  brokers     {}", c.kafka.brokers);
    println!(
        "  topics      jobs={} ({:?}) results={} usage={} dlq={}",
        c.kafka.topics.jobs.name,
        c.kafka.topics.jobs.encoding,
        c.kafka.topics.results.name,
        c.kafka.topics.usage.name,
        c.kafka.topics.dlq
    );
    println!("  baseline    {}", c.routing.baseline_model);
    println!("  deployments {}", c.deployments.len());
    let mut missing = 0;
    for d in &c.deployments {
        if let Some(var) = &d.api_key_env
            && std::env::var(var).map_or(true, |v| v.trim().is_empty())
        {
            missing += 1;
            println!(
                "  warning: deployment `{}` reads its key from {var}, which is not set here",
                d.name
            );
        }
    }
    for (property, var) in &c.kafka.client_secret_env {
        if std::env::var(var).map_or(true, |v| v.trim().is_empty()) {
            missing += 1;
            println!(
                "  warning: Kafka property `{property}` reads its value from {var}, which is not set here"
            );
        }
    }
    if missing > 0 {
        println!(
            "  ({missing} secrets are missing: deployments or Kafka clients would fail on this machine until they are set)"
        );
    }
    Ok(ExitCode::SUCCESS)
}
