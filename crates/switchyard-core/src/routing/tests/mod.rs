//! Router tests: strategies and chains here, feasibility filters in `filters`,
//! invariants over random catalogs, policies and jobs in `properties`.

use std::sync::Arc;

use chrono::Utc;

use super::*;
use crate::catalog::ModelSpec;
use crate::catalog::tests::model;
use crate::health::{CircuitState, HealthSnapshot};
use crate::job::ChatRequest;

mod filters;
mod properties;

/// A router with one deployment per model, in catalog order (deployment i serves model i).
fn router_of(models: Vec<ModelSpec>) -> Router {
    let catalog = Arc::new(Catalog::from_models(models).unwrap());
    let deployments = catalog
        .models()
        .iter()
        .enumerate()
        .map(|(i, m)| DeploymentInfo {
            name: format!("{}-dep", m.name),
            model: i,
            provider: m.provider.clone(),
        })
        .collect();
    Router::new(catalog, deployments, RouterSettings::default())
}

/// cheap-a (openai, q .65), mid-b (anthropic, q .80), mid-c (gemini, q .82, slow), top-d (openai, q .95), fast-e (groq, q .72)
fn router() -> Router {
    let mut models = vec![
        model("cheap-a", "openai", (0.1, 0.4), 0.65),
        model("mid-b", "anthropic", (1.0, 4.0), 0.80),
        model("mid-c", "gemini", (0.8, 3.0), 0.82),
        model("top-d", "openai", (5.0, 20.0), 0.95),
        model("fast-e", "groq", (0.5, 0.8), 0.72),
    ];
    models[2].ttft_ms = 2_000;
    models[4].ttft_ms = 100;
    models[4].tokens_per_second = 500.0;
    models[0].context_window = 8_000;
    models[0].max_output_tokens = 4_000;
    router_of(models)
}

fn job(prompt: &str) -> Job {
    Job::new("j", "a/b/c/d", ChatRequest::from_user(prompt))
}

fn fresh(_: DeploymentId) -> HealthSnapshot {
    HealthSnapshot::fresh()
}

/// Health in which deployment `which` has circuit `state` and every other one is closed.
fn with_circuit(
    which: DeploymentId,
    state: CircuitState,
) -> impl Fn(DeploymentId) -> HealthSnapshot {
    move |d| HealthSnapshot {
        circuit: if d == which {
            state
        } else {
            CircuitState::Closed
        },
        ..HealthSnapshot::fresh()
    }
}

fn route_with(
    r: &Router,
    job: &Job,
    policy: &EffectivePolicy,
    budget: BudgetState,
    health: &dyn Fn(DeploymentId) -> HealthSnapshot,
) -> Result<RoutingDecision, Box<Refusal>> {
    let analysis = crate::analysis::tests::analyzer_for(r.catalog()).analyze(job, false);
    r.route(
        &RouteInput {
            job,
            analysis: &analysis,
            policy,
            budget,
            now: Utc::now(),
        },
        health,
        true,
    )
}

fn route(r: &Router, job: &Job, strategy: Strategy) -> RoutingDecision {
    route_with(
        r,
        job,
        &EffectivePolicy::open(strategy, 0.5),
        BudgetState::UNCONSTRAINED,
        &fresh,
    )
    .unwrap()
}

fn chain_models(r: &Router, d: &RoutingDecision) -> Vec<String> {
    d.chain
        .iter()
        .map(|e| r.catalog().model(e.model).name.clone())
        .collect()
}

/// Easy work needs the best quality of the catalog's cheapest third (here
/// cheap-a and fast-e, by output price): fast-e (.72), not cheap-a (.65), and
/// nothing dearer.
#[test]
fn auto_sends_easy_work_to_the_cheapest_adequate_model() {
    let r = router();
    let d = route(
        &r,
        &job("Classify this review as positive or negative: great product."),
        Strategy::Auto,
    );
    assert!(!d.reason.contains(">= threshold"), "{}", d.reason);
    assert_eq!(chain_models(&r, &d)[0], "fast-e", "{}", d.reason);
    assert!((d.required_quality - 0.72).abs() <= 1e-4, "{}", d.reason);
}

