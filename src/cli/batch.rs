//! `switchyard submit | status | collect | cancel | estimate`: bulk offline
//! batches (OpenAI Batch, Anthropic Message Batches or native JSONL files). The
//! work is in `switchyard-batch`; this module parses flags, loads the pipeline,
//! runs the blocking library calls off the runtime, prints tables or JSON on
//! stdout and progress on stderr, and maps errors to exit codes (2 for bad
//! input: an invalid file, an unknown batch or project).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use switchyard_core::access::Action;

use anyhow::Context;
use clap::ValueEnum;
use switchyard_batch::formats::ModelIds;
use switchyard_batch::{
    BatchFormat, CollectOptions, ConsoleProgress, EstimateOptions, StopFlag, SubmitOptions,
};
use switchyard_core::routing::Strategy;
use switchyard_core::vocab::JobMode;

use super::common::{BadInput, PipelineArgs, shutdown_signal};

/// How results are printed on stdout.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Report {
    /// Tables for people.
    Table,
    /// One JSON object, for scripts.
    Json,
}

/// Output file format of `collect`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    /// OpenAI Batch output lines, plus an errors file.
    Openai,
    /// Anthropic Message Batches result lines.
    Anthropic,
    /// Switchyard result records.
    Native,
}

impl From<FileFormat> for BatchFormat {
    fn from(f: FileFormat) -> Self {
        match f {
            FileFormat::Openai => BatchFormat::Openai,
            FileFormat::Anthropic => BatchFormat::Anthropic,
            FileFormat::Native => BatchFormat::Native,
        }
    }
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    Strategy::parse(s).ok_or_else(|| {
        format!(
            "unknown strategy `{s}` (auto, balanced, cost-first, latency-first, availability-first)"
        )
    })
}

fn parse_mode(s: &str) -> Result<JobMode, String> {
    JobMode::parse(s).ok_or_else(|| format!("unknown mode `{s}` (live, deferred, auto)"))
}

