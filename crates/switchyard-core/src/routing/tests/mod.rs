use std::sync::Arc;

use chrono::{Duration, Utc};
use proptest::prelude::{any, prop_assert, proptest};

use super::*;
use crate::analysis::TaskAnalyzer;
use crate::catalog::tests::model;
use crate::health::{CircuitState, HealthSnapshot};
use crate::job::ChatRequest;

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

fn job(prompt: &str) -> Job {
    Job::new("j", "a/b/c/d", ChatRequest::from_user(prompt))
}

fn fresh(_: DeploymentId) -> HealthSnapshot {
    HealthSnapshot::fresh()
}

fn route_with(
    r: &Router,
    job: &Job,
    policy: &EffectivePolicy,
    budget: BudgetState,
    health: &dyn Fn(DeploymentId) -> HealthSnapshot,
) -> Result<RoutingDecision, RouteError> {
    let analysis = TaskAnalyzer::new().analyze(job, false);
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
        BudgetState::Normal { headroom_usd: None },
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

#[test]
fn auto_sends_easy_work_to_the_cheapest_adequate_model() {
    let r = router();
    let d = route(
        &r,
        &job("Classify this review as positive or negative: great product."),
        Strategy::Auto,
    );
    assert_eq!(chain_models(&r, &d)[0], "cheap-a", "{}", d.reason);
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
        BudgetState::Normal { headroom_usd: None },
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
        BudgetState::Normal { headroom_usd: None },
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
        BudgetState::Normal { headroom_usd: None },
        &flaky_all_but_c,
    )
    .unwrap();
    assert_eq!(chain_models(&r, &d)[0], "mid-c");
    assert!(d.chain.len() >= 3);
}

#[test]
fn balanced_pays_for_quality_only_when_it_is_worth_it() {
    let r = router();
    let d = route(
        &r,
        &job("Hello, can you help me with my order?"),
        Strategy::Balanced,
    );
    // cheap-a fails the relaxed need (0.65 < need - slack); fast-e is cheap and good enough.
    let first = &chain_models(&r, &d)[0];
    assert!(
        first == "fast-e" || first == "cheap-a",
        "{first}: {}",
        d.reason
    );
}

#[test]
fn open_circuits_are_routed_around_and_half_open_probes_let_traffic_back() {
    let r = router();
    let j = job("Classify this review as positive or negative: great product.");
    let open_a = |d: DeploymentId| HealthSnapshot {
        circuit: if d == 0 {
            CircuitState::Open
        } else {
            CircuitState::Closed
        },
        ..HealthSnapshot::fresh()
    };
    let d = route_with(
        &r,
        &j,
        &EffectivePolicy::open(Strategy::Auto, 0.5),
        BudgetState::Normal { headroom_usd: None },
        &open_a,
    )
    .unwrap();
    assert_ne!(chain_models(&r, &d)[0], "cheap-a");
    assert!(
        d.candidates
            .iter()
            .any(|c| c.model == "cheap-a" && c.dropped == Some(Drop::CircuitOpen))
    );
    let probing = |d: DeploymentId| HealthSnapshot {
        circuit: if d == 0 {
            CircuitState::HalfOpen {
                probe_available: true,
            }
        } else {
            CircuitState::Closed
        },
        ..HealthSnapshot::fresh()
    };
    let d = route_with(
        &r,
        &j,
        &EffectivePolicy::open(Strategy::Auto, 0.5),
        BudgetState::Normal { headroom_usd: None },
        &probing,
    )
    .unwrap();
    assert_eq!(chain_models(&r, &d)[0], "cheap-a");
}

