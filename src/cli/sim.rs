//! `switchyard sim-provider`: simulated OpenAI, Anthropic and Gemini endpoints.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use switchyard_sim::{Setting, SimConfig};

use super::common::shutdown_signal;

/// Arguments of `sim-provider`.
#[derive(clap::Args)]
pub struct Args {
    /// Simulator config (see pipelines/sim.toml); without it, every catalog model
    /// answers at its catalog speed with no injected faults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Catalog used when no config is given.
    #[arg(long, default_value = "pipelines/models.toml")]
    catalog: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 9100)]
    port: u16,
    /// Multiplies every simulated duration (0.1 = ten times faster).
    #[arg(long)]
    time_scale: Option<f64>,
    /// Sets one key of one model's behaviour, over the config file: any key of
    /// pipelines/sim.toml, as MODEL.KEY=VALUE with a TOML value (strings may go
    /// unquoted). MODEL is the id requests carry, or `default` for [default],
    /// which reaches every model that does not set the key. Repeatable; later
    /// flags win. Examples: --set gpt-5-nano.error_rate=0.2,
    /// --set claude-haiku-5-5.ttft=2s, --set gpt-4o-mini.rpm=60,
    /// --set default.hang_rate=0.01, --set gpt-5.4.rate_limit_hint=none.
    #[arg(long = "set", value_name = "MODEL.KEY=VALUE", value_parser = Setting::parse_set)]
    settings: Vec<Setting>,
    /// Adds a scheduled outage to a model: from START to END after server start
    /// (humantime durations, scaled by the time scale), answering STATUS (503
    /// unless given). Repeatable. Example: --outage claude-haiku-5-5=2m..3m:529.
    #[arg(long = "outage", value_name = "MODEL=START..END[:STATUS]", value_parser = Setting::parse_outage)]
    outages: Vec<Setting>,
}

/// Serves until SIGINT/SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let shutdown = shutdown_signal();
    let settings: Vec<Setting> = args.settings.into_iter().chain(args.outages).collect();
    let mut config = match &args.config {
        Some(path) => SimConfig::load_with(path, &settings)?,
        None => SimConfig::from_catalog_with(
            &switchyard_loader::load_catalog(&args.catalog)?,
            &settings,
        )?,
    };
    if let Some(scale) = args.time_scale {
        config.time_scale = scale;
    }
    let handle = switchyard_sim::start(config, SocketAddr::new(args.host, args.port)).await?;
    let base = format!("http://{}", handle.addr());
    println!("sim-provider: {base}");
    println!("  openai:    {base}/openai/v1/chat/completions");
    println!("  anthropic: {base}/anthropic/v1/messages");
    println!("  gemini:    {base}/gemini/v1beta/models/{{model}}:generateContent");
    println!("  stats:     {base}/sim/stats");
    shutdown.await;
    handle.shutdown().await?;
    Ok(ExitCode::SUCCESS)
}
