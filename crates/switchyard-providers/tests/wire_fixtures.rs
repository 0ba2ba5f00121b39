//! The adapters against the providers' documented examples: the request body sent
//! equals the documented shape, and documented responses and errors parse into the
//! right content, usage and error class.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;
use switchyard_core::job::{ChatMessage, ChatRequest, ResponseFormat, Role};
use switchyard_core::result::TokenUsage;
use switchyard_providers::wire::WireFormat;
use switchyard_providers::wire::anthropic::Anthropic;
use switchyard_providers::wire::gemini::Gemini;
use switchyard_providers::wire::openai::OpenAi;
use switchyard_providers::{CallRequest, ProviderError};

fn fixture(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

fn request(format: ResponseFormat) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage {
            role: Role::User,
            content: "Name three primary colors.".into(),
        }],
        system: Some("You are a concise assistant.".into()),
        max_tokens: Some(64),
        temperature: Some(0.2),
        stop: vec!["\n\n".into()],
        response_format: format,
    }
}

fn body(w: &dyn WireFormat, model: &str, format: ResponseFormat) -> Value {
    let req = request(format);
    w.body(CallRequest {
        request: &req,
        api_model: model,
        default_max_tokens: None,
    })
}

/// As [`body`], with a stop sequence Anthropic accepts: it refuses
/// whitespace-only ones such as "\n\n", which the HTTP provider applies to the
/// answer itself instead of sending.
fn anthropic_body(model: &str, format: ResponseFormat) -> Value {
    let req = ChatRequest {
        stop: vec!["###".into()],
        ..request(format)
    };
    Anthropic.body(CallRequest {
        request: &req,
        api_model: model,
        default_max_tokens: None,
    })
}

fn no_headers() -> HeaderMap {
    HeaderMap::new()
}

#[test]
fn openai_requests_match_the_documented_shape() {
    let w = OpenAi { compatible: false };
    assert_eq!(
        body(&w, "gpt-4o-mini", ResponseFormat::Text),
        json("openai/request_basic.json")
    );
    assert_eq!(
        body(&w, "gpt-4o-mini", ResponseFormat::JsonObject),
        json("openai/request_json_mode.json")
    );
    assert_eq!(
        w.url("https://api.openai.com/v1/", "gpt-4o-mini"),
        "https://api.openai.com/v1/chat/completions"
    );
    assert_eq!(
        w.headers(Some("sk-test")),
        vec![("authorization", "Bearer sk-test".to_owned())]
    );
}

#[test]
fn openai_compatible_hosts_get_max_tokens() {
    let b = body(
        &OpenAi { compatible: true },
        "llama-3.3-70b",
        ResponseFormat::Text,
    );
    assert_eq!(b["max_tokens"], 64);
    assert!(b.get("max_completion_tokens").is_none());
}

#[test]
fn openai_responses_parse_with_cached_tokens_split_out() {
    let c = OpenAi { compatible: false }
        .parse_ok(&no_headers(), &fixture("openai/response_ok.json"))
        .unwrap();
    assert_eq!(c.content, "Red, yellow, and blue.");
    assert_eq!(c.finish_reason, "stop");
    assert_eq!(
        c.usage,
        TokenUsage {
            input_tokens: 1310 - 1024,
            output_tokens: 7,
            cached_input_tokens: 1024,
            cache_write_input_tokens: 0,
        }
    );
}

#[test]
fn openai_rate_limit_headers_are_read() {
    let mut h = HeaderMap::new();
    h.insert("x-ratelimit-remaining-requests", "59".parse().unwrap());
    h.insert("x-ratelimit-remaining-tokens", "149984".parse().unwrap());
    h.insert("x-ratelimit-reset-requests", "1s".parse().unwrap());
    h.insert("x-ratelimit-reset-tokens", "6m0s".parse().unwrap());
    let c = OpenAi { compatible: false }
        .parse_ok(&h, &fixture("openai/response_ok.json"))
        .unwrap();
    assert_eq!(c.rate_limit.remaining_requests, Some(59));
    assert_eq!(c.rate_limit.remaining_tokens, Some(149_984));
    assert_eq!(c.rate_limit.reset_tokens, Some(Duration::from_secs(360)));
}

