//! Anthropic Messages (`POST {base}/messages`, `x-api-key`, `anthropic-version:
//! 2023-06-01`). The system prompt is a top-level field; roles are user and
//! assistant only. The Messages API has no JSON-mode flag that every model accepts,
//! so JSON output is asked for in the system prompt and checked by the worker.
//! `usage.input_tokens` excludes cache reads (`cache_read_input_tokens`) and
//! cache writes (`cache_creation_input_tokens`), each billed at its own price.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_core::job::{ResponseFormat, Role};
use switchyard_core::result::TokenUsage;

use super::{
    MAX_HINT, WireFormat, body_text, clip, decimal, header_str, header_u64, retry_after,
    system_with_json,
};
use crate::{CallRequest, Completion, ProviderError, RateLimitInfo};

/// The API version this adapter speaks.
pub const API_VERSION: &str = "2023-06-01";

/// `max_tokens` is required by the API; used when the job gives none.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// The Anthropic wire format.
#[derive(Debug, Clone, Copy)]
pub struct Anthropic;

#[derive(Deserialize)]
struct Response {
    /// `message` for an answer; `error` for an error some gateways send with a 200.
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    message: String,
}

impl WireFormat for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn default_base_url(&self) -> &'static str {
        "https://api.anthropic.com/v1"
    }

    fn url(&self, base_url: &str, _api_model: &str) -> String {
        format!("{}/messages", base_url.trim_end_matches('/'))
    }

    fn headers(&self, api_key: Option<&str>) -> Vec<(&'static str, String)> {
        let mut h = vec![("anthropic-version", API_VERSION.to_owned())];
        if let Some(k) = api_key {
            h.push(("x-api-key", k.to_owned()));
        }
        h
    }

    fn body(&self, call: CallRequest<'_>) -> Value {
        let req = call.request;
        let messages: Vec<Value> = req
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
            .collect();
        let mut body = json!({
            "model": call.api_model,
            "max_tokens": call.max_tokens().unwrap_or(DEFAULT_MAX_TOKENS),
        });
        if let Some(obj) = body.as_object_mut() {
            if let Some(system) =
                system_with_json(req, req.response_format == ResponseFormat::JsonObject)
            {
                obj.insert("system".into(), json!(system));
            }
            obj.insert("messages".into(), json!(messages));
            if let Some(t) = req.temperature {
                // The Messages API takes 0..=1.
                obj.insert("temperature".into(), json!(decimal(t.min(1.0))));
            }
            if !req.stop.is_empty() {
                obj.insert("stop_sequences".into(), json!(req.stop));
            }
        }
        body
    }

    fn parse_ok(&self, headers: &HeaderMap, body: &[u8]) -> Result<Completion, ProviderError> {
        let r: Response = serde_json::from_slice(body)
            .map_err(|e| ProviderError::Decode(clip(&format!("Anthropic response: {e}"))))?;
        // An error body (or no message at all) under a 2xx is not an answer: it
        // is retried and fails over like any unreadable response, never taken
        // for an empty success.
        match r.kind.as_deref() {
            Some("message") => {}
            Some("error") => {
                let (kind, message) = error_text(body);
                return Err(ProviderError::Decode(format!(
                    "an error body with a 2xx status: {kind}: {message}"
                )));
            }
            Some(other) => {
                return Err(ProviderError::Decode(clip(&format!(
                    "Anthropic response of type {other:?}, not a message"
                ))));
            }
            None if r.content.is_empty() && r.usage.is_none() && r.stop_reason.is_none() => {
                return Err(ProviderError::Decode(
                    "Anthropic response has no content, usage or stop_reason".into(),
                ));
            }
            None => {}
        }
        let usage = r
            .usage
            .map(|u| TokenUsage {
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                cached_input_tokens: u.cache_read_input_tokens.unwrap_or(0),
                // Billed at the cache-write price (the catalog's surcharge).
                cache_write_input_tokens: u.cache_creation_input_tokens.unwrap_or(0),
            })
            .unwrap_or_default();
        let content: String = r
            .content
            .iter()
            .filter(|b| b.kind == "text")
            .filter_map(|b| b.text.as_deref())
            .collect();
        let finish_reason = match r.stop_reason.as_deref() {
            Some("end_turn") | Some("stop_sequence") | None => "stop".to_owned(),
            Some("max_tokens") => "length".to_owned(),
            Some("tool_use") => "tool_calls".to_owned(),
            Some("refusal") => {
                return Err(ProviderError::Refused {
                    message: "stop_reason refusal".into(),
                    usage,
                });
            }
            Some(other) => other.to_owned(),
        };
        Ok(Completion {
            content,
            finish_reason,
            usage,
            status: 200,
            rate_limit: rate_limit_info(headers, Utc::now()),
        })
    }

    /// "stop_sequences: each stop sequence must contain non-whitespace".
    fn refuses_stop(&self, stop: &str) -> bool {
        stop.trim().is_empty()
    }

    fn parse_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let (kind, message) = error_text(body);
        let message = if kind.is_empty() {
            message
        } else {
            format!("{kind}: {message}")
        };
        if status == 400 && kind == "billing_error" || status == 402 {
            return ProviderError::QuotaExhausted { status, message };
        }
        // Without Retry-After, a 429's anthropic-ratelimit-*-reset headers say when
        // capacity returns.
        let hint = retry_after(headers).or_else(|| {
            (status == 429).then(|| rate_limit_info(headers, Utc::now()).retry_hint())?
        });
        ProviderError::from_status(status, message, hint)
    }
}

