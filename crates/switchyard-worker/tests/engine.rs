//! The engine without Kafka: policy refusals (each carrying its routing
//! decision), budget actions at and before the limit, answers that fail the job's
//! checks (billed, then failed over), canceled batches and deadlines.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use switchyard_core::job::{ChatRequest, Job, ResponseFormat};
use switchyard_core::result::{AttemptOutcome, JobStatus, TokenUsage};
use switchyard_core::routing::Strategy;
use switchyard_core::vocab::JobMode;
use switchyard_providers::{
    BoxFuture, CallRequest, Completion, Provider, ProviderError, RateLimitInfo,
};
use switchyard_sim::InProcessProvider;
use switchyard_worker::{Engine, Outcome};

/// A pipeline on the shipped catalog with a small org: tiny budgets (reject,
/// hold), one that downgrades from the first cent, one that rejects from half
/// spent, and $0.001 budgets that act only on jobs that do not fit (downgrade,
/// reject).
fn pipeline(dir: &Path) -> switchyard_core::config::LoadedPipeline {
    let org = r#"
[org]
name = "acme"
[[node]]
path = "acme/bu"
[[node]]
path = "acme/bu/team"
[[node]]
path = "acme/bu/team/open"
[[node]]
path = "acme/bu/team/capped"
budget_usd_per_month = 0.000001
on_budget_exhausted = "reject"
[[node]]
path = "acme/bu/team/held"
budget_usd_per_month = 0.000001
on_budget_exhausted = "hold"
[[node]]
path = "acme/bu/team/thrifty"
budget_usd_per_month = 1.0
budget_soft_limit = 0.0
on_budget_exhausted = "downgrade"
[[node]]
path = "acme/bu/team/half"
budget_usd_per_month = 1.0
budget_soft_limit = 0.5
on_budget_exhausted = "reject"
[[node]]
path = "acme/bu/team/tight"
budget_usd_per_month = 0.001
budget_soft_limit = 1.0
on_budget_exhausted = "downgrade"
[[node]]
path = "acme/bu/team/tight-reject"
budget_usd_per_month = 0.001
budget_soft_limit = 1.0
on_budget_exhausted = "reject"
"#;
    common::pipeline(dir, org, "x:1")
}

/// One deployment per catalog model, all answered by `provider`.
fn engine(dir: &Path, provider: Arc<dyn Provider>) -> Engine {
    let p = pipeline(dir);
    Engine::new(&p, common::deployments(&p, provider)).unwrap()
}

fn job(project: &str, prompt: &str) -> Job {
    Job::new(
        "j-1",
        project,
        ChatRequest {
            max_tokens: Some(300),
            ..ChatRequest::from_user(prompt)
        },
    )
}

fn finished(
    o: Outcome,
) -> (
    switchyard_core::result::JobResult,
    Vec<switchyard_core::usage::UsageEvent>,
) {
    match o {
        Outcome::Finished { result, usage } => (*result, usage),
        Outcome::Held { reason, .. } => panic!("held: {reason}"),
        Outcome::Deferred(d) => panic!("deferred: {}", d.job.job_id),
    }
}

#[tokio::test]
async fn an_unknown_project_is_rejected_with_the_known_ones() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::new(InProcessProvider::new()));
    let (r, usage) = finished(e.process(job("acme/bu/team/opne", "Hello")).await);
    assert_eq!(r.status, JobStatus::Rejected);
    let err = r.error.unwrap();
    assert_eq!(err.code, "unknown_project");
    assert!(
        err.message.contains("known projects under `acme/bu/team`"),
        "{}",
        err.message
    );
    assert!(usage.is_empty());
}

