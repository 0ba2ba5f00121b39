//! `estimate`: what a batch would cost under each strategy, and under the
//! flagship baseline (`routing.baseline_model`), before anything runs. The file
//! goes through the same validation pass as `submit` (so it refuses the same
//! lines, duplicate `custom_id`s included); each accepted line is analysed
//! (category, complexity, expected output tokens) and routed under every
//! strategy with fresh health; the first model of each chain is priced on the
//! request's prompt tokens, counted with that model's tokenizer where it has a
//! public one (estimated from bytes otherwise), plus the expected output.
//!
//! Each strategy is also priced deferred: every request routed again among
//! the models with a batch API and a batch price, as admission routes a job
//! that goes through a provider's batch API ([`Router::route_deferred`]), and
//! priced at that model's batch price; a request no such model can serve
//! counts at its live price. The saving against the flagship keeps the
//! flagship's live price as the baseline and is split as `report` splits it:
//! what routing saved (flagship live minus the chosen models' live price) and
//! what deferral saved on top (those models' live price minus their batch
//! price).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use switchyard_core::analysis::TaskAnalyzer;
use switchyard_core::batch::BatchFormat;
use switchyard_core::catalog::{Catalog, ModelSpec, Tokenizer};
use switchyard_core::config::LoadedPipeline;
use switchyard_core::health::HealthSnapshot;
use switchyard_core::job::Job;
use switchyard_core::org::EffectivePolicy;
use switchyard_core::routing::{BudgetState, RouteInput, Router, Strategy};
use switchyard_core::tokens;
use switchyard_core::vocab::RunMode;

use crate::error::SkipInvalid;
use crate::formats::{LineSettings, ModelPins, ParsedLine};
use crate::progress::Progress;
use crate::validate::{Validation, validate_file};
use crate::{Error, Result};

/// Project path used to validate lines when no project is given.
const ANY_PROJECT: &str = "estimate/estimate/estimate/estimate";

/// What `estimate` was asked.
#[derive(Debug, Clone, Default)]
pub struct EstimateOptions {
    /// Project whose policy applies (allowed providers, floors); none: the
    /// pipeline's default strategy and quality floor, nothing denied.
    pub project: Option<String>,
    /// Workload whose policy applies.
    pub workload: Option<String>,
    /// Price the valid lines even when some are invalid.
    pub skip_invalid: bool,
}

/// One strategy's price.
#[derive(Debug, Clone, Serialize)]
pub struct StrategyEstimate {
    /// The strategy.
    pub strategy: Strategy,
    /// Estimated cost of the batch, every request live.
    pub cost_usd: f64,
    /// Saving against the baseline price of the same (routable) requests, 0..1
    /// (negative: dearer). Unroutable requests count on neither side.
    pub saving: f64,
    /// Estimated cost of the batch with every request sent through a
    /// provider's batch API (`--mode deferred`): routed among the models with
    /// a batch API and price, at the batch price; requests no such model can
    /// serve at their live price.
    pub deferred_cost_usd: f64,
    /// Requests priced deferred (the others have no model with a batch API
    /// and price they may use, and count live).
    pub deferred_requests: u64,
    /// Deferred: what routing saved against the flagship's live price of the
    /// same (routable) requests, at live prices (flagship live minus the
    /// chosen models' live price).
    pub routing_savings_usd: f64,
    /// Deferred: what deferral saved on top (the chosen models' live price
    /// minus their batch price). With `routing_savings_usd`, the whole saving
    /// of `deferred_cost_usd` against the flagship, split as `report` splits it.
    pub deferral_savings_usd: f64,
    /// Requests no model could serve under this strategy and policy.
    pub unroutable: u64,
    /// Requests per first-choice model, most used first.
    pub models: Vec<(String, u64)>,
}

/// The estimate of a batch.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// The file's format.
    pub format: BatchFormat,
    /// Requests priced.
    pub requests: u64,
    /// Lines refused (priced only with `skip_invalid`).
    pub invalid: u64,
    /// Prompt tokens, counted with o200k_base (OpenAI's current tokenizer).
    pub prompt_tokens: u64,
    /// Output tokens the task analysis expects.
    pub expected_output_tokens: u64,
    /// The baseline model.
    pub baseline_model: String,
    /// The batch on the baseline model alone.
    pub baseline_cost_usd: f64,
    /// Per strategy, in [`Strategy::ALL`] order.
    pub strategies: Vec<StrategyEstimate>,
}

