//! Google Gemini generateContent (`POST {base}/models/{model}:generateContent`,
//! `x-goog-api-key`). Roles are `user` and `model`; the system prompt goes in
//! `systemInstruction`; settings in `generationConfig`. `promptTokenCount` includes
//! `cachedContentTokenCount`; thinking tokens are billed as output. Gemini sends no
//! rate-limit headers: a 429 carries `google.rpc.RetryInfo.retryDelay`, and a
//! per-day quota violation cannot be cured by retrying.

use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_core::job::{ResponseFormat, Role};
use switchyard_core::result::TokenUsage;

use super::{WireFormat, body_text, clip, decimal, parse_go_duration, retry_after, system_text};
use crate::{CallRequest, Completion, ProviderError, RateLimitInfo};

/// The Gemini wire format.
#[derive(Debug, Clone, Copy)]
pub struct Gemini;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    cached_content_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<Value>,
}

/// Finish reasons that mean the content was withheld.
const BLOCKED: &[&str] = &[
    "SAFETY",
    "RECITATION",
    "LANGUAGE",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
];

impl WireFormat for Gemini {
    fn name(&self) -> &'static str {
        "gemini"
    }

    fn default_base_url(&self) -> &'static str {
        "https://generativelanguage.googleapis.com/v1beta"
    }

    fn url(&self, base_url: &str, api_model: &str) -> String {
        format!(
            "{}/models/{api_model}:generateContent",
            base_url.trim_end_matches('/')
        )
    }

    fn headers(&self, api_key: Option<&str>) -> Vec<(&'static str, String)> {
        api_key
            .map(|k| vec![("x-goog-api-key", k.to_owned())])
            .unwrap_or_default()
    }

    fn body(&self, call: CallRequest<'_>) -> Value {
        let req = call.request;
        let contents: Vec<Value> = req
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .map(|m| {
                let role = if m.role == Role::Assistant {
                    "model"
                } else {
                    "user"
                };
                json!({"role": role, "parts": [{"text": m.content}]})
            })
            .collect();
        let mut config = serde_json::Map::new();
        if let Some(max) = call.max_tokens() {
            config.insert("maxOutputTokens".into(), json!(max));
        }
        if let Some(t) = req.temperature {
            config.insert("temperature".into(), json!(decimal(t)));
        }
        if !req.stop.is_empty() {
            config.insert("stopSequences".into(), json!(req.stop));
        }
        if req.response_format == ResponseFormat::JsonObject {
            config.insert("responseMimeType".into(), json!("application/json"));
        }
        let mut body = serde_json::Map::new();
        if let Some(system) = system_text(req) {
            body.insert(
                "systemInstruction".into(),
                json!({"parts": [{"text": system}]}),
            );
        }
        body.insert("contents".into(), Value::Array(contents));
        if !config.is_empty() {
            body.insert("generationConfig".into(), Value::Object(config));
        }
        Value::Object(body)
    }

    fn parse_ok(&self, _headers: &HeaderMap, body: &[u8]) -> Result<Completion, ProviderError> {
        let r: Response = serde_json::from_slice(body)
            .map_err(|e| ProviderError::Decode(clip(&format!("Gemini response: {e}"))))?;
        let usage = r
            .usage_metadata
            .map(|u| {
                let cached = u.cached_content_token_count.min(u.prompt_token_count);
                TokenUsage {
                    input_tokens: u.prompt_token_count - cached,
                    output_tokens: u
                        .candidates_token_count
                        .saturating_add(u.thoughts_token_count),
                    cached_input_tokens: cached,
                    cache_write_input_tokens: 0,
                }
            })
            .unwrap_or_default();
        let Some(candidate) = r.candidates.into_iter().next() else {
            // A blocked prompt names its reason; no candidate and no reason is
            // a broken answer (retried, failed over), not a refusal.
            return Err(match r.prompt_feedback.and_then(|f| f.block_reason) {
                Some(reason) => ProviderError::Refused {
                    message: clip(&format!("prompt blocked: {reason}")),
                    usage,
                },
                None => ProviderError::Decode(
                    "Gemini response has no candidates and no block reason".into(),
                ),
            });
        };
        let raw_reason = candidate.finish_reason.unwrap_or_else(|| "STOP".into());
        if BLOCKED.contains(&raw_reason.as_str()) {
            return Err(ProviderError::Refused {
                message: format!("finishReason {raw_reason}"),
                usage,
            });
        }
        let finish_reason = match raw_reason.as_str() {
            "STOP" => "stop".to_owned(),
            "MAX_TOKENS" => "length".to_owned(),
            other => other.to_ascii_lowercase(),
        };
        let content = candidate
            .content
            .map(|c| c.parts.into_iter().filter_map(|p| p.text).collect())
            .unwrap_or_default();
        Ok(Completion {
            content,
            finish_reason,
            usage,
            status: 200,
            rate_limit: RateLimitInfo::default(),
        })
    }

    fn parse_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let Ok(e) = serde_json::from_slice::<ErrorBody>(body) else {
            return ProviderError::from_status(status, body_text(body), retry_after(headers));
        };
        let message = if e.error.status.is_empty() {
            clip(&e.error.message)
        } else {
            format!("{}: {}", e.error.status, clip(&e.error.message))
        };
        let detail = |ty: &str| {
            e.error.details.iter().find(|d| {
                d.get("@type")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.ends_with(ty))
            })
        };
        if detail("google.rpc.ErrorInfo")
            .and_then(|d| d.get("reason"))
            .and_then(Value::as_str)
            == Some("API_KEY_INVALID")
        {
            return ProviderError::Auth { status, message };
        }
        if status == 429 {
            let per_day = detail("google.rpc.QuotaFailure")
                .and_then(|d| d.get("violations"))
                .and_then(Value::as_array)
                .is_some_and(|v| {
                    v.iter().any(|x| {
                        x.get("quotaId")
                            .and_then(Value::as_str)
                            .is_some_and(|q| q.contains("PerDay"))
                    })
                });
            if per_day {
                return ProviderError::QuotaExhausted { status, message };
            }
            let delay = detail("google.rpc.RetryInfo")
                .and_then(|d| d.get("retryDelay"))
                .and_then(Value::as_str)
                .and_then(parse_go_duration);
            return ProviderError::RateLimited {
                status,
                message,
                retry_after: delay.or_else(|| retry_after(headers)),
            };
        }
        ProviderError::from_status(status, message, retry_after(headers))
    }
}
