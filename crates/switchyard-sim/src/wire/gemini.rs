//! Gemini generateContent as a server: the model in the URL path, the key in
//! `x-goog-api-key` or `?key=`, camelCase or snake_case field names, the Google RPC
//! error envelope (`{"error": {code, message, status, details}}`) with
//! `RetryInfo.retryDelay` on 429s, and `promptTokenCount` including
//! `cachedContentTokenCount`. Gemini sends no rate-limit headers.

use axum::http::HeaderMap;
use serde_json::{Map, Value, json};
use switchyard_core::job::Role;

use super::{
    Context, Parsed, Problem, finish_names, json_object, proto_duration, put, text_content,
};
use switchyard_core::catalog::RequestParam;

use crate::admission::LimitScope;
use crate::config::RateLimitHint;
use crate::synthesis::Reply;

/// Top-level request fields (camelCase), per `GenerateContentRequest`.
const FIELDS: &[&str] = &[
    "contents",
    "systemInstruction",
    "generationConfig",
    "safetySettings",
    "tools",
    "toolConfig",
    "cachedContent",
    "labels",
];

/// `GenerationConfig` fields (camelCase).
const CONFIG_FIELDS: &[&str] = &[
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "imageConfig",
    "mediaResolution",
];

const API_KEY_MESSAGE: &str = "API key not valid. Please pass a valid API key.";

/// `max_output_tokens` → `maxOutputTokens`: the API accepts both spellings.
fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// The object's fields under camelCase names, refusing unknown ones as the API does.
fn fields(
    obj: &Map<String, Value>,
    allowed: &[&str],
    at: Option<&str>,
) -> Result<Map<String, Value>, Problem> {
    let mut out = Map::new();
    for (key, value) in obj {
        let name = camel(key);
        if !allowed.contains(&name.as_str()) {
            let message = match at {
                Some(parent) => format!(
                    "Invalid JSON payload received. Unknown name \"{key}\" at '{parent}': Cannot find field."
                ),
                None => format!(
                    "Invalid JSON payload received. Unknown name \"{key}\": Cannot find field."
                ),
            };
            return Err(Problem::BadRequest {
                message,
                field: Some(at.unwrap_or_default().to_owned()),
            });
        }
        out.insert(name, value.clone());
    }
    Ok(out)
}

/// Text of a `Content` (`{"role", "parts": [{"text"}]}`); non-text parts count nothing.
fn content_text(content: &Value) -> Option<String> {
    let parts = content.get("parts")?.as_array()?;
    Some(
        parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
    )
}

pub(crate) fn parse(model: &str, body: &[u8]) -> Result<Parsed, Problem> {
    let raw = json_object(body)
        .map_err(|e| Problem::bad(format!("Invalid JSON payload received. {e}")))?;
    let req = fields(&raw, FIELDS, None)?;
    let config = match req.get("generationConfig") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(c)) => fields(c, CONFIG_FIELDS, Some("generation_config"))?,
        Some(_) => {
            return Err(Problem::bad(
                "Invalid JSON payload received. 'generation_config' must be an object.",
            ));
        }
    };
    let system = match req.get("systemInstruction") {
        None | Some(Value::Null) => None,
        Some(v) => Some(content_text(v).or_else(|| text_content(v)).ok_or_else(|| {
            Problem::bad(
                "Invalid JSON payload received. 'system_instruction' must be a Content with parts.",
            )
        })?),
    };
    let items = req
        .get("contents")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty());
    let Some(items) = items else {
        return Err(Problem::bad(
            "* GenerateContentRequest.contents: contents is not specified\n",
        ));
    };
    let mut messages = Vec::with_capacity(items.len());
    for item in items {
        let role = match item.get("role").and_then(Value::as_str) {
            None | Some("user") => Role::User,
            Some("model") => Role::Assistant,
            Some(_) => return Err(Problem::bad("Please use a valid role: user, model.")),
        };
        let Some(text) = content_text(item) else {
            return Err(Problem::bad(
                "* GenerateContentRequest.contents.parts: contents.parts must not be empty.\n",
            ));
        };
        messages.push((role, text));
    }
    let max_tokens = super::positive_u32(&config, "maxOutputTokens").map_err(|e| {
        Problem::bad_field(
            format!("* GenerateContentRequest.generation_config.max_output_tokens: {e}\n"),
            "generation_config.max_output_tokens",
        )
    })?;
    super::number_within(&config, "temperature", 2.0).map_err(|e| {
        Problem::bad_field(
            format!("* GenerateContentRequest.generation_config.temperature: {e}\n"),
            "generation_config.temperature",
        )
    })?;
    let json_mode =
        config.get("responseMimeType").and_then(Value::as_str) == Some("application/json");
    Ok(Parsed {
        model: model.to_owned(),
        system,
        messages,
        max_tokens,
        json_mode,
        temperature: config.get("temperature").and_then(Value::as_f64),
        top_p: config.get("topP").and_then(Value::as_f64),
        stop: config.get("stopSequences").is_some_and(|v| !v.is_null()),
    })
}

