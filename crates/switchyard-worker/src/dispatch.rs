//! Dispatch: calling along the routing chain. For each deployment: ask its
//! circuit breaker, wait on its rate limiter (unless that would pass the
//! deadline), call, retry retryable errors with backoff, then fail over to the
//! next deployment. Every attempt is recorded; answers that fail the job's checks
//! (invalid JSON when JSON was asked for) count as failed attempts whose tokens
//! were still billed. The [`Dispatcher`] owns what this needs (deployments,
//! catalog, live health, retry policy) and knows nothing of admission or settling.

use std::sync::Arc;
use std::time::Duration;

use switchyard_core::catalog::{Catalog, ModelSpec};
use switchyard_core::health::{CallOutcome, CircuitState};
use switchyard_core::job::{Job, ResponseFormat};
use switchyard_core::result::{Attempt, AttemptOutcome, AttemptTarget, ErrorInfo, Output};
use switchyard_core::routing::{ChainEntry, DeploymentId, RoutingDecision};
use switchyard_providers::{
    CallRequest, Completion, Deployment, ProviderError, Reservation, RetryPolicy, TimeoutPhase,
};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::health::{CallSlot, HealthTable};
use crate::metrics::Metrics;

/// What the chain walk produced.
pub(crate) struct Dispatched {
    pub attempts: Vec<Attempt>,
    /// Index of the successful attempt and its output.
    pub completion: Option<(usize, Output)>,
    /// Why the job failed, when it did.
    pub error: Option<ErrorInfo>,
}

/// Calls providers along a routing chain.
pub(crate) struct Dispatcher {
    deployments: Vec<Deployment>,
    catalog: Arc<Catalog>,
    health: HealthTable,
    retry: RetryPolicy,
    /// Counts every attempt and rate-limit wait.
    metrics: Arc<Metrics>,
}

/// One job's walk along its chain: what it has tried so far.
struct Walk<'a> {
    job: &'a Job,
    deadline: Option<Instant>,
    /// Estimated prompt tokens.
    prompt_tokens: u32,
    /// The answer cap of a job that gives none (each call caps it by its
    /// model's output limit).
    default_max_tokens: u32,
    attempts: Vec<Attempt>,
    last_error: Option<ErrorInfo>,
    /// The attempt that answered, and its output.
    answer: Option<(usize, Output)>,
}

/// Where the walk goes after one deployment.
enum Next {
    /// On to the next deployment of the chain.
    FailOver,
    /// The job is answered or failed for good: stop walking.
    Done,
}

/// How one call on a deployment ended, for the retry loop.
enum Call {
    Answered,
    Retry(Duration),
    FailOver,
    Final,
}

