//! Anthropic Message Batches lines. Input: `{"custom_id", "params": {Messages
//! API request}}`. Output: `{"custom_id", "result": {"type": "succeeded",
//! "message": {…}}}`, or a result of type `errored`, `canceled` or `expired`.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use switchyard_core::job::{ChatMessage, ResponseFormat, Role};
use switchyard_core::result::{JobResult, JobStatus};

use super::{
    Destination, LineError, LineSettings, ModelIds, ParsedLine, TextContent, answer_usage,
    from_line, job_for, last_status, request, short_hash, unsupported,
};

#[derive(Deserialize)]
struct RequestLine {
    custom_id: String,
    params: Params,
}

#[derive(Deserialize)]
struct Params {
    #[serde(default)]
    model: Option<String>,
    max_tokens: u32,
    #[serde(default)]
    system: TextContent,
    messages: Vec<Message>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: TextContent,
}

/// Parses one request line.
pub(crate) fn parse(line: &[u8], settings: &LineSettings) -> Result<ParsedLine, LineError> {
    let input: RequestLine = from_line(line)?;
    let id = input.custom_id.as_str();
    let fail = |reason: String| LineError::new(reason).with_id(id);
    // The Message Batches API's own rule for custom ids.
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(fail(format!(
            "custom_id `{id}` must be 1 to 64 letters, digits, `_` or `-`"
        )));
    }
    let p = input.params;
    unsupported("params.tools", p.tools.is_some(), "tool use is not routed")
        .and_then(|()| {
            unsupported(
                "params.stream",
                p.stream == Some(true),
                "batch results are not streamed",
            )
        })
        .map_err(|e| e.with_id(id))?;
    if let Some(t) = p.temperature
        && !(0.0..=1.0).contains(&t)
    {
        return Err(fail(format!("params.temperature {t} is outside 0..=1")));
    }
    let mut messages = Vec::with_capacity(p.messages.len());
    for (i, m) in p.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(fail(format!(
                    "params.messages[{i}].role `{other}` is not user or assistant (the system prompt goes in params.system)"
                )));
            }
        };
        let Some(content) = m.content.0 else {
            return Err(fail(format!("params.messages[{i}].content is missing")));
        };
        messages.push(ChatMessage { role, content });
    }
    let req = request(
        messages,
        p.system.0.filter(|s| !s.is_empty()),
        Some(p.max_tokens),
        p.temperature,
        p.stop_sequences.unwrap_or_default(),
        ResponseFormat::Text,
    );
    let job = job_for(id, req, p.model.as_deref(), settings);
    Ok(ParsedLine {
        custom_id: input.custom_id,
        job,
    })
}

#[derive(Serialize)]
struct ResultLine<'a> {
    custom_id: &'a str,
    result: Outcome<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Outcome<'a> {
    Succeeded { message: AssistantMessage<'a> },
    Errored { error: ErrorEnvelope },
    Canceled,
    Expired,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [TextBlock<'a>; 1],
    stop_reason: &'a str,
    stop_sequence: Option<&'a str>,
    usage: Usage,
}

#[derive(Serialize)]
struct TextBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
    cache_creation_input_tokens: u64,
    cache_read_input_tokens: u64,
}

#[derive(Serialize)]
struct ErrorEnvelope {
    #[serde(rename = "type")]
    kind: &'static str,
    error: ErrorBody,
}

#[derive(Serialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: &'static str,
    message: String,
}

/// Renders one result as a result line.
pub(crate) fn render(
    result: &JobResult,
    custom_id: &str,
    models: &ModelIds,
    out: &mut Vec<u8>,
) -> Destination {
    let code = result.error.as_ref().map_or("", |e| e.code.as_str());
    let usage = answer_usage(result);
    let outcome = match (&result.status, &result.output) {
        (JobStatus::Succeeded, Some(output)) => Outcome::Succeeded {
            message: AssistantMessage {
                id: format!("msg_{}", short_hash(&result.job_id)),
                kind: "message",
                role: "assistant",
                model: models.answered(result),
                content: [TextBlock {
                    kind: "text",
                    text: &output.content,
                }],
                stop_reason: stop_reason(&output.finish_reason),
                // Which stop sequence ended the answer is not known: the
                // providers' normalised finish reason says only "stop".
                stop_sequence: None,
                usage: Usage {
                    input_tokens: usage.input_tokens,
                    output_tokens: usage.output_tokens,
                    cache_creation_input_tokens: 0,
                    cache_read_input_tokens: usage.cached_input_tokens,
                },
            },
        },
        (JobStatus::Canceled, _) => Outcome::Canceled,
        _ if code == "deadline_passed" => Outcome::Expired,
        (status, _) => {
            let message = result.error.as_ref().map_or_else(
                || format!("the job ended {}", status.as_str()),
                |e| format!("{} ({})", e.message, e.code),
            );
            let kind = match (status, last_status(result)) {
                (JobStatus::Rejected, _) => "invalid_request_error",
                (_, Some(401)) => "authentication_error",
                (_, Some(403)) => "permission_error",
                (_, Some(404)) => "not_found_error",
                (_, Some(413)) => "request_too_large",
                (_, Some(429)) => "rate_limit_error",
                (_, Some(503 | 529)) => "overloaded_error",
                (_, Some(400..=499)) => "invalid_request_error",
                _ => "api_error",
            };
            Outcome::Errored {
                error: ErrorEnvelope {
                    kind: "error",
                    error: ErrorBody { kind, message },
                },
            }
        }
    };
    let line = ResultLine {
        custom_id,
        result: outcome,
    };
    // Serializing plain structs of strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
    Destination::Output
}

/// Anthropic's `stop_reason` for Switchyard's normalised finish reason.
fn stop_reason(finish_reason: &str) -> &str {
    match finish_reason {
        "stop" => "end_turn",
        "length" => "max_tokens",
        "tool_calls" => "tool_use",
        "content_filter" => "refusal",
        other => other,
    }
}
