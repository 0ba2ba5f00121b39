//! `switchyard audit verify --from topic|clickhouse` checks every writer's
//! chain (sequence, links, hashes, HMACs with `SWITCHYARD_AUDIT_KEY`, and the
//! writers' checkpoints) and names the first bad record, exit 1.
//! `switchyard audit export --since --until` writes the records of a period as
//! JSONL for a compliance review. Both need `auditor` or `org-admin` over the
//! org when `[access]` is set.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use switchyard_analytics::ClickHouseConfig;
use switchyard_analytics::report::parse_instant;
use switchyard_core::access::Action;
use switchyard_core::audit::{AuditRecord, Checkpoint, Finding, Position, verify};
use switchyard_core::config::{KafkaConfig, LoadedPipeline};
use switchyard_kafka::audit::audit_key;
use switchyard_kafka::{ScanFrom, scan_to_end};

use super::access;
use super::common::{BadInput, PipelineArgs, load_pipeline};

/// Arguments of `audit`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Check every chain; name the first bad record (exit 1).
    Verify(VerifyArgs),
    /// Write the records of a period as JSONL.
    Export(ExportArgs),
}

/// Where the audit log is read.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum From {
    /// The audit and checkpoint topics.
    Topic,
    /// The sink's `audit_log` and `audit_checkpoints` tables.
    Clickhouse,
}

#[derive(clap::Args)]
struct VerifyArgs {
    #[arg(long, value_enum, default_value_t = From::Topic)]
    from: From,
    #[command(flatten)]
    config: PipelineArgs,
}

#[derive(clap::Args)]
struct ExportArgs {
    /// First instant included (`2026-11-01` or `2026-11-01T09:00:00Z`, UTC).
    #[arg(long)]
    since: String,
    /// First instant excluded.
    #[arg(long)]
    until: String,
    /// Output file (default: stdout).
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    config: PipelineArgs,
}

/// Runs `audit`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Verify(a) => verify_log(a).await,
        Command::Export(a) => export(a).await,
    }
}

fn load(config: &PipelineArgs) -> anyhow::Result<LoadedPipeline> {
    let pipeline = load_pipeline(&config.config, &config.overrides)?;
    access::authorize(&pipeline, Action::Audit, &access::org_root(&pipeline))?;
    Ok(pipeline)
}

/// Every record of the audit topic with its position, and the latest
/// checkpoint per writer. Records that do not parse are findings.
async fn from_topic(
    kafka: &KafkaConfig,
    from: ScanFrom,
) -> anyhow::Result<Result<(Vec<(AuditRecord, Position)>, Vec<Checkpoint>), Finding>> {
    let kafka = kafka.clone();
    tokio::task::spawn_blocking(move || {
        let mut records = Vec::new();
        let mut bad: Option<Finding> = None;
        scan_to_end(
            &kafka,
            &kafka.topics.audit,
            from,
            &Default::default(),
            Duration::from_secs(600),
            |m| match serde_json::from_slice::<AuditRecord>(m.payload) {
                Ok(r) => records.push((
                    r,
                    Position {
                        partition: m.partition,
                        offset: m.offset,
                    },
                )),
                Err(e) if bad.is_none() => {
                    bad = Some(Finding {
                        writer: "(unknown)".into(),
                        seq: 0,
                        position: Position {
                            partition: m.partition,
                            offset: m.offset,
                        },
                        problem: format!("not an audit record: {e}"),
                    })
                }
                Err(_) => {}
            },
        )
        .context("reading the audit topic")?;
        let mut latest: std::collections::BTreeMap<String, Checkpoint> = Default::default();
        scan_to_end(
            &kafka,
            &kafka.topics.audit_checkpoints,
            ScanFrom::Beginning,
            &Default::default(),
            Duration::from_secs(60),
            |m| {
                if let Ok(c) = serde_json::from_slice::<Checkpoint>(m.payload) {
                    let keep = latest.get(&c.writer).is_none_or(|l| l.seq <= c.seq);
                    if keep {
                        latest.insert(c.writer.clone(), c);
                    }
                }
            },
        )
        .context("reading the audit checkpoints topic")?;
        Ok(match bad {
            Some(f) => Err(f),
            None => Ok((records, latest.into_values().collect())),
        })
    })
    .await?
}

async fn verify_log(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let pipeline = load(&args.config)?;
    let key = audit_key(&pipeline.config.audit)?;
    let read = match args.from {
        From::Topic => from_topic(&pipeline.config.kafka, ScanFrom::Beginning).await?,
        From::Clickhouse => {
            let Some(ch) = ClickHouseConfig::from_analytics(&pipeline.config.analytics)
                .map_err(|e| BadInput(e.to_string()))?
            else {
                return Err(BadInput(format!(
                    "{} has no analytics.clickhouse_url: the audit table lives in ClickHouse",
                    args.config.config.display()
                ))
                .into());
            };
            switchyard_analytics::audit::read(&ch.client()).await?
        }
    };
    let outcome = read.and_then(|(records, checkpoints)| verify(records, &checkpoints, &key));
    match outcome {
        Ok(seen) => {
            println!(
                "audit log verified: {} records from {} writers, every chain intact and matching its checkpoint",
                seen.records, seen.writers
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            println!(
                "audit log NOT intact: writer `{}`, record {}, partition {}, offset {}: {}",
                f.writer, f.seq, f.position.partition, f.position.offset, f.problem
            );
            Ok(ExitCode::from(1))
        }
    }
}

async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let bad = |e: String| anyhow::Error::from(BadInput(e));
    let since = parse_instant(&args.since).map_err(|e| bad(e.to_string()))?;
    let until = parse_instant(&args.until).map_err(|e| bad(e.to_string()))?;
    if until <= since {
        return Err(bad("--until must be after --since".into()));
    }
    let pipeline = load(&args.config)?;
    // Records reach the topic within moments of their time: start a minute early.
    let from = ScanFrom::Time(since.timestamp_millis() - 60_000);
    let records = match from_topic(&pipeline.config.kafka, from).await? {
        Ok((records, _)) => records,
        Err(f) => anyhow::bail!("the audit topic holds a message that is not a record: {f}"),
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut n = 0;
    for (r, _) in records
        .iter()
        .filter(|(r, _)| r.at >= since && r.at < until)
    {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
        n += 1;
    }
    out.flush()?;
    eprintln!("{n} audit records from {since} to {until}");
    Ok(ExitCode::SUCCESS)
}
