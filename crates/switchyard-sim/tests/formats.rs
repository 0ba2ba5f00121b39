//! The three wire formats over real HTTP: the fixtures' requests answered in the
//! documented shapes with deterministic usage, the APIs' own refusals
//! (credentials, malformed bodies, unknown routes), and agreement with the real
//! adapters of `switchyard-providers` and with the in-process provider.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{FORMATS, assert_same_shape, call, chat, fast, fixture, post, sim, url};
use serde_json::{Value, json};
use switchyard_core::catalog::Api;
use switchyard_core::job::Role;
use switchyard_providers::{CallRequest, Provider, ProviderError};
use switchyard_sim::{InProcessProvider, usage_for};

const SYSTEM: &str = "You are a concise assistant.";
const USER: &str = "Name three primary colors.";

#[tokio::test]
async fn openai_answers_the_fixture_request_in_the_documented_shape() {
    let sim = sim(fast()).await;
    let client = reqwest::Client::new();
    let response = post(
        &client,
        &sim,
        Api::Openai,
        "gpt-4o-mini",
        &fixture("openai", "request_basic"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert_same_shape(&fixture("openai", "response_ok"), &body, &[]);
    let expected = usage_for(Some(SYSTEM), &[(Role::User, USER)], Some(64));
    assert_eq!(body["model"], "gpt-4o-mini");
    assert_eq!(body["usage"]["prompt_tokens"], 22);
    assert_eq!(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(body["usage"]["completion_tokens"], expected.output_tokens);
    assert_eq!(body["usage"]["total_tokens"], 22 + expected.output_tokens);
    let finish = if expected.output_tokens == 64 {
        "length"
    } else {
        "stop"
    };
    assert_eq!(body["choices"][0]["finish_reason"], finish);
    let content = body["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(
        content.len() as u64,
        expected.output_tokens * 4,
        "about four bytes per token"
    );

    let again: Value = post(
        &client,
        &sim,
        Api::Openai,
        "gpt-4o-mini",
        &fixture("openai", "request_basic"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(again["usage"], body["usage"]);
    assert_eq!(again["choices"], body["choices"]);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn anthropic_answers_the_fixture_request_in_the_documented_shape() {
    let sim = sim(fast()).await;
    let client = reqwest::Client::new();
    let response = post(
        &client,
        &sim,
        Api::Anthropic,
        "claude-haiku-4-5",
        &fixture("anthropic", "request_basic"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("request-id"));
    let body: Value = response.json().await.unwrap();
    assert_same_shape(&fixture("anthropic", "response_ok"), &body, &[]);
    let expected = usage_for(Some(SYSTEM), &[(Role::User, USER)], Some(64));
    assert_eq!(body["type"], "message");
    assert_eq!(body["usage"]["input_tokens"], 22);
    assert_eq!(body["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(body["usage"]["output_tokens"], expected.output_tokens);
    assert_eq!(
        body["stop_reason"],
        if expected.output_tokens == 64 {
            "max_tokens"
        } else {
            "end_turn"
        }
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn gemini_answers_the_fixture_request_in_the_documented_shape() {
    let sim = sim(fast()).await;
    let client = reqwest::Client::new();
    let response = post(
        &client,
        &sim,
        Api::Gemini,
        "gemini-2.5-flash-lite",
        &fixture("gemini", "request_basic"),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    // Zero and thinking counters are left out, as the API does for a short prompt.
    let optional = [
        "candidates[].avgLogprobs",
        "usageMetadata.cachedContentTokenCount",
        "usageMetadata.thoughtsTokenCount",
        "usageMetadata.cacheTokensDetails",
    ];
    assert_same_shape(&fixture("gemini", "response_ok"), &body, &optional);
    let expected = usage_for(Some(SYSTEM), &[(Role::User, USER)], Some(64));
    assert_eq!(body["usageMetadata"]["promptTokenCount"], 22);
    assert_eq!(
        body["usageMetadata"]["candidatesTokenCount"],
        expected.output_tokens
    );
    assert_eq!(
        body["usageMetadata"]["totalTokenCount"],
        22 + expected.output_tokens
    );
    assert_eq!(
        body["candidates"][0]["finishReason"],
        if expected.output_tokens == 64 {
            "MAX_TOKENS"
        } else {
            "STOP"
        }
    );
    assert_eq!(body["modelVersion"], "gemini-2.5-flash-lite");

    // The key may also come as `?key=`.
    let url = format!(
        "{}?key=sim-key",
        url(&sim, Api::Gemini, "gemini-2.5-flash-lite")
    );
    let by_query = client
        .post(url)
        .json(&fixture("gemini", "request_basic"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn cache_reads_are_reported_the_way_each_api_reports_them() {
    let sim = sim(fast()).await;
    let client = reqwest::Client::new();
    let system = "Follow the style guide. ".repeat(300); // 7200 bytes: 1800 tokens, 1792 cached
    let expected = usage_for(Some(&system), &[(Role::User, USER)], Some(64));
    assert_eq!(expected.cached_input_tokens, 1792);
    let prompt = expected.input_tokens + expected.cached_input_tokens;

    let openai = json!({"model": "m", "messages": [{"role": "system", "content": system}, {"role": "user", "content": USER}], "max_completion_tokens": 64});
    let body: Value = post(&client, &sim, Api::Openai, "gpt-5.4", &openai)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["usage"]["prompt_tokens"], prompt,
        "OpenAI's prompt_tokens include cached tokens"
    );
    assert_eq!(
        body["usage"]["prompt_tokens_details"]["cached_tokens"],
        1792
    );

    let anthropic = json!({"model": "m", "max_tokens": 64, "system": system, "messages": [{"role": "user", "content": USER}]});
    let body: Value = post(
        &client,
        &sim,
        Api::Anthropic,
        "claude-sonnet-5-5",
        &anthropic,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        body["usage"]["input_tokens"], expected.input_tokens,
        "Anthropic's input_tokens exclude cache reads"
    );
    assert_eq!(body["usage"]["cache_read_input_tokens"], 1792);

    let gemini = json!({"systemInstruction": {"parts": [{"text": system}]}, "contents": [{"role": "user", "parts": [{"text": USER}]}], "generationConfig": {"maxOutputTokens": 64}});
    let body: Value = post(&client, &sim, Api::Gemini, "gemini-3.8-flash", &gemini)
        .await
        .json()
        .await
        .unwrap();
    assert_same_shape(
        &fixture("gemini", "response_ok"),
        &body,
        &[
            "candidates[].avgLogprobs",
            "usageMetadata.thoughtsTokenCount",
        ],
    );
    assert_eq!(
        body["usageMetadata"]["promptTokenCount"], prompt,
        "Gemini's promptTokenCount includes cached tokens"
    );
    assert_eq!(body["usageMetadata"]["cachedContentTokenCount"], 1792);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_real_adapters_read_the_same_usage_as_the_in_process_provider() {
    let sim = sim(fast()).await;
    let in_process = InProcessProvider::new();
    for request in [chat(0, None), chat(0, Some(5)), chat(6000, Some(300))] {
        let local = in_process
            .complete(CallRequest {
                request: &request,
                api_model: "x",
                default_max_tokens: None,
            })
            .await
            .unwrap();
        for api in [
            Api::Openai,
            Api::OpenaiCompatible,
            Api::Anthropic,
            Api::Gemini,
        ] {
            let remote = call(&sim, api, "some-model", &request).await.unwrap();
            assert_eq!(remote.usage, local.usage, "{api:?}");
            assert_eq!(remote.content, local.content, "{api:?}");
            assert_eq!(remote.finish_reason, local.finish_reason, "{api:?}");
        }
    }
    let stats = sim.stats().model("some-model");
    assert_eq!(stats.requests, 12);
    assert_eq!(stats.successes, 12);
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn missing_credentials_get_each_api_s_refusal() {
    let sim = sim(fast()).await;
    let client = reqwest::Client::new();

    let r = client
        .post(url(&sim, Api::Openai, "m"))
        .json(&fixture("openai", "request_basic"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_same_shape(&fixture("openai", "error_401_invalid_api_key"), &body, &[]);
    assert_eq!(body["error"]["code"], "invalid_api_key");

    let r = client
        .post(url(&sim, Api::Anthropic, "m"))
        .header("anthropic-version", "2023-06-01")
        .json(&fixture("anthropic", "request_basic"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_same_shape(
        &fixture("anthropic", "error_401_authentication"),
        &body,
        &[],
    );
    assert_eq!(body["error"]["type"], "authentication_error");

    let r = client
        .post(url(&sim, Api::Anthropic, "m"))
        .header("x-api-key", "k")
        .json(&fixture("anthropic", "request_basic"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        400,
        "the API refuses a request without anthropic-version"
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");

    let r = client
        .post(url(&sim, Api::Gemini, "gemini-3.8-flash"))
        .json(&fixture("gemini", "request_basic"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body, fixture("gemini", "error_400_api_key_invalid"));

    let stats = sim.stats();
    assert_eq!(stats.invalid_requests, 4);
    assert!(
        stats.models.is_empty(),
        "refused requests count under no model"
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn malformed_bodies_get_each_api_s_invalid_request_error() {
    let sim = sim(fast()).await;
    let client = reqwest::Client::new();

    let r = post(
        &client,
        &sim,
        Api::Openai,
        "m",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokenz": 5}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_same_shape(&fixture("openai", "error_400_invalid_request"), &body, &[]);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokenz")
    );

    let mut no_max = fixture("anthropic", "request_basic");
    no_max.as_object_mut().unwrap().remove("max_tokens");
    let r = post(&client, &sim, Api::Anthropic, "m", &no_max).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    let expected = fixture("anthropic", "error_400_invalid_request");
    assert_same_shape(&expected, &body, &[]);
    assert_eq!(body["error"], expected["error"]);

    let mut wrong_field = fixture("gemini", "request_basic");
    wrong_field["generationConfig"] = json!({"max_tokens": 64});
    let r = post(&client, &sim, Api::Gemini, "gemini-3.8-flash", &wrong_field).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        fixture("gemini", "error_400_invalid_argument")
    );

    let r = client
        .post(url(&sim, Api::Openai, "m"))
        .header("authorization", "Bearer k")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );

    let r = client
        .post(format!(
            "{}/models/m:countTokens",
            sim.base_url(Api::Gemini)
        ))
        .header("x-goog-api-key", "k")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["status"],
        "NOT_FOUND"
    );
    let r = client
        .post(format!("http://{}/v1/chat/completions", sim.addr()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("/openai/v1/chat/completions"),
        "the 404 names the routes served"
    );
    sim.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_adapters_classify_refusals_as_the_documented_errors() {
    let sim = sim(fast()).await;
    let mut request = chat(0, None);
    request.temperature = Some(1.5); // the Anthropic adapter clamps; the others pass it on
    for (api, _) in FORMATS {
        assert!(call(&sim, api, "m", &request).await.is_ok(), "{api:?}");
    }
    let mut empty = chat(0, None);
    empty.messages.clear();
    for (api, _) in FORMATS {
        let err = call(&sim, api, "m", &empty).await.unwrap_err();
        assert!(
            matches!(err, ProviderError::InvalidRequest { status: 400, .. }),
            "{api:?}: {err}"
        );
    }
    sim.shutdown().await.unwrap();
}
