//! The walk along the routing chain, with scripted providers: a rate-limit wait
//! that would pass the job's deadline skips to the next deployment, a call larger
//! than a deployment's whole token limit fails over at once, retries stop at the
//! deadline instead of sleeping past it, and a 429 without any hint slows the
//! whole deployment, not only the job that met it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_core::job::{ChatRequest, Job};
use switchyard_core::result::{AttemptOutcome, JobResult, JobStatus};
use switchyard_core::routing::Strategy;
use switchyard_providers::{
    BoxFuture, CallRequest, Completion, Deployment, DeploymentLimiter, Provider, ProviderError,
};
use switchyard_sim::InProcessProvider;
use switchyard_worker::{Engine, Outcome};
use tokio::time::Instant;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const PRIMARY: &str = "gpt-5-nano";
const FALLBACK: &str = "claude-haiku-5-5";

fn engine(
    dir: &Path,
    retry: &str,
    deployments: Vec<(DeploymentLimiter, Arc<dyn Provider>)>,
) -> Engine {
    std::fs::write(
        dir.join("org.toml"),
        "[org]\nname = \"acme\"\n[[node]]\npath = \"acme/bu\"\n[[node]]\npath = \"acme/bu/team\"\n[[node]]\npath = \"acme/bu/team/app\"\n",
    )
    .unwrap();
    let config = format!(
        "catalog = \"{}\"\norg = \"org.toml\"\n[kafka]\nbrokers = \"x:1\"\n[routing]\nbaseline_model = \"claude-opus-5-5\"\n[routing.retry]\n{retry}\n[[deployments]]\nname = \"unused\"\nmodel = \"gpt-5-nano\"\n",
        root().join("pipelines/models.toml").display()
    );
    std::fs::write(dir.join("pipeline.toml"), config).unwrap();
    let p = switchyard_loader::load_pipeline(&dir.join("pipeline.toml"), &[]).unwrap();
    let deployments = deployments
        .into_iter()
        .zip([("primary", PRIMARY), ("fallback", FALLBACK)])
        .map(|((limiter, client), (name, model))| {
            let spec = p.catalog.get(model).unwrap();
            Deployment {
                name: name.into(),
                model: model.into(),
                provider: spec.provider.clone(),
                api_model: spec.api_model.clone(),
                client,
                batch: None,
                limiter,
            }
        })
        .collect();
    Engine::new(&p, deployments).unwrap()
}

fn dep(
    limiter: DeploymentLimiter,
    client: Arc<dyn Provider>,
) -> (DeploymentLimiter, Arc<dyn Provider>) {
    (limiter, client)
}

/// A job routed cost-first between the two models: gpt-5-nano, then claude-haiku-5-5.
fn job(id: &str, deadline: Option<Duration>) -> Job {
    let mut j = Job::new(
        id,
        "acme/bu/team/app",
        ChatRequest {
            max_tokens: Some(200),
            ..ChatRequest::from_user("Classify this ticket: the invoice total is wrong.")
        },
    );
    j.allowed_models = vec![PRIMARY.into(), FALLBACK.into()];
    j.strategy = Some(Strategy::CostFirst);
    j.deadline = deadline.map(|d| chrono::Utc::now() + chrono::Duration::from_std(d).unwrap());
    j
}

fn result(o: Outcome) -> JobResult {
    match o {
        Outcome::Finished { result, .. } => *result,
        Outcome::Held { reason, .. } => panic!("held: {reason}"),
        Outcome::Deferred(d) => panic!("deferred: {}", d.job.job_id),
    }
}

/// Answers with the given errors first, then like the simulator; records when it was called.
struct Scripted {
    errors: Mutex<Vec<ProviderError>>,
    calls: Mutex<Vec<Instant>>,
}

impl Scripted {
    fn new(errors: Vec<ProviderError>) -> Arc<Self> {
        Arc::new(Self {
            errors: Mutex::new(errors),
            calls: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }
}

impl Provider for Scripted {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    fn complete<'a>(
        &'a self,
        call: CallRequest<'a>,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(Instant::now());
            let next = {
                let mut errors = self.errors.lock().unwrap();
                (!errors.is_empty()).then(|| errors.remove(0))
            };
            match next {
                Some(e) => Err(e),
                None => InProcessProvider::new().complete(call).await,
            }
        })
    }
}

fn rate_limited(retry_after: Option<Duration>) -> ProviderError {
    ProviderError::RateLimited {
        status: 429,
        message: "Rate limit reached".into(),
        retry_after,
    }
}

#[tokio::test]
async fn a_rate_limit_wait_past_the_deadline_skips_to_the_next_deployment() {
    let dir = tempfile::tempdir().unwrap();
    // Two requests per minute: one at once, the next a minute later.
    let e = engine(
        dir.path(),
        "",
        vec![
            dep(
                DeploymentLimiter::new(Some(2), None, 1.0),
                Arc::new(InProcessProvider::new()),
            ),
            dep(
                DeploymentLimiter::unlimited(),
                Arc::new(InProcessProvider::new()),
            ),
        ],
    );
    let first = result(e.process(job("first", None)).await);
    assert_eq!(first.model.as_deref(), Some(PRIMARY), "{:?}", first.error);
    let started = Instant::now();
    let second = result(e.process(job("second", Some(Duration::from_secs(5)))).await);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "it did not wait"
    );
    assert_eq!(second.status, JobStatus::Succeeded);
    assert_eq!(second.model.as_deref(), Some(FALLBACK));
    let skipped = &second.attempts[0];
    assert_eq!(
        (skipped.deployment.as_str(), skipped.outcome),
        ("primary", AttemptOutcome::Skipped)
    );
    let reason = skipped.error.as_deref().unwrap();
    assert!(reason.contains("past the job's deadline"), "{reason}");
    assert_eq!(second.attempts[1].deployment, "fallback");
}

