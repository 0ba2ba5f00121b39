//! The README's cost and quality figures, without Kafka: the demo's jobs (the
//! shipped corpus, drawn as `switchyard demo` draws them) routed with the shipped
//! catalog, org policy, deployments and need model under `auto` at the default
//! quality target, each priced with the simulator's deterministic token usage on
//! the routed model and on the flagship baseline, and scored by the catalog
//! quality of the routed model for the job's labelled category against the
//! flagship's. Run with `cargo test --bin switchyard demo::tests -- --nocapture`
//! for the figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use switchyard_core::analysis::{TaskAnalyzer, TaskCategory};
use switchyard_core::health::HealthSnapshot;
use switchyard_core::routing::{BudgetState, RouteInput, Router, Strategy};

use super::{Corpus, DEFAULT_JOBS, DEFAULT_SEED};

/// What the README promises at the default quality target: `auto` costs at
/// most this share of the flagship (46.2% measured)…
const AUTO_SHARE_OF_BASELINE: f64 = 0.50;
/// …and keeps at least this share of its quality (0.962 measured).
const AUTO_QUALITY_OF_BASELINE: f64 = 0.95;

/// What the demo's jobs cost and what quality they got.
struct Figures {
    /// Routed cost, USD.
    routed: f64,
    /// The same jobs on the flagship, USD.
    flagship: f64,
    /// Mean catalog quality of the routed model for each job's labelled category.
    quality: f64,
    /// The same for the flagship.
    flagship_quality: f64,
}

/// The demo's jobs routed with `strategy` (`None`: as the org policy says,
/// which is what the demo does), and on the flagship.
fn cost(strategy: Option<Strategy>) -> Figures {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline =
        switchyard_loader::load_pipeline(&root.join("pipelines/demo.toml"), &[]).unwrap();
    let corpus = Corpus::load(&root.join("pipelines/corpus/prompts.jsonl")).unwrap();
    let catalog = Arc::new(pipeline.catalog.clone());
    let router = Router::for_pipeline(catalog.clone(), &pipeline.config);
    let baseline = catalog
        .get(&pipeline.config.routing.baseline_model)
        .unwrap();
    let analyzer = TaskAnalyzer::for_pipeline(&pipeline);
    let now = Utc::now();
    let mut f = Figures {
        routed: 0.0,
        flagship: 0.0,
        quality: 0.0,
        flagship_quality: 0.0,
    };
    let mut n = 0.0;
    for (mut job, prompt) in corpus.jobs(DEFAULT_JOBS, DEFAULT_SEED) {
        job.strategy = strategy;
        let policy = pipeline
            .org
            .policy(&job.project, job.workload.as_deref())
            .unwrap();
        let analysis = analyzer.analyze_for(&job, policy.quality_target, false);
        let input = RouteInput {
            job: &job,
            analysis: &analysis,
            policy,
            budget: BudgetState::UNCONSTRAINED,
            now,
        };
        let decision = router
            .route(&input, &|_| HealthSnapshot::fresh(), false)
            .unwrap_or_else(|e| panic!("{}: {e}", prompt.id));
        let model = catalog.model(decision.chain[0].model);
        let usage = switchyard_sim::usage_for_request(&job.request);
        f.routed += model.cost_usd(&usage);
        f.flagship += baseline.cost_usd(&usage);
        let category = TaskCategory::parse(&prompt.category).unwrap();
        f.quality += model.quality_for(category);
        f.flagship_quality += baseline.quality_for(category);
        n += 1.0;
    }
    f.quality /= n;
    f.flagship_quality /= n;
    f
}

#[test]
fn auto_costs_at_most_half_the_flagship_and_keeps_its_quality_on_the_demo_workload() {
    let auto = cost(Some(Strategy::Auto));
    let policy = cost(None);
    let share = auto.routed / auto.flagship;
    let kept = auto.quality / auto.flagship_quality;
    println!(
        "demo workload, {DEFAULT_JOBS} jobs: flagship ${:.4} (quality {:.3}); auto ${:.4} = {:.1}% of the flagship, \
         quality {:.3} = {kept:.3} of the flagship's; workload strategies from the org policy ${:.4} = {:.1}%, quality {:.3}",
        auto.flagship,
        auto.flagship_quality,
        auto.routed,
        100.0 * share,
        auto.quality,
        policy.routed,
        100.0 * policy.routed / policy.flagship,
        policy.quality
    );
    assert!(auto.flagship > 0.0);
    assert!(
        share <= AUTO_SHARE_OF_BASELINE,
        "auto costs {:.1}% of the flagship, over {:.0}%",
        100.0 * share,
        100.0 * AUTO_SHARE_OF_BASELINE
    );
    assert!(
        kept >= AUTO_QUALITY_OF_BASELINE,
        "auto keeps {kept:.3} of the flagship's quality, under {AUTO_QUALITY_OF_BASELINE}"
    );
}
