//! Anthropic Messages as a server: `x-api-key` and `anthropic-version` required,
//! the `{"type": "error", "error": {type, message}, "request_id"}` envelope,
//! `usage.input_tokens` excluding cache reads (reported in
//! `cache_read_input_tokens`), `anthropic-ratelimit-*` headers with RFC 3339
//! resets. The API has no JSON flag: a system prompt that mentions JSON asks for it.

use std::time::Duration;

use axum::http::HeaderMap;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use switchyard_core::job::Role;

use super::{
    Context, Parsed, Problem, ceil_secs, finish_names, json_object, positive_u32, put,
    text_content, unknown_key,
};
use switchyard_core::catalog::RequestParam;

use crate::admission::LimitScope;
use crate::config::RateLimitHint;
use crate::synthesis::Reply;

/// Request fields the API knows; anything else is refused as the API does.
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
    "service_tier",
    "container",
    "mcp_servers",
    "context_management",
    "output_config",
];

/// Refuses a request without the `anthropic-version` header the API requires.
pub(crate) fn require_version(headers: &HeaderMap) -> Result<(), Problem> {
    let present = headers
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty());
    if present {
        Ok(())
    } else {
        Err(Problem::bad("anthropic-version: header is required"))
    }
}

pub(crate) fn parse(body: &[u8]) -> Result<Parsed, Problem> {
    let req = json_object(body).map_err(|e| {
        Problem::bad(format!(
            "There was an error parsing the body of your request: {e}"
        ))
    })?;
    if let Some(key) = unknown_key(&req, FIELDS) {
        return Err(Problem::bad_field(
            format!("{key}: Extra inputs are not permitted"),
            key,
        ));
    }
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(Problem::bad_field("model: Field required", "model")),
    };
    let max_tokens = match positive_u32(&req, "max_tokens") {
        Ok(Some(n)) => n,
        Ok(None) => {
            return Err(Problem::bad_field(
                "max_tokens: Field required",
                "max_tokens",
            ));
        }
        Err(_) => {
            return Err(Problem::bad_field(
                "max_tokens: Input should be greater than or equal to 1",
                "max_tokens",
            ));
        }
    };
    super::number_within(&req, "temperature", 1.0).map_err(|_| {
        Problem::bad_field(
            "temperature: Input should be less than or equal to 1",
            "temperature",
        )
    })?;
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(Problem::bad_field(
            "stream: the simulator does not stream; leave it out or set it to false",
            "stream",
        ));
    }
    let system = match req.get("system") {
        None | Some(Value::Null) => None,
        Some(v) => Some(text_content(v).ok_or_else(|| {
            Problem::bad_field(
                "system: Input should be a valid string or a list of text blocks",
                "system",
            )
        })?),
    };
    let Some(items) = req.get("messages").and_then(Value::as_array) else {
        return Err(Problem::bad_field("messages: Field required", "messages"));
    };
    if items.is_empty() {
        return Err(Problem::bad_field(
            "messages: at least one message is required",
            "messages",
        ));
    }
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let role = match item.get("role").and_then(Value::as_str) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("system") => {
                return Err(Problem::bad(format!(
                    "messages.{i}.role: Unexpected role \"system\". The Messages API accepts a top-level `system` parameter, not \"system\" as an input message role."
                )));
            }
            _ => {
                return Err(Problem::bad(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                )));
            }
        };
        let Some(content) = item.get("content").and_then(text_content) else {
            return Err(Problem::bad(format!(
                "messages.{i}.content: Input should be a valid string or a list of content blocks"
            )));
        };
        messages.push((role, content));
    }
    // Anthropic refuses a stop sequence of whitespace alone ("\n\n"), which
    // OpenAI and Gemini accept.
    if let Some(stops) = req.get("stop_sequences").and_then(Value::as_array)
        && stops
            .iter()
            .any(|s| s.as_str().is_some_and(|s| s.trim().is_empty()))
    {
        return Err(Problem::bad_field(
            "stop_sequences: each stop sequence must contain non-whitespace",
            "stop_sequences",
        ));
    }
    let json_mode = system
        .as_deref()
        .is_some_and(|s| s.to_ascii_lowercase().contains("json"));
    Ok(Parsed {
        model,
        system,
        messages,
        max_tokens: Some(max_tokens),
        json_mode,
        temperature: req.get("temperature").and_then(Value::as_f64),
        top_p: req.get("top_p").and_then(Value::as_f64),
        stop: req.get("stop_sequences").is_some_and(|v| !v.is_null()),
    })
}

pub(crate) fn success(ctx: &Context<'_>, reply: &Reply) -> (HeaderMap, Value) {
    let usage = &reply.usage;
    let body = json!({
        "id": format!("msg_{}", ctx.request_id),
        "type": "message",
        "role": "assistant",
        "model": ctx.model,
        "content": [{"type": "text", "text": reply.content}],
        "stop_reason": finish_names(reply.finish).1,
        "stop_sequence": null,
        "usage": {
            "input_tokens": usage.input_tokens,
            "cache_creation_input_tokens": usage.cache_write_input_tokens,
            "cache_read_input_tokens": usage.cached_input_tokens,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "output_tokens": usage.output_tokens,
            "service_tier": "standard",
        },
    });
    (headers(ctx), body)
}

