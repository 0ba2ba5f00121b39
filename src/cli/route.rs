//! `switchyard route [--explain] [--json]`: how one job would be routed and why:
//! the analysis (category, complexity, the learned need with the features that
//! moved it and the threshold that decided, lexicon features that fired), every candidate with
//! its score and why it was kept or dropped, and the chain chosen. When nothing
//! can serve the job, the candidates still show why each one was dropped.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use switchyard_codec::Codec;
use switchyard_core::analysis::need::PromptKind;
use switchyard_core::analysis::{TaskAnalysis, TaskAnalyzer};
use switchyard_core::health::HealthSnapshot;
use switchyard_core::job::Job;
use switchyard_core::org::EffectivePolicy;
use switchyard_core::routing::{
    BudgetState, Refusal, RouteInput, Router, RoutingDecision, Strategy,
};

use super::common::{BadInput, Overrides, load_pipeline, read_text};

/// Arguments of `route`.
#[derive(clap::Args)]
pub struct Args {
    /// Pipeline config whose catalog, org policy and deployments are used.
    #[arg(
        long,
        short,
        default_value = "pipelines/demo.toml",
        env = "SWITCHYARD_CONFIG"
    )]
    config: PathBuf,
    /// The job as JSON in a file; without it, read from stdin.
    #[arg(long)]
    job: Option<PathBuf>,
    /// Override the strategy the job and policy would use.
    #[arg(long, value_parser = parse_strategy)]
    strategy: Option<Strategy>,
    /// Show the analysis and every candidate.
    #[arg(long)]
    explain: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    overrides: Overrides,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    Strategy::parse(s).ok_or_else(|| {
        format!(
            "unknown strategy `{s}` (auto, balanced, cost-first, latency-first, availability-first)"
        )
    })
}

/// Routes the job with fresh health (no live statistics in a one-shot command).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pipeline = load_pipeline(&args.config, &args.overrides)?;
    let mut job = read_job(args.job.as_deref())?;
    if let Some(s) = args.strategy {
        job.strategy = Some(s);
    }
    let catalog = Arc::new(pipeline.catalog.clone());
    let router = Router::for_pipeline(catalog.clone(), &pipeline.config);
    let policy = pipeline
        .org
        .policy(&job.project, job.workload.as_deref())
        .map_err(|e| BadInput(e.to_string()))?;
    let analysis =
        TaskAnalyzer::for_pipeline(&pipeline).analyze_for(&job, policy.quality_target, true);
    let input = RouteInput {
        job: &job,
        analysis: &analysis,
        policy,
        budget: BudgetState::UNCONSTRAINED,
        now: Utc::now(),
    };
    let decision = router.route(&input, &|_| HealthSnapshot::fresh(), true);
    let routed = Routed {
        job: &job,
        analysis: &analysis,
        policy,
        router: &router,
        decision: &decision,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&routed.json())?);
    } else {
        if args.explain {
            routed.print_analysis();
            routed.print_policy();
            routed.print_candidates();
        }
        routed.print_outcome();
    }
    Ok(if decision.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The job from a file, or from stdin.
fn read_job(path: Option<&Path>) -> anyhow::Result<Job> {
    let text = match path {
        Some(path) => read_text(path)?,
        None => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| BadInput(format!("cannot read the job from stdin: {e}")))?;
            s
        }
    };
    Ok(Codec::json()
        .decode_job(text.trim().as_bytes())
        .map_err(|e| BadInput(format!("the job is not valid: {e}")))?)
}

/// One job's routing, as the command shows it.
struct Routed<'a> {
    job: &'a Job,
    analysis: &'a TaskAnalysis,
    policy: &'a EffectivePolicy,
    router: &'a Router,
    decision: &'a Result<RoutingDecision, Box<Refusal>>,
}

