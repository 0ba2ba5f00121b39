//! Providers that answer what no well-behaved provider answers: headers that
//! would overflow a duration, day-long Retry-After, retired models (404),
//! redirects to another origin, bodies that never end or trickle, and a stop
//! sequence Anthropic refuses. None of it may panic a task, park a job for a
//! day, send a key off-origin or fail a job that a healthy second deployment of
//! the same model can serve.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_core::catalog::Api;
use switchyard_core::config::{LoadedPipeline, Timeouts};
use switchyard_core::job::{ChatRequest, Job};
use switchyard_core::result::{AttemptOutcome, JobStatus};
use switchyard_providers::wire::{self, MAX_HINT};
use switchyard_providers::{
    ApiKey, BuildOptions, CallRequest, Completion, HttpProvider, Provider, ProviderError,
    build_deployments_with,
};
use switchyard_sim::hostile::{Answer, Body, HostileServer, Received};
use switchyard_worker::{Engine, Outcome};

use common::path;

const KEY: &str = "sk-hostile-test-key-0123456789";

fn timeouts(total: Duration) -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        first_byte: Duration::from_secs(5),
        total,
    }
}

fn provider(api: Api, base: &str, total: Duration) -> HttpProvider {
    HttpProvider::new(
        wire::for_api(api),
        Some(base),
        Some(ApiKey::new(KEY.into())),
        timeouts(total),
    )
    .unwrap()
}

async fn call(p: &HttpProvider, request: &ChatRequest) -> Result<Completion, ProviderError> {
    p.complete(CallRequest {
        request,
        api_model: "m",
        default_max_tokens: None,
    })
    .await
}

fn hello() -> ChatRequest {
    ChatRequest {
        max_tokens: Some(32),
        ..ChatRequest::from_user("Say hello.")
    }
}

/// A 200 in each wire format with `text` as the answer.
fn ok(api: Api, text: &str) -> Answer {
    let body = match api {
        Api::Anthropic => json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 10, "output_tokens": 5}
        }),
        Api::Gemini => json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15}
        }),
        Api::Openai | Api::OpenaiCompatible => json!({
            "id": "c1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        }),
    };
    Answer::json(200, body)
}

async fn server(
    script: impl Fn(usize, &Received) -> Answer + Send + Sync + 'static,
) -> HostileServer {
    HostileServer::start(Arc::new(script)).await.unwrap()
}

#[tokio::test]
async fn headers_that_would_overflow_a_duration_never_panic_and_are_capped() {
    for value in ["inf", "1e20", "NaN", "-3", "184467440737095516160"] {
        let s = server(move |_, _| {
            Answer::json(
                429,
                json!({"error": {"message": "slow down", "type": "rate_limit"}}),
            )
            .with_header("retry-after", value)
        })
        .await;
        let p = provider(Api::Openai, &s.url(), Duration::from_secs(5));
        match call(&p, &hello()).await {
            Err(ProviderError::RateLimited { retry_after, .. }) => {
                assert!(
                    retry_after.is_none_or(|d| d <= MAX_HINT),
                    "{value}: {retry_after:?}"
                )
            }
            other => panic!("{value}: {other:?}"),
        }
    }
    // On a 200, as OpenAI sends them.
    let s = server(|_, _| {
        ok(Api::Openai, "hi")
            .with_header("x-ratelimit-remaining-requests", "0")
            .with_header("x-ratelimit-reset-requests", "99999999999999999999h")
            .with_header("x-ratelimit-reset-tokens", "infs")
    })
    .await;
    let p = provider(Api::Openai, &s.url(), Duration::from_secs(5));
    let c = call(&p, &hello()).await.unwrap();
    assert_eq!(c.rate_limit.reset_requests, Some(MAX_HINT));
    assert_eq!(c.rate_limit.reset_tokens, None);
}

#[tokio::test]
async fn a_redirect_is_not_followed_so_no_key_reaches_another_origin() {
    for api in [Api::Anthropic, Api::Gemini, Api::Openai] {
        let elsewhere = server(move |_, _| ok(api, "you should not be here")).await;
        let target = format!("{}/v1/messages", elsewhere.url());
        let origin = server(move |_, _| Answer {
            status: 307,
            headers: vec![("location".into(), target.clone())],
            body: Body::Bytes(Vec::new()),
        })
        .await;
        let p = provider(api, &origin.url(), Duration::from_secs(5));
        let e = call(&p, &hello()).await.unwrap_err();
        assert!(
            matches!(e, ProviderError::Unservable { status: 307, .. }),
            "{api:?}: {e:?}"
        );
        assert!(e.allows_failover() && e.counts_against_health());
        assert!(e.to_string().contains("redirect"), "{e}");
        assert_eq!(origin.received().len(), 1);
        assert!(
            elsewhere.received().is_empty(),
            "{api:?}: the redirect was followed, carrying the key"
        );
    }
}