/// Arguments of `submit`.
#[derive(clap::Args)]
pub struct SubmitArgs {
    /// The batch file: JSONL in the OpenAI Batch input format, the Anthropic
    /// Message Batches request format, or Switchyard jobs (detected per file).
    file: PathBuf,
    /// Org path every job belongs to (`org/business-unit/team/project`).
    #[arg(long)]
    project: String,
    /// Strategy for every job, overriding the org policy.
    #[arg(long, value_parser = parse_strategy)]
    strategy: Option<Strategy>,
    /// Workload of every job (selects per-workload policy).
    #[arg(long)]
    workload: Option<String>,
    /// Whether jobs that name no `mode` may wait for a provider's batch API:
    /// live, deferred or auto [default: the workload's or node's default_mode].
    #[arg(long, value_parser = parse_mode)]
    mode: Option<JobMode>,
    /// Submit the valid lines even when some are invalid; the invalid ones go to --rejects.
    #[arg(long)]
    skip_invalid: bool,
    /// Where --skip-invalid writes refused lines [default: FILE.rejects.jsonl].
    #[arg(long)]
    rejects: Option<PathBuf>,
    /// Print the report as a table (the batch id alone on stdout) or JSON.
    #[arg(long, value_enum, default_value_t = Report::Table)]
    format: Report,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// Arguments of `status`.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// The batch id `submit` printed.
    batch: String,
    /// Table or JSON on stdout.
    #[arg(long, value_enum, default_value_t = Report::Table)]
    format: Report,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// Arguments of `collect`.
#[derive(clap::Args)]
pub struct CollectArgs {
    /// The batch id `submit` printed.
    batch: String,
    /// Output file (written when every job has a result, in input order).
    #[arg(long, short)]
    output: PathBuf,
    /// Output format [default: the format the batch came in].
    #[arg(long, value_enum)]
    format: Option<FileFormat>,
    /// OpenAI errors file [default: OUTPUT-STEM.errors.jsonl beside the output].
    #[arg(long)]
    errors: Option<PathBuf>,
    /// Give up after this long (e.g. `30m`); by default wait until done.
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// Arguments of `cancel`.
#[derive(clap::Args)]
pub struct CancelArgs {
    /// The batch id `submit` printed.
    batch: String,
    /// Table or JSON on stdout.
    #[arg(long, value_enum, default_value_t = Report::Table)]
    format: Report,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// Arguments of `estimate`.
#[derive(clap::Args)]
pub struct EstimateArgs {
    /// The batch file (any of the formats `submit` takes).
    file: PathBuf,
    /// Project whose policy applies [default: the pipeline's default strategy
    /// and quality floor, nothing denied].
    #[arg(long)]
    project: Option<String>,
    /// Workload whose policy applies.
    #[arg(long)]
    workload: Option<String>,
    /// Price the valid lines even when some are invalid.
    #[arg(long)]
    skip_invalid: bool,
    /// Table or JSON on stdout.
    #[arg(long, value_enum, default_value_t = Report::Table)]
    format: Report,
    #[command(flatten)]
    pipeline: PipelineArgs,
}

/// Runs a blocking library call off the runtime, mapping bad input to exit code 2.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> switchyard_batch::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    match tokio::task::spawn_blocking(f).await.context("batch task")? {
        Ok(v) => Ok(v),
        Err(e) if e.is_bad_input() => Err(BadInput(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

fn check_batch_id(id: &str) -> anyhow::Result<()> {
    if switchyard_batch::ids::is_batch_id(id) {
        Ok(())
    } else {
        Err(BadInput(format!(
            "`{id}` is not a batch id (they look like batch_0123456789abcdef01234567, as printed by submit)"
        ))
        .into())
    }
}

fn json_out(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// `submit`.
pub async fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let pipeline = args.pipeline.load()?;
    // Jobs are signed with SWITCHYARD_API_KEY when it is set; with [access],
    // the key must be one that may submit for the project (the workers check
    // it again).
    let signer = super::access::api_key()?;
    if let (Some(keys), Some(key)) = (&pipeline.keys, &signer) {
        keys.holder(key, chrono::Utc::now())?
            .authorize(Action::Submit, &args.project)?;
    }
    let options = SubmitOptions {
        signer,
        strategy: args.strategy,
        workload: args.workload,
        mode: args.mode,
        skip_invalid: args.skip_invalid,
        rejects_path: args.rejects,
        ..SubmitOptions::new(args.project)
    };
    let file = args.file;
    let report = blocking(move || {
        switchyard_batch::submit(&pipeline, &file, &options, &ConsoleProgress::stderr())
    })
    .await?;
    if args.format == Report::Json {
        json_out(&report)?;
    } else {
        println!("{}", report.batch_id);
        let what = if report.already_submitted {
            "already submitted; nothing sent".to_owned()
        } else if report.resumed {
            format!(
                "finished an interrupted submission ({} jobs sent now)",
                report.produced
            )
        } else {
            format!("{} jobs sent", report.produced)
        };
        eprintln!(
            "{} batch of {} jobs: {what}; state {}",
            report.format.as_str(),
            report.jobs,
            report.state.as_str()
        );
        if let Some(usd) = report.worst_case_usd {
            eprintln!(
                "worst case ${usd:.4} for the whole batch (above the project's approval threshold, all its jobs wait for one approval)"
            );
        }
        if let Some(r) = &report.rejects_file {
            eprintln!(
                "{} invalid lines skipped, each written with its line number and reason to {}",
                report.invalid,
                r.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `status`.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    check_batch_id(&args.batch)?;
    let pipeline = args.pipeline.load()?;
    let kafka = pipeline.config.kafka;
    let id = args.batch;
    let status = blocking(move || switchyard_batch::status(&kafka, &id)).await?;
    match args.format {
        Report::Json => json_out(&status)?,
        Report::Table => print!("{}", status.table()),
    }
    Ok(ExitCode::SUCCESS)
}

/// `collect`.
pub async fn collect(args: CollectArgs) -> anyhow::Result<ExitCode> {
    check_batch_id(&args.batch)?;
    let pipeline = args.pipeline.load()?;
    let models = ModelIds::from_pipeline(&pipeline);
    let kafka = pipeline.config.kafka;
    let options = CollectOptions {
        errors_output: args.errors,
        format: args.format.map(BatchFormat::from),
        timeout: args.timeout,
        models,
        ..CollectOptions::new(args.output)
    };
    let stop = StopFlag::default();
    let id = args.batch;
    let work = blocking({
        let stop = stop.clone();
        move || switchyard_batch::collect(&kafka, &id, &options, &stop, &ConsoleProgress::stderr())
    });
    tokio::pin!(work);
    // Ctrl-C asks the collect to stop; it then returns (Interrupted) on its own.
    let outcome = tokio::select! {
        outcome = &mut work => outcome,
        () = shutdown_signal() => {
            stop.stop();
            work.await
        }
    };
    let report = outcome?;
    if args.json {
        json_out(&report)?;
    } else {
        let c = &report.counts;
        println!(
            "batch      {} ({})",
            report.batch_id,
            report.format.as_str()
        );
        println!(
            "output     {} ({} lines)",
            report.output.display(),
            report.output_lines
        );
        match &report.errors_output {
            Some(e) => println!("errors     {} ({} lines)", e.display(), report.error_lines),
            None if report.format == BatchFormat::Openai => println!(
                "errors     none: every request succeeded, so no errors file was written (as OpenAI does)"
            ),
            None => {}
        }
        println!(
            "results    {} succeeded, {} failed, {} rejected, {} canceled",
            c.succeeded, c.failed, c.rejected, c.canceled
        );
        println!("cost       ${:.6}", report.cost_usd);
        println!(
            "duplicates {} re-delivered copies dropped",
            report.duplicates
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `cancel`.
pub async fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    check_batch_id(&args.batch)?;
    let pipeline = args.pipeline.load()?;
    if pipeline.keys.is_some() {
        let kafka = pipeline.config.kafka.clone();
        let id = args.batch.clone();
        let record = blocking(move || switchyard_batch::registry::get(&kafka, &id)).await?;
        super::access::authorize(&pipeline, Action::Cancel, &record.project)?;
    }
    let kafka = pipeline.config.kafka;
    let id = args.batch;
    let report = blocking(move || switchyard_batch::cancel(&kafka, &id)).await?;
    match args.format {
        Report::Json => json_out(&report)?,
        Report::Table if report.already_canceled => {
            println!("{} was already canceled", report.record.batch_id)
        }
        Report::Table => println!(
            "{} canceled: jobs not yet started will end as canceled; started ones finish and are billed as usual",
            report.record.batch_id
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `estimate`.
pub async fn estimate(args: EstimateArgs) -> anyhow::Result<ExitCode> {
    let pipeline = args.pipeline.load()?;
    let options = EstimateOptions {
        project: args.project,
        workload: args.workload,
        skip_invalid: args.skip_invalid,
    };
    let file = args.file.clone();
    let e = blocking(move || {
        switchyard_batch::estimate(&pipeline, &file, &options, &ConsoleProgress::stderr())
    })
    .await?;
    if args.format == Report::Json {
        json_out(&e)?;
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", e.table(&args.file));
    Ok(ExitCode::SUCCESS)
}