#[tokio::test]
async fn a_call_larger_than_the_whole_token_limit_fails_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(
        dir.path(),
        "",
        vec![
            dep(
                DeploymentLimiter::new(None, Some(1_000), 1.0),
                Arc::new(InProcessProvider::new()),
            ),
            dep(
                DeploymentLimiter::unlimited(),
                Arc::new(InProcessProvider::new()),
            ),
        ],
    );
    let mut big = job("big", None);
    big.request.max_tokens = Some(4_000);
    let started = Instant::now();
    let r = result(e.process(big).await);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(r.status, JobStatus::Succeeded);
    assert_eq!(r.model.as_deref(), Some(FALLBACK));
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::Skipped);
    let reason = r.attempts[0].error.as_deref().unwrap();
    assert!(
        reason.contains("more than this deployment's limit of 1000 tokens"),
        "{reason}"
    );
    // A job that fits still goes to the primary.
    let r = result(e.process(job("small", None)).await);
    assert_eq!(r.model.as_deref(), Some(PRIMARY));
}

#[tokio::test]
async fn retries_stop_at_the_deadline_instead_of_sleeping_past_it() {
    let dir = tempfile::tempdir().unwrap();
    // The provider asks for 30 s; the job has 6 s (enough for the routing to
    // expect gpt-5-nano to answer in time). Five attempts are allowed.
    let primary = Scripted::new(vec![rate_limited(Some(Duration::from_secs(30))); 5]);
    let fallback = Scripted::new(vec![]);
    let e = engine(
        dir.path(),
        "attempts_per_deployment = 5\nbase_backoff = \"10ms\"\nmax_backoff = \"50ms\"",
        vec![
            dep(DeploymentLimiter::unlimited(), primary.clone()),
            dep(DeploymentLimiter::unlimited(), fallback.clone()),
        ],
    );
    let started = Instant::now();
    let r = result(
        e.process(job("impatient", Some(Duration::from_secs(6))))
            .await,
    );
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "no sleep towards the 30 s: {:?}",
        started.elapsed()
    );
    assert_eq!(primary.calls().len(), 1, "no retry that could only fail");
    assert_eq!(r.attempts[0].outcome, AttemptOutcome::RateLimited);
    assert_eq!(r.status, JobStatus::Succeeded, "the fallback answered");
    assert_eq!(r.model.as_deref(), Some(FALLBACK));

    // Without a fallback, the job fails at once with the provider's reason.
    let primary = Scripted::new(vec![rate_limited(Some(Duration::from_secs(30))); 5]);
    let e = engine(
        dir.path(),
        "attempts_per_deployment = 5",
        vec![dep(DeploymentLimiter::unlimited(), primary.clone())],
    );
    let mut alone = job("alone", Some(Duration::from_secs(6)));
    alone.allowed_models = vec![PRIMARY.into()];
    let started = Instant::now();
    let r = result(e.process(alone).await);
    assert!(started.elapsed() < Duration::from_millis(800));
    assert_eq!(r.status, JobStatus::Failed);
    assert_eq!(primary.calls().len(), 1);
    let error = r.error.unwrap();
    assert!(
        error.message.contains("Rate limit reached"),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn a_429_without_a_hint_slows_the_whole_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let primary = Scripted::new(vec![rate_limited(None)]);
    let e = Arc::new(engine(
        dir.path(),
        "attempts_per_deployment = 3\nbase_backoff = \"1ms\"\nmax_backoff = \"1ms\"",
        vec![dep(DeploymentLimiter::unlimited(), primary.clone())],
    ));
    let solo = |id: &str| {
        let mut j = job(id, None);
        j.allowed_models = vec![PRIMARY.into()];
        j
    };
    let a = {
        let e = e.clone();
        let j = solo("a");
        tokio::spawn(async move { result(e.process(j).await) })
    };
    // Job b arrives after a met the 429 but before the pause ends.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let b = result(e.process(solo("b")).await);
    let a = a.await.unwrap();
    assert_eq!(
        (a.status, b.status),
        (JobStatus::Succeeded, JobStatus::Succeeded)
    );
    assert_eq!(a.attempts[0].outcome, AttemptOutcome::RateLimited);
    assert_eq!(b.attempts.len(), 1, "b met no 429 itself");
    let calls = primary.calls();
    assert_eq!(calls.len(), 3);
    // The deployment paused 250-500 ms (a half to the whole of the first
    // backoff step for a one-minute window): both a's retry and b waited,
    // though their own retry backoff is 1 ms and b never saw a 429.
    for later in &calls[1..] {
        let gap = *later - calls[0];
        assert!(
            gap >= Duration::from_millis(240) && gap < Duration::from_millis(700),
            "{gap:?}"
        );
    }
}
