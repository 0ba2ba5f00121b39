//! The three wire formats as a server speaks them: checking authentication,
//! reading a request body into a [`Parsed`] prompt (refusing what the real API
//! refuses, unknown fields included, with the API's own 400 shape), and writing
//! success and error answers with each API's headers. Shapes follow the fixtures
//! in `crates/switchyard-providers/tests/fixtures/`.

pub(crate) mod anthropic;
pub(crate) mod gemini;
pub(crate) mod openai;

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use switchyard_core::job::Role;

use switchyard_core::catalog::RequestParam;

use crate::admission::{LimitReport, LimitScope};
use crate::config::RateLimitHint;
use crate::synthesis::{FinishReason, Reply};

/// Which API a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// OpenAI Chat Completions (and OpenAI-compatible hosts).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Gemini generateContent.
    Gemini,
}

/// A request as the simulator understood it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Parsed {
    /// Model id (body field, or the URL path for Gemini).
    pub model: String,
    /// The system prompt, joined when given in several parts.
    pub system: Option<String>,
    /// The conversation, system turns excluded.
    pub messages: Vec<(Role, String)>,
    /// Output cap.
    pub max_tokens: Option<u32>,
    /// Whether a JSON object was asked for.
    pub json_mode: bool,
    /// Sampling temperature, when sent.
    pub temperature: Option<f64>,
    /// Nucleus sampling, when sent.
    pub top_p: Option<f64>,
    /// Whether stop sequences were sent.
    pub stop: bool,
}

impl Parsed {
    /// The first parameter sent that the model refuses, with its value for the
    /// sampling ones (their default, 1, is accepted), in the API's checking order.
    pub(crate) fn refused(&self, unsupported: &[RequestParam]) -> Option<Problem> {
        let sent_non_default = |v: Option<f64>| v.filter(|x| (*x - 1.0).abs() > f64::EPSILON);
        [
            RequestParam::Temperature,
            RequestParam::TopP,
            RequestParam::Stop,
        ]
        .into_iter()
        .filter(|p| unsupported.contains(p))
        .find_map(|param| {
            let value = match param {
                RequestParam::Temperature => Some(sent_non_default(self.temperature)?),
                RequestParam::TopP => Some(sent_non_default(self.top_p)?),
                RequestParam::Stop => self.stop.then_some(None)?,
            };
            Some(Problem::Unsupported { param, value })
        })
    }
}

/// Why a request gets an error answer; each format turns it into its own body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Problem {
    /// 400: the body is wrong. `field` names the offending field when there is one.
    BadRequest {
        message: String,
        field: Option<String>,
    },
    /// No API key (401; Gemini answers 400 `API_KEY_INVALID`).
    MissingKey,
    /// A key the provider does not know (401; Gemini 400 `API_KEY_INVALID`). OpenAI
    /// quotes it in the message.
    InvalidKey { presented: String },
    /// A parameter the model refuses (400): a non-default sampling `value`, or any
    /// stop sequence (`value` none).
    Unsupported {
        param: RequestParam,
        value: Option<f64>,
    },
    /// 404: unknown route or action.
    NotFound { message: String },
    /// 429 from the limiter (`scope` set) or injected (`scope` none).
    RateLimited {
        retry_after: Duration,
        scope: Option<LimitScope>,
        limit: u64,
        used: u64,
        requested: u64,
        hint: RateLimitHint,
    },
    /// Injected 500.
    Internal,
    /// Injected overload: 529 (Anthropic) or 503.
    Overloaded,
    /// An outage answering this status.
    Outage { status: u16 },
    /// 503: the server stopped while the request waited.
    ShuttingDown,
}

impl Problem {
    /// Shorthand for a 400 without a field.
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Problem::BadRequest {
            message: message.into(),
            field: None,
        }
    }

    /// Shorthand for a 400 about `field`.
    pub(crate) fn bad_field(message: impl Into<String>, field: impl Into<String>) -> Self {
        Problem::BadRequest {
            message: message.into(),
            field: Some(field.into()),
        }
    }
}

/// What an answer needs besides the reply or the problem.
#[derive(Debug, Clone)]
pub(crate) struct Context<'a> {
    /// Model id as requested.
    pub model: &'a str,
    /// Unique, deterministic id for the response and its headers.
    pub request_id: String,
    /// Rate limits to report in headers.
    pub limits: LimitReport,
}