impl Estimate {
    /// The estimate as a table for people; `file` is the batch file as named
    /// on the command line.
    pub fn table(&self, file: &Path) -> String {
        let mut t = String::new();
        let skipped = if self.invalid > 0 {
            format!(", {} invalid lines skipped", self.invalid)
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "file       {} ({}, {} requests{skipped})",
            file.display(),
            self.format.as_str(),
            self.requests
        );
        let _ = writeln!(
            t,
            "tokens     {} prompt (o200k_base), {} expected output",
            self.prompt_tokens, self.expected_output_tokens
        );
        let _ = writeln!(
            t,
            "baseline   {}: ${:.4}",
            self.baseline_model, self.baseline_cost_usd
        );
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "{:<20} {:>12} {:>8} {:>12} {:>8} {:>10}  first choice (live)",
            "strategy", "live", "saving", "deferred", "saving", "unroutable"
        );
        for s in &self.strategies {
            let _ = writeln!(
                t,
                "{:<20} {:>12} {:>7.1}% {:>12} {:>7.1}% {:>10}  {}",
                s.strategy.as_str(),
                format!("${:.4}", s.cost_usd),
                s.saving * 100.0,
                format!("${:.4}", s.deferred_cost_usd),
                s.deferred_saving() * 100.0,
                s.unroutable,
                s.first_choices()
            );
        }
        let _ = writeln!(t);
        let _ = writeln!(
            t,
            "deferred: through the providers' batch APIs (models with a batch price); saving against {} live, of which routing / deferral",
            self.baseline_model
        );
        for s in &self.strategies {
            let live_only = s.routed().saturating_sub(s.deferred_requests);
            let live_only = if live_only > 0 {
                format!(" ({live_only} requests without a batch-capable model priced live)")
            } else {
                String::new()
            };
            let _ = writeln!(
                t,
                "{:<20} ${:.4} / ${:.4}{live_only}",
                s.strategy.as_str(),
                s.routing_savings_usd,
                s.deferral_savings_usd,
            );
        }
        t
    }
}

impl StrategyEstimate {
    /// Requests routed (live).
    fn routed(&self) -> u64 {
        self.models.iter().map(|(_, n)| n).sum()
    }

    /// The deferred cost's saving against the baseline price of the same
    /// requests, 0..1.
    pub fn deferred_saving(&self) -> f64 {
        let baseline =
            self.deferred_cost_usd + self.routing_savings_usd + self.deferral_savings_usd;
        if baseline > 0.0 {
            1.0 - self.deferred_cost_usd / baseline
        } else {
            0.0
        }
    }

    /// The three most used first-choice models with their share of the routed
    /// requests, and how many more there are.
    fn first_choices(&self) -> String {
        let routed = self.routed();
        let mut models: Vec<String> = self
            .models
            .iter()
            .take(3)
            .map(|(m, n)| format!("{m} {:.0}%", *n as f64 * 100.0 / routed.max(1) as f64))
            .collect();
        if self.models.len() > 3 {
            models.push(format!("+{} more", self.models.len() - 3));
        }
        models.join(", ")
    }
}

/// Prompt-token counts of one job, per tokenizer, computed on demand.
struct TokenCounts<'a> {
    job: &'a Job,
    estimate: u32,
    o200k: Option<u32>,
    cl100k: Option<u32>,
}

impl TokenCounts<'_> {
    fn for_model(&mut self, spec: &ModelSpec) -> u32 {
        self.count(spec.tokenizer)
    }

    fn count(&mut self, tokenizer: Tokenizer) -> u32 {
        let (slot, tokenizer) = match tokenizer {
            Tokenizer::O200kBase => (&mut self.o200k, Tokenizer::O200kBase),
            Tokenizer::Cl100kBase => (&mut self.cl100k, Tokenizer::Cl100kBase),
            Tokenizer::Estimate => return self.estimate,
        };
        *slot.get_or_insert_with(|| tokens::count_job(self.job, tokenizer).unwrap_or(self.estimate))
    }
}

