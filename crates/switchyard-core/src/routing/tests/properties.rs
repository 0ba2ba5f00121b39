//! Invariants over random catalogs (quality differing per category, context
//! windows, tokenizers), policies (floors, provider and model lists, price caps),
//! jobs (allow-lists, output caps, deadlines, prompts that split between two
//! categories) and budget states: a chain never holds a model that fails a hard
//! filter, and is never empty when some model passes them all.

use chrono::{DateTime, Duration};
use proptest::prelude::{Just, ProptestConfig, prop_assert, prop_oneof, proptest};
use proptest::strategy::Strategy as _;

use super::*;
use crate::analysis::{TaskAnalysis, TaskCategory};
use crate::catalog::{QualityScores, Tokenizer};
use crate::tokens;

const PROVIDERS: [&str; 4] = ["openai", "anthropic", "gemini", "groq"];
const NAMES: [&str; 6] = ["m0", "m1", "m2", "m3", "m4", "m5"];

/// Phrases that pull a prompt towards different categories, so that the analysis
/// often finds a close second and routing must meet the need in both.
const PHRASES: [&str; 10] = [
    "Classify this ticket as billing or technical.",
    "Extract the invoice number and total as JSON.",
    "Summarize the following meeting notes in three bullets.",
    "Write a Python function that parses dates.",
    "Prove that the sum of two even numbers is even.",
    "Solve for x: 3x + 7 = 22.",
    "Write a short poem about the sea.",
    "Hello, can you help me with my order?",
    "Explain step by step why the plan could fail.",
    "word word word word word word word word word word",
];

fn arb_model(i: usize) -> impl proptest::strategy::Strategy<Value = ModelSpec> {
    (
        proptest::sample::select(PROVIDERS.to_vec()),
        (0.05f64..5.0, 1.0f64..5.0),
        proptest::array::uniform8(0.3f64..1.0),
        prop_oneof![Just(8_000u32), Just(16_000), Just(128_000)],
        prop_oneof![Just(2_000u32), Just(8_000)],
        proptest::sample::select(vec![
            Tokenizer::Estimate,
            Tokenizer::O200kBase,
            Tokenizer::Cl100kBase,
        ]),
        100u32..3_000,
    )
        .prop_map(
            move |(provider, (input, ratio), q, window, max_out, tokenizer, ttft)| {
                let mut m = model(NAMES[i], provider, (input, input * ratio), 0.5);
                m.quality = QualityScores {
                    classification: q[0],
                    extraction: q[1],
                    summarization: q[2],
                    chat: q[3],
                    code: q[4],
                    reasoning: q[5],
                    math: q[6],
                    creative: q[7],
                };
                m.context_window = window;
                m.max_output_tokens = max_out;
                m.tokenizer = tokenizer;
                m.ttft_ms = ttft;
                m
            },
        )
}

fn arb_catalog() -> impl proptest::strategy::Strategy<Value = Vec<ModelSpec>> {
    (
        arb_model(0),
        arb_model(1),
        arb_model(2),
        arb_model(3),
        arb_model(4),
        arb_model(5),
    )
        .prop_map(|(a, b, c, d, e, f)| vec![a, b, c, d, e, f])
}

fn names(max: usize) -> impl proptest::strategy::Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(NAMES.to_vec(), 0..=max)
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

fn arb_policy() -> impl proptest::strategy::Strategy<Value = EffectivePolicy> {
    (
        proptest::sample::select(Strategy::ALL.to_vec()),
        0.0f64..0.9,
        proptest::sample::subsequence(PROVIDERS.to_vec(), 0..2),
        proptest::option::weighted(
            0.25,
            proptest::sample::subsequence(PROVIDERS.to_vec(), 1..=4),
        ),
        names(2),
        proptest::option::weighted(
            0.25,
            names(6).prop_filter("an allow-list names a model", |v| !v.is_empty()),
        ),
        proptest::option::weighted(0.3, 0.000_1f64..0.2),
    )
        .prop_map(
            |(s, floor, denied_p, allowed_p, denied_m, allowed_m, cap)| {
                let mut p = EffectivePolicy::open(s, floor);
                p.denied_providers = denied_p.into_iter().map(String::from).collect();
                p.allowed_providers = allowed_p.map(|v| v.into_iter().map(String::from).collect());
                p.denied_models = denied_m;
                p.allowed_models = allowed_m;
                p.max_usd_per_job = cap;
                p
            },
        )
}

fn arb_budget() -> impl proptest::strategy::Strategy<Value = BudgetState> {
    prop_oneof![
        Just(BudgetState::UNCONSTRAINED),
        (0.000_1f64..0.2).prop_map(|h| BudgetState::Normal {
            headroom_usd: Some(h)
        }),
        (0.000_1f64..0.2).prop_map(|h| BudgetState::NearLimit { headroom_usd: h }),
    ]
}