#[test]
fn openai_errors_are_classified() {
    let w = OpenAi { compatible: false };
    let e = w.parse_error(
        400,
        &no_headers(),
        &fixture("openai/error_400_invalid_request.json"),
    );
    assert!(
        matches!(e, ProviderError::InvalidRequest { status: 400, .. }) && !e.is_retryable(),
        "{e}"
    );
    let e = w.parse_error(
        401,
        &no_headers(),
        &fixture("openai/error_401_invalid_api_key.json"),
    );
    assert!(matches!(e, ProviderError::Auth { .. }), "{e}");
    let mut h = HeaderMap::new();
    h.insert("retry-after", "2".parse().unwrap());
    let e = w.parse_error(429, &h, &fixture("openai/error_429_rate_limit.json"));
    assert!(e.is_retryable());
    assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
    assert!(e.to_string().contains("Rate limit reached"), "{e}");
    let e = w.parse_error(
        429,
        &no_headers(),
        &fixture("openai/error_429_insufficient_quota.json"),
    );
    assert!(
        matches!(e, ProviderError::QuotaExhausted { .. }) && !e.is_retryable(),
        "{e}"
    );
}

#[test]
fn anthropic_requests_match_the_documented_shape() {
    let w = Anthropic;
    assert_eq!(
        anthropic_body("claude-3-5-haiku-20241022", ResponseFormat::Text),
        json("anthropic/request_basic.json")
    );
    assert_eq!(
        anthropic_body("claude-3-5-haiku-20241022", ResponseFormat::JsonObject),
        json("anthropic/request_json_mode.json")
    );
    let headers = w.headers(Some("sk-ant-test"));
    assert!(headers.contains(&("anthropic-version", "2023-06-01".to_owned())));
    assert!(headers.contains(&("x-api-key", "sk-ant-test".to_owned())));
}

#[test]
fn anthropic_responses_parse_with_cache_reads_as_cached_input() {
    let c = Anthropic
        .parse_ok(&no_headers(), &fixture("anthropic/response_ok.json"))
        .unwrap();
    assert_eq!(c.content, "Red, yellow, and blue.");
    assert_eq!(c.finish_reason, "stop");
    assert_eq!(
        c.usage,
        TokenUsage {
            input_tokens: 22,
            output_tokens: 10,
            cached_input_tokens: 1200,
            cache_write_input_tokens: 0,
        }
    );
}

#[test]
fn anthropic_errors_are_classified() {
    let w = Anthropic;
    let e = w.parse_error(
        400,
        &no_headers(),
        &fixture("anthropic/error_400_invalid_request.json"),
    );
    assert!(matches!(e, ProviderError::InvalidRequest { .. }), "{e}");
    assert!(e.to_string().contains("invalid_request_error"), "{e}");
    let e = w.parse_error(
        401,
        &no_headers(),
        &fixture("anthropic/error_401_authentication.json"),
    );
    assert!(matches!(e, ProviderError::Auth { .. }), "{e}");
    let e = w.parse_error(
        429,
        &no_headers(),
        &fixture("anthropic/error_429_rate_limit.json"),
    );
    assert!(matches!(e, ProviderError::RateLimited { .. }), "{e}");
    let e = w.parse_error(
        529,
        &no_headers(),
        &fixture("anthropic/error_529_overloaded.json"),
    );
    assert!(
        matches!(e, ProviderError::Server { status: 529, .. }) && e.is_retryable(),
        "{e}"
    );
}

#[test]
fn gemini_requests_match_the_documented_shape() {
    let w = Gemini;
    assert_eq!(
        body(&w, "gemini-2.0-flash", ResponseFormat::Text),
        json("gemini/request_basic.json")
    );
    assert_eq!(
        body(&w, "gemini-2.0-flash", ResponseFormat::JsonObject),
        json("gemini/request_json_mode.json")
    );
    assert_eq!(
        w.url(
            "https://generativelanguage.googleapis.com/v1beta",
            "gemini-2.0-flash"
        ),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent"
    );
}

