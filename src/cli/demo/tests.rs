//! The README's cost figure, without Kafka: the demo's jobs (the shipped corpus,
//! drawn as `switchyard demo` draws them) routed with the shipped catalog, org
//! policy and deployments under `auto`, each priced with the simulator's
//! deterministic token usage on the routed model and on the flagship baseline.
//! Run with `cargo test --bin switchyard demo::tests -- --nocapture` for the figures.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use switchyard_core::analysis::TaskAnalyzer;
use switchyard_core::health::HealthSnapshot;
use switchyard_core::routing::{BudgetState, RouteInput, Router, Strategy};

use super::{Corpus, DEFAULT_JOBS, DEFAULT_SEED};

/// What the README promises: `auto` costs at most this share of the flagship.
const AUTO_SHARE_OF_BASELINE: f64 = 0.20;

/// Cost of the demo's jobs routed with `strategy` (`None`: as the org policy
/// says, which is what the demo does), and on the flagship.
fn cost(strategy: Option<Strategy>) -> (f64, f64) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let pipeline =
        switchyard_loader::load_pipeline(&root.join("pipelines/demo.toml"), &[]).unwrap();
    let corpus = Corpus::load(&root.join("pipelines/corpus/prompts.jsonl")).unwrap();
    let catalog = Arc::new(pipeline.catalog.clone());
    let router = Router::for_pipeline(catalog.clone(), &pipeline.config);
    let baseline = catalog
        .get(&pipeline.config.routing.baseline_model)
        .unwrap();
    let analyzer = TaskAnalyzer::new();
    let now = Utc::now();
    let (mut routed, mut flagship) = (0.0, 0.0);
    for (mut job, prompt) in corpus.jobs(DEFAULT_JOBS, DEFAULT_SEED) {
        job.strategy = strategy;
        let policy = pipeline
            .org
            .policy(&job.project, job.workload.as_deref())
            .unwrap();
        let analysis = analyzer.analyze(&job, false);
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
        routed += model.cost_usd(&usage);
        flagship += baseline.cost_usd(&usage);
    }
    (routed, flagship)
}

#[test]
fn auto_costs_at_most_a_fifth_of_the_flagship_on_the_demo_workload() {
    let (auto, flagship) = cost(Some(Strategy::Auto));
    let (policy, _) = cost(None);
    let share = auto / flagship;
    println!(
        "demo workload, {DEFAULT_JOBS} jobs: flagship ${flagship:.4}; auto ${auto:.4} = {:.1}% of the flagship; \
         workload strategies from the org policy ${policy:.4} = {:.1}%",
        100.0 * share,
        100.0 * policy / flagship
    );
    assert!(flagship > 0.0);
    assert!(
        share <= AUTO_SHARE_OF_BASELINE,
        "auto costs {:.1}% of the flagship, over {:.0}%",
        100.0 * share,
        100.0 * AUTO_SHARE_OF_BASELINE
    );
}
