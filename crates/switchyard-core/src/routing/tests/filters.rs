//! Feasibility filters: pins and allow-lists, policy lists, deployments, context
//! windows (estimated and counted), output limits, deadlines, price caps and budget
//! headroom, and what a refusal says.

use chrono::Duration;

use super::*;
use crate::catalog::Tokenizer;
use crate::tokens;

fn refuse(r: &Router, j: &Job, policy: &EffectivePolicy, explain: bool) -> Box<Refusal> {
    let analysis = crate::analysis::tests::analyzer_for(r.catalog()).analyze(j, false);
    r.route(
        &RouteInput {
            job: j,
            analysis: &analysis,
            policy,
            budget: BudgetState::UNCONSTRAINED,
            now: Utc::now(),
        },
        &fresh,
        explain,
    )
    .unwrap_err()
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
    j.model = Some("mid-bb".into());
    let policy = EffectivePolicy::open(Strategy::Auto, 0.5);
    let e = refuse(&r, &j, &policy, false);
    assert_eq!(
        e.error,
        RouteError::UnknownModel {
            name: "mid-bb".into(),
            hint: " (did you mean `mid-b`?)".into()
        }
    );
    assert_eq!(e.code(), "unknown_model");
}

#[test]
fn an_allow_list_naming_unknown_models_is_refused_not_narrowed() {
    let r = router();
    let mut j = job("Hello there");
    j.allowed_models = vec!["mid-b".into(), "top-dd".into(), "llama-405b".into()];
    let policy = EffectivePolicy::open(Strategy::Auto, 0.5);
    let e = refuse(&r, &j, &policy, false);
    assert_eq!(e.code(), "unknown_model");
    assert_eq!(
        e.to_string(),
        "allowed_models names models not in the catalog: `top-dd` (did you mean `top-d`?), `llama-405b`"
    );
    // The refusal still says what the job was, with nothing chosen.
    let summary = e.decision.summary(r.catalog());
    assert_eq!(summary.chosen_model, "");
    assert!(
        summary.reason.starts_with("auto: ")
            && summary.reason.contains("not routed: allowed_models"),
        "{}",
        summary.reason
    );
}

#[test]
fn policy_model_lists_deny_and_allow() {
    let r = router();
    let j = job("Classify this review as positive or negative: great product.");
    let normal = BudgetState::UNCONSTRAINED;
    let mut p = EffectivePolicy::open(Strategy::CostFirst, 0.5);
    p.denied_models = vec!["cheap-a".into()];
    let d = route_with(&r, &j, &p, normal, &fresh).unwrap();
    assert!(!chain_models(&r, &d).contains(&"cheap-a".to_owned()));
    assert_eq!(
        d.candidates
            .iter()
            .find(|c| c.model == "cheap-a")
            .unwrap()
            .dropped,
        Some(Drop::PolicyDenied {
            rule: "model `cheap-a` not allowed".into()
        })
    );
    let mut p = EffectivePolicy::open(Strategy::CostFirst, 0.5);
    p.allowed_models = Some(vec!["mid-c".into(), "top-d".into()]);
    let d = route_with(&r, &j, &p, normal, &fresh).unwrap();
    assert_eq!(chain_models(&r, &d), vec!["mid-c", "top-d"]);
    assert_eq!(
        d.candidates
            .iter()
            .filter(|c| matches!(c.dropped, Some(Drop::PolicyDenied { .. })))
            .count(),
        3
    );
    // A job's allow-list cannot bring back what policy denies.
    let mut j = j;
    j.allowed_models = vec!["cheap-a".into(), "mid-c".into()];
    let d = route_with(&r, &j, &p, normal, &fresh).unwrap();
    assert_eq!(chain_models(&r, &d), vec!["mid-c"]);
}