#[test]
fn gemini_responses_parse_with_thoughts_as_output() {
    let c = Gemini
        .parse_ok(&no_headers(), &fixture("gemini/response_ok.json"))
        .unwrap();
    assert_eq!(c.content, "Red, yellow, and blue.");
    assert_eq!(c.finish_reason, "stop");
    assert_eq!(
        c.usage,
        TokenUsage {
            input_tokens: 1290 - 1024,
            output_tokens: 8 + 12,
            cached_input_tokens: 1024,
            cache_write_input_tokens: 0,
        }
    );
}

#[test]
fn gemini_errors_are_classified() {
    let w = Gemini;
    let e = w.parse_error(
        400,
        &no_headers(),
        &fixture("gemini/error_400_invalid_argument.json"),
    );
    assert!(matches!(e, ProviderError::InvalidRequest { .. }), "{e}");
    let e = w.parse_error(
        400,
        &no_headers(),
        &fixture("gemini/error_400_api_key_invalid.json"),
    );
    assert!(matches!(e, ProviderError::Auth { .. }), "{e}");
    let e = w.parse_error(
        403,
        &no_headers(),
        &fixture("gemini/error_403_permission_denied.json"),
    );
    assert!(matches!(e, ProviderError::Auth { .. }), "{e}");
    let e = w.parse_error(
        429,
        &no_headers(),
        &fixture("gemini/error_429_resource_exhausted.json"),
    );
    assert_eq!(e.retry_after(), Some(Duration::from_secs(47)), "{e}");
    let e = w.parse_error(
        503,
        &no_headers(),
        &fixture("gemini/error_503_unavailable.json"),
    );
    assert!(
        matches!(e, ProviderError::Server { status: 503, .. }),
        "{e}"
    );
}

#[test]
fn refusals_are_final_and_keep_their_billing() {
    let body = br#"{"choices":[{"message":{"content":null,"refusal":"I can't help with that."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":6}}"#;
    let e = OpenAi { compatible: false }
        .parse_ok(&no_headers(), body)
        .unwrap_err();
    assert!(!e.allows_failover() && !e.is_retryable());
    assert_eq!(e.billed().output_tokens, 6);
    let blocked =
        br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":9}}"#;
    assert!(matches!(
        Gemini.parse_ok(&no_headers(), blocked),
        Err(ProviderError::Refused { .. })
    ));
}

#[test]
fn anthropic_cache_writes_bill_at_the_cache_write_price_and_reads_as_cached_input() {
    let c = Anthropic
        .parse_ok(
            &no_headers(),
            &fixture("anthropic/response_cache_write.json"),
        )
        .unwrap();
    assert_eq!(
        c.usage,
        TokenUsage {
            input_tokens: 14,
            output_tokens: 87,
            cached_input_tokens: 2048,
            cache_write_input_tokens: 1536,
        }
    );
    let catalog = switchyard_loader::load_catalog(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/models.toml"),
    )
    .unwrap();
    let haiku = catalog.get("claude-haiku-4-5").unwrap();
    // Anthropic bills 5-minute cache writes at 1.25 times the input price.
    let write = haiku.cache_write_input_usd_per_mtok.unwrap();
    assert!((write - 1.25 * haiku.input_usd_per_mtok).abs() < 1e-12);
    let expected = (14.0 * haiku.input_usd_per_mtok
        + 1536.0 * write
        + 87.0 * haiku.output_usd_per_mtok
        + 2048.0 * haiku.cached_input_usd_per_mtok)
        / 1e6;
    assert!((haiku.cost_usd(&c.usage) - expected).abs() < 1e-12);
    assert!(
        haiku.cached_input_usd_per_mtok < haiku.input_usd_per_mtok,
        "reads are billed below writes"
    );
}

