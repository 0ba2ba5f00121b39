//! The simulator's edge behaviours over real HTTP, against the real adapters:
//! slow first bytes and slow bodies cut by the right timeout, rate-limit hints
//! given only by reset headers (or not at all), parameters reasoning models
//! refuse, invalid keys quoted by the provider and scrubbed by the adapter, and
//! the count of requests in flight.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{FORMATS, always, assert_same_shape, call, call_with, chat, fixture, post, sim};
use serde_json::Value;
use switchyard_core::catalog::{Api, RequestParam};
use switchyard_core::config::Timeouts;
use switchyard_providers::wire::for_api;
use switchyard_providers::{
    ApiKey, CallRequest, Completion, HttpProvider, Provider, ProviderError, TimeoutPhase,
};
use switchyard_sim::{ModelBehaviour, RateLimitHint, SimConfig, SimHandle};
use tokio::time::Instant;

/// Real time, with these models.
fn real_time(models: &[(&str, ModelBehaviour)]) -> SimConfig {
    let mut config = SimConfig::default();
    for (m, b) in models {
        config.models.insert((*m).to_owned(), b.clone());
    }
    config
}

/// Calls `model` in every wire format and asserts that each call is cut by the
/// `phase` timeout after a time within `took`.
async fn assert_cut_in_every_format(
    sim: &SimHandle,
    model: &str,
    timeouts: Timeouts,
    phase: TimeoutPhase,
    took: std::ops::Range<Duration>,
) {
    for (api, name) in FORMATS {
        let started = Instant::now();
        let err = call_with(sim, api, model, &chat(0, None), timeouts)
            .await
            .unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(&err, ProviderError::Timeout { phase: p, .. } if *p == phase),
            "{name}: {err}"
        );
        assert!(took.contains(&elapsed), "{name}: {elapsed:?}");
    }
}

#[tokio::test]
async fn a_slow_first_byte_is_cut_by_the_first_byte_timeout() {
    let sim = sim(real_time(&[
        (
            "sluggish",
            always(|b| {
                b.slow_first_byte_rate = 1.0;
                b.slow_first_byte = Duration::from_secs(5);
            }),
        ),
        (
            "late",
            always(|b| {
                b.slow_first_byte_rate = 1.0;
                b.slow_first_byte = Duration::from_millis(400);
            }),
        ),
    ]))
    .await;
    let timeouts = Timeouts {
        first_byte: Duration::from_millis(300),
        total: Duration::from_secs(10),
        ..Timeouts::default()
    };
    assert_cut_in_every_format(
        &sim,
        "sluggish",
        timeouts,
        TimeoutPhase::FirstByte,
        Duration::from_millis(290)..Duration::from_millis(1500),
    )
    .await;
    // A patient client gets the answer, late.
    let started = Instant::now();
    let done = call(&sim, Api::Openai, "late", &chat(0, None))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(390));
    assert!(done.usage.output_tokens > 0);
    assert_eq!(sim.stats().model("late").successes, 1);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_slow_body_is_cut_by_the_total_timeout_not_the_first_byte_one() {
    let sim = sim(real_time(&[
        (
            "trickle",
            always(|b| {
                b.slow_body_rate = 1.0;
                b.slow_body = Duration::from_secs(5);
            }),
        ),
        (
            "dribble",
            always(|b| {
                b.slow_body_rate = 1.0;
                b.slow_body = Duration::from_millis(600);
            }),
        ),
    ]))
    .await;
    // Headers come at once, the body over 5 s: the total timeout cuts it.
    let timeouts = Timeouts {
        first_byte: Duration::from_millis(500),
        total: Duration::from_millis(900),
        ..Timeouts::default()
    };
    assert_cut_in_every_format(
        &sim,
        "trickle",
        timeouts,
        TimeoutPhase::Total,
        Duration::from_millis(880)..Duration::from_millis(2000),
    )
    .await;
    // The pieces do arrive, headers first.
    let client = reqwest::Client::new();
    let started = Instant::now();
    let r = post(
        &client,
        &sim,
        Api::Openai,
        "dribble",
        &fixture("openai", "request_basic"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "headers on time"
    );
    let body: Value = r.json().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500), "body late");
    assert_eq!(body["object"], "chat.completion");
    let done = call(&sim, Api::Anthropic, "dribble", &chat(0, None))
        .await
        .unwrap();
    assert!(!done.content.is_empty());
    assert_eq!(sim.stats().model("dribble").slow_bodies, 2);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn reset_headers_alone_tell_the_adapters_when_to_retry() {
    let hinted = |hint| {
        always(move |b| {
            b.rate_limit_rate = 1.0;
            b.retry_after = Duration::from_secs(3);
            b.rate_limit_hint = hint;
        })
    };
    let sim = sim(real_time(&[
        ("reset-only", hinted(RateLimitHint::ResetHeaders)),
        ("no-hint", hinted(RateLimitHint::None)),
    ]))
    .await;
    let client = reqwest::Client::new();
    for (api, name) in FORMATS {
        let request = fixture(name, "request_basic");
        let r = post(&client, &sim, api, "reset-only", &request).await;
        assert_eq!(r.status(), 429);
        assert!(r.headers().get("retry-after").is_none(), "{name}");
        let header = |h: &str| r.headers().get(h).map(|v| v.to_str().unwrap().to_owned());
        match api {
            Api::Openai => {
                assert_eq!(
                    header("x-ratelimit-remaining-requests").as_deref(),
                    Some("0")
                );
                assert_eq!(header("x-ratelimit-reset-requests").as_deref(), Some("3s"));
            }
            Api::Anthropic => {
                assert_eq!(
                    header("anthropic-ratelimit-requests-remaining").as_deref(),
                    Some("0")
                );
                assert!(header("anthropic-ratelimit-requests-reset").is_some());
            }
            _ => {}
        }

        let err = call(&sim, api, "reset-only", &chat(0, None))
            .await
            .unwrap_err();
        let wait = err
            .retry_after()
            .unwrap_or_else(|| panic!("{name}: no hint in {err}"));
        // Anthropic's RFC 3339 resets are whole seconds, rounded up.
        assert!(
            wait > Duration::from_secs(2) && wait <= Duration::from_secs(4),
            "{name}: {wait:?}"
        );

        let r = post(&client, &sim, api, "no-hint", &request).await;
        assert_eq!(r.status(), 429);
        assert!(r.headers().get("retry-after").is_none());
        let err = call(&sim, api, "no-hint", &chat(0, None))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ProviderError::RateLimited {
                    retry_after: None,
                    ..
                }
            ),
            "{name}: {err:?}"
        );
    }
    sim.shutdown().await.unwrap();
}