#[test]
fn a_model_without_a_deployment_is_dropped_as_such() {
    let full = router();
    // Every model but mid-b has a deployment.
    let deployments: Vec<DeploymentInfo> = full
        .deployments()
        .iter()
        .filter(|d| d.model != 1)
        .cloned()
        .collect();
    let r = Router::new(
        full.catalog().clone(),
        deployments,
        RouterSettings::default(),
    );
    let d = route(&r, &job("Hello there"), Strategy::Auto);
    assert!(!chain_models(&r, &d).contains(&"mid-b".to_owned()));
    let mid_b = d.candidates.iter().find(|c| c.model == "mid-b").unwrap();
    assert_eq!(mid_b.dropped, Some(Drop::NoDeployment));
    let mut j = job("Hello there");
    j.model = Some("mid-b".into());
    let e = refuse(&r, &j, &EffectivePolicy::open(Strategy::Auto, 0.5), false);
    assert_eq!(
        e.to_string(),
        "no model can serve this job: 4 not requested, 1 no deployment"
    );
}

#[test]
fn policies_deny_providers_and_cap_prices() {
    let r = router();
    let mut j = job("Classify this review as positive or negative: great product.");
    j.request.max_tokens = Some(4);
    let mut p = EffectivePolicy::open(Strategy::Auto, 0.5);
    p.denied_providers = vec!["openai".into()];
    let d = route_with(&r, &j, &p, BudgetState::UNCONSTRAINED, &fresh).unwrap();
    assert!(
        d.chain
            .iter()
            .all(|e| r.deployments()[e.deployment].provider != "openai")
    );
    let mut p = EffectivePolicy::open(Strategy::Auto, 0.5);
    p.max_usd_per_job = Some(0.000_3);
    let d = route_with(&r, &j, &p, BudgetState::UNCONSTRAINED, &fresh).unwrap();
    // The cap applies to the job's worst case (its answer cap on the model).
    assert!(d.chain.iter().all(|e| e.worst_case_usd <= 0.000_3));
    j.request.max_tokens = None;
    let refused = route_with(&r, &j, &p, BudgetState::UNCONSTRAINED, &fresh).unwrap_err();
    assert_eq!(refused.code(), "no_feasible_model", "{refused}");
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
    let policy = EffectivePolicy::open(Strategy::Auto, 0.5);
    let e = refuse(&r, &j, &policy, false);
    assert_eq!(e.error, RouteError::DeadlinePassed);
    assert!(
        e.decision.candidates.is_empty(),
        "candidates only when explaining"
    );
    // Explained, every candidate shows it would miss the deadline.
    let e = refuse(&r, &j, &policy, true);
    assert_eq!(e.error, RouteError::DeadlinePassed);
    assert_eq!(e.decision.candidates.len(), 5);
    assert!(e.decision.candidates.iter().all(|c| matches!(
        c.dropped,
        Some(Drop::Deadline {
            remaining_ms: 0,
            ..
        })
    )));
}

#[test]
fn budget_pressure_downgrades_and_headroom_filters() {
    let r = router();
    let mut hard = job(
        "Prove rigorously that the algorithm is optimal, covering every edge case, and derive its closed form.",
    );
    hard.request.max_tokens = Some(64);
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
    assert!(d.chain.iter().all(|e| e.worst_case_usd <= 0.000_5));
}

#[test]
fn nothing_feasible_is_an_error_with_the_reasons() {
    let r = router();
    let j = job("Hello");
    let mut p = EffectivePolicy::open(Strategy::Auto, 0.5);
    p.allowed_providers = Some(vec!["mistral".into()]);
    let e = route_with(&r, &j, &p, BudgetState::UNCONSTRAINED, &fresh).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no model can serve this job: 5 denied by policy"
    );
    // The refusal carries the decision: strategy, analysis, an empty chain, and
    // (explained) every candidate with why it was dropped.
    let d = &e.decision;
    assert_eq!(d.strategy, Strategy::Auto);
    assert!(d.chain.is_empty());
    assert!(
        d.reason
            .ends_with("not routed: no model can serve this job: 5 denied by policy"),
        "{}",
        d.reason
    );
    assert_eq!(d.candidates.len(), 5);
    for c in &d.candidates {
        assert_eq!(c.rank, None);
        assert_eq!(
            c.dropped,
            Some(Drop::PolicyDenied {
                rule: format!("provider `{}` not allowed", c.provider)
            })
        );
    }
}