#[tokio::test]
async fn budget_policies_reject_hold_or_downgrade() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::new(InProcessProvider::new()));
    // Spend recorded from the usage topic exhausts the tiny budgets.
    let (first, events) = finished(
        e.process(job("acme/bu/team/open", "Write a haiku about rain."))
            .await,
    );
    assert_eq!(first.status, JobStatus::Succeeded);
    let mut spent = events[0].clone();
    for project in ["capped", "held"] {
        spent.project = project.into();
        e.record_spend(&spent);
    }
    let (r, _) = finished(e.process(job("acme/bu/team/capped", "Hello")).await);
    assert_eq!(r.status, JobStatus::Rejected);
    assert_eq!(r.error.unwrap().code, "budget_exhausted");
    assert!(matches!(
        e.process(job("acme/bu/team/held", "Hello")).await,
        Outcome::Held { .. }
    ));

    // Past its soft limit, a downgrade budget routes even a hard job to the cheapest model above the floor.
    let hard = "Prove rigorously that the scheduling algorithm below is optimal, cover every edge case, and derive its closed form.";
    let (open, _) = finished(e.process(job("acme/bu/team/open", hard)).await);
    let (thrifty, _) = finished(e.process(job("acme/bu/team/thrifty", hard)).await);
    assert!(
        thrifty
            .routing
            .as_ref()
            .unwrap()
            .reason
            .contains("downgraded"),
        "{:?}",
        thrifty.routing
    );
    assert!(
        thrifty.cost_usd < open.cost_usd,
        "{} vs {}",
        thrifty.cost_usd,
        open.cost_usd
    );
}

/// Answers with prose the first time it is called, then like the simulator.
struct ProseFirst {
    calls: AtomicUsize,
}

impl Provider for ProseFirst {
    fn kind(&self) -> &'static str {
        "test"
    }
    fn complete<'a>(
        &'a self,
        call: CallRequest<'a>,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Ok(Completion {
                    content: "Sure! Here is the data you asked for.".into(),
                    finish_reason: "stop".into(),
                    usage: TokenUsage {
                        input_tokens: 40,
                        output_tokens: 9,
                        cached_input_tokens: 0,
                        cache_write_input_tokens: 0,
                    },
                    status: 200,
                    rate_limit: RateLimitInfo::default(),
                });
            }
            InProcessProvider::new().complete(call).await
        })
    }
}

#[tokio::test]
async fn an_answer_that_is_not_the_json_asked_for_is_billed_and_failed_over() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(
        dir.path(),
        Arc::new(ProseFirst {
            calls: AtomicUsize::new(0),
        }),
    );
    let mut j = job(
        "acme/bu/team/open",
        "Extract the invoice number and total as JSON: Invoice #A-1209, total $1,204.00",
    );
    j.request.response_format = ResponseFormat::JsonObject;
    let (r, usage) = finished(e.process(j).await);
    assert_eq!(r.status, JobStatus::Succeeded);
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::InvalidOutput);
    assert!(
        r.attempts[0].cost_usd > 0.0,
        "the failed attempt still cost money"
    );
    assert_ne!(
        r.attempts[0].deployment, r.attempts[1].deployment,
        "the next try goes to the next deployment"
    );
    assert!(
        serde_json::from_str::<serde_json::Value>(&r.output.unwrap().content)
            .unwrap()
            .is_object()
    );
    assert_eq!(usage.len(), 2, "one usage event per billed attempt");
    assert_eq!(usage[0].outcome, AttemptOutcome::InvalidOutput);
    let total: f64 = usage.iter().map(|u| u.cost_usd).sum();
    assert!((total - r.cost_usd).abs() < 1e-12);
    assert!(usage.iter().all(|u| u.baseline_cost_usd > u.cost_usd));
}

