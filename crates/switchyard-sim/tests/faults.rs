//! Injected faults over real HTTP: errors in each API's documented shape and as
//! the real adapters classify them, the RPM limiter with exact Retry-After,
//! Anthropic's RFC 3339 resets, scheduled and runtime outages, hangs cut by
//! client timeouts and by a prompt shutdown, JSON mode, latency, and
//! `serve_until`. Timeouts by phase, reset-header hints, reasoning models,
//! invalid keys and the in-flight count are in `edges.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{
    FORMATS, always, assert_same_shape, call, call_with, chat, fast, fast_with, fixture, post, sim,
};
use serde_json::Value;
use switchyard_core::catalog::Api;
use switchyard_core::config::Timeouts;
use switchyard_core::job::ResponseFormat;
use switchyard_providers::wire::parse_go_duration;
use switchyard_providers::{ProviderError, TimeoutPhase};
use switchyard_sim::{Outage, SimConfig};
use tokio::time::Instant;

fn faulty() -> SimConfig {
    // Errors answer at once, so real time keeps retry-after values readable.
    let mut config = SimConfig::default();
    config
        .models
        .insert("broken".into(), always(|b| b.error_rate = 1.0));
    config
        .models
        .insert("busy".into(), always(|b| b.overloaded_rate = 1.0));
    config
        .models
        .insert("limited".into(), always(|b| b.rate_limit_rate = 1.0));
    config
}