/// The job as routing must see it: each hard filter, written out from the rules.
struct Oracle<'a> {
    job: &'a Job,
    analysis: &'a TaskAnalysis,
    policy: &'a EffectivePolicy,
    budget: BudgetState,
    now: DateTime<Utc>,
}

impl Oracle<'_> {
    fn quality(&self, m: &ModelSpec) -> f64 {
        let q = m.quality_for(self.analysis.category);
        self.analysis
            .alternative
            .map_or(q, |alt: TaskCategory| q.min(m.quality_for(alt)))
    }

    fn output(&self, m: &ModelSpec) -> u32 {
        self.analysis
            .expected_output_tokens
            .min(m.max_output_tokens)
    }

    /// The most the job may cost on `m`: the cautious prompt count and the
    /// answer cap (the job's, else the policy's default, within the model's
    /// limit), times the attempts that can bill (the chain's length for JSON).
    fn worst(&self, m: &ModelSpec) -> f64 {
        let cap = self
            .job
            .request
            .max_tokens
            .unwrap_or(self.policy.default_max_tokens)
            .min(m.max_output_tokens);
        let attempts = if self.job.request.response_format == crate::job::ResponseFormat::JsonObject
        {
            crate::routing::RouterSettings::default().max_chain
        } else {
            1
        };
        m.estimate_usd(self.analysis.prompt_tokens_ceiling, cap) * attempts as f64
    }

    fn fits_context(&self, m: &ModelSpec) -> bool {
        let reserve = self
            .job
            .request
            .max_tokens
            .unwrap_or(self.output(m))
            .min(m.max_output_tokens);
        let padded = (f64::from(
            self.analysis
                .prompt_tokens_ceiling
                .max(self.analysis.prompt_tokens),
        ) * 1.15) as u32;
        let fits = |p: u32| u64::from(p) + u64::from(reserve) <= u64::from(m.context_window);
        fits(padded) || fits(tokens::count_job(self.job, m.tokenizer).unwrap_or(padded))
    }

    /// Every hard filter but circuits (checked per deployment by the caller).
    fn passes(&self, m: &ModelSpec) -> bool {
        let job = self.job;
        let remaining = job
            .deadline
            .map(|d| (d - self.now).num_milliseconds() as f64);
        let headroom = match self.budget {
            BudgetState::Normal { headroom_usd } => headroom_usd,
            BudgetState::NearLimit { headroom_usd } => Some(headroom_usd),
        };
        self.policy.provider_allowed(&m.provider)
            && self.policy.model_allowed(&m.name)
            && (job.allowed_models.is_empty() || job.allowed_models.contains(&m.name))
            && self.quality(m) + 1e-9 >= self.policy.quality_floor
            && job
                .request
                .max_tokens
                .is_none_or(|t| t <= m.max_output_tokens)
            && self.fits_context(m)
            && remaining.is_none_or(|left| m.expected_latency_ms(self.output(m)) <= left)
            && self
                .policy
                .max_usd_per_job
                .is_none_or(|cap| self.worst(m) <= cap)
            && headroom.is_none_or(|h| self.worst(m) <= h)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(192))]

    /// A chain never holds a denied, unrequested, open-circuit, over-window,
    /// over-deadline, over-cap, over-headroom or below-floor model, nor the same
    /// deployment twice; and it is never empty when some model passes every hard
    /// filter.
    #[test]
    fn chains_hold_only_feasible_models(
        models in arb_catalog(),
        policy in arb_policy(),
        budget in arb_budget(),
        open in proptest::collection::vec(proptest::bool::weighted(0.2), 6),
        phrases in proptest::collection::vec(proptest::sample::select(PHRASES.to_vec()), 1..4),
        filler in 0usize..7_000,
        job_allowed in proptest::option::weighted(0.25, names(4)),
        max_tokens in proptest::option::of(1u32..12_000),
        deadline_ms in proptest::option::weighted(0.3, 0i64..30_000),
    ) {
        let r = router_of(models);
        let now = Utc::now();
        let mut j = job(&format!("{} {}", phrases.join(" "), "data ".repeat(filler)));
        j.request.max_tokens = max_tokens;
        j.allowed_models = job_allowed.unwrap_or_default();
        j.deadline = deadline_ms.map(|ms| now + Duration::milliseconds(ms + 1));
        let health = |d: DeploymentId| HealthSnapshot {
            circuit: if open[d] { CircuitState::Open } else { CircuitState::Closed },
            ..HealthSnapshot::fresh()
        };
        let analysis = crate::analysis::tests::analyzer_for(r.catalog()).analyze(&j, false);
        let oracle = Oracle { job: &j, analysis: &analysis, policy: &policy, budget, now };
        let input = RouteInput { job: &j, analysis: &analysis, policy: &policy, budget, now };
        let feasible_exists = r
            .catalog()
            .models()
            .iter()
            .enumerate()
            .any(|(i, m)| !open[i] && oracle.passes(m));
        match r.route(&input, &health, false) {
            Ok(d) => {
                prop_assert!(!d.chain.is_empty());
                prop_assert!(d.chain.len() <= RouterSettings::default().max_chain);
                let mut seen = std::collections::HashSet::new();
                for e in &d.chain {
                    let m = r.catalog().model(e.model);
                    prop_assert!(seen.insert(e.deployment), "deployment twice");
                    prop_assert!(!open[e.deployment], "{} has an open circuit", m.name);
                    prop_assert!(oracle.passes(m), "{} fails a hard filter: {}", m.name, d.reason);
                }
                prop_assert!(feasible_exists);
            }
            Err(e) => {
                prop_assert!(!feasible_exists, "a feasible model existed but routing refused: {e}");
                prop_assert!(e.decision.chain.is_empty());
            }
        }
    }
}