/// `gpt-5-nano` as the catalog describes it: temperature, top_p and stop refused.
fn reasoning() -> ModelBehaviour {
    always(|b| {
        b.unsupported_params = vec![
            RequestParam::Temperature,
            RequestParam::TopP,
            RequestParam::Stop,
        ];
    })
}

async fn call_refusing(
    sim: &SimHandle,
    api: Api,
    model: &str,
    request: &switchyard_core::job::ChatRequest,
) -> Result<Completion, ProviderError> {
    HttpProvider::new(
        for_api(api),
        Some(&sim.base_url(api)),
        Some(ApiKey::new("sim-key".into())),
        Timeouts::default(),
    )
    .unwrap()
    .with_unsupported_params(&[
        RequestParam::Temperature,
        RequestParam::TopP,
        RequestParam::Stop,
    ])
    .complete(CallRequest {
        request,
        api_model: model,
        default_max_tokens: None,
    })
    .await
}

#[tokio::test]
async fn reasoning_models_refuse_sampling_and_stop_as_openai_does() {
    let sim = sim(real_time(&[("gpt-5-nano", reasoning())])).await;
    let client = reqwest::Client::new();
    // The documented request carries temperature 0.2 and a stop sequence.
    let mut request = fixture("openai", "request_basic");
    let r = post(&client, &sim, Api::Openai, "gpt-5-nano", &request).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        fixture("openai", "error_400_unsupported_temperature")
    );
    request["temperature"] = 1.into();
    let r = post(&client, &sim, Api::Openai, "gpt-5-nano", &request).await;
    assert_eq!(
        r.status(),
        400,
        "the default temperature is fine, stop is not"
    );
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        fixture("openai", "error_400_unsupported_stop")
    );
    request.as_object_mut().unwrap().remove("stop");
    let r = post(&client, &sim, Api::Openai, "gpt-5-nano", &request).await;
    assert_eq!(r.status(), 200);
    let mut top_p = request.clone();
    top_p["top_p"] = serde_json::json!(0.5);
    assert_eq!(
        post(&client, &sim, Api::Openai, "gpt-5-nano", &top_p)
            .await
            .status(),
        400
    );
    assert_eq!(
        post(
            &client,
            &sim,
            Api::Openai,
            "gpt-4o-mini",
            &fixture("openai", "request_basic")
        )
        .await
        .status(),
        200,
        "other models take both"
    );

    // An adapter that forgets the model's limits fails, with OpenAI's message…
    let mut job = chat(0, Some(200));
    job.temperature = Some(0.3);
    let expected = switchyard_sim::reply_for_request(&job).content;
    let words: Vec<&str> = expected.split_whitespace().collect();
    let stop = (*words[words.len() / 2..]
        .iter()
        .max_by_key(|w| w.len())
        .unwrap())
    .to_owned();
    job.stop = vec![stop.clone()];
    let err = call(&sim, Api::Openai, "gpt-5-nano", &job)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ProviderError::InvalidRequest { status: 400, .. })
            && err
                .to_string()
                .contains("Unsupported value: 'temperature' does not support 0.3"),
        "{err}"
    );
    // …and one that knows them leaves them out and applies the stop itself.
    let done = call_refusing(&sim, Api::Openai, "gpt-5-nano", &job)
        .await
        .unwrap();
    let cut = expected.find(&stop).unwrap();
    assert_eq!(done.content, expected[..cut]);
    assert_eq!(done.finish_reason, "stop");
    assert_eq!(
        done.usage,
        switchyard_sim::usage_for_request(&job),
        "billed as the model answered"
    );
    // The other formats refuse in their own shape, and the adapters cope the same way.
    for api in [Api::Anthropic, Api::Gemini] {
        let err = call(&sim, api, "gpt-5-nano", &job).await.unwrap_err();
        assert!(
            matches!(err, ProviderError::InvalidRequest { status: 400, .. }),
            "{err}"
        );
        let done = call_refusing(&sim, api, "gpt-5-nano", &job).await.unwrap();
        assert_eq!(done.content, expected[..cut], "{api:?}");
    }
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_invalid_key_is_quoted_by_openai_and_scrubbed_by_the_adapter() {
    let sim = sim(real_time(&[(
        "locked",
        always(|b| b.invalid_key_rate = 1.0),
    )]))
    .await;
    let client = reqwest::Client::new();
    let r = post(
        &client,
        &sim,
        Api::Openai,
        "locked",
        &fixture("openai", "request_basic"),
    )
    .await;
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    let expected = fixture("openai", "error_401_invalid_api_key");
    assert_same_shape(&expected, &body, &[]);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert_eq!(
        body["error"]["message"],
        "Incorrect API key provided: sk-sim. You can find your API key at https://platform.openai.com/account/api-keys."
    );
    for (api, name) in FORMATS {
        let err = call(&sim, api, "locked", &chat(0, None)).await.unwrap_err();
        assert!(matches!(err, ProviderError::Auth { .. }), "{name}: {err}");
        assert!(err.allows_failover() && !err.is_retryable());
        let text = format!("{err} {err:?}");
        assert!(!text.contains("sim-key"), "{name}: the key leaked: {text}");
        if api == Api::Openai {
            assert!(text.contains("Incorrect API key provided: ***."), "{text}");
        }
    }
    let stats = sim.stats().model("locked");
    assert_eq!(
        (stats.requests, stats.errors(401), stats.errors(400)),
        (4, 3, 1)
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn requests_in_flight_are_counted_and_served_as_json() {
    let config = real_time(&[("slow", always(|b| b.ttft = Duration::from_millis(400)))]);
    let sim = sim(config).await;
    let client = reqwest::Client::new();
    let request = fixture("openai", "request_basic");
    let calls = (0..25).map(|_| post(&client, &sim, Api::Openai, "slow", &request));
    let statuses: Vec<u16> = futures::future::join_all(calls)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = sim.stats();
    assert_eq!((stats.peak_in_flight, stats.in_flight), (25, 0));
    let served: switchyard_sim::SimStats = client
        .get(format!("http://{}/sim/stats", sim.addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served.peak_in_flight, 25);
    assert_eq!(served.model("slow").successes, 25);
    sim.shutdown().await.unwrap();
}