pub(crate) fn failure(ctx: &Context<'_>, status: u16, problem: &Problem) -> (HeaderMap, Value) {
    let mut headers = headers(ctx);
    let (kind, message) = match problem {
        Problem::BadRequest { message, .. } => ("invalid_request_error", message.clone()),
        Problem::MissingKey => (
            "authentication_error",
            "x-api-key header is required".to_owned(),
        ),
        Problem::InvalidKey { .. } => ("authentication_error", "invalid x-api-key".to_owned()),
        Problem::Unsupported { param, .. } => {
            let field = match param {
                RequestParam::Stop => "stop_sequences",
                other => other.as_str(),
            };
            (
                "invalid_request_error",
                format!("{field}: is not supported by this model"),
            )
        }
        Problem::NotFound { message } => ("not_found_error", message.clone()),
        Problem::RateLimited {
            retry_after,
            scope,
            limit,
            hint,
            ..
        } => {
            match hint {
                RateLimitHint::RetryAfter => {
                    put(&mut headers, "retry-after", ceil_secs(*retry_after));
                }
                RateLimitHint::ResetHeaders => {
                    let (remaining, reset) = match scope {
                        Some(LimitScope::Tokens) => (
                            "anthropic-ratelimit-input-tokens-remaining",
                            "anthropic-ratelimit-input-tokens-reset",
                        ),
                        _ => (
                            "anthropic-ratelimit-requests-remaining",
                            "anthropic-ratelimit-requests-reset",
                        ),
                    };
                    put(&mut headers, remaining, 0);
                    put(&mut headers, reset, rfc3339_after(Utc::now(), *retry_after));
                }
                RateLimitHint::None => {
                    for name in [
                        "anthropic-ratelimit-requests-reset",
                        "anthropic-ratelimit-tokens-reset",
                        "anthropic-ratelimit-input-tokens-reset",
                        "anthropic-ratelimit-output-tokens-reset",
                    ] {
                        headers.remove(name);
                    }
                }
            }
            let message = match scope {
                Some(LimitScope::Requests) => format!(
                    "This request would exceed the rate limit for your organization of {limit} requests per minute. Please wait before retrying."
                ),
                Some(LimitScope::Tokens) => format!(
                    "This request would exceed the rate limit for your organization of {limit} input tokens per minute. Please reduce the prompt length or wait before retrying."
                ),
                None => "This request would exceed your organization's rate limit. Please wait before retrying.".to_owned(),
            };
            ("rate_limit_error", message)
        }
        Problem::Internal => ("api_error", "Internal server error".to_owned()),
        Problem::Overloaded => ("overloaded_error", "Overloaded".to_owned()),
        Problem::Outage { .. } => {
            let kind = match status {
                529 => "overloaded_error",
                504 => "timeout_error",
                429 => "rate_limit_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                500..=599 => "api_error",
                _ => "invalid_request_error",
            };
            (
                kind,
                format!(
                    "The model {} is unavailable (simulated outage, HTTP {status}).",
                    ctx.model
                ),
            )
        }
        Problem::ShuttingDown => (
            "api_error",
            "The server is shutting down; retry the request.".to_owned(),
        ),
    };
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": format!("req_{}", ctx.request_id),
    });
    (headers, body)
}

fn headers(ctx: &Context<'_>) -> HeaderMap {
    let mut h = HeaderMap::new();
    put(&mut h, "request-id", format!("req_{}", ctx.request_id));
    let now = Utc::now();
    if let Some(q) = ctx.limits.requests {
        put(&mut h, "anthropic-ratelimit-requests-limit", q.limit);
        put(
            &mut h,
            "anthropic-ratelimit-requests-remaining",
            q.remaining,
        );
        put(
            &mut h,
            "anthropic-ratelimit-requests-reset",
            rfc3339_after(now, q.reset),
        );
    }
    if let Some(q) = ctx.limits.tokens {
        put(&mut h, "anthropic-ratelimit-tokens-limit", q.limit);
        put(&mut h, "anthropic-ratelimit-tokens-remaining", q.remaining);
        put(
            &mut h,
            "anthropic-ratelimit-tokens-reset",
            rfc3339_after(now, q.reset),
        );
    }
    h
}

/// `now + after`, rounded up to the second, as RFC 3339 (`2026-01-01T00:00:05Z`).
fn rfc3339_after(now: DateTime<Utc>, after: Duration) -> String {
    let at = chrono::Duration::from_std(after)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let secs = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
    DateTime::from_timestamp(secs, 0)
        .unwrap_or(at)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn json_is_asked_for_in_the_system_prompt() {
        let body = br#"{"model":"m","max_tokens":9,"system":[{"type":"text","text":"Respond with a single JSON object."}],"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}"#;
        let p = parse(body).unwrap();
        assert!(p.json_mode);
        assert_eq!(p.messages, vec![(Role::User, "hi".to_owned())]);
    }

    #[test]
    fn the_api_s_refusals_are_reproduced() {
        let bad = |body: &[u8]| match parse(body) {
            Err(Problem::BadRequest { message, .. }) => message,
            other => format!("not refused: {other:?}"),
        };
        assert_eq!(
            bad(br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#),
            "max_tokens: Field required"
        );
        assert!(
            bad(br#"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"hi"}]}"#)
                .contains("Unexpected role")
        );
        assert!(bad(br#"{"model":"m","max_tokens":5,"temperature":1.5,"messages":[{"role":"user","content":"hi"}]}"#).contains("temperature"));
        assert!(bad(br#"{"model":"m","max_tokens":5,"stop":["x"],"messages":[{"role":"user","content":"hi"}]}"#).contains("stop: Extra inputs"));
    }

    #[test]
    fn resets_round_up_to_the_second() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.250Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            rfc3339_after(now, Duration::from_millis(1000)),
            "2026-01-01T00:00:02Z"
        );
        assert_eq!(
            rfc3339_after(now, Duration::from_millis(750)),
            "2026-01-01T00:00:01Z"
        );
    }
}