#[test]
fn auto_sends_hard_work_to_a_strong_model() {
    let r = router();
    let d = route(
        &r,
        &job(
            "Prove rigorously that the algorithm is optimal, covering every edge case, and derive its closed form.",
        ),
        Strategy::Auto,
    );
    assert_eq!(chain_models(&r, &d)[0], "top-d", "{}", d.reason);
}

#[test]
fn fallbacks_prefer_other_providers() {
    let r = router();
    let d = route(
        &r,
        &job("Classify this review as positive or negative: great product."),
        Strategy::CostFirst,
    );
    let providers: Vec<&str> = d
        .chain
        .iter()
        .map(|e| r.deployments()[e.deployment].provider.as_str())
        .collect();
    assert_eq!(providers[0], "openai");
    assert_ne!(providers[1], "openai", "{providers:?}");
    let distinct: std::collections::HashSet<_> = providers.iter().collect();
    assert_eq!(
        distinct.len(),
        providers.len(),
        "one per provider while others remain: {providers:?}"
    );
}

#[test]
fn cost_first_ignores_complexity_but_keeps_the_floor() {
    let r = router();
    let hard = job(
        "Prove rigorously that the algorithm is optimal, covering every edge case, and derive its closed form.",
    );
    let d = route_with(
        &r,
        &hard,
        &EffectivePolicy::open(Strategy::CostFirst, 0.7),
        BudgetState::UNCONSTRAINED,
        &fresh,
    )
    .unwrap();
    assert_eq!(
        chain_models(&r, &d)[0],
        "fast-e",
        "cheapest with quality >= 0.7"
    );
}

#[test]
fn latency_first_uses_live_figures_over_the_catalog() {
    let r = router();
    let j = job("Hello, can you help me with my order?");
    let d = route(&r, &j, Strategy::LatencyFirst);
    assert_eq!(chain_models(&r, &d)[0], "fast-e");
    // fast-e's deployment is observed to be 50x slower than advertised.
    let slow_e = |d: DeploymentId| HealthSnapshot {
        slowdown: if d == 4 { 50.0 } else { 1.0 },
        ..HealthSnapshot::fresh()
    };
    let d = route_with(
        &r,
        &j,
        &EffectivePolicy::open(Strategy::LatencyFirst, 0.5),
        BudgetState::UNCONSTRAINED,
        &slow_e,
    )
    .unwrap();
    assert_ne!(chain_models(&r, &d)[0], "fast-e", "{}", d.reason);
}

#[test]
fn availability_first_follows_observed_success() {
    let r = router();
    let j = job("Hello, can you help me with my order?");
    let flaky_all_but_c = |d: DeploymentId| HealthSnapshot {
        success_rate: if d == 2 { 0.99 } else { 0.6 },
        ..HealthSnapshot::fresh()
    };
    let d = route_with(
        &r,
        &j,
        &EffectivePolicy::open(Strategy::AvailabilityFirst, 0.5),
        BudgetState::UNCONSTRAINED,
        &flaky_all_but_c,
    )
    .unwrap();
    assert_eq!(chain_models(&r, &d)[0], "mid-c");
    assert!(d.chain.len() >= 3);
}

/// `basic` (q .62) and `better` (q .85, at `markup` times basic's price) both
/// meet an easy chat job's need; `premium` (q .95) costs 50 times basic.
fn value_router(markup: f64) -> Router {
    router_of(vec![
        model("basic", "openai", (0.10, 0.40), 0.62),
        model("better", "anthropic", (0.10 * markup, 0.40 * markup), 0.85),
        model("premium", "gemini", (5.0, 20.0), 0.95),
    ])
}