impl Dispatcher {
    pub(crate) fn new(
        deployments: Vec<Deployment>,
        catalog: Arc<Catalog>,
        health: HealthTable,
        retry: RetryPolicy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            deployments,
            catalog,
            health,
            retry,
            metrics,
        }
    }

    /// Records an attempt on the walk and counts it for its deployment.
    fn push(&self, walk: &mut Walk<'_>, deployment: DeploymentId, attempt: Attempt) {
        self.metrics.provider_call(deployment, attempt.outcome);
        walk.attempts.push(attempt);
    }

    /// Live health of every deployment.
    pub(crate) fn health(&self) -> &HealthTable {
        &self.health
    }

    /// The deployments (deferred routing uses their batch APIs).
    pub(crate) fn deployments(&self) -> &[Deployment] {
        &self.deployments
    }

    /// Walks the decision's chain until a deployment answers, the job's deadline
    /// passes, an error says no other deployment can help, or the chain ends.
    pub(crate) async fn run(
        &self,
        job: &Job,
        decision: &RoutingDecision,
        prompt_tokens: u32,
        default_max_tokens: u32,
    ) -> Dispatched {
        let mut walk = Walk {
            job,
            deadline: deadline_of(job),
            prompt_tokens,
            default_max_tokens,
            attempts: Vec::new(),
            last_error: None,
            answer: None,
        };
        for entry in &decision.chain {
            if let Next::Done = self.try_deployment(&mut walk, entry).await {
                return walk.finish();
            }
        }
        walk.exhausted()
    }

    /// Calls one deployment, retrying as the retry policy allows.
    async fn try_deployment(&self, walk: &mut Walk<'_>, entry: &ChainEntry) -> Next {
        let Some(dep) = self.deployments.get(entry.deployment) else {
            return Next::FailOver;
        };
        let spec = self.catalog.model(entry.model);
        let to = target(dep);
        // The answer cap sent: the job's, else the default within the model's limit.
        let default_cap = walk
            .job
            .request
            .max_tokens
            .is_none()
            .then(|| walk.default_max_tokens.min(spec.max_output_tokens));
        let cap = walk.job.request.max_tokens.or(default_cap).unwrap_or(0);
        let reserve_tokens = walk.prompt_tokens.saturating_add(cap);
        let mut tries = 0u32;
        loop {
            if walk.deadline.is_some_and(|d| Instant::now() >= d) {
                walk.last_error = Some(ErrorInfo {
                    code: "deadline_exceeded".into(),
                    message: "the job's deadline passed before a provider answered".into(),
                });
                return Next::Done;
            }
            let Some(slot) = self.health.call_slot(entry.deployment) else {
                let skipped = Attempt::skipped(to, "circuit open".into());
                self.push(walk, entry.deployment, skipped);
                return Next::FailOver;
            };
            let asked = Instant::now();
            let acquired = dep.limiter.acquire(reserve_tokens, walk.deadline).await;
            self.metrics
                .rate_limit_waited(entry.deployment, asked.elapsed());
            let reservation = match acquired {
                Ok(r) => r,
                Err(refused) => {
                    // Past the deadline, paused for longer than a job waits, or
                    // larger than the deployment's token limit: the next
                    // deployment in the chain may take it.
                    slot.record(CallOutcome::Neutral);
                    let skipped = Attempt::skipped(to, refused.to_string());
                    self.push(walk, entry.deployment, skipped);
                    return Next::FailOver;
                }
            };
            tries += 1;
            let started = Instant::now();
            let outcome = call(dep, walk, default_cap, started).await;
            let latency = started.elapsed();
            let step = match outcome {
                Ok(c) => self.answered(walk, entry, spec, c, slot, reservation, latency),
                Err(e) => self.failed(walk, entry, spec, e, slot, reservation, latency, tries),
            };
            match step {
                Call::Answered | Call::Final => return Next::Done,
                Call::FailOver => return Next::FailOver,
                Call::Retry(delay) => tokio::time::sleep(delay).await,
            }
        }
    }

    /// A 2xx: usable, or billed and failed over when it fails the job's checks.
    #[allow(clippy::too_many_arguments)]
    fn answered(
        &self,
        walk: &mut Walk<'_>,
        entry: &ChainEntry,
        spec: &ModelSpec,
        c: Completion,
        slot: CallSlot<'_>,
        reservation: Reservation,
        latency: Duration,
    ) -> Call {
        let dep = &self.deployments[entry.deployment];
        dep.limiter.correct(reservation, c.usage.total());
        dep.limiter.observe(&c.rate_limit);
        let expected =
            spec.expected_latency_ms(u32::try_from(c.usage.output_tokens).unwrap_or(u32::MAX));
        let change = slot.record(CallOutcome::Success {
            latency_ms: latency.as_secs_f64() * 1000.0,
            expected_ms: expected,
        });
        log_circuit(&dep.name, change);
        let cost = spec.cost_usd(&c.usage);
        let latency_ms = latency.as_millis() as u64;
        let problem = check_output(walk.job, &c);
        let attempt = Attempt::answered(
            target(dep),
            c.status,
            latency_ms,
            c.usage,
            cost,
            problem.clone(),
        );
        self.push(walk, entry.deployment, attempt);
        if let Some(problem) = problem {
            debug!(job_id = %walk.job.job_id, deployment = %dep.name, "Answer failed the job's checks; failing over.");
            walk.last_error = Some(ErrorInfo {
                code: "invalid_output".into(),
                message: problem,
            });
            return Call::FailOver;
        }
        let index = walk.attempts.len() - 1;
        walk.last_error = None;
        walk.answer = Some((
            index,
            Output {
                content: c.content,
                finish_reason: c.finish_reason,
            },
        ));
        Call::Answered
    }

    /// A failed call: record it, slow the deployment on a 429, and decide
    /// whether to retry here, fail over, or stop.
    #[allow(clippy::too_many_arguments)]
    fn failed(
        &self,
        walk: &mut Walk<'_>,
        entry: &ChainEntry,
        spec: &ModelSpec,
        e: ProviderError,
        slot: CallSlot<'_>,
        reservation: Reservation,
        latency: Duration,
        tries: u32,
    ) -> Call {
        let dep = &self.deployments[entry.deployment];
        let health = if e.counts_against_health() {
            CallOutcome::Failure
        } else {
            CallOutcome::Neutral
        };
        log_circuit(&dep.name, slot.record(health));
        if let ProviderError::RateLimited { retry_after, .. } = &e {
            // The whole deployment slows down: for the time the provider
            // asked, or with backoff when it gave no hint.
            let pause = dep.limiter.throttled(*retry_after);
            debug!(deployment = %dep.name, ?pause, hinted = retry_after.is_some(), "Rate limited; pausing the deployment.");
        }
        let billed = e.billed();
        // A readable response settles the reservation; otherwise the
        // provider may have counted the call, so the reservation stands.
        if e.billing_known() {
            dep.limiter.correct(reservation, billed.total());
        }
        let attempt = Attempt::failed(
            target(dep),
            e.outcome(),
            e.status(),
            latency.as_millis() as u64,
            billed,
            spec.cost_usd(&billed),
            e.to_string(),
        );
        self.push(walk, entry.deployment, attempt);
        walk.last_error = Some(ErrorInfo {
            code: e.code().into(),
            message: e.to_string(),
        });
        if !e.allows_failover() {
            debug!(job_id = %walk.job.job_id, deployment = %dep.name, error = %e, "Final error; not failing over.");
            return Call::Final;
        }
        if !self.retry.may_retry(tries, &e) {
            return Call::FailOver;
        }
        let delay = self.retry.delay(tries - 1, &e);
        if walk.deadline.is_some_and(|d| Instant::now() + delay >= d) {
            return Call::FailOver;
        }
        Call::Retry(delay)
    }
}