impl Format {
    /// The format's name in logs and base URLs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
        }
    }

    /// Refuses a request without the credentials the API requires.
    pub(crate) fn authorize(self, headers: &HeaderMap, query: Option<&str>) -> Result<(), Problem> {
        if self.presented_key(headers, query).is_empty() {
            return Err(Problem::MissingKey);
        }
        match self {
            Format::Anthropic => anthropic::require_version(headers),
            Format::OpenAi | Format::Gemini => Ok(()),
        }
    }

    /// The key the request presented (for error messages that quote it).
    pub(crate) fn presented_key(self, headers: &HeaderMap, query: Option<&str>) -> String {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let key = match self {
            Format::OpenAi => header("authorization").and_then(|v| v.strip_prefix("Bearer ")),
            Format::Anthropic => header("x-api-key"),
            Format::Gemini => header("x-goog-api-key").or_else(|| {
                query?
                    .split('&')
                    .find_map(|pair| pair.strip_prefix("key=").filter(|k| !k.is_empty()))
            }),
        };
        key.unwrap_or_default().trim().to_owned()
    }

    /// Reads a request body; `path_model` is the model named in the URL (Gemini).
    pub(crate) fn parse(self, path_model: Option<&str>, body: &[u8]) -> Result<Parsed, Problem> {
        match self {
            Format::OpenAi => openai::parse(body),
            Format::Anthropic => anthropic::parse(body),
            Format::Gemini => gemini::parse(path_model.unwrap_or_default(), body),
        }
    }

    /// HTTP status of a problem in this format.
    pub(crate) fn status_of(self, problem: &Problem) -> u16 {
        match problem {
            Problem::BadRequest { .. } | Problem::Unsupported { .. } => 400,
            Problem::MissingKey | Problem::InvalidKey { .. } => {
                if self == Format::Gemini {
                    400
                } else {
                    401
                }
            }
            Problem::NotFound { .. } => 404,
            Problem::RateLimited { .. } => 429,
            Problem::Internal => 500,
            Problem::Overloaded => {
                if self == Format::Anthropic {
                    529
                } else {
                    503
                }
            }
            Problem::Outage { status } => *status,
            Problem::ShuttingDown => 503,
        }
    }

    /// The 200 answer.
    pub(crate) fn success(self, ctx: &Context<'_>, reply: &Reply) -> Response {
        let (headers, body) = match self {
            Format::OpenAi => openai::success(ctx, reply),
            Format::Anthropic => anthropic::success(ctx, reply),
            Format::Gemini => gemini::success(ctx, reply),
        };
        (StatusCode::OK, headers, axum::Json(body)).into_response()
    }

    /// The error answer for `problem`.
    pub(crate) fn failure(self, ctx: &Context<'_>, problem: &Problem) -> Response {
        let status = self.status_of(problem);
        let (headers, body) = match self {
            Format::OpenAi => openai::failure(ctx, status, problem),
            Format::Anthropic => anthropic::failure(ctx, status, problem),
            Format::Gemini => gemini::failure(ctx, status, problem),
        };
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        (code, headers, axum::Json(body)).into_response()
    }
}

/// Wire finish reasons: (OpenAI, Anthropic, Gemini).
pub(crate) fn finish_names(finish: FinishReason) -> (&'static str, &'static str, &'static str) {
    match finish {
        FinishReason::Stop => ("stop", "end_turn", "STOP"),
        FinishReason::Length => ("length", "max_tokens", "MAX_TOKENS"),
    }
}

/// Sets a header, skipping values that are not valid header text (none of ours are).
pub(crate) fn put(headers: &mut HeaderMap, name: &'static str, value: impl ToString) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// Whole seconds, rounded up, as `Retry-After` carries them.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Whole milliseconds, rounded up.
pub(crate) fn ceil_millis(d: Duration) -> u128 {
    d.as_millis() + u128::from(!d.subsec_nanos().is_multiple_of(1_000_000))
}

/// A Go `time.Duration` string as OpenAI's reset headers use: `1s`, `6m0s`, `120ms`, `1h2m3.5s`.
pub(crate) fn go_duration(d: Duration) -> String {
    let ms = ceil_millis(d);
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rest) = (rest / 60_000, rest % 60_000);
    let seconds = decimal_seconds(rest);
    match (h, m) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// A protobuf JSON `Duration` as Gemini's `retryDelay` uses: `2s`, `0.150s`.
pub(crate) fn proto_duration(d: Duration) -> String {
    let ms = ceil_millis(d);
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}.{:03}s", ms / 1000, ms % 1000)
    }
}

fn decimal_seconds(ms: u128) -> String {
    let (s, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        return s.to_string();
    }
    let digits = format!("{frac:03}");
    format!("{s}.{}", digits.trim_end_matches('0'))
}

/// The body as a JSON object, or the parser's complaint.
pub(crate) fn json_object(body: &[u8]) -> Result<Map<String, Value>, String> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("expected a JSON object, got {}", kind_of(&other))),
        Err(e) => Err(e.to_string()),
    }
}

/// The first key of `map` not in `allowed`.
pub(crate) fn unknown_key<'m>(map: &'m Map<String, Value>, allowed: &[&str]) -> Option<&'m str> {
    map.keys()
        .map(String::as_str)
        .find(|k| !allowed.contains(k))
}

/// JSON type name for messages.
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Text of a content given as a string or an array of `{"type": "text", "text": …}` blocks.
pub(crate) fn text_content(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Null => Some(String::new()),
        Value::Array(blocks) => Some(
            blocks
                .iter()
                .filter(|b| {
                    b.get("type")
                        .and_then(Value::as_str)
                        .is_none_or(|t| t == "text")
                })
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect(),
        ),
        _ => None,
    }
}

/// An optional positive integer field.
pub(crate) fn positive_u32(map: &Map<String, Value>, key: &str) -> Result<Option<u32>, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
            _ => Err(format!("expected an integer >= 1, got {v}")),
        },
    }
}

/// An optional number field within `0..=max`.
pub(crate) fn number_within(map: &Map<String, Value>, key: &str, max: f64) -> Result<(), String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(v) => match v.as_f64() {
            Some(x) if (0.0..=max).contains(&x) => Ok(()),
            _ => Err(format!("expected a number between 0 and {max}, got {v}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_as_each_api_writes_them() {
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(go_duration(Duration::from_millis(120)), "120ms");
        assert_eq!(go_duration(Duration::from_millis(3_723_500)), "1h2m3.5s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(proto_duration(Duration::from_secs(2)), "2s");
        assert_eq!(proto_duration(Duration::from_millis(150)), "0.150s");
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
    }
}
