//! OpenAI Chat Completions as a server: `Authorization: Bearer`, the
//! `{"error": {message, type, param, code}}` envelope, `usage.prompt_tokens`
//! including `prompt_tokens_details.cached_tokens`, and the `x-ratelimit-*`
//! headers with Go-style reset durations. OpenAI-compatible hosts share it, so
//! both `max_completion_tokens` and `max_tokens` are accepted.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use serde_json::{Value, json};
use switchyard_core::job::Role;

use super::{
    Context, Parsed, Problem, ceil_millis, ceil_secs, finish_names, go_duration, json_object,
    positive_u32, put, text_content, unknown_key,
};
use crate::admission::LimitScope;
use crate::config::RateLimitHint;
use crate::synthesis::Reply;

/// Request fields the API knows; anything else is refused as the API does.
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "audio",
    "frequency_penalty",
    "function_call",
    "functions",
    "logit_bias",
    "logprobs",
    "max_completion_tokens",
    "max_tokens",
    "metadata",
    "modalities",
    "n",
    "parallel_tool_calls",
    "prediction",
    "presence_penalty",
    "prompt_cache_key",
    "reasoning_effort",
    "response_format",
    "safety_identifier",
    "seed",
    "service_tier",
    "stop",
    "store",
    "stream",
    "stream_options",
    "temperature",
    "tool_choice",
    "tools",
    "top_logprobs",
    "top_p",
    "user",
    "verbosity",
    "web_search_options",
];

const ROLES: &str = "'system', 'assistant', 'user', 'function', 'tool', and 'developer'";

pub(crate) fn parse(body: &[u8]) -> Result<Parsed, Problem> {
    let req = json_object(body).map_err(|e| {
        Problem::bad(format!(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON: {e})"
        ))
    })?;
    if let Some(key) = unknown_key(&req, FIELDS) {
        return Err(Problem::bad(format!(
            "Unrecognized request argument supplied: {key}"
        )));
    }
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => {
            return Err(Problem::bad_field(
                "you must provide a model parameter",
                "model",
            ));
        }
    };
    let Some(items) = req.get("messages").and_then(Value::as_array) else {
        return Err(Problem::bad_field(
            "Missing required parameter: 'messages'.",
            "messages",
        ));
    };
    if items.is_empty() {
        return Err(Problem::bad_field(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
            "messages",
        ));
    }
    let mut system_parts = Vec::new();
    let mut messages = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let role = item.get("role").and_then(Value::as_str).unwrap_or_default();
        let role = match role {
            "system" | "developer" => Role::System,
            "user" | "tool" | "function" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(Problem::bad_field(
                    format!("Invalid value: '{other}'. Supported values are: {ROLES}."),
                    format!("messages[{i}].role"),
                ));
            }
        };
        let Some(content) = item.get("content").and_then(text_content) else {
            return Err(Problem::bad_field(
                format!(
                    "Invalid type for 'messages[{i}].content': expected a string or an array of content parts."
                ),
                format!("messages[{i}].content"),
            ));
        };
        if role == Role::System {
            system_parts.push(content);
        } else {
            messages.push((role, content));
        }
    }
    let max_tokens = match (
        positive_u32(&req, "max_completion_tokens"),
        positive_u32(&req, "max_tokens"),
    ) {
        (Err(e), _) => return Err(invalid_value("max_completion_tokens", &e)),
        (_, Err(e)) => return Err(invalid_value("max_tokens", &e)),
        (Ok(a), Ok(b)) => a.or(b),
    };
    super::number_within(&req, "temperature", 2.0).map_err(|e| invalid_value("temperature", &e))?;
    if req.get("stream").and_then(Value::as_bool) == Some(true) {
        return Err(Problem::bad_field(
            "The simulator does not stream; leave out 'stream' or set it to false.",
            "stream",
        ));
    }
    let json_mode = match req.get("response_format") {
        None | Some(Value::Null) => false,
        Some(format) => match format.get("type").and_then(Value::as_str) {
            Some("text") => false,
            Some("json_object" | "json_schema") => true,
            _ => {
                return Err(Problem::bad_field(
                    "Invalid value for 'response_format.type': supported values are 'text', 'json_object' and 'json_schema'.",
                    "response_format.type",
                ));
            }
        },
    };
    let system = (!system_parts.is_empty()).then(|| system_parts.join("\n\n"));
    Ok(Parsed {
        model,
        system,
        messages,
        max_tokens,
        json_mode,
        temperature: req.get("temperature").and_then(Value::as_f64),
        top_p: req.get("top_p").and_then(Value::as_f64),
        stop: req.get("stop").is_some_and(|v| !v.is_null()),
    })
}

fn invalid_value(field: &str, problem: &str) -> Problem {
    Problem::bad_field(format!("Invalid '{field}': {problem}."), field)
}

pub(crate) fn success(ctx: &Context<'_>, reply: &Reply) -> (HeaderMap, Value) {
    let usage = &reply.usage;
    let prompt = usage.input_tokens + usage.cached_input_tokens;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let body = json!({
        "id": format!("chatcmpl-{}", ctx.request_id),
        "object": "chat.completion",
        "created": created,
        "model": ctx.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply.content, "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": finish_names(reply.finish).0,
        }],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": usage.output_tokens,
            "total_tokens": prompt + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_switchyard_sim",
    });
    (headers(ctx), body)
}