#[tokio::test]
async fn canceled_batches_and_passed_deadlines_end_without_calls() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::new(InProcessProvider::new()));
    let mut j = job("acme/bu/team/open", "Hello");
    j.batch_id = Some("b-1".into());
    e.cancel_batch("b-1");
    let (r, _) = finished(e.process(j).await);
    assert_eq!(r.status, JobStatus::Canceled);
    let mut j = job("acme/bu/team/open", "Hello");
    j.deadline = Some(chrono::Utc::now() - chrono::Duration::seconds(5));
    let (r, _) = finished(e.process(j).await);
    assert_eq!(r.status, JobStatus::Rejected);
    assert_eq!(r.error.unwrap().code, "deadline_passed");
    let mut j = job("acme/bu/team/open", "Hello");
    j.strategy = Some(Strategy::LatencyFirst);
    let (r, _) = finished(e.process(j).await);
    assert_eq!(r.routing.unwrap().strategy, Strategy::LatencyFirst);
}

const HARD: &str = "Prove rigorously that the scheduling algorithm below is optimal, cover every edge case, and derive its closed form.";
const EASY: &str = "Classify this ticket as billing, technical or account: 'I was charged twice.'";

#[tokio::test]
async fn a_budget_past_its_threshold_rejects_before_it_is_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::new(InProcessProvider::new()));
    let (r, _) = finished(e.process(job("acme/bu/team/half", EASY)).await);
    assert_eq!(r.status, JobStatus::Succeeded);
    let spent = usage_event("acme/bu/team/half", 0.6);
    e.record_spend(&spent);
    let (r, _) = finished(e.process(job("acme/bu/team/half", EASY)).await);
    assert_eq!(r.status, JobStatus::Rejected);
    let err = r.error.unwrap();
    assert_eq!(err.code, "budget_exhausted");
    assert!(
        err.message.contains("60% spent") && err.message.contains("acts from 50%"),
        "{}",
        err.message
    );
    let routing = r.routing.unwrap();
    assert_eq!(routing.chosen_model, "");
    assert!(
        routing
            .reason
            .contains("not routed: budget of `acme/bu/team/half`"),
        "{}",
        routing.reason
    );
}

#[tokio::test]
async fn a_job_too_expensive_for_what_is_left_is_treated_by_policy() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::new(InProcessProvider::new()));
    // Unbudgeted, the hard job goes to a model whose estimate exceeds $0.001.
    let (open, _) = finished(e.process(job("acme/bu/team/open", HARD)).await);
    let open_model = open.routing.unwrap().chosen_model;
    // Downgrade: routed again within what is left, to a cheaper model.
    let (r, _) = finished(e.process(job("acme/bu/team/tight", HARD)).await);
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
    let routing = r.routing.unwrap();
    assert!(routing.reason.contains("downgraded"), "{}", routing.reason);
    assert_ne!(routing.chosen_model, open_model);
    // Reject: refused with what did not fit; a small job still passes.
    let (r, _) = finished(e.process(job("acme/bu/team/tight-reject", HARD)).await);
    assert_eq!(r.status, JobStatus::Rejected);
    let err = r.error.unwrap();
    assert_eq!(err.code, "budget_exhausted");
    assert!(
        err.message.contains("does not fit the $0.001000 left"),
        "{}",
        err.message
    );
    // A small job (an easy one with a short answer cap) still fits.
    let mut small = job("acme/bu/team/tight-reject", EASY);
    small.request.max_tokens = Some(100);
    let (r, _) = finished(e.process(small).await);
    assert_eq!(r.status, JobStatus::Succeeded, "{:?}", r.error);
}

