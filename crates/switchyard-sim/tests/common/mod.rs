//! Helpers shared by the HTTP tests: the providers' documented fixtures, a
//! simulator on a free port, raw requests with each API's credentials, calls
//! through the real wire adapters of `switchyard-providers`, and a structural
//! comparison of JSON bodies against the fixtures.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use switchyard_core::catalog::Api;
use switchyard_core::config::Timeouts;
use switchyard_core::job::{ChatMessage, ChatRequest, ResponseFormat, Role};
use switchyard_providers::wire::for_api;
use switchyard_providers::{
    ApiKey, CallRequest, Completion, HttpProvider, Provider, ProviderError,
};
use switchyard_sim::{ModelBehaviour, SimConfig, SimHandle};

/// Every format, with the path segment of its fixtures.
pub const FORMATS: [(Api, &str); 3] = [
    (Api::Openai, "openai"),
    (Api::Anthropic, "anthropic"),
    (Api::Gemini, "gemini"),
];

/// A fixture of `switchyard-providers` (`tests/fixtures/{api}/{name}.json`).
pub fn fixture(api: &str, name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../switchyard-providers/tests/fixtures/{api}/{name}.json"
    ));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| format!("\"cannot read {}: {e}\"", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// A config whose latencies are a thousandth of real time.
pub fn fast() -> SimConfig {
    SimConfig {
        time_scale: 0.001,
        ..SimConfig::default()
    }
}

/// `fast()` with one model's behaviour.
pub fn fast_with(model: &str, behaviour: ModelBehaviour) -> SimConfig {
    let mut config = fast();
    config.models.insert(model.to_owned(), behaviour);
    config
}

/// A simulator on a free local port.
pub async fn sim(config: SimConfig) -> SimHandle {
    switchyard_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The completion URL of `api` for `model`.
pub fn url(sim: &SimHandle, api: Api, model: &str) -> String {
    let base = sim.base_url(api);
    match api {
        Api::Gemini => format!("{base}/models/{model}:generateContent"),
        Api::Anthropic => format!("{base}/messages"),
        Api::Openai | Api::OpenaiCompatible => format!("{base}/chat/completions"),
    }
}

/// Posts a raw JSON body with the API's credentials; for OpenAI and Anthropic the
/// body's `model` is replaced by `model`.
pub async fn post(
    client: &reqwest::Client,
    sim: &SimHandle,
    api: Api,
    model: &str,
    body: &Value,
) -> reqwest::Response {
    let mut body = body.clone();
    if api != Api::Gemini {
        body["model"] = Value::String(model.to_owned());
    }
    let request = client.post(url(sim, api, model)).json(&body);
    let request = match api {
        Api::Openai | Api::OpenaiCompatible => request.header("authorization", "Bearer sk-sim"),
        Api::Anthropic => request
            .header("x-api-key", "sk-ant-sim")
            .header("anthropic-version", "2023-06-01"),
        Api::Gemini => request.header("x-goog-api-key", "sim-key"),
    };
    request.send().await.unwrap()
}

/// The fixture's request body for `api` (`request_basic` or `request_json_mode`).
pub fn request_body(api: &str, name: &str) -> Value {
    fixture(api, name)
}

/// One call through the worker's real HTTP provider for `api` (wire format,
/// headers, timeouts, error classification), pointed at the simulator.
pub async fn call(
    sim: &SimHandle,
    api: Api,
    model: &str,
    request: &ChatRequest,
) -> Result<Completion, ProviderError> {
    call_with(sim, api, model, request, Timeouts::default()).await
}

/// [`call`] with explicit timeouts.
pub async fn call_with(
    sim: &SimHandle,
    api: Api,
    model: &str,
    request: &ChatRequest,
    timeouts: Timeouts,
) -> Result<Completion, ProviderError> {
    let provider = HttpProvider::new(
        for_api(api),
        Some(&sim.base_url(api)),
        Some(ApiKey::new("sim-key".into())),
        timeouts,
    )
    .unwrap();
    provider
        .complete(CallRequest {
            request,
            api_model: model,
            default_max_tokens: None,
        })
        .await
}

/// A small conversation; `system_bytes` long system prompt when not zero.
pub fn chat(system_bytes: usize, max_tokens: Option<u32>) -> ChatRequest {
    let system = (system_bytes > 0).then(|| {
        "You are a careful assistant. ".repeat(system_bytes / 29 + 1)[..system_bytes].to_owned()
    });
    ChatRequest {
        messages: vec![
            ChatMessage {
                role: Role::User,
                content: "Classify this review: great battery, weak screen.".into(),
            },
            ChatMessage {
                role: Role::Assistant,
                content: "Mixed.".into(),
            },
            ChatMessage {
                role: Role::User,
                content: "Explain in one sentence.".into(),
            },
        ],
        system,
        max_tokens,
        temperature: Some(0.2),
        stop: vec![],
        response_format: ResponseFormat::Text,
    }
}

/// Asserts that `actual` has every field of `expected` with the same JSON type
/// (null on either side matches anything), recursing into objects and the first
/// element of arrays; `optional` lists dotted paths that may be missing.
pub fn assert_same_shape(expected: &Value, actual: &Value, optional: &[&str]) {
    shape(expected, actual, "", optional);
}

fn shape(expected: &Value, actual: &Value, at: &str, optional: &[&str]) {
    match (expected, actual) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                match a.get(key) {
                    Some(found) => shape(value, found, &path, optional),
                    None => assert!(
                        optional.contains(&path.as_str()),
                        "`{path}` is missing from {actual}"
                    ),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            if let (Some(e), Some(a)) = (e.first(), a.first()) {
                shape(e, a, &format!("{at}[]"), optional);
            }
        }
        _ => assert_eq!(
            std::mem::discriminant(expected),
            std::mem::discriminant(actual),
            "`{at}`: expected a value like {expected}, got {actual}"
        ),
    }
}

/// Waits for `f` to hold, polling, for at most `limit`.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// A model that answers at once and always behaves as `f` sets.
pub fn always(f: impl FnOnce(&mut ModelBehaviour)) -> ModelBehaviour {
    let mut b = ModelBehaviour {
        ttft: Duration::ZERO,
        tokens_per_second: 1e6,
        ..ModelBehaviour::default()
    };
    f(&mut b);
    b
}