#[test]
fn openai_429s_without_retry_after_wait_for_the_reset_headers() {
    let w = OpenAi { compatible: false };
    let body = fixture("openai/error_429_rate_limit.json");
    let headers = |pairs: &[(&'static str, &str)]| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    };
    // Out of tokens: wait until the token window resets.
    let h = headers(&[
        ("x-ratelimit-remaining-requests", "499"),
        ("x-ratelimit-reset-requests", "120ms"),
        ("x-ratelimit-remaining-tokens", "0"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ]);
    assert_eq!(
        w.parse_error(429, &h, &body).retry_after(),
        Some(Duration::from_secs(360))
    );
    // Out of requests.
    let h = headers(&[
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "20ms"),
        ("x-ratelimit-remaining-tokens", "149000"),
        ("x-ratelimit-reset-tokens", "1s"),
    ]);
    assert_eq!(
        w.parse_error(429, &h, &body).retry_after(),
        Some(Duration::from_millis(20))
    );
    // Neither at zero (the request was just too big): the sooner reset.
    let h = headers(&[
        ("x-ratelimit-reset-requests", "1s"),
        ("x-ratelimit-reset-tokens", "1m30.5s"),
    ]);
    assert_eq!(
        w.parse_error(429, &h, &body).retry_after(),
        Some(Duration::from_secs(1))
    );
    // Retry-After, when given, wins; nothing at all gives no hint.
    let mut with = h.clone();
    with.insert("retry-after-ms", "250".parse().unwrap());
    assert_eq!(
        w.parse_error(429, &with, &body).retry_after(),
        Some(Duration::from_millis(250))
    );
    assert_eq!(w.parse_error(429, &no_headers(), &body).retry_after(), None);
    // The same headers on a success pause the deployment only when a limit is at zero.
    let ok = fixture("openai/response_ok.json");
    let h = headers(&[
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "2s"),
    ]);
    let c = w.parse_ok(&h, &ok).unwrap();
    assert_eq!(c.rate_limit.exhausted_for(), Some(Duration::from_secs(2)));
    let h = headers(&[
        ("x-ratelimit-remaining-requests", "3"),
        ("x-ratelimit-reset-requests", "2s"),
    ]);
    assert_eq!(
        w.parse_ok(&h, &ok).unwrap().rate_limit.exhausted_for(),
        None
    );
}

#[test]
fn openai_refusals_of_unsupported_parameters_are_final() {
    let w = OpenAi { compatible: false };
    for name in [
        "openai/error_400_unsupported_stop.json",
        "openai/error_400_unsupported_temperature.json",
    ] {
        let e = w.parse_error(400, &no_headers(), &fixture(name));
        assert!(
            matches!(e, ProviderError::InvalidRequest { status: 400, .. })
                && !e.is_retryable()
                && !e.allows_failover(),
            "{e}"
        );
        assert!(e.to_string().contains("with this model"), "{e}");
    }
}

/// A 2xx that is not an answer (an error body, an empty object, no candidate
/// and no block reason) is unreadable, so it is retried and fails over; only a
/// named block is a refusal.
#[test]
fn a_2xx_without_an_answer_is_unreadable_not_an_empty_success() {
    let h = HeaderMap::new();
    let overloaded =
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
    for body in [&overloaded[..], b"{}", br#"{"type":"completion"}"#] {
        let e = Anthropic.parse_ok(&h, body).unwrap_err();
        assert!(matches!(e, ProviderError::Decode(_)), "{e}");
        assert!(e.is_retryable() && e.allows_failover(), "{e}");
    }
    let e = Anthropic.parse_ok(&h, overloaded).unwrap_err().to_string();
    assert!(e.contains("overloaded_error"), "{e}");

    let e = Gemini.parse_ok(&h, br#"{"candidates":[]}"#).unwrap_err();
    assert!(
        matches!(e, ProviderError::Decode(_)) && e.is_retryable(),
        "{e}"
    );
    let blocked = br#"{"candidates":[],"promptFeedback":{"blockReason":"SAFETY"}}"#;
    let e = Gemini.parse_ok(&h, blocked).unwrap_err();
    assert!(matches!(e, ProviderError::Refused { .. }), "{e}");
}