impl Routed<'_> {
    /// The decision as far as it went (a refusal carries it, candidates included).
    fn shown(&self) -> &RoutingDecision {
        match self.decision {
            Ok(d) => d,
            Err(refusal) => &refusal.decision,
        }
    }

    fn json(&self) -> serde_json::Value {
        let shown = self.shown();
        let catalog = self.router.catalog();
        let mut value = json!({
            "job_id": self.job.job_id,
            "analysis": self.analysis,
            "policy": self.policy,
            "decision": shown,
            "chain": shown.chain.iter().map(|e| json!({
                "deployment": self.router.deployments()[e.deployment].name,
                "model": catalog.model(e.model).name,
                "provider": catalog.model(e.model).provider,
                "estimated_cost_usd": e.estimated_cost_usd,
                "expected_latency_ms": e.expected_latency_ms,
            })).collect::<Vec<_>>(),
        });
        if let Err(refusal) = self.decision {
            value["error"] = json!({"code": refusal.code(), "message": refusal.to_string()});
        }
        value
    }

    fn print_analysis(&self) {
        let analysis = self.analysis;
        println!("analysis");
        println!(
            "  category          {}{}",
            analysis.category,
            analysis
                .alternative
                .map(|a| format!(" (close second: {a})"))
                .unwrap_or_default()
        );
        println!("  complexity        {:.2}", analysis.complexity);
        let need = &analysis.need;
        println!(
            "  need              {:.3} (probability that a cheap model falls short; {} prompt, logit {:+.3})",
            need.p,
            match need.kind {
                PromptKind::Open => "open-ended",
                PromptKind::MultipleChoice => "multiple-choice",
            },
            need.logit
        );
        println!(
            "  threshold         {:.3} for quality target {:.2}: {}",
            need.threshold,
            need.quality_target,
            if need.premium {
                "at or above it, only a top-third model qualifies"
            } else {
                "below it, the best bottom-third quality is enough"
            }
        );
        println!("  required quality  {:.2}", analysis.required_quality);
        println!(
            "  prompt tokens     {} ({})",
            analysis.prompt_tokens,
            if self.shown().tokens_counted {
                "counted with the model's tokenizer near its context limit"
            } else {
                "estimated from bytes"
            }
        );
        println!(
            "  expected output   {} tokens",
            analysis.expected_output_tokens
        );
        println!("  need moved most by:");
        for c in &need.top_features {
            println!(
                "    {:<28} value {:>6.3}  weight {:+.3}  logit {:+.3}",
                c.feature, c.value, c.weight, c.contribution
            );
        }
        println!("  lexicon features fired:");
        for f in &analysis.features {
            let cat = f
                .category
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into());
            println!(
                "    {:<28} {:<15} weight {:>5.2}  complexity {:+.2}",
                f.name, cat, f.weight, f.complexity
            );
        }
        println!();
    }

    fn print_policy(&self) {
        let (job, policy) = (self.job, self.policy);
        println!(
            "policy ({}{})",
            job.project,
            job.workload
                .as_ref()
                .map(|w| format!(", workload {w}"))
                .unwrap_or_default()
        );
        println!(
            "  strategy {}  quality floor {:.2}  price cap {}",
            job.strategy.unwrap_or(policy.strategy),
            policy.quality_floor,
            policy
                .max_usd_per_job
                .map_or("none".into(), |c| format!("${c}"))
        );
        println!();
    }

    fn print_candidates(&self) {
        let candidates = &self.shown().candidates;
        println!(
            "candidates ({} ranked, {} dropped)",
            candidates.iter().filter(|c| c.rank.is_some()).count(),
            candidates.iter().filter(|c| c.dropped.is_some()).count()
        );
        println!(
            "  {:<4} {:<30} {:<10} {:>7} {:>11} {:>9} {:>8}  why",
            "rank", "model", "provider", "quality", "est. cost", "latency", "score"
        );
        for c in candidates {
            let rank = c
                .rank
                .map(|r| (r + 1).to_string())
                .unwrap_or_else(|| "-".into());
            let why = match &c.dropped {
                Some(drop) => format!(
                    "dropped: {}",
                    serde_json::to_string(drop).unwrap_or_default()
                ),
                None => "kept".into(),
            };
            let score = if c.score.is_nan() {
                "-".to_owned()
            } else {
                format!("{:.4}", c.score)
            };
            println!(
                "  {:<4} {:<30} {:<10} {:>7.2} {:>11.6} {:>7.0}ms {:>8}  {}",
                rank,
                c.model,
                c.provider,
                c.quality,
                c.estimated_cost_usd,
                c.expected_latency_ms,
                score,
                why
            );
        }
        println!();
    }

    fn print_outcome(&self) {
        match self.decision {
            Ok(d) => {
                println!("chain ({}):", d.strategy);
                for (i, e) in d.chain.iter().enumerate() {
                    let m = self.router.catalog().model(e.model);
                    println!(
                        "  {}. {:<34} {:<28} {:<10} est. ${:.6}",
                        i + 1,
                        self.router.deployments()[e.deployment].name,
                        m.name,
                        m.provider,
                        e.estimated_cost_usd
                    );
                }
                println!("reason: {}", d.reason);
            }
            Err(refusal) => {
                println!("rejected ({}): {refusal}", refusal.code());
                println!("reason: {}", refusal.decision.reason);
            }
        }
    }
}
