//! Calling along the routing chain: for each deployment, ask its circuit breaker,
//! wait on its rate limiter (unless that would pass the deadline), call, retry
//! retryable errors with backoff, then fail over to the next deployment. Every
//! attempt is recorded; answers that fail the job's checks (invalid JSON when JSON
//! was asked for) count as failed attempts whose tokens were still billed.

use std::time::Duration;

use switchyard_core::health::{CallOutcome, CircuitState};
use switchyard_core::job::{Job, ResponseFormat};
use switchyard_core::result::{Attempt, AttemptOutcome, ErrorInfo, Output, TokenUsage};
use switchyard_core::routing::RoutingDecision;
use switchyard_providers::{CallRequest, Completion, ProviderError};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::engine::Engine;

/// What the chain walk produced.
pub(crate) struct Dispatched {
    pub attempts: Vec<Attempt>,
    /// Index of the successful attempt and its output.
    pub completion: Option<(usize, Output)>,
    /// Why the job failed, when it did.
    pub error: Option<ErrorInfo>,
}

fn deadline_of(job: &Job) -> Option<Instant> {
    job.deadline.map(|d| {
        let left = (d - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
        Instant::now() + left
    })
}

/// Why an answer is unusable, if it is.
fn check_output(job: &Job, c: &Completion) -> Option<String> {
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

pub(crate) async fn run(
    engine: &Engine,
    job: &Job,
    decision: &RoutingDecision,
    prompt_tokens: u32,
) -> Dispatched {
    let deadline = deadline_of(job);
    let mut attempts: Vec<Attempt> = Vec::new();
    let mut last_error: Option<ErrorInfo> = None;
    let reserve_tokens = prompt_tokens.saturating_add(job.request.max_tokens.unwrap_or(512));

    for entry in &decision.chain {
        let Some(dep) = engine.deployments.get(entry.deployment) else {
            continue;
        };
        let spec = engine.catalog.model(entry.model);
        let skipped = |reason: String| Attempt {
            deployment: dep.name.clone(),
            provider: dep.provider.clone(),
            model: dep.model.clone(),
            outcome: AttemptOutcome::Skipped,
            status_code: None,
            latency_ms: 0,
            usage: TokenUsage::default(),
            cost_usd: 0.0,
            error: Some(reason),
        };
        let call = CallRequest {
            request: &job.request,
            api_model: &dep.api_model,
        };
        let mut tries = 0u32;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                last_error = Some(ErrorInfo {
                    code: "deadline_exceeded".into(),
                    message: "the job's deadline passed before a provider answered".into(),
                });
                return Dispatched {
                    attempts,
                    completion: None,
                    error: last_error,
                };
            }
            if !engine.health.try_acquire(entry.deployment) {
                attempts.push(skipped("circuit open".into()));
                break;
            }
            let reservation = match dep.limiter.acquire(reserve_tokens, deadline).await {
                Ok(r) => r,
                Err(refused) => {
                    // Past the deadline, or larger than the deployment's token limit:
                    // the next deployment in the chain may take it.
                    engine.health.record(entry.deployment, CallOutcome::Neutral);
                    attempts.push(skipped(refused.to_string()));
                    break;
                }
            };
            tries += 1;
            let started = Instant::now();
            let outcome = match deadline {
                Some(d) => match tokio::time::timeout_at(d, dep.client.complete(call)).await {
                    Ok(r) => r,
                    Err(_) => Err(ProviderError::Timeout {
                        phase: switchyard_providers::TimeoutPhase::Total,
                        after: d.saturating_duration_since(started),
                    }),
                },
                None => dep.client.complete(call).await,
            };
            let latency = started.elapsed();
            let latency_ms = latency.as_millis() as u64;
            match outcome {
                Ok(c) => {
                    dep.limiter.correct(reservation, c.usage.total());
                    dep.limiter.observe(&c.rate_limit);
                    let expected = spec.expected_latency_ms(
                        u32::try_from(c.usage.output_tokens).unwrap_or(u32::MAX),
                    );
                    let change = engine.health.record(
                        entry.deployment,
                        CallOutcome::Success {
                            latency_ms: latency.as_secs_f64() * 1000.0,
                            expected_ms: expected,
                        },
                    );
                    log_circuit(&dep.name, change);
                    let cost = spec.cost_usd(&c.usage);
                    if let Some(problem) = check_output(job, &c) {
                        attempts.push(Attempt {
                            deployment: dep.name.clone(),
                            provider: dep.provider.clone(),
                            model: dep.model.clone(),
                            outcome: AttemptOutcome::InvalidOutput,
                            status_code: Some(c.status),
                            latency_ms,
                            usage: c.usage,
                            cost_usd: cost,
                            error: Some(problem.clone()),
                        });
                        debug!(job_id = %job.job_id, deployment = %dep.name, "Answer failed the job's checks; failing over.");
                        last_error = Some(ErrorInfo {
                            code: "invalid_output".into(),
                            message: problem,
                        });
                        break;
                    }
                    attempts.push(Attempt {
                        deployment: dep.name.clone(),
                        provider: dep.provider.clone(),
                        model: dep.model.clone(),
                        outcome: AttemptOutcome::Succeeded,
                        status_code: Some(c.status),
                        latency_ms,
                        usage: c.usage,
                        cost_usd: cost,
                        error: None,
                    });
                    let index = attempts.len() - 1;
                    return Dispatched {
                        attempts,
                        completion: Some((
                            index,
                            Output {
                                content: c.content,
                                finish_reason: c.finish_reason,
                            },
                        )),
                        error: None,
                    };
                }
                Err(e) => {
                    let health = if e.counts_against_health() {
                        CallOutcome::Failure
                    } else {
                        CallOutcome::Neutral
                    };
                    log_circuit(&dep.name, engine.health.record(entry.deployment, health));
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
                    attempts.push(Attempt {
                        deployment: dep.name.clone(),
                        provider: dep.provider.clone(),
                        model: dep.model.clone(),
                        outcome: e.outcome(),
                        status_code: e.status(),
                        latency_ms,
                        usage: billed,
                        cost_usd: spec.cost_usd(&billed),
                        error: Some(e.to_string()),
                    });
                    last_error = Some(ErrorInfo {
                        code: error_code(&e).into(),
                        message: e.to_string(),
                    });
                    if !e.allows_failover() {
                        debug!(job_id = %job.job_id, deployment = %dep.name, error = %e, "Final error; not failing over.");
                        return Dispatched {
                            attempts,
                            completion: None,
                            error: last_error,
                        };
                    }
                    if !engine.backoff.may_retry(tries, &e) {
                        break;
                    }
                    let delay = engine.backoff.delay(tries - 1, &e);
                    if deadline.is_some_and(|d| Instant::now() + delay >= d) {
                        break;
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
    let error = match last_error {
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

fn error_code(e: &ProviderError) -> &'static str {
    match e {
        ProviderError::RateLimited { .. } => "rate_limited",
        ProviderError::QuotaExhausted { .. } => "quota_exhausted",
        ProviderError::Server { .. } => "provider_error",
        ProviderError::Timeout { .. } => "timeout",
        ProviderError::Connection(_) => "connection_failed",
        ProviderError::InvalidRequest { .. } => "invalid_request",
        ProviderError::Auth { .. } => "authentication_failed",
        ProviderError::Refused { .. } => "refused",
        ProviderError::Decode(_) => "unreadable_response",
    }
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