/// The shipped catalog with one deployment per model.
fn shipped_router() -> Router {
    let catalog = Arc::new(crate::analysis::tests::shipped_catalog());
    let deployments = catalog
        .models()
        .iter()
        .enumerate()
        .map(|(i, m)| DeploymentInfo {
            name: m.name.clone(),
            model: i,
            provider: m.provider.clone(),
        })
        .collect();
    Router::new(catalog, deployments, RouterSettings::default())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Asking `auto` to keep more of the flagship's quality never sends a job
    /// to a cheaper third of the catalog, nor asks for less quality.
    #[test]
    fn raising_the_quality_target_never_lowers_the_chosen_tier(
        phrases in proptest::collection::vec(proptest::sample::select(PHRASES.to_vec()), 1..4),
        filler in 0usize..400,
        max_tokens in proptest::option::of(16u32..4_000),
        targets in (0.5f64..1.0, 0.0f64..0.5),
    ) {
        let r = shipped_router();
        let analyzer = crate::analysis::tests::analyzer_for(r.catalog());
        let bands = r.catalog().price_bands();
        let mut j = job(&format!("{} {}", phrases.join(" "), "data ".repeat(filler)));
        j.request.max_tokens = max_tokens;
        let (low, high) = (targets.0, (targets.0 + targets.1).min(1.0));
        let policy = EffectivePolicy::open(Strategy::Auto, 0.55);
        let now = Utc::now();
        let route_at = |target: f64| {
            let analysis = analyzer.analyze_for(&j, Some(target), false);
            let input = RouteInput { job: &j, analysis: &analysis, policy: &policy, budget: BudgetState::UNCONSTRAINED, now };
            let d = r.route(&input, &|_| HealthSnapshot::fresh(), false).unwrap();
            (bands[d.chain[0].model], d.required_quality)
        };
        let (band_low, need_low) = route_at(low);
        let (band_high, need_high) = route_at(high);
        prop_assert!(band_high >= band_low, "{low} -> {band_low:?}, {high} -> {band_high:?}");
        prop_assert!(need_high >= need_low);
    }
}

/// The shipped model written out and read back routes every demo prompt the same way.
#[test]
fn the_shipped_model_routes_the_same_after_a_reload() {
    use crate::analysis::need::NeedModel;
    let r = shipped_router();
    let builtin = NeedModel::builtin().unwrap();
    let reloaded = Arc::new(NeedModel::parse(&builtin.to_bytes()).unwrap());
    let target = crate::analysis::DEFAULT_QUALITY_TARGET;
    let a = crate::analysis::TaskAnalyzer::new(r.catalog(), builtin, target);
    let b = crate::analysis::TaskAnalyzer::new(r.catalog(), reloaded, target);
    let policy = EffectivePolicy::open(Strategy::Auto, 0.55);
    let now = Utc::now();
    let corpus = include_str!("../../../../../pipelines/corpus/prompts.jsonl");
    let mut n = 0;
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let j = job(v["prompt"].as_str().unwrap());
        let decide = |analyzer: &crate::analysis::TaskAnalyzer| {
            let analysis = analyzer.analyze(&j, false);
            let input = RouteInput {
                job: &j,
                analysis: &analysis,
                policy: &policy,
                budget: BudgetState::UNCONSTRAINED,
                now,
            };
            (
                analysis.need.clone(),
                r.route(&input, &|_| HealthSnapshot::fresh(), false)
                    .unwrap(),
            )
        };
        assert_eq!(decide(&a), decide(&b));
        n += 1;
    }
    assert!(n > 300, "{n} prompts");
}