/// One call, cut at the job's deadline.
async fn call(
    dep: &Deployment,
    walk: &Walk<'_>,
    default_max_tokens: Option<u32>,
    started: Instant,
) -> Result<Completion, ProviderError> {
    let call = CallRequest {
        request: &walk.job.request,
        api_model: &dep.api_model,
        default_max_tokens,
    };
    match walk.deadline {
        Some(d) => match tokio::time::timeout_at(d, dep.client.complete(call)).await {
            Ok(r) => r,
            Err(_) => Err(ProviderError::Timeout {
                phase: TimeoutPhase::Total,
                after: d.saturating_duration_since(started),
            }),
        },
        None => dep.client.complete(call).await,
    }
}

impl Walk<'_> {
    /// The walk stopped early: answered, past the deadline, or a final error.
    fn finish(self) -> Dispatched {
        Dispatched {
            completion: self.answer,
            error: self.last_error,
            attempts: self.attempts,
        }
    }

    /// Every deployment of the chain was tried or skipped without an answer.
    fn exhausted(self) -> Dispatched {
        let attempts = self.attempts;
        let error = match self.last_error {
            Some(e)
                if attempts
                    .iter()
                    .all(|a| a.outcome == AttemptOutcome::Skipped) =>
            {
                ErrorInfo {
                    code: "no_deployment_available".into(),
                    message: e.message,
                }
            }
            Some(e) => ErrorInfo {
                code: "all_attempts_failed".into(),
                message: format!("every deployment in the chain failed; last: {}", e.message),
            },
            None => ErrorInfo {
                code: "no_deployment_available".into(),
                message: format!(
                    "no deployment could take the call: {}",
                    attempts
                        .iter()
                        .filter_map(|a| a.error.as_deref())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            },
        };
        Dispatched {
            attempts,
            completion: None,
            error: Some(error),
        }
    }
}

fn target(dep: &Deployment) -> AttemptTarget<'_> {
    AttemptTarget {
        deployment: &dep.name,
        provider: &dep.provider,
        model: &dep.model,
    }
}

fn deadline_of(job: &Job) -> Option<Instant> {
    job.deadline.map(|d| {
        let left = (d - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Instant::now() + left
    })
}

/// Why an answer is unusable, if it is.
pub(crate) fn check_output(job: &Job, c: &Completion) -> Option<String> {
    if job.request.response_format == ResponseFormat::JsonObject {
        let text = c.content.trim();
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(text);
        return match parsed {
            Ok(v) if v.is_object() => None,
            Ok(_) => Some("JSON was required but the answer is not a JSON object".into()),
            Err(e) => Some(format!(
                "JSON was required but the answer does not parse: {e}"
            )),
        };
    }
    None
}

fn log_circuit(deployment: &str, change: Option<CircuitState>) {
    match change {
        Some(CircuitState::Open) => warn!(
            deployment,
            "Circuit opened: traffic moves to other deployments."
        ),
        Some(CircuitState::Closed) => {
            info!(deployment, "Circuit closed: deployment healthy again.")
        }
        Some(CircuitState::HalfOpen { .. }) => info!(deployment, "Circuit half-open: probing."),
        None => {}
    }
}
