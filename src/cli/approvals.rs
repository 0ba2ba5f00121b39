//! `switchyard approvals list`, `switchyard approve ID`, `switchyard reject ID
//! --reason TEXT`: held work and the signed decisions on it. The decision is
//! checked here for a clear answer (exit 1 naming what is missing), and again
//! by the workers, which act only on decisions that count.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use switchyard_core::access::approval::{
    ApprovalBook, ApprovalRecord, Decision, HoldKind, partition_of,
};
use switchyard_core::access::cover::Tree;
use switchyard_core::access::{Action, Keyring};
use switchyard_core::audit::AuditEntry;
use switchyard_core::config::LoadedPipeline;
use switchyard_kafka::client::producer_config;
use switchyard_kafka::produce::{partition_count, publish_at};
use switchyard_kafka::{ScanFrom, scan_to_end};
use tokio_util::sync::CancellationToken;

use super::access;
use super::common::{BadInput, PipelineArgs, TableOrJson, load_pipeline};

/// Arguments of `approvals`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Held work waiting for a decision, one line per approval id.
    List(ListArgs),
}

#[derive(clap::Args)]
struct ListArgs {
    #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
    format: TableOrJson,
    #[command(flatten)]
    config: PipelineArgs,
}

/// Arguments of `approve`.
#[derive(clap::Args)]
pub struct ApproveArgs {
    /// The approval id (as `approvals list` shows it).
    id: String,
    /// Why (kept in the audit log).
    #[arg(long, default_value = "")]
    reason: String,
    #[command(flatten)]
    config: PipelineArgs,
}

/// Arguments of `reject`.
#[derive(clap::Args)]
pub struct RejectArgs {
    /// The approval id.
    id: String,
    /// Why: the rejected jobs' results carry it.
    #[arg(long)]
    reason: String,
    #[command(flatten)]
    config: PipelineArgs,
}

/// Reads the approvals topic to its end.
async fn book(pipeline: &LoadedPipeline) -> anyhow::Result<ApprovalBook> {
    let kafka = pipeline.config.kafka.clone();
    tokio::task::spawn_blocking(move || {
        let mut book = ApprovalBook::default();
        scan_to_end(
            &kafka,
            &kafka.topics.approvals,
            ScanFrom::Beginning,
            &Default::default(),
            Duration::from_secs(60),
            |m| {
                if let Ok(r) = serde_json::from_slice::<ApprovalRecord>(m.payload) {
                    book.apply(r);
                }
            },
        )
        .map(|_| book)
    })
    .await?
    .context("reading the approvals topic")
}

