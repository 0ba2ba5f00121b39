//! `estimate`: what a batch would cost under each strategy, and under the
//! flagship baseline (`routing.baseline_model`), before anything runs. The file
//! goes through the same validation pass as `submit` (so it refuses the same
//! lines, duplicate `custom_id`s included); each accepted line is analysed
//! (category, complexity, expected output tokens) and routed under every
//! strategy with fresh health; the first model of each chain is priced on the
//! request's prompt tokens, counted with that model's tokenizer where it has a
//! public one (estimated from bytes otherwise), plus the expected output.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use switchyard_core::analysis::TaskAnalyzer;
use switchyard_core::batch::BatchFormat;
use switchyard_core::catalog::{ModelSpec, Tokenizer};
use switchyard_core::config::LoadedPipeline;
use switchyard_core::health::HealthSnapshot;
use switchyard_core::job::Job;
use switchyard_core::org::EffectivePolicy;
use switchyard_core::routing::{BudgetState, RouteInput, Router, Strategy};
use switchyard_core::tokens;

use crate::error::SkipInvalid;
use crate::formats::{LineSettings, ModelPins, ParsedLine};
use crate::progress::Progress;
use crate::validate::validate_file;
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
    /// Estimated cost of the batch.
    pub cost_usd: f64,
    /// Saving against the baseline price of the same (routable) requests, 0..1
    /// (negative: dearer). Unroutable requests count on neither side.
    pub saving: f64,
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
    let router = Router::for_pipeline(catalog.clone(), config);
    let settings = LineSettings {
        project: options
            .project
            .clone()
            .unwrap_or_else(|| ANY_PROJECT.into()),
        strategy: None,
        workload: options.workload.clone(),
        pins: ModelPins::from_catalog(&catalog),
    };
    let analyzer = TaskAnalyzer::new();
    // Per strategy: cost, unroutable requests, first models, baseline of the routed ones.
    let mut per: Vec<(f64, u64, HashMap<String, u64>, f64)> = Strategy::ALL
        .iter()
        .map(|_| (0.0, 0, HashMap::new(), 0.0))
        .collect();
    let (mut prompt_tokens, mut output_tokens, mut baseline_cost) = (0u64, 0u64, 0.0f64);
    let now = Utc::now();
    let mut price = |parsed: ParsedLine| {
        let mut job = parsed.job;
        let analysis = analyzer.analyze(&job, false);
        let expected = analysis.expected_output_tokens;
        output_tokens += u64::from(expected);
        let mut counts = TokenCounts {
            job: &job,
            estimate: analysis.prompt_tokens,
            o200k: None,
            cl100k: None,
        };
        prompt_tokens += u64::from(counts.count(Tokenizer::O200kBase));
        let request_baseline = baseline.estimate_usd(counts.for_model(&baseline), expected);
        baseline_cost += request_baseline;
        let (o200k, cl100k) = (counts.o200k, counts.cl100k);
        for (i, strategy) in Strategy::ALL.into_iter().enumerate() {
            job.strategy = Some(strategy);
            let input = RouteInput {
                job: &job,
                analysis: &analysis,
                policy,
                budget: BudgetState::UNCONSTRAINED,
                now,
            };
            let decision = router.route(&input, &|_| HealthSnapshot::fresh(), false);
            let entry = &mut per[i];
            match decision.ok().and_then(|d| d.chain.first().map(|e| e.model)) {
                Some(model) => {
                    let spec = catalog.model(model);
                    let mut counts = TokenCounts {
                        job: &job,
                        estimate: analysis.prompt_tokens,
                        o200k,
                        cl100k,
                    };
                    entry.0 += spec.estimate_usd(counts.for_model(spec), expected);
                    *entry.2.entry(spec.name.clone()).or_default() += 1;
                    entry.3 += request_baseline;
                }
                None => entry.1 += 1,
            }
        }
    };
    let validation = validate_file(
        path,
        &settings,
        &config.kafka.topics.jobs,
        None,
        progress,
        "estimating",
        &mut price,
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
    let strategies = Strategy::ALL
        .into_iter()
        .zip(per)
        .map(|(strategy, (cost, unroutable, models, routed_baseline))| {
            let mut models: Vec<(String, u64)> = models.into_iter().collect();
            models.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            StrategyEstimate {
                strategy,
                cost_usd: cost,
                saving: if routed_baseline > 0.0 {
                    1.0 - cost / routed_baseline
                } else {
                    0.0
                },
                unroutable,
                models,
            }
        })
        .collect();
    Ok(Estimate {
        format: validation.format,
        requests: validation.accepted,
        invalid: validation.invalid,
        prompt_tokens,
        expected_output_tokens: output_tokens,
        baseline_model: baseline.name.clone(),
        baseline_cost_usd: baseline_cost,
        strategies,
    })
}