#[tokio::test]
async fn whitespace_only_stop_sequences_are_applied_here_for_anthropic() {
    // Answers as Anthropic does: 400 for a whitespace-only stop sequence.
    let anthropic = server(|_, r: &Received| {
        let stops = r.json().unwrap()["stop_sequences"].clone();
        let refused = stops
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s.as_str().unwrap().trim().is_empty()));
        if refused {
            return Answer::json(
                400,
                json!({"type": "error", "error": {"type": "invalid_request_error", "message": "stop_sequences: each stop sequence must contain non-whitespace"}}),
            );
        }
        ok(Api::Anthropic, "First paragraph.\n\nSecond paragraph END more")
    })
    .await;
    let request = ChatRequest {
        stop: vec!["\n\n".into(), "END".into()],
        ..hello()
    };
    let p = provider(Api::Anthropic, &anthropic.url(), Duration::from_secs(5));
    let c = call(&p, &request).await.unwrap();
    assert_eq!(c.content, "First paragraph.");
    assert_eq!(c.finish_reason, "stop");
    let sent = anthropic.received()[0].json().unwrap();
    assert_eq!(
        sent["stop_sequences"],
        json!(["END"]),
        "the rest is sent as is"
    );

    // OpenAI and Gemini accept it: it is sent, and they stop there themselves.
    for api in [Api::Openai, Api::Gemini] {
        let s = server(move |_, _| ok(api, "First paragraph.")).await;
        let p = provider(api, &s.url(), Duration::from_secs(5));
        let c = call(&p, &request).await.unwrap();
        assert_eq!(c.content, "First paragraph.");
        let body = String::from_utf8(s.received()[0].body.clone()).unwrap();
        assert!(body.contains(r#""\n\n""#), "{api:?}: {body}");
    }
}

#[tokio::test]
async fn the_simulated_anthropic_refuses_whitespace_stops_and_the_adapter_copes() {
    let catalog = switchyard_loader::load_catalog(&path("pipelines/models.toml")).unwrap();
    let mut config = switchyard_sim::SimConfig::from_catalog(&catalog);
    config.time_scale = 0.001;
    let sim = switchyard_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let p = provider(
        Api::Anthropic,
        &sim.base_url(Api::Anthropic),
        Duration::from_secs(10),
    );
    let request = ChatRequest {
        stop: vec!["\n\n".into()],
        ..hello()
    };
    let answered = p
        .complete(CallRequest {
            request: &request,
            api_model: "claude-haiku-5-5",
            default_max_tokens: None,
        })
        .await;
    assert!(answered.is_ok(), "{answered:?}");
}

#[tokio::test]
async fn enormous_and_trickling_bodies_are_refused_or_cut_not_buffered() {
    // 100 MB announced: refused from the header.
    let announced = server(|_, _| Answer {
        status: 200,
        headers: vec![],
        body: Body::Trickle {
            total: 100 << 20,
            chunk: 1 << 20,
            every: Duration::ZERO,
            announce: true,
        },
    })
    .await;
    let p = provider(Api::Openai, &announced.url(), Duration::from_secs(30));
    let e = call(&p, &hello()).await.unwrap_err();
    assert!(matches!(e, ProviderError::Decode(_)), "{e:?}");
    assert!(e.to_string().contains("more than"), "{e}");
    // 100 MB unannounced: cut once past the limit.
    let unannounced = server(|_, _| Answer {
        status: 200,
        headers: vec![],
        body: Body::Trickle {
            total: 100 << 20,
            chunk: 1 << 20,
            every: Duration::ZERO,
            announce: false,
        },
    })
    .await;
    let p = provider(Api::Openai, &unannounced.url(), Duration::from_secs(30));
    let e = call(&p, &hello()).await.unwrap_err();
    assert!(matches!(e, ProviderError::Decode(_)), "{e:?}");
    // A body that trickles is cut at the total timeout.
    let slow = server(|_, _| Answer {
        status: 200,
        headers: vec![],
        body: Body::Trickle {
            total: 1000,
            chunk: 10,
            every: Duration::from_millis(100),
            announce: true,
        },
    })
    .await;
    let p = provider(Api::Openai, &slow.url(), Duration::from_secs(1));
    let started = Instant::now();
    let e = call(&p, &hello()).await.unwrap_err();
    assert!(matches!(e, ProviderError::Timeout { .. }), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// A pipeline serving `gpt-5-nano` from two deployments, at these base URLs.
fn two_deployments(dir: &Path, first: &str, second: &str, extra: &str) -> LoadedPipeline {
    let text = format!(
        r#"catalog = "{catalog}"
org = "{org}"
[kafka]
brokers = "127.0.0.1:9092"
[routing]
baseline_model = "claude-opus-5-5"
[routing.retry]
attempts_per_deployment = 2
base_backoff = "10ms"
max_backoff = "50ms"
[[deployments]]
name = "first"
model = "gpt-5-nano"
base_url = "{first}"
api_key_env = "UNUSED"
{extra}
[[deployments]]
name = "second"
model = "gpt-5-nano"
base_url = "{second}"
api_key_env = "UNUSED"
{extra}
"#,
        catalog = path("pipelines/models.toml").display(),
        org = path("pipelines/org.toml").display(),
    );
    let p = dir.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    switchyard_loader::load_pipeline(&p, &[]).unwrap()
}

fn engine(pipeline: &LoadedPipeline) -> Engine {
    let deployments = build_deployments_with(
        &pipeline.config,
        &pipeline.catalog,
        &BuildOptions {
            key_override: Some(ApiKey::new(KEY.into())),
            ..BuildOptions::default()
        },
    )
    .unwrap();
    Engine::new(pipeline, deployments).unwrap()
}

fn pinned(i: usize) -> Job {
    Job {
        model: Some("gpt-5-nano".into()),
        ..Job::new(
            format!("pinned-{i}"),
            "acme/retail/support/ticket-triage",
            hello(),
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_model_on_one_deployment_fails_over_and_opens_its_circuit() {
    let retired = server(|_, _| {
        Answer::json(
            404,
            json!({"error": {"message": "The model `gpt-5-nano` does not exist", "type": "invalid_request_error", "code": "model_not_found"}}),
        )
    })
    .await;
    let healthy = server(|_, _| ok(Api::Openai, "fine")).await;
    let dir = tempfile::tempdir().unwrap();
    let p = two_deployments(dir.path(), &retired.url(), &healthy.url(), "");
    let engine = engine(&p);
    for i in 0..20 {
        let Outcome::Finished { result, .. } = engine.process(pinned(i)).await else {
            panic!("held")
        };
        assert_eq!(result.status, JobStatus::Succeeded, "{result:?}");
        assert_eq!(result.attempts.last().unwrap().deployment, "second");
    }
    // Its circuit opened: later jobs go to the second deployment without
    // calling the first.
    let calls = retired.received().len();
    assert!(
        calls < 20,
        "the retired deployment was called {calls} times"
    );
    let Outcome::Finished { result, .. } = engine.process(pinned(99)).await else {
        panic!("held")
    };
    assert_eq!(result.status, JobStatus::Succeeded);
    assert!(
        result
            .attempts
            .iter()
            .all(|a| a.deployment == "second" || a.outcome == AttemptOutcome::Skipped),
        "{result:?}"
    );
    assert_eq!(retired.received().len(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_long_retry_after_fails_over_at_once_instead_of_parking_the_job() {
    let paused = server(|_, _| {
        Answer::json(
            429,
            json!({"error": {"message": "slow down", "type": "rate_limit"}}),
        )
        .with_header("retry-after", "86400")
    })
    .await;
    let healthy = server(|_, _| ok(Api::Openai, "fine")).await;
    let dir = tempfile::tempdir().unwrap();
    let p = two_deployments(dir.path(), &paused.url(), &healthy.url(), "");
    let engine = engine(&p);
    let started = Instant::now();
    for i in 0..5 {
        let Outcome::Finished { result, .. } = engine.process(pinned(i)).await else {
            panic!("held")
        };
        assert_eq!(result.status, JobStatus::Succeeded, "{result:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "jobs waited on the paused deployment: {:?}",
        started.elapsed()
    );
    assert_eq!(
        paused.received().len(),
        1,
        "the paused deployment is skipped after its 429"
    );
}

#[tokio::test]
async fn plain_http_to_another_machine_with_a_key_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let p = two_deployments(
        dir.path(),
        "http://10.20.30.40:8000/v1",
        "https://api.example.com/v1",
        "",
    );
    let e = build_deployments_with(
        &p.config,
        &p.catalog,
        &BuildOptions {
            key_override: Some(ApiKey::new(KEY.into())),
            ..BuildOptions::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.deployment, "first");
    assert!(e.to_string().contains("allow_insecure"), "{e}");
    assert!(!e.to_string().contains(KEY));
    let p = two_deployments(
        dir.path(),
        "http://10.20.30.40:8000/v1",
        "https://api.example.com/v1",
        "allow_insecure = true",
    );
    assert!(
        build_deployments_with(
            &p.config,
            &p.catalog,
            &BuildOptions {
                key_override: Some(ApiKey::new(KEY.into())),
                ..BuildOptions::default()
            },
        )
        .is_ok()
    );
}