pub(crate) fn success(ctx: &Context<'_>, reply: &Reply) -> (HeaderMap, Value) {
    let usage = &reply.usage;
    let prompt = usage.input_tokens + usage.cached_input_tokens;
    let mut meta = Map::new();
    meta.insert("promptTokenCount".into(), json!(prompt));
    if usage.cached_input_tokens > 0 {
        meta.insert(
            "cachedContentTokenCount".into(),
            json!(usage.cached_input_tokens),
        );
    }
    meta.insert("candidatesTokenCount".into(), json!(usage.output_tokens));
    meta.insert(
        "totalTokenCount".into(),
        json!(prompt + usage.output_tokens),
    );
    meta.insert(
        "promptTokensDetails".into(),
        json!([{"modality": "TEXT", "tokenCount": prompt}]),
    );
    if usage.cached_input_tokens > 0 {
        meta.insert(
            "cacheTokensDetails".into(),
            json!([{"modality": "TEXT", "tokenCount": usage.cached_input_tokens}]),
        );
    }
    meta.insert(
        "candidatesTokensDetails".into(),
        json!([{"modality": "TEXT", "tokenCount": usage.output_tokens}]),
    );
    let body = json!({
        "candidates": [{
            "content": {"role": "model", "parts": [{"text": reply.content}]},
            "finishReason": finish_names(reply.finish).2,
            "index": 0,
        }],
        "usageMetadata": meta,
        "modelVersion": ctx.model,
        "responseId": ctx.request_id,
    });
    (HeaderMap::new(), body)
}

/// The canonical `google.rpc.Code` name of an HTTP status.
fn status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