#[test]
fn balanced_pays_a_little_more_for_much_more_quality_where_cost_first_does_not() {
    let j = job("Hello, can you help me with my order?");
    let r = value_router(1.2);
    let cheap = route(&r, &j, Strategy::CostFirst);
    let balanced = route(&r, &j, Strategy::Balanced);
    assert_eq!(chain_models(&r, &cheap)[0], "basic", "{}", cheap.reason);
    // Both stay within balanced's bar, so the choice is the trade-off, not a filter.
    let ranked = |name: &str| {
        balanced
            .candidates
            .iter()
            .find(|c| c.model == name)
            .and_then(|c| c.rank)
    };
    assert!(
        ranked("basic").is_some() && ranked("better").is_some(),
        "{:?}",
        balanced.candidates
    );
    // 20% more buys 0.23 of quality: a fraction of a doubling, well worth it.
    assert_eq!(
        chain_models(&r, &balanced)[0],
        "better",
        "{}",
        balanced.reason
    );
    // The scores say why: useful quality (capped at need + 0.10) minus 0.03 per doubling of price.
    let need = balanced.required_quality;
    let score = |name: &str| {
        balanced
            .candidates
            .iter()
            .find(|c| c.model == name)
            .unwrap()
            .score
    };
    assert!((score("basic") - 0.62_f64.min(need + 0.10)).abs() < 1e-9);
    let better = 0.85_f64.min(need + 0.10) - 0.03 * 1.2_f64.log2();
    assert!(
        (score("better") - better).abs() < 1e-6,
        "{} vs {better}",
        score("better")
    );
    assert!(score("premium") < score("better"));

    // At eight times the price the same quality is not worth it: balanced agrees with cost-first.
    let r = value_router(8.0);
    let balanced = route(&r, &j, Strategy::Balanced);
    assert_eq!(
        chain_models(&r, &balanced)[0],
        "basic",
        "{}",
        balanced.reason
    );
}

#[test]
fn one_model_with_two_deployments_fails_over_to_its_other_deployment() {
    let mut r = router();
    // cheap-a (model 0) gets a second deployment, say the same model under another key.
    let mut deployments = r.deployments().to_vec();
    deployments.push(DeploymentInfo {
        name: "cheap-a-second-key".into(),
        model: 0,
        provider: "openai".into(),
    });
    r = Router::new(r.catalog().clone(), deployments, RouterSettings::default());
    let j = job("Classify this review as positive or negative: great product.");
    // Cost-first puts the cheapest model, cheap-a, first.
    let policy = EffectivePolicy::open(Strategy::CostFirst, 0.5);
    let normal = BudgetState::UNCONSTRAINED;
    let d = route_with(&r, &j, &policy, normal, &fresh).unwrap();
    let names: Vec<&str> = d
        .chain
        .iter()
        .map(|e| r.deployments()[e.deployment].name.as_str())
        .collect();
    assert_eq!(names[0], "cheap-a-dep");
    assert_eq!(
        names.len(),
        4,
        "fallbacks go to other providers first: {names:?}"
    );

    // The first deployment's circuit opens: the model stays first, on its other deployment.
    let first_open = with_circuit(0, CircuitState::Open);
    let d = route_with(&r, &j, &policy, normal, &first_open).unwrap();
    assert_eq!(
        r.deployments()[d.chain[0].deployment].name,
        "cheap-a-second-key"
    );
    assert_eq!(chain_models(&r, &d)[0], "cheap-a", "{}", d.reason);
    assert!(d.chain.iter().all(|e| e.deployment != 0));
    let cheap_a = d.candidates.iter().find(|c| c.model == "cheap-a").unwrap();
    assert_eq!(
        cheap_a.dropped, None,
        "one usable deployment keeps the model"
    );
}