/// `approvals list`.
pub async fn list(args: Args) -> anyhow::Result<ExitCode> {
    let Command::List(args) = args.command;
    let pipeline = load_pipeline(&args.config.config, &args.config.overrides)?;
    let root = access::org_root(&pipeline);
    let caller = access::caller(&pipeline, Action::ListApprovals, &root)?;
    if let Some(c) = &caller
        && !c
            .record
            .grants
            .iter()
            .any(|g| g.role.permits(Action::ListApprovals))
    {
        c.record.authorize(Action::ListApprovals, &root)?;
    }
    let book = book(&pipeline).await?;
    let pending: Vec<_> = book
        .summary()
        .into_iter()
        .filter(|p| {
            caller
                .as_ref()
                .is_none_or(|c| c.record.may(Action::ListApprovals, &p.node))
        })
        .collect();
    if args.format == TableOrJson::Json {
        println!("{}", serde_json::to_string_pretty(&pending)?);
        return Ok(ExitCode::SUCCESS);
    }
    if pending.is_empty() {
        println!("no held work waits for a decision");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<44} {:<32} {:<14} {:>5} {:>12} {:<20} reason",
        "id", "node", "submitted_by", "jobs", "worst_usd", "expires_at"
    );
    for p in pending {
        println!(
            "{:<44} {:<32} {:<14} {:>5} {:>12.4} {:<20} {}{}",
            p.id,
            p.node,
            p.submitted_by.as_deref().unwrap_or("-"),
            p.jobs,
            p.worst_case_usd,
            p.expires_at.format("%Y-%m-%d %H:%M:%S"),
            if p.budget_override {
                "[budget override] "
            } else {
                ""
            },
            p.reason
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `approve`.
pub async fn approve(args: ApproveArgs) -> anyhow::Result<ExitCode> {
    decide(&args.config, &args.id, true, &args.reason).await
}

/// `reject`.
pub async fn reject(args: RejectArgs) -> anyhow::Result<ExitCode> {
    if args.reason.trim().is_empty() {
        return Err(BadInput("--reason must say why: the rejected results carry it".into()).into());
    }
    decide(&args.config, &args.id, false, &args.reason).await
}

async fn decide(
    config: &PipelineArgs,
    id: &str,
    approve: bool,
    reason: &str,
) -> anyhow::Result<ExitCode> {
    let pipeline = load_pipeline(&config.config, &config.overrides)?;
    let Some(keys) = pipeline.keys.clone() else {
        bail!(
            "{} has no [access] section: decisions are signed, so approving needs keys (see the README's \"Access control\")",
            config.config.display()
        );
    };
    let book = book(&pipeline).await?;
    let requests = book.requests_of(id);
    let Some(first) = requests.first() else {
        return Err(BadInput(format!(
            "no held work waits under `{id}` (see `switchyard approvals list`; it may have been decided or expired)"
        ))
        .into());
    };
    let node = first.node.clone();
    let caller =
        access::authorize(&pipeline, Action::Approve, &node)?.context("deciding needs a key")?;
    let override_budget = approve && requests.iter().any(|r| r.kind == HoldKind::Budget);
    let mut decision = Decision::signed(
        &caller.key,
        &caller.record.principal,
        id,
        &node,
        approve,
        reason,
        override_budget,
        Utc::now(),
    );
    let mut jobs = requests.len();
    if approve {
        // An approval releases exactly the jobs listed now: one held later
        // under this id, or a new job copying the release, waits for another.
        let tree = Tree::new(requests.iter().filter_map(|r| r.leaf()).collect());
        let cover = tree.cover();
        if cover.jobs < jobs {
            eprintln!(
                "warning: {} held job(s) under `{id}` have no readable copy of their message; they end `approval_unreleasable`",
                jobs - cover.jobs
            );
        }
        jobs = cover.jobs;
        decision = decision.covering(&caller.key, cover);
    }
    check_all(&decision, &keys, &requests)?;
    publish(&pipeline, &decision).await?;
    let log = access::audit_log(&pipeline)?;
    access::record(
        log.as_ref(),
        AuditEntry {
            kind: "approval".into(),
            subject: id.to_owned(),
            node: Some(node.clone()),
            principal: Some(caller.record.principal.clone()),
            outcome: if approve {
                if override_budget {
                    "approved_budget_override"
                } else {
                    "approved"
                }
            } else {
                "rejected"
            }
            .into(),
            detail: serde_json::json!({"jobs": jobs, "reason": reason, "key_id": caller.record.key_id}),
        },
    )
    .await;
    if approve {
        println!(
            "{id} approved{}: the {jobs} held job(s) of `{node}` waiting now are released and run to their final results (jobs held under `{id}` later need another approval)",
            if override_budget {
                " (an override of the budget cap, recorded as such)"
            } else {
                ""
            }
        );
    } else {
        println!("{id} rejected: {jobs} held job(s) of `{node}` end rejected with your reason");
    }
    Ok(ExitCode::SUCCESS)
}

/// The decision must count for every job it decides (the workers check it
/// again; this is for a clear answer now).
fn check_all(
    decision: &Decision,
    keys: &Keyring,
    requests: &[&switchyard_core::access::approval::ApprovalRequest],
) -> anyhow::Result<()> {
    for r in requests {
        decision.check(keys, r.submitted_by.as_deref(), r.kind)?;
    }
    Ok(())
}

/// Publishes the decision at its approval id's partition.
async fn publish(pipeline: &LoadedPipeline, decision: &Decision) -> anyhow::Result<()> {
    let kafka = &pipeline.config.kafka;
    let producer: rdkafka::producer::FutureProducer = producer_config(kafka).create()?;
    let topic = kafka.topics.approvals.clone();
    let count = {
        let producer = producer.clone();
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || partition_count(&producer, &topic)).await??
    };
    if count == 0 {
        bail!("the approvals topic `{topic}` does not exist");
    }
    let record = ApprovalRecord::Decision(decision.clone());
    let stop = CancellationToken::new();
    let key = record.key();
    let value = serde_json::to_vec(&record)?;
    let send = publish_at(
        &producer,
        &topic,
        Some(partition_of(&decision.id, count)),
        Some(key.as_bytes()),
        &value,
        None,
        &stop,
    );
    match tokio::time::timeout(Duration::from_secs(60), send).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("the approvals topic did not acknowledge the decision within 60 s"),
    }
}
