//! OpenAI Chat Completions (`POST {base}/chat/completions`), also spoken by
//! OpenAI-compatible hosts (vLLM, Ollama, DeepSeek, Groq, Together, Mistral, xAI).
//! Differences: OpenAI itself takes `max_completion_tokens` (`max_tokens` is
//! deprecated there), compatible hosts take `max_tokens`.

use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_core::job::{ResponseFormat, Role};
use switchyard_core::result::TokenUsage;

use super::{
    WireFormat, body_text, clip, decimal, header_str, header_u64, parse_go_duration, retry_after,
    system_with_json,
};
use crate::{CallRequest, Completion, ProviderError, RateLimitInfo};

/// The OpenAI wire format.
#[derive(Debug, Clone, Copy)]
pub struct OpenAi {
    /// True for OpenAI-compatible hosts.
    pub compatible: bool,
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Message,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: u64,
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
    code: Option<Value>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

impl WireFormat for OpenAi {
    fn name(&self) -> &'static str {
        if self.compatible {
            "openai-compatible"
        } else {
            "openai"
        }
    }

    fn default_base_url(&self) -> &'static str {
        "https://api.openai.com/v1"
    }

    fn url(&self, base_url: &str, _api_model: &str) -> String {
        format!("{}/chat/completions", base_url.trim_end_matches('/'))
    }

    fn headers(&self, api_key: Option<&str>) -> Vec<(&'static str, String)> {
        api_key
            .map(|k| vec![("authorization", format!("Bearer {k}"))])
            .unwrap_or_default()
    }

    fn body(&self, call: CallRequest<'_>) -> Value {
        let req = call.request;
        let json_mode = req.response_format == ResponseFormat::JsonObject;
        // OpenAI refuses JSON mode unless the word "json" appears in the
        // messages (looked for only in JSON mode: it reads every message).
        let mentions_json = || {
            req.system
                .iter()
                .chain(req.messages.iter().map(|m| &m.content))
                .any(|t| mentions_word_json(t))
        };
        let mut messages = Vec::with_capacity(req.messages.len() + 1);
        if let Some(system) = system_with_json(req, json_mode && !mentions_json()) {
            messages.push(json!({"role": "system", "content": system}));
        }
        for m in req.messages.iter().filter(|m| m.role != Role::System) {
            messages.push(json!({"role": m.role.as_str(), "content": m.content}));
        }
        let mut body = json!({"model": call.api_model, "messages": messages});
        let obj = body.as_object_mut();
        if let Some(obj) = obj {
            if let Some(max) = call.max_tokens() {
                let key = if self.compatible {
                    "max_tokens"
                } else {
                    "max_completion_tokens"
                };
                obj.insert(key.into(), json!(max));
            }
            if let Some(t) = req.temperature {
                obj.insert("temperature".into(), json!(decimal(t)));
            }
            if !req.stop.is_empty() {
                obj.insert("stop".into(), json!(req.stop));
            }
            if json_mode {
                obj.insert("response_format".into(), json!({"type": "json_object"}));
            }
        }
        body
    }

    fn parse_ok(&self, headers: &HeaderMap, body: &[u8]) -> Result<Completion, ProviderError> {
        let r: Response = serde_json::from_slice(body)
            .map_err(|e| ProviderError::Decode(clip(&format!("OpenAI response: {e}"))))?;
        let usage = r
            .usage
            .map(|u| {
                let cached = u
                    .prompt_tokens_details
                    .map_or(0, |d| d.cached_tokens)
                    .min(u.prompt_tokens);
                TokenUsage {
                    input_tokens: u.prompt_tokens - cached,
                    output_tokens: u.completion_tokens,
                    cached_input_tokens: cached,
                    cache_write_input_tokens: 0,
                }
            })
            .unwrap_or_default();
        let choice = r
            .choices
            .into_iter()
            .next()
            .ok_or_else(|| ProviderError::Decode("OpenAI response has no choices".into()))?;
        if let Some(refusal) = choice.message.refusal.filter(|s| !s.is_empty()) {
            return Err(ProviderError::Refused {
                message: clip(&refusal),
                usage,
            });
        }
        let finish_reason = choice.finish_reason.unwrap_or_else(|| "stop".into());
        if finish_reason == "content_filter" {
            return Err(ProviderError::Refused {
                message: "finish_reason content_filter".into(),
                usage,
            });
        }
        Ok(Completion {
            content: choice.message.content.unwrap_or_default(),
            finish_reason,
            usage,
            status: 200,
            rate_limit: rate_limit_info(headers),
        })
    }

    fn parse_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let (message, code) = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(e) => {
                let code = e
                    .error
                    .code
                    .as_ref()
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or(e.error.kind);
                (clip(&e.error.message), code)
            }
            Err(_) => (body_text(body), None),
        };
        if status == 429 && code.as_deref() == Some("insufficient_quota") {
            return ProviderError::QuotaExhausted { status, message };
        }
        // Without Retry-After, a 429's x-ratelimit-reset-* headers say when capacity returns.
        let hint = retry_after(headers)
            .or_else(|| (status == 429).then(|| rate_limit_info(headers).retry_hint())?);
        ProviderError::from_status(status, message, hint)
    }
}

/// OpenAI's `x-ratelimit-*` headers.
pub fn rate_limit_info(headers: &HeaderMap) -> RateLimitInfo {
    RateLimitInfo {
        remaining_requests: header_u64(headers, "x-ratelimit-remaining-requests"),
        remaining_tokens: header_u64(headers, "x-ratelimit-remaining-tokens"),
        reset_requests: header_str(headers, "x-ratelimit-reset-requests")
            .and_then(parse_go_duration),
        reset_tokens: header_str(headers, "x-ratelimit-reset-tokens").and_then(parse_go_duration),
    }
}

/// Whether `text` contains "json" in any letter case, without copying it.
fn mentions_word_json(text: &str) -> bool {
    text.as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"json"))
}