/// The error type and message of an error body (the body's text when it is
/// not Anthropic's error shape).
fn error_text(body: &[u8]) -> (String, String) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => (e.error.kind, clip(&e.error.message)),
        Err(_) => (String::new(), body_text(body)),
    }
}

/// Anthropic's `anthropic-ratelimit-*` headers; resets are RFC 3339 instants.
/// Tokens are limited three ways (`tokens`, `input-tokens`, `output-tokens`); the
/// most constraining one is reported: an exhausted limit (the one that resets
/// last, if several are), else the one with the fewest tokens left.
pub fn rate_limit_info(headers: &HeaderMap, now: DateTime<Utc>) -> RateLimitInfo {
    let until = |name: &str| {
        header_str(headers, name)
            .and_then(|v| DateTime::parse_from_rfc3339(v.trim()).ok())
            .map(|t| {
                (t.with_timezone(&Utc) - now)
                    .to_std()
                    .unwrap_or_default()
                    .min(MAX_HINT)
            })
    };
    let scope = |(remaining, reset): (&str, &str)| (header_u64(headers, remaining), until(reset));
    let (remaining_requests, reset_requests) = scope((
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ));
    let tokens = [
        (
            "anthropic-ratelimit-tokens-remaining",
            "anthropic-ratelimit-tokens-reset",
        ),
        (
            "anthropic-ratelimit-input-tokens-remaining",
            "anthropic-ratelimit-input-tokens-reset",
        ),
        (
            "anthropic-ratelimit-output-tokens-remaining",
            "anthropic-ratelimit-output-tokens-reset",
        ),
    ]
    .map(scope)
    .into_iter()
    .filter(|(remaining, reset)| remaining.is_some() || reset.is_some());
    let (remaining_tokens, reset_tokens) = tokens
        .max_by_key(|(remaining, reset)| {
            (
                *remaining == Some(0),
                if *remaining == Some(0) {
                    reset.unwrap_or_default()
                } else {
                    Duration::ZERO
                },
                std::cmp::Reverse(remaining.unwrap_or(u64::MAX)),
            )
        })
        .unwrap_or_default();
    RateLimitInfo {
        remaining_requests,
        remaining_tokens,
        reset_requests,
        reset_tokens,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_most_constraining_token_limit_is_reported() {
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2026-11-25T10:00:01Z"),
            ("anthropic-ratelimit-tokens-remaining", "12000"),
            ("anthropic-ratelimit-tokens-reset", "2026-11-25T10:00:30Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "40000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2026-11-25T10:00:05Z",
            ),
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2026-11-25T10:00:12Z",
            ),
        ]);
        let info = rate_limit_info(&h, now());
        assert_eq!(info.remaining_requests, Some(49));
        assert_eq!(info.reset_requests, Some(Duration::from_secs(1)));
        assert_eq!(
            info.remaining_tokens,
            Some(0),
            "output tokens are exhausted"
        );
        assert_eq!(info.reset_tokens, Some(Duration::from_secs(12)));
        assert_eq!(info.exhausted_for(), Some(Duration::from_secs(12)));

        let h = headers(&[
            ("anthropic-ratelimit-tokens-remaining", "12000"),
            ("anthropic-ratelimit-tokens-reset", "2026-11-25T10:00:30Z"),
            ("anthropic-ratelimit-input-tokens-remaining", "900"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2026-11-25T10:00:05.500Z",
            ),
        ]);
        let info = rate_limit_info(&h, now());
        assert_eq!(info.remaining_tokens, Some(900));
        assert_eq!(info.reset_tokens, Some(Duration::from_millis(5_500)));
        assert_eq!(info.exhausted_for(), None, "nothing is at zero");
        assert_eq!(info.retry_hint(), Some(Duration::from_millis(5_500)));
        // A reset in the past means now.
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2026-11-25T09:59:00Z"),
        ]);
        assert_eq!(
            rate_limit_info(&h, now()).exhausted_for(),
            Some(Duration::ZERO)
        );
        assert_eq!(
            rate_limit_info(&HeaderMap::new(), now()),
            RateLimitInfo::default()
        );
    }

    #[test]
    fn a_429_without_retry_after_waits_for_the_reset_headers() {
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#;
        let in_20s = (Utc::now() + chrono::Duration::seconds(20))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let h = headers(&[
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            ("anthropic-ratelimit-input-tokens-reset", &in_20s),
            ("anthropic-ratelimit-requests-remaining", "10"),
        ]);
        let e = Anthropic.parse_error(429, &h, body);
        let wait = e.retry_after().unwrap();
        assert!(
            wait > Duration::from_secs(18) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        let mut with_retry_after = h.clone();
        with_retry_after.insert("retry-after", "3".parse().unwrap());
        assert_eq!(
            Anthropic
                .parse_error(429, &with_retry_after, body)
                .retry_after(),
            Some(Duration::from_secs(3)),
            "Retry-After wins"
        );
        assert_eq!(
            Anthropic
                .parse_error(429, &HeaderMap::new(), body)
                .retry_after(),
            None
        );
        assert_eq!(
            Anthropic.parse_error(529, &h, b"{}").retry_after(),
            None,
            "reset headers are about rate limits, not overload"
        );
    }
}