/// `word ` repeated: four-bytes-per-token estimates about 1.25 tokens a word, and
/// with the margin 1.44; cl100k counts one.
#[test]
fn near_the_window_tokens_are_counted_with_the_real_tokenizer() {
    let mut j = job(&"word ".repeat(6_000));
    j.request.max_tokens = Some(100);
    let analysis = crate::analysis::tests::analyzer().analyze(&j, false);
    let exact = tokens::count_job(&j, Tokenizer::Cl100kBase).unwrap();
    let padded = (f64::from(analysis.prompt_tokens_ceiling) * 1.15) as u32;
    assert!(exact + 500 < padded, "{exact} vs {padded}");
    // A window between the real count and the padded estimate.
    let window = (exact + padded) / 2 + 100;
    let mut counted = model("counted", "openai", (0.1, 0.4), 0.8);
    counted.tokenizer = Tokenizer::Cl100kBase;
    counted.context_window = window;
    counted.max_output_tokens = 4_000;
    let mut estimated = model("estimated", "anthropic", (0.1, 0.4), 0.8);
    estimated.context_window = window;
    estimated.max_output_tokens = 4_000;
    let r = router_of(vec![counted, estimated]);
    let d = route(&r, &j, Strategy::CostFirst);
    assert!(d.tokens_counted, "the estimate was near the window");
    assert_eq!(chain_models(&r, &d), vec!["counted"], "{:?}", d.candidates);
    let dropped = d
        .candidates
        .iter()
        .find(|c| c.model == "estimated")
        .unwrap();
    assert_eq!(
        dropped.dropped,
        Some(Drop::ContextWindow {
            needed: padded + 100,
            window
        }),
        "without a tokenizer the padded estimate stands"
    );
    // Far from every window, nothing is counted.
    let d = route(&r, &job("Hello there"), Strategy::CostFirst);
    assert!(!d.tokens_counted);
}

/// Chinese takes about one cl100k token per character (three bytes): four bytes
/// per token with a 15% margin would say it fits where it does not.
#[test]
fn cjk_text_near_the_window_is_counted_not_estimated_from_bytes() {
    let sentence = "请把下面的客户投诉分类为账单、技术或账户问题，并简要说明理由。我上个月被重复扣费两次，客服一直没有回复我的邮件。";
    let mut j = job(&sentence.repeat(150));
    j.request.max_tokens = Some(100);
    let analysis = crate::analysis::tests::analyzer().analyze(&j, false);
    let exact = tokens::count_job(&j, Tokenizer::Cl100kBase).unwrap();
    let bytes_estimate = (f64::from(analysis.prompt_tokens) * 1.15) as u32;
    assert!(bytes_estimate < exact, "{bytes_estimate} vs {exact}");
    // A window the byte estimate fits and the real prompt does not.
    let window = (bytes_estimate + exact) / 2 + 100;
    let mut m = model("cl100k", "openai", (0.1, 0.4), 0.8);
    m.tokenizer = Tokenizer::Cl100kBase;
    m.context_window = window;
    m.max_output_tokens = 4_000;
    let mut big = model("big", "anthropic", (1.0, 4.0), 0.8);
    big.context_window = 200_000;
    let r = router_of(vec![m, big]);
    let d = route(&r, &j, Strategy::CostFirst);
    assert!(d.tokens_counted);
    assert_eq!(chain_models(&r, &d), vec!["big"]);
    let c = d.candidates.iter().find(|c| c.model == "cl100k").unwrap();
    assert_eq!(
        c.dropped,
        Some(Drop::ContextWindow {
            needed: exact + 100,
            window
        })
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