pub(crate) fn failure(ctx: &Context<'_>, status: u16, problem: &Problem) -> (HeaderMap, Value) {
    let mut headers = HeaderMap::new();
    put(&mut headers, "x-goog-request-id", &ctx.request_id);
    let (message, details) = match problem {
        Problem::BadRequest { message, field } => {
            let details = field.as_ref().map(|f| {
                vec![json!({
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": f, "description": message}],
                })]
            });
            (message.clone(), details)
        }
        Problem::Unsupported { param, .. } => {
            let field = match param {
                RequestParam::Temperature => "temperature",
                RequestParam::TopP => "top_p",
                RequestParam::Stop => "stop_sequences",
            };
            let message = format!(
                "* GenerateContentRequest.generation_config.{field}: is not supported by this model.\n"
            );
            let details = vec![json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": format!("generation_config.{field}"), "description": message}],
            })];
            (message, Some(details))
        }
        Problem::MissingKey | Problem::InvalidKey { .. } => (
            API_KEY_MESSAGE.to_owned(),
            Some(vec![
                json!({
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"},
                }),
                json!({"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": API_KEY_MESSAGE}),
            ]),
        ),
        Problem::NotFound { message } => (message.clone(), None),
        Problem::RateLimited { retry_after, scope, hint, .. } => {
            let (metric, quota_id) = match scope {
                Some(LimitScope::Tokens) => ("generate_content_input_token_count", "GenerateContentInputTokensPerModelPerMinute"),
                _ => ("generate_content_requests", "GenerateRequestsPerMinutePerProjectPerModel"),
            };
            let mut details = vec![
                json!({
                    "@type": "type.googleapis.com/google.rpc.Help",
                    "links": [{"description": "Learn more about Gemini API quotas", "url": "https://ai.google.dev/gemini-api/docs/rate-limits"}],
                }),
                json!({
                    "@type": "type.googleapis.com/google.rpc.QuotaFailure",
                    "violations": [{
                        "quotaMetric": format!("generativelanguage.googleapis.com/{metric}"),
                        "quotaId": quota_id,
                        "quotaDimensions": {"location": "global", "model": ctx.model},
                    }],
                }),
            ];
            if *hint != RateLimitHint::None {
                details.push(json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": proto_duration(*retry_after)}));
            }
            (
                "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.".to_owned(),
                Some(details),
            )
        }
        Problem::Internal => ("An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting".to_owned(), None),
        Problem::Overloaded => ("The model is overloaded. Please try again later.".to_owned(), None),
        Problem::Outage { .. } => (format!("The model {} is unavailable (simulated outage, HTTP {status}).", ctx.model), None),
        Problem::ShuttingDown => ("The service is shutting down. Please try again later.".to_owned(), None),
    };
    let mut error = Map::new();
    error.insert("code".into(), json!(status));
    error.insert("message".into(), json!(message));
    error.insert("status".into(), json!(status_name(status)));
    if let Some(details) = details {
        error.insert("details".into(), Value::Array(details));
    }
    (headers, json!({ "error": error }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_is_accepted_and_json_mode_read() {
        let body = br#"{"system_instruction":{"parts":[{"text":"S"}]},"contents":[{"role":"user","parts":[{"text":"a"},{"text":"b"}]},{"role":"model","parts":[{"text":"c"}]}],"generation_config":{"max_output_tokens":7,"response_mime_type":"application/json"}}"#;
        let p = parse("gemini-x", body).unwrap();
        assert_eq!(p.model, "gemini-x");
        assert_eq!(p.system.as_deref(), Some("S"));
        assert_eq!(
            p.messages,
            vec![
                (Role::User, "ab".to_owned()),
                (Role::Assistant, "c".to_owned())
            ]
        );
        assert_eq!(p.max_tokens, Some(7));
        assert!(p.json_mode);
    }

    #[test]
    fn unknown_fields_are_refused_like_the_fixture() {
        let body = br#"{"contents":[{"role":"user","parts":[{"text":"a"}]}],"generationConfig":{"max_tokens":5}}"#;
        let Err(Problem::BadRequest { message, field }) = parse("m", body) else {
            unreachable!("accepted")
        };
        assert_eq!(
            message,
            "Invalid JSON payload received. Unknown name \"max_tokens\" at 'generation_config': Cannot find field."
        );
        assert_eq!(field.as_deref(), Some("generation_config"));
        assert!(matches!(
            parse(
                "m",
                br#"{"contents":[{"role":"assistant","parts":[{"text":"a"}]}]}"#
            ),
            Err(Problem::BadRequest { .. })
        ));
        assert!(matches!(
            parse("m", br#"{"contents":[]}"#),
            Err(Problem::BadRequest { .. })
        ));
    }

    #[test]
    fn the_key_may_come_in_the_query() {
        let none = HeaderMap::new();
        let authorize = |query| super::super::Format::Gemini.authorize(&none, query);
        assert!(authorize(Some("alt=json&key=abc")).is_ok());
        assert_eq!(authorize(Some("key=")), Err(Problem::MissingKey));
        assert_eq!(authorize(None), Err(Problem::MissingKey));
    }
}