#[tokio::test]
async fn every_refused_result_carries_its_routing_decision() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::new(InProcessProvider::new()));
    let mut refused = Vec::new();
    refused.push(finished(e.process(job("acme/bu/team/opne", EASY)).await).0);
    let mut j = job("acme/bu/team/open", EASY);
    j.deadline = Some(chrono::Utc::now() - chrono::Duration::seconds(1));
    refused.push(finished(e.process(j).await).0);
    let mut j = job("acme/bu/team/open", EASY);
    j.model = Some("gpt-5-nanoo".into());
    refused.push(finished(e.process(j).await).0);
    let mut j = job("acme/bu/team/open", EASY);
    j.allowed_models = vec!["gpt-5-nano".into(), "claude-haiku-55".into()];
    refused.push(finished(e.process(j).await).0);
    let mut j = job("acme/bu/team/open", EASY);
    j.request.max_tokens = Some(5_000_000);
    refused.push(finished(e.process(j).await).0);
    let mut j = job("acme/bu/team/open", EASY);
    j.batch_id = Some("gone".into());
    e.cancel_batch("gone");
    refused.push(finished(e.process(j).await).0);

    let codes: Vec<&str> = refused
        .iter()
        .map(|r| r.error.as_ref().unwrap().code.as_str())
        .collect();
    assert_eq!(
        codes,
        [
            "unknown_project",
            "deadline_passed",
            "unknown_model",
            "unknown_model",
            "no_feasible_model",
            "batch_canceled"
        ]
    );
    for r in &refused {
        let routing = r
            .routing
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no routing", r.job_id));
        assert_eq!(
            routing.category,
            switchyard_core::analysis::TaskCategory::Classification
        );
        assert_eq!(routing.chosen_model, "");
        assert!(
            routing.reason.contains("not routed: "),
            "{}",
            routing.reason
        );
        assert!(r.attempts.is_empty() && r.cost_usd == 0.0);
    }
    let unknown = &refused[3].error.as_ref().unwrap().message;
    assert!(
        unknown.contains("`claude-haiku-55` (did you mean `claude-haiku-5-5`?)")
            && !unknown.contains("`gpt-5-nano`"),
        "{unknown}"
    );
    assert!(
        refused[4]
            .routing
            .as_ref()
            .unwrap()
            .reason
            .contains("max output")
    );
}

/// A usage event from another worker, charging `cost_usd` to `project`.
fn usage_event(project: &str, cost_usd: f64) -> switchyard_core::usage::UsageEvent {
    let (_, rest) = project.rsplit_once('/').unwrap();
    switchyard_core::usage::UsageEvent {
        event_id: "other-worker-1".into(),
        job_id: "other".into(),
        batch_id: None,
        attempt: 0,
        ts: chrono::Utc::now(),
        org: "acme".into(),
        business_unit: "bu".into(),
        team: "team".into(),
        project: rest.into(),
        workload: String::new(),
        strategy: Strategy::Auto,
        category: switchyard_core::analysis::TaskCategory::Chat,
        complexity: 0.1,
        chosen_model: "gpt-5-nano".into(),
        routing_reason: String::new(),
        provider: "openai".into(),
        model: "gpt-5-nano".into(),
        deployment: "dep-gpt-5-nano".into(),
        outcome: AttemptOutcome::Succeeded,
        usage: TokenUsage::default(),
        cost_usd,
        baseline_cost_usd: cost_usd,
        live_cost_usd: None,
        mode: switchyard_core::result::RunMode::Live,
        latency_ms: 10,
    }
}

/// `job` in `mode`, due `deadline` from now when given.
fn waiting_job(mode: JobMode, deadline: Option<chrono::Duration>) -> Job {
    Job {
        mode: Some(mode),
        deadline: deadline.map(|d| chrono::Utc::now() + d),
        ..job("acme/bu/team/open", "Summarise the attached ticket.")
    }
}

#[tokio::test]
async fn in_auto_patient_jobs_are_deferred_and_tight_ones_run_live() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::new(InProcessProvider::new()));
    e.enable_deferral();
    // 48 hours leave room for gathering (10 min), the window (24 h) and the margin (1 h).
    match e
        .process(waiting_job(
            JobMode::Auto,
            Some(chrono::Duration::hours(48)),
        ))
        .await
    {
        Outcome::Deferred(d) => {
            assert!(
                d.routing.reason.contains("deferred (auto)"),
                "{}",
                d.routing.reason
            );
            assert!(!d.deployments.is_empty() && d.reserve_usd > 0.0);
        }
        other => panic!("a patient job runs live: {other:?}"),
    }
    // Without a deadline, the node's deferred_max_delay (24 h) leaves no room.
    for deadline in [Some(chrono::Duration::minutes(30)), None] {
        let (r, _) = finished(e.process(waiting_job(JobMode::Auto, deadline)).await);
        assert_eq!(r.status, JobStatus::Succeeded);
        let reason = &r.routing.as_ref().unwrap().reason;
        assert!(
            reason.contains("live (auto): its answer is due in"),
            "{reason}"
        );
    }
    // Live stays live without a word about deferral.
    let (r, _) = finished(e.process(waiting_job(JobMode::Live, None)).await);
    assert!(!r.routing.unwrap().reason.contains("deferred"));
}