#[tokio::test]
async fn injected_errors_have_each_api_s_shape() {
    let sim = sim(faulty()).await;
    let client = reqwest::Client::new();
    for (api, name) in FORMATS {
        let request = fixture(name, "request_basic");

        let r = post(&client, &sim, api, "broken", &request).await;
        assert_eq!(r.status(), 500, "{name}");
        let body: Value = r.json().await.unwrap();
        match api {
            Api::Openai => assert_eq!(body["error"]["type"], "server_error"),
            Api::Anthropic => assert_eq!(body["error"]["type"], "api_error"),
            _ => assert_eq!(body["error"]["status"], "INTERNAL"),
        }

        let r = post(&client, &sim, api, "busy", &request).await;
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        match api {
            Api::Anthropic => {
                assert_eq!(status, 529);
                let expected = fixture(name, "error_529_overloaded");
                assert_same_shape(&expected, &body, &[]);
                assert_eq!(body["error"], expected["error"]);
            }
            Api::Gemini => {
                assert_eq!(status, 503);
                assert_eq!(body, fixture(name, "error_503_unavailable"));
            }
            _ => {
                assert_eq!(status, 503);
                assert_eq!(body["error"]["type"], "server_error");
            }
        }

        let r = post(&client, &sim, api, "limited", &request).await;
        assert_eq!(r.status(), 429, "{name}");
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let body: Value = r.json().await.unwrap();
        match api {
            Api::Gemini => {
                assert_eq!(retry_after, None, "Gemini says it in the body");
                let expected = fixture(name, "error_429_resource_exhausted");
                assert_same_shape(&expected, &body, &[]);
                let types: Vec<&str> = body["error"]["details"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["@type"].as_str().unwrap())
                    .collect();
                let expected_types: Vec<&str> = expected["error"]["details"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d["@type"].as_str().unwrap())
                    .collect();
                assert_eq!(types, expected_types);
                assert_eq!(body["error"]["details"][2]["retryDelay"], "2s");
            }
            Api::Anthropic => {
                assert_eq!(retry_after.as_deref(), Some("2"));
                assert_same_shape(&fixture(name, "error_429_rate_limit"), &body, &[]);
                assert_eq!(body["error"]["type"], "rate_limit_error");
            }
            _ => {
                assert_eq!(retry_after.as_deref(), Some("2"));
                assert_same_shape(&fixture(name, "error_429_rate_limit"), &body, &[]);
                assert_eq!(body["error"]["code"], "rate_limit_exceeded");
            }
        }
    }
    let stats = sim.stats();
    assert_eq!(stats.model("broken").errors(500), 3);
    assert_eq!(stats.model("busy").errors(503), 2);
    assert_eq!(stats.model("busy").errors(529), 1);
    assert_eq!(stats.model("limited").errors(429), 3);
    assert_eq!(stats.total_output_tokens, 0, "errors bill nothing");
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_adapters_classify_injected_errors_as_retryable() {
    let sim = sim(faulty()).await;
    let request = chat(0, None);
    for (api, name) in FORMATS {
        let err = call(&sim, api, "broken", &request).await.unwrap_err();
        assert!(
            matches!(err, ProviderError::Server { status: 500, .. }),
            "{name}: {err}"
        );
        let err = call(&sim, api, "busy", &request).await.unwrap_err();
        assert!(
            matches!(
                err,
                ProviderError::Server {
                    status: 503 | 529,
                    ..
                }
            ),
            "{name}: {err}"
        );
        let err = call(&sim, api, "limited", &request).await.unwrap_err();
        assert!(
            matches!(err, ProviderError::RateLimited { status: 429, .. }),
            "{name}: {err}"
        );
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)), "{name}");
        assert!(err.is_retryable());
    }
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn rpm_is_enforced_over_a_sliding_window_with_exact_retry_after() {
    // Window: 60 s x 0.02 = 1.2 s.
    let config = SimConfig {
        time_scale: 0.02,
        ..fast_with("gpt-4o-mini", always(|b| b.rpm = Some(5)))
    };
    let sim = sim(config).await;
    let client = reqwest::Client::new();
    let request = fixture("openai", "request_basic");
    let mut remaining = Vec::new();
    let mut retry_ms = Vec::new();
    for _ in 0..8 {
        let r = post(&client, &sim, Api::Openai, "gpt-4o-mini", &request).await;
        let header = |name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(header("x-ratelimit-limit-requests").as_deref(), Some("5"));
        let reset = parse_go_duration(&header("x-ratelimit-reset-requests").unwrap()).unwrap();
        assert!(reset <= Duration::from_millis(1200), "{reset:?}");
        match r.status().as_u16() {
            200 => remaining.push(header("x-ratelimit-remaining-requests").unwrap()),
            429 => {
                let ms: u64 = header("retry-after-ms").unwrap().parse().unwrap();
                assert!(ms > 0 && ms <= 1200, "{ms}");
                assert_eq!(
                    header("retry-after").as_deref(),
                    Some("2"),
                    "whole seconds, rounded up"
                );
                retry_ms.push(ms);
            }
            other => unreachable!("status {other}"),
        }
    }
    assert_eq!(remaining, ["4", "3", "2", "1", "0"]);
    assert_eq!(retry_ms.len(), 3);

    // After the announced wait, a slot is free again.
    tokio::time::sleep(Duration::from_millis(retry_ms[2] + 20)).await;
    assert_eq!(
        post(&client, &sim, Api::Openai, "gpt-4o-mini", &request)
            .await
            .status(),
        200
    );

    let stats = sim.stats().model("gpt-4o-mini");
    assert_eq!(stats.requests, 9);
    assert_eq!(stats.errors(429), 3);
    assert_eq!(
        stats.peak_admitted_per_window, 5,
        "never more than rpm admitted in any window"
    );
    assert!(stats.peak_requests_per_window >= 8);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn anthropic_reports_limits_with_rfc3339_resets() {
    let sim = sim(fast_with(
        "claude-haiku-4-5",
        always(|b| {
            b.rpm = Some(50);
            b.tpm = Some(100_000);
        }),
    ))
    .await;
    let client = reqwest::Client::new();
    let r = post(
        &client,
        &sim,
        Api::Anthropic,
        "claude-haiku-4-5",
        &fixture("anthropic", "request_basic"),
    )
    .await;
    assert_eq!(r.status(), 200);
    let header = |name: &str| r.headers().get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(header("anthropic-ratelimit-requests-limit"), "50");
    assert_eq!(header("anthropic-ratelimit-requests-remaining"), "49");
    assert_eq!(header("anthropic-ratelimit-tokens-limit"), "100000");
    let reset = chrono::DateTime::parse_from_rfc3339(&header("anthropic-ratelimit-requests-reset"))
        .unwrap();
    let ahead = reset.with_timezone(&chrono::Utc) - chrono::Utc::now();
    assert!(ahead <= chrono::Duration::seconds(2), "{ahead}");
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn scheduled_outages_start_and_end_on_time() {
    // Scaled by 0.01: down from 500 ms to 1000 ms after start.
    let outage = Outage {
        start: Duration::from_secs(50),
        duration: Duration::from_secs(50),
        status: 503,
    };
    let config = SimConfig {
        time_scale: 0.01,
        ..fast_with("gemini-3.8-flash", always(|b| b.outages = vec![outage]))
    };
    let started = Instant::now();
    let sim = sim(config).await;
    let client = reqwest::Client::new();
    let request = fixture("gemini", "request_basic");
    assert_eq!(
        post(&client, &sim, Api::Gemini, "gemini-3.8-flash", &request)
            .await
            .status(),
        200
    );
    tokio::time::sleep_until(started + Duration::from_millis(700)).await;
    let r = post(&client, &sim, Api::Gemini, "gemini-3.8-flash", &request).await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["status"],
        "UNAVAILABLE"
    );
    assert_eq!(
        post(
            &client,
            &sim,
            Api::Gemini,
            "gemini-2.5-flash-lite",
            &request
        )
        .await
        .status(),
        200,
        "other models are up"
    );
    tokio::time::sleep_until(started + Duration::from_millis(1300)).await;
    assert_eq!(
        post(&client, &sim, Api::Gemini, "gemini-3.8-flash", &request)
            .await
            .status(),
        200
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn outages_can_be_started_and_ended_at_runtime() {
    let sim = sim(fast()).await;
    let client = reqwest::Client::new();
    let request = fixture("anthropic", "request_basic");
    assert_eq!(
        post(&client, &sim, Api::Anthropic, "claude-sonnet-5-5", &request)
            .await
            .status(),
        200
    );
    sim.set_outage("claude-sonnet-5-5", Some(529));
    let r = post(&client, &sim, Api::Anthropic, "claude-sonnet-5-5", &request).await;
    assert_eq!(r.status(), 529);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "overloaded_error"
    );
    let err = call(&sim, Api::Anthropic, "claude-sonnet-5-5", &chat(0, None))
        .await
        .unwrap_err();
    assert!(err.counts_against_health(), "{err}");
    sim.set_outage("claude-sonnet-5-5", None);
    assert_eq!(
        post(&client, &sim, Api::Anthropic, "claude-sonnet-5-5", &request)
            .await
            .status(),
        200
    );
    let stats = sim.stats().model("claude-sonnet-5-5");
    assert_eq!((stats.successes, stats.errors(529)), (2, 2));
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_hang_is_cut_by_the_client_and_shutdown_stays_prompt() {
    let sim = sim(fast_with("stuck", always(|b| b.hang_rate = 1.0))).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let mut body = fixture("openai", "request_basic");
    body["model"] = Value::String("stuck".into());
    let url = common::url(&sim, Api::Openai, "stuck");
    let err = impatient
        .post(&url)
        .bearer_auth("k")
        .json(&body)
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    let timeouts = Timeouts {
        first_byte: Duration::from_millis(200),
        ..Timeouts::default()
    };
    let err = call_with(&sim, Api::Anthropic, "stuck", &chat(0, None), timeouts)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ProviderError::Timeout {
                phase: TimeoutPhase::FirstByte,
                ..
            }
        ),
        "{err}"
    );

    let patient = reqwest::Client::new();
    let body_for_task = body.clone();
    let waiting = tokio::spawn(async move {
        patient
            .post(url)
            .bearer_auth("k")
            .json(&body_for_task)
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    assert!(
        common::eventually(Duration::from_secs(5), || sim.stats().model("stuck").hangs
            == 3)
        .await
    );

    let started = Instant::now();
    sim.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    let outcome = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(outcome, Ok(503) | Err(_)), "{outcome:?}");
}

#[tokio::test]
async fn json_mode_answers_json_unless_told_to_break_it() {
    let config = fast_with("sloppy", always(|b| b.invalid_json_rate = 1.0));
    let sim = sim(config).await;
    let client = reqwest::Client::new();
    let content = |api: Api, body: &Value| match api {
        Api::Openai => body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned(),
        Api::Anthropic => body["content"][0]["text"].as_str().unwrap().to_owned(),
        _ => body["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .to_owned(),
    };
    for (api, name) in FORMATS {
        let request = fixture(name, "request_json_mode");
        let good: Value = post(&client, &sim, api, "tidy", &request)
            .await
            .json()
            .await
            .unwrap();
        let parsed: Value = serde_json::from_str(&content(api, &good)).unwrap();
        assert!(parsed.is_object(), "{name}");
        let bad: Value = post(&client, &sim, api, "sloppy", &request)
            .await
            .json()
            .await
            .unwrap();
        assert!(
            serde_json::from_str::<Value>(&content(api, &bad)).is_err(),
            "{name}"
        );
        let plain: Value = post(
            &client,
            &sim,
            api,
            "sloppy",
            &fixture(name, "request_basic"),
        )
        .await
        .json()
        .await
        .unwrap();
        assert!(
            !content(api, &plain).starts_with("Sure"),
            "{name}: only JSON-mode requests are broken"
        );
    }
    let mut request = chat(0, None);
    request.response_format = ResponseFormat::JsonObject;
    let broken = call(&sim, Api::Openai, "sloppy", &request).await.unwrap();
    assert!(
        broken.usage.output_tokens > 0,
        "an invalid answer is still billed"
    );
    let stats = sim.stats().model("sloppy");
    assert_eq!((stats.successes, stats.invalid_json), (7, 4));
    assert_eq!(
        stats.usage.output_tokens + sim.stats().model("tidy").usage.output_tokens,
        sim.stats().total_output_tokens
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn latency_follows_ttft_and_decode_speed() {
    let config = SimConfig {
        time_scale: 0.5,
        ..fast_with(
            "slow",
            always(|b| {
                b.ttft = Duration::from_millis(400);
                b.tokens_per_second = 1e9;
            }),
        )
    };
    let sim = sim(config).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    assert_eq!(
        post(
            &client,
            &sim,
            Api::Openai,
            "slow",
            &fixture("openai", "request_basic")
        )
        .await
        .status(),
        200
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_millis(1500),
        "{took:?}"
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn serve_until_returns_when_the_shutdown_future_resolves() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard_sim::serve_until(fast(), addr, async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/openai/v1/chat/completions");
    let mut status = None;
    for _ in 0..100 {
        if let Ok(r) = client
            .post(&url)
            .bearer_auth("k")
            .json(&fixture("openai", "request_basic"))
            .send()
            .await
        {
            status = Some(r.status().as_u16());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, Some(200));
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = switchyard_sim::start(fast(), taken.local_addr().unwrap())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cannot listen on") && err.contains("port 0"),
        "{err}"
    );
}
