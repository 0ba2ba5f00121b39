//! The subcommands and what they share: logging, the Tokio runtime, signals,
//! config loading with command-line and environment overrides, exit codes.

mod access;
mod approvals;
mod audit;
mod batch;
mod bench;
mod bench_sink;
mod broker;
mod catalog;
mod common;
mod demo;
mod dev;
mod keys;
mod need;
mod org;
mod report;
mod route;
mod run;
mod sim;
mod sink;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use common::BadInput;

/// Switchyard: route LLM prompt jobs from Kafka to the cheapest model that does the
/// task well, with failover, rate limits and token-level cost accounting.
#[derive(Parser)]
#[command(name = "switchyard", version, about, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "SWITCHYARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the routing worker: consume jobs, route, call providers, publish results.
    Run(run::Args),
    /// Check a pipeline config (with its catalog and org file) without running.
    Validate(validate::Args),
    /// The model catalog: check its prices against LiteLLM's public price map.
    Catalog(catalog::Args),
    /// Everything in one process, nothing to install: broker, simulated providers,
    /// worker and usage sink on a realistic workload, then a cost report.
    Demo(demo::Args),
    /// The embedded broker, simulated providers, worker and sink, left running for
    /// any Kafka client to use. Ctrl-C drains and exits.
    Dev(dev::Args),
    /// Hold an embedded Kafka broker (librdkafka's mock cluster) and print its address.
    Broker(broker::Args),
    /// Serve simulated OpenAI, Anthropic and Gemini endpoints.
    SimProvider(sim::Args),
    /// Show how one job would be routed, and why.
    Route(route::Args),
    /// Measure worker throughput through the embedded broker.
    Bench(bench::Args),
    /// Measure usage-sink throughput into Parquet (and ClickHouse).
    BenchSink(bench_sink::Args),
    /// Run the analytics sink: usage events into Parquet and ClickHouse.
    Sink(sink::Args),
    /// The org tree as the workers see it: budgets, spend, in flight, headroom, quotas.
    Org(org::Args),
    /// Cost report by org node, model, provider, strategy or day, with savings
    /// against the flagship baseline, from ClickHouse or Parquet.
    Report(report::Args),
    /// Submit a JSONL batch (OpenAI Batch, Anthropic Message Batches or native jobs).
    Submit(batch::SubmitArgs),
    /// Show a batch's progress: counts, cost so far, time left.
    Status(batch::StatusArgs),
    /// Wait for every result of a batch and write them in the batch's format.
    Collect(batch::CollectArgs),
    /// Cancel a batch: jobs not yet started end as canceled.
    Cancel(batch::CancelArgs),
    /// Price a batch file under every strategy before anything runs.
    Estimate(batch::EstimateArgs),
    /// Keys of principals and their roles: create, list, revoke.
    Keys(keys::Args),
    /// Held work waiting for an approver's decision.
    Approvals(approvals::Args),
    /// Release held work (a signed decision; an override for budget holds).
    Approve(approvals::ApproveArgs),
    /// Reject held work: its jobs end rejected with the reason.
    Reject(approvals::RejectArgs),
    /// Verify or export the audit log.
    Audit(audit::Args),
    /// Train the need model `auto` routes with on labelled prompts; writes the
    /// model and its card.
    TrainRouter(need::TrainArgs),
    /// The cost/quality curve of routing by the need on labelled prompts, and
    /// the threshold each quality target implies.
    Calibrate(need::CalibrateArgs),
    /// How `auto` routes labelled prompts: AUC, adequacy, under-routing,
    /// over-spend, recovered quality gap and cost, per source and overall.
    EvalRouter(need::EvalArgs),
}

impl Command {
    /// Whether the command runs a routing worker in this process.
    fn hosts_a_worker(&self) -> bool {
        matches!(
            self,
            Command::Run(_) | Command::Dev(_) | Command::Demo(_) | Command::Bench(_)
        )
    }
}

/// Keeps the kernel from backing this process's heap with 2 MB transparent huge
/// pages. mimalloc asks for them on its arenas, and a huge page stays resident
/// while any of its 512 small pages is in use: 285 MB peak RSS at 2,500 calls in
/// flight with them, 240-244 MB without, for the same CPU (docs/decisions.md,
/// Performance). Best effort: a kernel that refuses changes nothing else.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(error = %e, "Could not turn transparent huge pages off for this process.");
    }
}

/// Entry point: parse, log, run, exit code.
pub fn main() -> ExitCode {
    quiet_when_stdout_closes();
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if cli.command.hosts_a_worker() {
        no_transparent_huge_pages();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Run(a) => run::run(a).await,
            Command::Validate(a) => validate::run(a),
            Command::Catalog(a) => catalog::run(a),
            Command::Demo(a) => demo::run(a).await,
            Command::Dev(a) => dev::run(a).await,
            Command::Broker(a) => broker::run(a).await,
            Command::SimProvider(a) => sim::run(a).await,
            Command::Route(a) => route::run(a),
            Command::Bench(a) => bench::run(a).await,
            Command::BenchSink(a) => bench_sink::run(a).await,
            Command::Sink(a) => sink::run(a).await,
            Command::Report(a) => report::run(a).await,
            Command::Org(a) => org::run(a).await,
            Command::Submit(a) => batch::submit(a).await,
            Command::Status(a) => batch::status(a).await,
            Command::Collect(a) => batch::collect(a).await,
            Command::Cancel(a) => batch::cancel(a).await,
            Command::Estimate(a) => batch::estimate(a).await,
            Command::Keys(a) => keys::run(a).await,
            Command::Approvals(a) => approvals::list(a).await,
            Command::Approve(a) => approvals::approve(a).await,
            Command::Reject(a) => approvals::reject(a).await,
            Command::Audit(a) => audit::run(a).await,
            Command::TrainRouter(a) => need::train(a),
            Command::Calibrate(a) => need::calibrate(a),
            Command::EvalRouter(a) => need::eval(a),
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    match outcome {
        Ok(code) => code,
        Err(e) if closed_stdout(&e) => ExitCode::from(CLOSED_STDOUT),
        Err(e) => {
            eprintln!("error: {e:#}");
            if common::is_bad_input(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// The exit code of a process whose output pipe closed (as SIGPIPE would give).
const CLOSED_STDOUT: u8 = 141;

/// A reader that stops early (`switchyard route … | head`) closes stdout: the
/// command then ends quietly with 141, as a process killed by SIGPIPE does,
/// instead of a panic and a backtrace from the next `println!`.
fn quiet_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(i32::from(CLOSED_STDOUT));
        }
        default(info);
    }));
}

/// Whether the command failed only because its stdout was closed.
fn closed_stdout(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn,librdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Pretty => builder.compact().init(),
    }
}