#[tokio::test]
async fn without_deferral_a_job_that_may_wait_runs_live_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::new(InProcessProvider::new()));
    let (r, _) = finished(
        e.process(waiting_job(
            JobMode::Deferred,
            Some(chrono::Duration::hours(48)),
        ))
        .await,
    );
    assert_eq!(r.status, JobStatus::Succeeded);
    let reason = r.routing.unwrap().reason;
    assert!(reason.contains("does not run deferred routing"), "{reason}");
}

/// A deferred job's admission reservation outlives its hand-off to the
/// deferred topic: a burst of deferred jobs cannot each be admitted against
/// the same headroom before a gatherer holds them. The gatherer's hold then
/// replaces it in one step, and one nobody here takes over is released after
/// a while.
#[tokio::test]
async fn deferred_jobs_keep_their_reservations_until_a_gatherer_holds_them() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), Arc::new(InProcessProvider::new()));
    e.enable_deferral();
    let node = "acme/bu/team/half";
    let mut deferred = Vec::new();
    let mut refused = None;
    for i in 0..20_000 {
        let job = Job {
            job_id: format!("d-{i}"),
            request: ChatRequest {
                max_tokens: Some(30_000),
                ..ChatRequest::from_user("Summarise the attached ticket.")
            },
            ..waiting_job(JobMode::Deferred, Some(chrono::Duration::hours(48)))
        };
        let job = Job {
            project: node.into(),
            ..job
        };
        match e.process(job).await {
            Outcome::Deferred(d) => deferred.push(d),
            other => {
                refused = Some(finished(other).0);
                break;
            }
        }
    }
    let refused = refused.expect("the budget never stopped a deferred job");
    assert_eq!(refused.status, JobStatus::Rejected, "{refused:?}");
    let reserved = e.budget_use(node).1;
    assert!(
        reserved > 0.0 && reserved <= 1.0 + 1e-9,
        "{} deferred jobs reserve {reserved} of a $1 budget",
        deferred.len()
    );
    // A gatherer here holds half of them: the count does not move.
    let (held, rest) = deferred.split_at(deferred.len() / 2);
    let holds: Vec<_> = held
        .iter()
        .map(|d| e.hold_budget(&d.job, d.reserve_usd).unwrap())
        .collect();
    let moved = e.budget_use(node).1 - reserved;
    let expected: f64 = held.iter().map(|d| d.reserve_usd).sum::<f64>()
        - held.len() as f64 * (reserved / deferred.len() as f64);
    assert!(
        (moved - expected).abs() < 1e-6,
        "moved {moved}, expected {expected}"
    );
    // Nobody here takes the rest over: released once they are stale.
    e.release_stale_handoffs(std::time::Instant::now());
    assert!(e.budget_use(node).1 > 0.0, "kept while recent");
    e.release_stale_handoffs(
        std::time::Instant::now() + switchyard_worker::HANDOFF_KEPT + Duration::from_secs(1),
    );
    let left: f64 = held.iter().map(|d| d.reserve_usd).sum();
    assert!((e.budget_use(node).1 - left).abs() < 1e-6, "{}", rest.len());
    for h in holds {
        e.settle_budget(h, 0.0);
    }
    assert!(e.budget_use(node).1.abs() < 1e-9);
}