/// Prices the batch file at `path`.
pub fn estimate(
    pipeline: &LoadedPipeline,
    path: &Path,
    options: &EstimateOptions,
    progress: &dyn Progress,
) -> Result<Estimate> {
    let config = &pipeline.config;
    let catalog = Arc::new(pipeline.catalog.clone());
    let open_policy = EffectivePolicy::open(
        config.routing.default_strategy,
        config.routing.default_quality_floor,
    );
    let policy = match &options.project {
        Some(p) => pipeline
            .org
            .policy(p, options.workload.as_deref())
            .map_err(|e| Error::UnknownProject(e.to_string()))?,
        None => &open_policy,
    };
    let baseline = catalog
        .get(&config.routing.baseline_model)
        .ok_or_else(|| {
            Error::Config(format!(
                "routing.baseline_model `{}` is not in the catalog",
                config.routing.baseline_model
            ))
        })?
        .clone();
    let settings = LineSettings {
        project: options
            .project
            .clone()
            .unwrap_or_else(|| ANY_PROJECT.into()),
        strategy: None,
        workload: options.workload.clone(),
        mode: None,
        pins: ModelPins::from_catalog(&catalog),
    };
    let mut pricer = Pricer {
        router: Router::for_pipeline(catalog.clone(), config),
        catalog,
        baseline,
        policy,
        analyzer: TaskAnalyzer::for_pipeline(pipeline),
        now: Utc::now(),
        per: Strategy::ALL
            .iter()
            .map(|_| StrategyTally::default())
            .collect(),
        prompt_tokens: 0,
        output_tokens: 0,
        baseline_cost: 0.0,
    };
    let validation = validate_file(
        path,
        &settings,
        &config.kafka.topics.jobs,
        None,
        progress,
        "estimating",
        &mut |parsed| pricer.price(parsed),
    )?;
    if validation.invalid > 0 && !options.skip_invalid {
        return Err(Error::InvalidLines {
            path: path.to_owned(),
            lines: validation.lines,
            invalid: validation.invalid,
            examples: validation.examples,
            skip: SkipInvalid::Estimate,
        });
    }
    Ok(pricer.into_estimate(&validation))
}

/// One strategy's running totals.
#[derive(Default)]
struct StrategyTally {
    cost_usd: f64,
    /// Deferred: at the batch price where a model with a batch API serves.
    deferred_cost_usd: f64,
    /// Deferred: the same requests on the same models at the live price.
    deferred_live_usd: f64,
    /// Requests priced deferred.
    deferred_requests: u64,
    /// Requests no model could serve.
    unroutable: u64,
    /// Requests per first-choice model.
    models: HashMap<String, u64>,
    /// Baseline price of the requests it routed.
    routed_baseline_usd: f64,
}

/// Prices each accepted line as validation hands it over: on the baseline
/// model, and on the first model of its chain under every strategy.
struct Pricer<'a> {
    catalog: Arc<Catalog>,
    router: Router,
    baseline: ModelSpec,
    policy: &'a EffectivePolicy,
    analyzer: TaskAnalyzer,
    now: DateTime<Utc>,
    /// Per strategy, in [`Strategy::ALL`] order.
    per: Vec<StrategyTally>,
    prompt_tokens: u64,
    output_tokens: u64,
    baseline_cost: f64,
}