pub(crate) fn failure(ctx: &Context<'_>, status: u16, problem: &Problem) -> (HeaderMap, Value) {
    let mut headers = headers(ctx);
    let (message, kind, param, code): (String, &str, Option<&str>, Option<&str>) = match problem {
        Problem::BadRequest { message, field } => (message.clone(), "invalid_request_error", field.as_deref(), None),
        Problem::MissingKey => (
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from https://platform.openai.com/account/api-keys.".into(),
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
        Problem::NotFound { message } => (message.clone(), "invalid_request_error", None, None),
        Problem::InvalidKey { presented } => (
            format!("Incorrect API key provided: {presented}. You can find your API key at https://platform.openai.com/account/api-keys."),
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
        Problem::Unsupported { param, value } => {
            let name = param.as_str();
            match value {
                Some(v) => (
                    format!("Unsupported value: '{name}' does not support {v} with this model. Only the default (1) value is supported."),
                    "invalid_request_error",
                    Some(name),
                    Some("unsupported_value"),
                ),
                None => (
                    format!("Unsupported parameter: '{name}' is not supported with this model."),
                    "invalid_request_error",
                    Some(name),
                    Some("unsupported_parameter"),
                ),
            }
        }
        Problem::RateLimited { retry_after, scope, limit, used, requested, hint } => {
            let wait = go_duration(*retry_after);
            let (kind, what, remaining, reset) = match scope {
                Some(LimitScope::Tokens) => (
                    "tokens",
                    "tokens per min (TPM)",
                    "x-ratelimit-remaining-tokens",
                    "x-ratelimit-reset-tokens",
                ),
                _ => (
                    "requests",
                    "requests per min (RPM)",
                    "x-ratelimit-remaining-requests",
                    "x-ratelimit-reset-requests",
                ),
            };
            match hint {
                RateLimitHint::RetryAfter => {
                    put(&mut headers, "retry-after", ceil_secs(*retry_after));
                    put(&mut headers, "retry-after-ms", ceil_millis(*retry_after));
                }
                RateLimitHint::ResetHeaders => {
                    put(&mut headers, remaining, 0);
                    put(&mut headers, reset, &wait);
                }
                RateLimitHint::None => {
                    headers.remove("x-ratelimit-reset-requests");
                    headers.remove("x-ratelimit-reset-tokens");
                }
            }
            let message = match scope {
                Some(_) => format!(
                    "Rate limit reached for {} in organization org-switchyard-sim on {what}: Limit {limit}, Used {used}, Requested {requested}. Please try again in {wait}. Visit https://platform.openai.com/account/rate-limits to learn more.",
                    ctx.model
                ),
                None => format!(
                    "Rate limit reached for {} in organization org-switchyard-sim on {what}. Please try again in {wait}. Visit https://platform.openai.com/account/rate-limits to learn more.",
                    ctx.model
                ),
            };
            (message, kind, None, Some("rate_limit_exceeded"))
        }
        Problem::Internal => ("The server had an error while processing your request. Sorry about that!".into(), "server_error", None, None),
        Problem::Overloaded => (
            "That model is currently overloaded with other requests. You can retry your request, or contact us through our help center at help.openai.com if the error persists.".into(),
            "server_error",
            None,
            None,
        ),
        Problem::Outage { .. } => {
            let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
            (format!("The model `{}` is unavailable (simulated outage, HTTP {status}).", ctx.model), kind, None, None)
        }
        Problem::ShuttingDown => ("The server is shutting down; retry the request.".into(), "server_error", None, None),
    };
    let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
    (headers, body)
}

fn headers(ctx: &Context<'_>) -> HeaderMap {
    let mut h = HeaderMap::new();
    put(&mut h, "x-request-id", format!("req_{}", ctx.request_id));
    if let Some(q) = ctx.limits.requests {
        put(&mut h, "x-ratelimit-limit-requests", q.limit);
        put(&mut h, "x-ratelimit-remaining-requests", q.remaining);
        put(&mut h, "x-ratelimit-reset-requests", go_duration(q.reset));
    }
    if let Some(q) = ctx.limits.tokens {
        put(&mut h, "x-ratelimit-limit-tokens", q.limit);
        put(&mut h, "x-ratelimit-remaining-tokens", q.remaining);
        put(&mut h, "x-ratelimit-reset-tokens", go_duration(q.reset));
    }
    h
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn system_messages_become_the_system_prompt() {
        let body = br#"{"model":"m","messages":[{"role":"system","content":"S"},{"role":"developer","content":[{"type":"text","text":"D"}]},{"role":"user","content":"U"}],"max_tokens":5}"#;
        let p = parse(body).unwrap();
        assert_eq!(p.system.as_deref(), Some("S\n\nD"));
        assert_eq!(p.messages, vec![(Role::User, "U".to_owned())]);
        assert_eq!(p.max_tokens, Some(5));
        assert!(!p.json_mode);
    }

    #[test]
    fn the_api_s_refusals_are_reproduced() {
        let bad = |body: &[u8]| match parse(body) {
            Err(Problem::BadRequest { message, .. }) => message,
            other => format!("not refused: {other:?}"),
        };
        assert!(bad(b"{").contains("could not parse the JSON body"));
        assert!(
            bad(br#"{"model":"m","messages":[],"x":1}"#)
                .contains("Unrecognized request argument supplied: x")
        );
        assert!(bad(br#"{"model":"m"}"#).contains("Missing required parameter: 'messages'"));
        assert!(
            bad(br#"{"model":"m","messages":[{"role":"robot","content":"hi"}]}"#)
                .contains("Invalid value: 'robot'")
        );
        assert!(bad(br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":0}"#).contains("max_completion_tokens"));
        assert!(
            bad(br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":3}"#)
                .contains("temperature")
        );
    }
}
