//! `switchyard org show`: the org tree as the workers see it now: every node
//! with its budget, month-to-date spend, what is in flight, headroom, and its
//! quotas with their use this minute and day, from the budget snapshots every
//! worker publishes (so it needs no store and no replay), plus the effective
//! routing policy of each project.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use clap::Subcommand;
use serde::Serialize;
use switchyard_core::access::Action;
use switchyard_core::budget::{BudgetLedger, BudgetSnapshot, NodeBudget, QuotaUse};
use switchyard_core::config::LoadedPipeline;
use switchyard_core::org::{Budget, EffectivePolicy, Quota};
use switchyard_kafka::{ScanFrom, scan_to_end};

use super::common::{Overrides, TableOrJson, load_pipeline};

/// Arguments of `org`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: OrgCommand,
}

#[derive(Subcommand)]
enum OrgCommand {
    /// The tree with each node's budget, spend, in flight, headroom and quota use.
    Show(ShowArgs),
}

/// Arguments of `org show`.
#[derive(clap::Args)]
pub struct ShowArgs {
    /// Pipeline config whose org file and Kafka settings are used.
    #[arg(
        long,
        short,
        default_value = "pipelines/demo.toml",
        env = "SWITCHYARD_CONFIG"
    )]
    config: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
    format: TableOrJson,
    #[command(flatten)]
    overrides: Overrides,
}

/// One node as shown.
#[derive(Serialize)]
struct NodeView {
    path: String,
    depth: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    budget: Option<Budget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spend: Option<NodeBudget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quota: Option<Quota>,
    #[serde(skip_serializing_if = "Option::is_none")]
    quota_use: Option<QuotaUse>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<EffectivePolicy>,
}

/// Runs `org`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        OrgCommand::Show(a) => show(a).await,
    }
}

async fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let pipeline = load_pipeline(&args.config, &args.overrides)?;
    let root = super::access::org_root(&pipeline);
    let caller = super::access::caller(&pipeline, Action::OrgShow, &root)?;
    if let Some(c) = &caller
        && !c
            .record
            .grants
            .iter()
            .any(|g| g.role.permits(Action::OrgShow))
    {
        c.record.authorize(Action::OrgShow, &root)?;
    }
    let snapshots = read_snapshots(&pipeline).await?;
    let now = Utc::now();
    let mut ledger = BudgetLedger::new(&pipeline.org, now);
    for s in snapshots {
        ledger.observe("org-show", s);
    }
    let nodes: Vec<NodeView> = pipeline
        .org
        .nodes()
        .into_iter()
        // A caller sees the subtrees their roles cover.
        .filter(|n| {
            caller
                .as_ref()
                .is_none_or(|c| c.record.may(Action::OrgShow, &n.path))
        })
        .map(|n| NodeView {
            path: n.path.clone(),
            depth: n.depth,
            budget: n.budget,
            spend: ledger.node_state(&n.path, now),
            quota: n.quota,
            quota_use: n.quota.map(|_| ledger.quota_use(&n.path, now)),
            policy: (n.depth == 4)
                .then(|| pipeline.org.policy(&n.path, None).ok().cloned())
                .flatten(),
        })
        .collect();
    match args.format {
        TableOrJson::Json => {
            let doc = serde_json::json!({
                "org": pipeline.org.name(),
                "time_zone": pipeline.org.time_zone().name(),
                "at": now,
                "nodes": nodes,
            });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        TableOrJson::Table => print_tree(&nodes),
    }
    Ok(ExitCode::SUCCESS)
}

/// Every worker's latest snapshot per node (the topic is compacted; the last
/// record of a key wins).
async fn read_snapshots(pipeline: &LoadedPipeline) -> anyhow::Result<Vec<BudgetSnapshot>> {
    let kafka = pipeline.config.kafka.clone();
    let topic = kafka.topics.budgets.clone();
    let latest = tokio::task::spawn_blocking(move || {
        let mut latest: BTreeMap<String, BudgetSnapshot> = BTreeMap::new();
        scan_to_end(
            &kafka,
            &topic,
            ScanFrom::Beginning,
            &Default::default(),
            Duration::from_secs(30),
            |m| {
                if let Ok(s) = serde_json::from_slice::<BudgetSnapshot>(m.payload) {
                    latest.insert(s.key(), s);
                }
            },
        )
        .map(|_| latest)
    })
    .await??;
    Ok(latest.into_values().collect())
}

fn print_tree(nodes: &[NodeView]) {
    println!(
        "{:<44} {:>12} {:>12} {:>11} {:>12}  quotas (used/limit)",
        "node", "budget/mo", "spent", "in flight", "headroom"
    );
    for n in nodes {
        let name = format!("{}{}", "  ".repeat(n.depth - 1), leaf(&n.path));
        let money = |v: Option<f64>| v.map_or("-".to_owned(), |x| format!("${x:.2}"));
        let quotas = match (n.quota, n.quota_use) {
            (Some(q), Some(u)) => [
                ("jobs/min", q.jobs_per_minute, u.jobs_minute),
                ("jobs/day", q.jobs_per_day, u.jobs_day),
                ("tokens/min", q.tokens_per_minute, u.tokens_minute),
                ("tokens/day", q.tokens_per_day, u.tokens_day),
            ]
            .into_iter()
            .filter_map(|(name, limit, used)| limit.map(|l| format!("{name} {used}/{l}")))
            .collect::<Vec<_>>()
            .join(", "),
            _ => String::new(),
        };
        println!(
            "{:<44} {:>12} {:>12} {:>11} {:>12}  {}",
            name,
            money(n.budget.map(|b| b.usd_per_month)),
            money(n.spend.map(|s| s.spent_usd)),
            money(n.spend.map(|s| s.in_flight_usd)),
            money(n.spend.map(|s| s.headroom_usd)),
            quotas
        );
    }
}

fn leaf(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}