#[test]
fn pins_and_allow_lists_restrict_the_chain() {
    let r = router();
    let mut j = job("Hello there");
    j.model = Some("mid-b".into());
    let d = route(&r, &j, Strategy::Auto);
    assert_eq!(chain_models(&r, &d), vec!["mid-b"]);
    let mut j = job("Hello there");
    j.allowed_models = vec!["mid-b".into(), "top-d".into()];
    let d = route(&r, &j, Strategy::CostFirst);
    assert_eq!(chain_models(&r, &d), vec!["mid-b", "top-d"]);
    let mut j = job("Hello there");
    j.model = Some("nope".into());
    let analysis = TaskAnalyzer::new().analyze(&j, false);
    let policy = EffectivePolicy::open(Strategy::Auto, 0.5);
    let e = r.route(
        &RouteInput {
            job: &j,
            analysis: &analysis,
            policy: &policy,
            budget: BudgetState::Normal { headroom_usd: None },
            now: Utc::now(),
        },
        &fresh,
        false,
    );
    assert_eq!(e.unwrap_err(), RouteError::UnknownModel("nope".into()));
}

#[test]
fn policies_deny_providers_and_cap_prices() {
    let r = router();
    let j = job("Classify this review as positive or negative: great product.");
    let mut p = EffectivePolicy::open(Strategy::Auto, 0.5);
    p.denied_providers = vec!["openai".into()];
    let d = route_with(
        &r,
        &j,
        &p,
        BudgetState::Normal { headroom_usd: None },
        &fresh,
    )
    .unwrap();
    assert!(
        d.chain
            .iter()
            .all(|e| r.deployments()[e.deployment].provider != "openai")
    );
    let mut p = EffectivePolicy::open(Strategy::Auto, 0.5);
    p.max_usd_per_job = Some(0.000_3);
    let d = route_with(
        &r,
        &j,
        &p,
        BudgetState::Normal { headroom_usd: None },
        &fresh,
    )
    .unwrap();
    assert!(d.chain.iter().all(|e| e.estimated_cost_usd <= 0.000_3));
}

#[test]
fn context_windows_and_output_limits_are_feasibility_filters() {
    let r = router();
    let mut j = job(&"word ".repeat(8_000));
    j.request.max_tokens = Some(1_000);
    let d = route(&r, &j, Strategy::CostFirst);
    assert!(
        !chain_models(&r, &d).contains(&"cheap-a".to_owned()),
        "40 kB does not fit 8k tokens"
    );
    let mut j = job("Write a long story.");
    j.request.max_tokens = Some(10_000);
    let d = route(&r, &j, Strategy::CostFirst);
    assert!(
        d.candidates
            .iter()
            .any(|c| c.model == "cheap-a" && matches!(c.dropped, Some(Drop::MaxOutput { .. })))
    );
}

#[test]
fn deadlines_drop_slow_models_and_passed_deadlines_reject() {
    let r = router();
    let mut j = job("Hello, can you help me with my order?");
    j.deadline = Some(Utc::now() + Duration::milliseconds(1_500));
    let d = route(&r, &j, Strategy::Auto);
    assert!(
        !chain_models(&r, &d).contains(&"mid-c".to_owned()),
        "mid-c needs over 2 s"
    );
    j.deadline = Some(Utc::now() - Duration::seconds(1));
    let analysis = TaskAnalyzer::new().analyze(&j, false);
    let policy = EffectivePolicy::open(Strategy::Auto, 0.5);
    let e = r.route(
        &RouteInput {
            job: &j,
            analysis: &analysis,
            policy: &policy,
            budget: BudgetState::Normal { headroom_usd: None },
            now: Utc::now(),
        },
        &fresh,
        false,
    );
    assert_eq!(e.unwrap_err(), RouteError::DeadlinePassed);
}

#[test]
fn budget_pressure_downgrades_and_headroom_filters() {
    let r = router();
    let hard = job(
        "Prove rigorously that the algorithm is optimal, covering every edge case, and derive its closed form.",
    );
    let p = EffectivePolicy::open(Strategy::Auto, 0.6);
    let d = route_with(
        &r,
        &hard,
        &p,
        BudgetState::NearLimit {
            headroom_usd: 100.0,
        },
        &fresh,
    )
    .unwrap();
    assert_eq!(chain_models(&r, &d)[0], "cheap-a", "{}", d.reason);
    assert!(d.reason.contains("downgraded"));
    let d = route_with(
        &r,
        &hard,
        &p,
        BudgetState::Normal {
            headroom_usd: Some(0.000_5),
        },
        &fresh,
    )
    .unwrap();
    assert!(d.chain.iter().all(|e| e.estimated_cost_usd <= 0.000_5));
}

