//! `switchyard eval-router FILE... [--format json]`: routes labelled prompts as
//! a user's jobs would be routed (`auto`, the pipeline's catalog, org policy and
//! need model, one project) and reports, per source and overall, how well the
//! need separates premium from cheap prompts and what routing on it does:
//!
//! * `auc`: probability that the need is higher for a prompt that needs a premium
//!   model than for one a cheap model answers well (0.5 is chance); also for
//!   `analysis.required_quality` and for the lexicon's complexity;
//! * the tier of the chosen model is its third of the catalog by output price;
//!   `under_routing`: premium prompts sent below the top third; `over_spend`:
//!   cheap prompts sent above the bottom third (above the middle third where the
//!   row compares two measured models, so the middle counts as cheap there);
//!   `adequacy`: labelled prompts whose tier suffices (premium in the top third,
//!   cheap anywhere);
//! * `strong_share`: prompts routed to the top third; `pgr`: share of the quality
//!   gap between the weak and the strong model recovered (each prompt scored by
//!   the strong model's correctness when routed to the top third, else the weak
//!   one's), and `pgr_random`, what random routing at the same share recovers;
//! * `cost_ratio`: estimated cost of the routed models over the flagship's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use switchyard_core::analysis::TaskAnalyzer;
use switchyard_core::analysis::need::calibrate::auc;
use switchyard_core::catalog::PriceBand;
use switchyard_core::health::HealthSnapshot;
use switchyard_core::job::{ChatRequest, Job};
use switchyard_core::routing::{BudgetState, RouteInput, Router, Strategy};

use super::{SplitArg, read_rows};
use crate::cli::batch::Report;
use crate::cli::common::{BadInput, Overrides, load_pipeline};

/// Arguments of `eval-router`.
#[derive(clap::Args)]
pub struct Args {
    /// Labelled JSON-lines files (the format of pipelines/routing-data/).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Pipeline config whose catalog, org policy, deployments and need model are used.
    #[arg(
        long,
        short,
        default_value = "pipelines/demo.toml",
        env = "SWITCHYARD_CONFIG"
    )]
    config: PathBuf,
    /// Project the jobs are submitted for.
    #[arg(long, default_value = "acme/retail/merchandising/review-insights")]
    project: String,
    /// Answer cap of each job.
    #[arg(long, default_value_t = 1024)]
    max_tokens: u32,
    /// Quality target instead of the project's policy.
    #[arg(long)]
    quality_target: Option<f64>,
    /// Which rows to route.
    #[arg(long, value_enum, default_value_t = SplitArg::All)]
    split: SplitArg,
    /// Table for people or one JSON object.
    #[arg(long, value_enum, default_value_t = Report::Table)]
    format: Report,
    #[command(flatten)]
    overrides: Overrides,
}

/// One routed prompt.
struct Routed {
    source: String,
    label: Option<bool>,
    p: f64,
    required_quality: f64,
    complexity: f64,
    band: PriceBand,
    /// Measured judgments of two models: the middle third counts as cheap.
    two_models: bool,
    weak: f64,
    strong: f64,
    cost: f64,
    flagship_cost: f64,
}

/// The figures of one set of prompts.
#[derive(Debug, Serialize)]
struct Figures {
    set: String,
    n: usize,
    premium: usize,
    cheap: usize,
    auc: Option<f64>,
    auc_required_quality: Option<f64>,
    auc_lexicon: Option<f64>,
    adequacy: Option<f64>,
    under_routing: Option<f64>,
    over_spend: Option<f64>,
    strong_share: f64,
    pgr: Option<f64>,
    pgr_random: f64,
    cost_ratio: f64,
}