impl Pricer<'_> {
    fn price(&mut self, parsed: ParsedLine) {
        let mut job = parsed.job;
        let analysis = self
            .analyzer
            .analyze_for(&job, self.policy.quality_target, false);
        let expected = analysis.expected_output_tokens;
        self.output_tokens += u64::from(expected);
        let mut counts = TokenCounts {
            job: &job,
            estimate: analysis.prompt_tokens,
            o200k: None,
            cl100k: None,
        };
        self.prompt_tokens += u64::from(counts.count(Tokenizer::O200kBase));
        let request_baseline = self
            .baseline
            .estimate_usd(counts.for_model(&self.baseline), expected);
        self.baseline_cost += request_baseline;
        let (o200k, cl100k) = (counts.o200k, counts.cl100k);
        for (i, strategy) in Strategy::ALL.into_iter().enumerate() {
            job.strategy = Some(strategy);
            let input = RouteInput {
                job: &job,
                analysis: &analysis,
                policy: self.policy,
                budget: BudgetState::UNCONSTRAINED,
                now: self.now,
            };
            let fresh = |_| HealthSnapshot::fresh();
            let decision = self.router.route(&input, &fresh, false);
            let tally = &mut self.per[i];
            let Some(model) = decision.ok().and_then(|d| d.chain.first().map(|e| e.model)) else {
                tally.unroutable += 1;
                continue;
            };
            let mut counts = TokenCounts {
                job: &job,
                estimate: analysis.prompt_tokens,
                o200k,
                cl100k,
            };
            let spec = self.catalog.model(model);
            let live = spec.estimate_usd(counts.for_model(spec), expected);
            tally.cost_usd += live;
            *tally.models.entry(spec.name.clone()).or_default() += 1;
            tally.routed_baseline_usd += request_baseline;
            let batch_model = self
                .router
                .route_deferred(&input, &fresh)
                .and_then(|d| d.chain.first().map(|e| e.model));
            match batch_model {
                Some(model) => {
                    let spec = self.catalog.model(model);
                    let tokens = counts.for_model(spec);
                    tally.deferred_cost_usd +=
                        spec.estimate_in(RunMode::Deferred, tokens, expected);
                    tally.deferred_live_usd += spec.estimate_usd(tokens, expected);
                    tally.deferred_requests += 1;
                }
                None => {
                    tally.deferred_cost_usd += live;
                    tally.deferred_live_usd += live;
                }
            }
        }
    }

    fn into_estimate(self, validation: &Validation) -> Estimate {
        let strategies = Strategy::ALL
            .into_iter()
            .zip(self.per)
            .map(|(strategy, tally)| {
                let mut models: Vec<(String, u64)> = tally.models.into_iter().collect();
                models.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                StrategyEstimate {
                    strategy,
                    cost_usd: tally.cost_usd,
                    saving: if tally.routed_baseline_usd > 0.0 {
                        1.0 - tally.cost_usd / tally.routed_baseline_usd
                    } else {
                        0.0
                    },
                    deferred_cost_usd: tally.deferred_cost_usd,
                    deferred_requests: tally.deferred_requests,
                    routing_savings_usd: tally.routed_baseline_usd - tally.deferred_live_usd,
                    deferral_savings_usd: tally.deferred_live_usd - tally.deferred_cost_usd,
                    unroutable: tally.unroutable,
                    models,
                }
            })
            .collect();
        Estimate {
            format: validation.format,
            requests: validation.accepted,
            invalid: validation.invalid,
            prompt_tokens: self.prompt_tokens,
            expected_output_tokens: self.output_tokens,
            baseline_model: self.baseline.name.clone(),
            baseline_cost_usd: self.baseline_cost,
            strategies,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_lists_each_strategy_with_its_first_choices() {
        let models = |n: usize| -> Vec<(String, u64)> {
            (0..n).map(|i| (format!("m{i}"), 10 - i as u64)).collect()
        };
        let e = Estimate {
            format: BatchFormat::Openai,
            requests: 40,
            invalid: 2,
            prompt_tokens: 1200,
            expected_output_tokens: 300,
            baseline_model: "flagship".into(),
            baseline_cost_usd: 1.5,
            strategies: vec![
                StrategyEstimate {
                    strategy: Strategy::CostFirst,
                    cost_usd: 0.12345,
                    saving: 0.9177,
                    deferred_cost_usd: 0.06,
                    deferred_requests: 34,
                    routing_savings_usd: 1.3765,
                    deferral_savings_usd: 0.0735,
                    unroutable: 0,
                    models: models(4),
                },
                StrategyEstimate {
                    strategy: Strategy::Auto,
                    cost_usd: 0.5,
                    saving: 0.5,
                    deferred_cost_usd: 0.4,
                    deferred_requests: 0,
                    routing_savings_usd: 0.5,
                    deferral_savings_usd: 0.1,
                    unroutable: 3,
                    models: models(1),
                },
            ],
        };
        let table = e.table(Path::new("requests.jsonl"));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "file       requests.jsonl (openai, 40 requests, 2 invalid lines skipped)"
        );
        assert_eq!(
            lines[1],
            "tokens     1200 prompt (o200k_base), 300 expected output"
        );
        assert_eq!(lines[2], "baseline   flagship: $1.5000");
        assert_eq!(lines[3], "");
        assert!(lines[4].starts_with("strategy "), "{table}");
        assert!(
            lines[5].starts_with("cost-first")
                && lines[5].contains("$0.1235")
                && lines[5].contains("91.8%")
                && lines[5].contains("$0.0600")
                && lines[5].contains("96.0%")
                && lines[5].ends_with("m0 29%, m1 26%, m2 24%, +1 more"),
            "{table}"
        );
        assert!(lines[6].ends_with("3  m0 100%"), "{table}");
        assert_eq!(
            lines[9], "cost-first           $1.3765 / $0.0735",
            "{table}"
        );
        assert_eq!(
            lines[10],
            "auto                 $0.5000 / $0.1000 (10 requests without a batch-capable model priced live)",
            "{table}"
        );
    }

    fn demo_pipeline() -> LoadedPipeline {
        let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/demo.toml");
        switchyard_loader::load_pipeline(&demo, &[]).unwrap()
    }

    /// Native job lines, `allowed_models` on each when given.
    fn native_file(dir: &Path, allowed: &[&str]) -> std::path::PathBuf {
        let prompts = [
            "Classify this ticket as billing, technical or account: 'I was charged twice.'",
            "Summarize in two sentences: onboarding time fell by 18% after the new checklist.",
            "Write a Rust function that parses an ISO 8601 duration such as P3DT4H, with tests.",
        ];
        let lines: Vec<String> = (0..12)
            .map(|i| {
                serde_json::json!({
                    "job_id": format!("j{i}"),
                    "project": ANY_PROJECT,
                    "request": {
                        "messages": [{"role": "user", "content": prompts[i % prompts.len()]}],
                        "max_tokens": 300
                    },
                    "allowed_models": allowed,
                })
                .to_string()
            })
            .collect();
        let path = dir.join("jobs.jsonl");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    }

    #[test]
    fn deferred_prices_split_the_saving_into_routing_and_deferral() {
        let pipeline = demo_pipeline();
        let dir = tempfile::tempdir().unwrap();
        let file = native_file(dir.path(), &[]);
        let e = estimate(
            &pipeline,
            &file,
            &EstimateOptions::default(),
            &crate::NoProgress,
        )
        .unwrap();
        assert_eq!(e.requests, 12);
        for s in &e.strategies {
            assert_eq!((s.unroutable, s.deferred_requests), (0, 12), "{s:?}");
            assert!(
                s.deferred_cost_usd > 0.0 && s.deferred_cost_usd < s.cost_usd,
                "{s:?}"
            );
            assert!(s.deferral_savings_usd > 0.0, "{s:?}");
            // The baseline stays the flagship's live price of the same requests.
            let total = s.routing_savings_usd + s.deferral_savings_usd;
            assert!(
                (total - (e.baseline_cost_usd - s.deferred_cost_usd)).abs() < 1e-9,
                "{s:?}"
            );
            assert!(
                (s.deferred_saving() - total / e.baseline_cost_usd).abs() < 1e-9,
                "{s:?}"
            );
        }
    }

    #[test]
    fn requests_without_a_batch_capable_model_count_at_the_live_price() {
        let pipeline = demo_pipeline();
        let only = "deepseek-flash";
        assert!(!pipeline.catalog.get(only).unwrap().deferrable());
        let dir = tempfile::tempdir().unwrap();
        let file = native_file(dir.path(), &[only]);
        let e = estimate(
            &pipeline,
            &file,
            &EstimateOptions::default(),
            &crate::NoProgress,
        )
        .unwrap();
        for s in &e.strategies {
            assert_eq!(s.models, vec![(only.to_owned(), 12)], "{s:?}");
            assert_eq!(s.deferred_requests, 0, "{s:?}");
            assert_eq!(s.deferred_cost_usd, s.cost_usd, "{s:?}");
            assert_eq!(s.deferral_savings_usd, 0.0, "{s:?}");
            assert!(
                (s.routing_savings_usd - (e.baseline_cost_usd - s.cost_usd)).abs() < 1e-9,
                "{s:?}"
            );
        }
    }
}