#[test]
fn nothing_feasible_is_an_error_with_the_reasons() {
    let r = router();
    let j = job("Hello");
    let mut p = EffectivePolicy::open(Strategy::Auto, 0.5);
    p.allowed_providers = Some(vec!["mistral".into()]);
    let e = route_with(
        &r,
        &j,
        &p,
        BudgetState::Normal { headroom_usd: None },
        &fresh,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no model can serve this job: 5 denied by policy"
    );
}

#[test]
fn when_no_model_meets_the_need_the_best_available_leads() {
    let r = router();
    let mut j = job(
        "Prove rigorously that the algorithm is optimal, covering every edge case, and derive its closed form.",
    );
    j.allowed_models = vec!["cheap-a".into(), "mid-b".into()];
    let d = route(&r, &j, Strategy::Auto);
    assert_eq!(chain_models(&r, &d)[0], "mid-b");
    assert!(d.reason.contains("best available"), "{}", d.reason);
}

fn arb_policy() -> impl proptest::strategy::Strategy<Value = EffectivePolicy> {
    use proptest::strategy::Strategy as _;
    let providers = ["openai", "anthropic", "gemini", "groq"];
    (
        proptest::sample::select(Strategy::ALL.to_vec()),
        0.0f64..0.9,
        proptest::collection::vec(proptest::sample::select(providers.to_vec()), 0..3),
        proptest::option::of(0.00001f64..0.01),
    )
        .prop_map(|(s, floor, denied, cap)| {
            let mut p = EffectivePolicy::open(s, floor);
            p.denied_providers = denied.into_iter().map(String::from).collect();
            p.max_usd_per_job = cap;
            p
        })
}

proptest! {
    /// A chain never holds a denied, open-circuit, over-cap or below-floor model, and
    /// is never empty when some model passes every hard filter.
    #[test]
    fn chains_hold_only_feasible_models(
        policy in arb_policy(),
        open in proptest::collection::vec(any::<bool>(), 5),
        prompt in "[a-z ]{0,200}",
        max_tokens in proptest::option::of(1u32..20_000),
    ) {
        let r = router();
        let mut j = job(&format!("{prompt} hello"));
        j.request.max_tokens = max_tokens;
        let health = |d: DeploymentId| HealthSnapshot { circuit: if open[d] { CircuitState::Open } else { CircuitState::Closed }, ..HealthSnapshot::fresh() };
        let analysis = TaskAnalyzer::new().analyze(&j, false);
        let input = RouteInput { job: &j, analysis: &analysis, policy: &policy, budget: BudgetState::Normal { headroom_usd: None }, now: Utc::now() };
        let feasible_exists = r.catalog().models().iter().enumerate().any(|(i, m)| {
            !open[i]
                && policy.provider_allowed(&m.provider)
                && m.quality_for(analysis.category) >= policy.quality_floor
                && max_tokens.is_none_or(|t| t <= m.max_output_tokens)
                && policy.max_usd_per_job.is_none_or(|cap| m.estimate_usd(analysis.prompt_tokens, analysis.expected_output_tokens.min(m.max_output_tokens)) <= cap)
        });
        match r.route(&input, &health, false) {
            Ok(d) => {
                prop_assert!(!d.chain.is_empty());
                prop_assert!(d.chain.len() <= RouterSettings::default().max_chain);
                for e in &d.chain {
                    let m = r.catalog().model(e.model);
                    prop_assert!(!open[e.deployment]);
                    prop_assert!(policy.provider_allowed(&m.provider));
                    prop_assert!(m.quality_for(analysis.category) + 1e-9 >= policy.quality_floor);
                    if let Some(cap) = policy.max_usd_per_job { prop_assert!(e.estimated_cost_usd <= cap); }
                    if let Some(t) = max_tokens { prop_assert!(t <= m.max_output_tokens); }
                }
                prop_assert!(feasible_exists);
            }
            Err(_) => prop_assert!(!feasible_exists, "a feasible model existed but the chain was empty"),
        }
    }
}