/// Routes every row and prints the figures.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(t) = args.quality_target
        && !(0.0..=1.0).contains(&t)
    {
        return Err(BadInput(format!("--quality-target {t} is outside 0..1")).into());
    }
    let rows = read_rows(&args.files)?;
    let pipeline = load_pipeline(&args.config, &args.overrides)?;
    let catalog = Arc::new(pipeline.catalog.clone());
    let router = Router::for_pipeline(catalog.clone(), &pipeline.config);
    let analyzer = TaskAnalyzer::for_pipeline(&pipeline);
    let policy = pipeline
        .org
        .policy(&args.project, None)
        .map_err(|e| BadInput(e.to_string()))?;
    let target = args.quality_target.or(policy.quality_target);
    let flagship = catalog
        .get(&pipeline.config.routing.baseline_model)
        .ok_or_else(|| BadInput("the baseline model is not in the catalog".into()))?;
    let bands = catalog.price_bands();
    let now = Utc::now();
    let mut routed = Vec::new();
    let mut unroutable = 0usize;
    for row in rows.iter().filter(|r| args.split.keeps(r)) {
        let mut job = Job::new(
            row.id.clone(),
            args.project.clone(),
            ChatRequest {
                max_tokens: Some(args.max_tokens),
                ..ChatRequest::from_user(&row.prompt)
            },
        );
        job.strategy = Some(Strategy::Auto);
        let analysis = analyzer.analyze_for(&job, target, false);
        let input = RouteInput {
            job: &job,
            analysis: &analysis,
            policy,
            budget: BudgetState::UNCONSTRAINED,
            now,
        };
        let Ok(decision) = router.route(&input, &|_| HealthSnapshot::fresh(), false) else {
            unroutable += 1;
            continue;
        };
        let Some(first) = decision.chain.first() else {
            unroutable += 1;
            continue;
        };
        let model = catalog.model(first.model);
        let (weak, strong) = row.correctness();
        let (tokens_in, tokens_out) = (analysis.prompt_tokens, analysis.expected_output_tokens);
        routed.push(Routed {
            source: row.source.clone(),
            label: row.label(),
            p: analysis.need.p,
            required_quality: analysis.required_quality,
            complexity: analysis.complexity,
            band: bands[first.model],
            two_models: row.weak_correct.is_some() && row.strong_correct.is_some(),
            weak: f64::from(u8::from(weak)),
            strong: f64::from(u8::from(strong)),
            cost: model.estimate_usd(tokens_in, tokens_out),
            flagship_cost: flagship.estimate_usd(tokens_in, tokens_out),
        });
    }
    let mut by_source: BTreeMap<&str, Vec<&Routed>> = BTreeMap::new();
    for r in &routed {
        by_source.entry(r.source.as_str()).or_default().push(r);
    }
    let mut figures: Vec<Figures> = by_source
        .iter()
        .map(|(s, rs)| figures((*s).to_owned(), rs))
        .collect();
    figures.push(figures_of("overall".into(), routed.iter().collect()));
    let target_shown = target.unwrap_or(pipeline.config.routing.default_quality_target);
    match args.format {
        Report::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "config": args.config.display().to_string(),
                "project": args.project,
                "max_tokens": args.max_tokens,
                "quality_target": target_shown,
                "threshold": analyzer.threshold(target),
                "split": args.split.label(),
                "unroutable": unroutable,
                "sets": figures,
            }))?
        ),
        Report::Table => {
            println!(
                "{} prompts ({}), project {}, max_tokens {}, quality target {:.2} (threshold {:.4}){}",
                routed.len(),
                args.split.label(),
                args.project,
                args.max_tokens,
                target_shown,
                analyzer.threshold(target),
                if unroutable > 0 {
                    format!(", {unroutable} unroutable")
                } else {
                    String::new()
                }
            );
            print_table(&figures);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn figures(set: String, rows: &[&Routed]) -> Figures {
    figures_of(set, rows.to_vec())
}

fn share(num: usize, den: usize) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn figures_of(set: String, rows: Vec<&Routed>) -> Figures {
    let labelled: Vec<&&Routed> = rows.iter().filter(|r| r.label.is_some()).collect();
    let labels: Vec<bool> = labelled.iter().map(|r| r.label == Some(true)).collect();
    let of = |f: &dyn Fn(&Routed) -> f64| {
        auc(&labelled.iter().map(|r| f(r)).collect::<Vec<_>>(), &labels)
    };
    let premium = labels.iter().filter(|l| **l).count();
    let cheap = labels.len() - premium;
    let below_top = labelled
        .iter()
        .filter(|r| r.label == Some(true) && r.band != PriceBand::Top)
        .count();
    let above_cheap = labelled
        .iter()
        .filter(|r| {
            r.label == Some(false)
                && if r.two_models {
                    r.band == PriceBand::Top
                } else {
                    r.band != PriceBand::Bottom
                }
        })
        .count();
    let n = rows.len();
    let strong_share =
        share(rows.iter().filter(|r| r.band == PriceBand::Top).count(), n).unwrap_or(0.0);
    let sum = |f: &dyn Fn(&Routed) -> f64| rows.iter().map(|r| f(r)).sum::<f64>();
    let (weak, strong) = (sum(&|r| r.weak), sum(&|r| r.strong));
    let got = sum(&|r| {
        if r.band == PriceBand::Top {
            r.strong
        } else {
            r.weak
        }
    });
    let flagship = sum(&|r| r.flagship_cost);
    Figures {
        set,
        n,
        premium,
        cheap,
        auc: of(&|r| r.p),
        auc_required_quality: of(&|r| r.required_quality),
        auc_lexicon: of(&|r| r.complexity),
        adequacy: share(labelled.len() - below_top, labelled.len()),
        under_routing: share(below_top, premium),
        over_spend: share(above_cheap, cheap),
        strong_share,
        pgr: (strong > weak).then(|| (got - weak) / (strong - weak)),
        pgr_random: strong_share,
        cost_ratio: if flagship > 0.0 {
            sum(&|r| r.cost) / flagship
        } else {
            0.0
        },
    }
}

fn print_table(figures: &[Figures]) {
    let f = |x: Option<f64>| x.map_or_else(|| "—".to_owned(), |v| format!("{v:.3}"));
    println!(
        "{:<22} {:>5} {:>5} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7} {:>6} {:>7} {:>6}",
        "set",
        "n",
        "prem",
        "auc",
        "auc_rq",
        "auc_lex",
        "adequacy",
        "under",
        "over",
        "strong",
        "pgr",
        "random",
        "cost"
    );
    for x in figures {
        println!(
            "{:<22} {:>5} {:>5} {:>6} {:>7} {:>7} {:>8} {:>8} {:>8} {:>7.3} {:>6} {:>7.3} {:>6.3}",
            x.set,
            x.n,
            x.premium,
            f(x.auc),
            f(x.auc_required_quality),
            f(x.auc_lexicon),
            f(x.adequacy),
            f(x.under_routing),
            f(x.over_spend),
            x.strong_share,
            f(x.pgr),
            x.pgr_random,
            x.cost_ratio
        );
    }
    println!(
        "\nauc: need p; auc_rq: analysis.required_quality; auc_lex: the lexicon's complexity. \
         under: premium prompts sent below the top third; over: cheap prompts sent above cheap; \
         strong: share routed to the top third; random: pgr of random routing at that share; \
         cost: estimated cost over the flagship's."
    );
}