#[test]
fn open_circuits_are_routed_around_and_half_open_probes_let_traffic_back() {
    let r = router();
    let j = job("Classify this review as positive or negative: great product.");
    let open_a = with_circuit(0, CircuitState::Open);
    // Cost-first puts the cheapest model, cheap-a, first when it can be used.
    let d = route_with(
        &r,
        &j,
        &EffectivePolicy::open(Strategy::CostFirst, 0.5),
        BudgetState::UNCONSTRAINED,
        &open_a,
    )
    .unwrap();
    assert_ne!(chain_models(&r, &d)[0], "cheap-a");
    assert!(
        d.candidates
            .iter()
            .any(|c| c.model == "cheap-a" && c.dropped == Some(Drop::CircuitOpen))
    );
    let probing = with_circuit(
        0,
        CircuitState::HalfOpen {
            probe_available: true,
        },
    );
    let d = route_with(
        &r,
        &j,
        &EffectivePolicy::open(Strategy::CostFirst, 0.5),
        BudgetState::UNCONSTRAINED,
        &probing,
    )
    .unwrap();
    assert_eq!(chain_models(&r, &d)[0], "cheap-a");
}

/// The shipped production config serves gemini-3.8-flash from two Google Cloud
/// projects: with one deployment's circuit open, a job for that model goes to the other.
#[test]
fn the_shipped_second_deployment_takes_over_when_the_first_circuit_opens() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let pipeline = crate::config::tests::load(&root.join("pipelines/production.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let r = Router::for_pipeline(Arc::new(pipeline.catalog.clone()), &pipeline.config);
    let model = r.catalog().id("gemini-3.8-flash").unwrap();
    let serving: Vec<DeploymentId> = (0..r.deployments().len())
        .filter(|&d| r.deployments()[d].model == model)
        .collect();
    assert_eq!(serving.len(), 2, "{:?}", r.deployments());
    let mut j = job("Summarize this paragraph in one sentence: the meeting moved to Friday.");
    j.model = Some("gemini-3.8-flash".into());
    let policy = EffectivePolicy::open(Strategy::Auto, 0.5);
    let normal = BudgetState::UNCONSTRAINED;
    let d = route_with(&r, &j, &policy, normal, &fresh).unwrap();
    let mut chain: Vec<DeploymentId> = d.chain.iter().map(|e| e.deployment).collect();
    chain.sort_unstable();
    assert_eq!(chain, serving, "both deployments of the pinned model");
    let first_open = with_circuit(serving[0], CircuitState::Open);
    let d = route_with(&r, &j, &policy, normal, &first_open).unwrap();
    let names: Vec<&str> = d
        .chain
        .iter()
        .map(|e| r.deployments()[e.deployment].name.as_str())
        .collect();
    assert_eq!(names, ["gemini-gemini-3.8-flash-project-b"]);
}

#[test]
fn the_worst_case_is_the_answer_cap_on_the_model_times_the_attempts_that_can_bill() {
    let r = router();
    let analyzer = crate::analysis::tests::analyzer_for(r.catalog());
    let m = r.catalog().models()[0].clone();
    let mut j = job("Summarise this paragraph in two sentences.");
    let a = analyzer.analyze(&j, false);
    let by_hand = |cap: u32, attempts: f64| {
        (f64::from(a.prompt_tokens_ceiling) * m.input_usd_per_mtok
            + f64::from(cap.min(m.max_output_tokens)) * m.output_usd_per_mtok)
            / 1e6
            * attempts
    };
    // No max_tokens: the policy's default answer cap.
    let w = crate::routing::worst_case_usd(&m, &j, &a, 4096, 4);
    assert!((w - by_hand(4096, 1.0)).abs() < 1e-12, "{w}");
    j.request.max_tokens = Some(300);
    let w = crate::routing::worst_case_usd(&m, &j, &a, 4096, 4);
    assert!((w - by_hand(300, 1.0)).abs() < 1e-12);
    // JSON: every deployment of the chain may bill an invalid answer.
    j.request.response_format = crate::job::ResponseFormat::JsonObject;
    let a = analyzer.analyze(&j, false);
    let w = crate::routing::worst_case_usd(&m, &j, &a, 4096, 4);
    let by_hand_json = (f64::from(a.prompt_tokens_ceiling) * m.input_usd_per_mtok
        + f64::from(300u32.min(m.max_output_tokens)) * m.output_usd_per_mtok)
        / 1e6
        * 4.0;
    assert!((w - by_hand_json).abs() < 1e-12);
}
