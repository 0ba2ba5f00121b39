//! OpenAI Batch API lines. Input: `{"custom_id", "method": "POST", "url":
//! "/v1/chat/completions", "body": {chat completion request}}`. Output: one
//! `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`
//! line per request, successes in the output file and everything else in the
//! errors file, as OpenAI splits them.

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use switchyard_core::job::{ChatMessage, ResponseFormat, Role};
use switchyard_core::result::{JobResult, JobStatus};

use super::{
    Destination, LineError, LineSettings, ModelIds, ParsedLine, Stops, TextContent, answer_usage,
    from_line, job_for, last_status, request, short_hash, unsupported,
};

/// The only endpoint Switchyard serves from a batch.
pub const CHAT_COMPLETIONS: &str = "/v1/chat/completions";

#[derive(Deserialize)]
struct InputLine {
    custom_id: String,
    method: String,
    url: String,
    body: Body,
}

#[derive(Deserialize)]
struct Body {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<Message>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    stop: Stops,
    #[serde(default)]
    response_format: Option<ResponseFormatBody>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    tools: Option<IgnoredAny>,
    #[serde(default)]
    functions: Option<IgnoredAny>,
    #[serde(default)]
    audio: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: TextContent,
}

#[derive(Deserialize)]
struct ResponseFormatBody {
    #[serde(rename = "type")]
    kind: String,
}

/// Parses one input line.
pub(crate) fn parse(line: &[u8], settings: &LineSettings) -> Result<ParsedLine, LineError> {
    let input: InputLine = from_line(line)?;
    let id = input.custom_id.as_str();
    let fail = |reason: String| LineError::new(reason).with_id(id);
    if id.is_empty() {
        return Err(LineError::new("custom_id is empty"));
    }
    if input.method != "POST" {
        return Err(fail(format!(
            "method is `{}`; only POST is supported",
            input.method
        )));
    }
    if input.url != CHAT_COMPLETIONS {
        return Err(fail(format!(
            "url is `{}`; only {CHAT_COMPLETIONS} is supported",
            input.url
        )));
    }
    let body = input.body;
    let check = || -> Result<(), LineError> {
        unsupported(
            "body.tools",
            body.tools.is_some(),
            "tool calls are not routed",
        )?;
        unsupported(
            "body.functions",
            body.functions.is_some(),
            "tool calls are not routed",
        )?;
        unsupported("body.audio", body.audio.is_some(), "only text is routed")?;
        unsupported(
            "body.stream",
            body.stream == Some(true),
            "batch results are not streamed",
        )?;
        unsupported(
            "body.n",
            body.n.is_some_and(|n| n != 1),
            "one answer per request; repeat the line with another custom_id instead",
        )
    };
    check().map_err(|e| e.with_id(id))?;
    let response_format = match body.response_format.as_ref().map(|r| r.kind.as_str()) {
        None | Some("text") => ResponseFormat::Text,
        Some("json_object") => ResponseFormat::JsonObject,
        Some(other) => {
            return Err(fail(format!(
                "body.response_format.type `{other}` is not supported; use `json_object` or `text`"
            )));
        }
    };
    let mut messages = Vec::with_capacity(body.messages.len());
    for (i, m) in body.messages.into_iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => {
                return Err(fail(format!(
                    "body.messages[{i}].role `{other}` is not supported (system, developer, user, assistant)"
                )));
            }
        };
        let Some(content) = m.content.0 else {
            return Err(fail(format!("body.messages[{i}].content is missing")));
        };
        messages.push(ChatMessage { role, content });
    }
    let max_tokens = body.max_completion_tokens.or(body.max_tokens);
    let req = request(
        messages,
        None,
        max_tokens,
        body.temperature,
        body.stop.0,
        response_format,
    );
    let job = job_for(id, req, body.model.as_deref(), settings);
    Ok(ParsedLine {
        custom_id: input.custom_id,
        job,
    })
}

#[derive(Serialize)]
struct OutputLine<'a> {
    id: String,
    custom_id: &'a str,
    response: Option<Response<'a>>,
    error: Option<BatchError<'a>>,
}

#[derive(Serialize)]
struct Response<'a> {
    status_code: u16,
    request_id: &'a str,
    body: ResponseBody<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ResponseBody<'a> {
    Completion(Completion<'a>),
    Error { error: ApiError<'a> },
}

#[derive(Serialize)]
struct Completion<'a> {
    id: String,
    object: &'static str,
    created: i64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct ApiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'static str>,
    code: &'a str,
}

#[derive(Serialize)]
struct BatchError<'a> {
    code: &'a str,
    message: &'a str,
}

/// Error codes OpenAI uses for requests a batch did not run.
const CANCELED_CODE: &str = "batch_cancelled";
const EXPIRED_CODE: &str = "batch_expired";

/// Renders one result as an output line.
pub(crate) fn render(
    result: &JobResult,
    custom_id: &str,
    models: &ModelIds,
    out: &mut Vec<u8>,
) -> Destination {
    let id = format!("batch_req_{}", short_hash(&result.job_id));
    let (code, message) = result
        .error
        .as_ref()
        .map_or(("unknown_error", "the job did not succeed"), |e| {
            (e.code.as_str(), e.message.as_str())
        });
    let (line, destination) = match (&result.status, &result.output) {
        (JobStatus::Succeeded, Some(output)) => {
            let usage = answer_usage(result);
            let prompt = usage.input_tokens + usage.cached_input_tokens;
            let completion = Completion {
                id: format!("chatcmpl-{}", short_hash(&result.job_id)),
                object: "chat.completion",
                created: result.completed_at.timestamp(),
                model: models.answered(result),
                choices: [Choice {
                    index: 0,
                    message: AssistantMessage {
                        role: "assistant",
                        content: &output.content,
                    },
                    finish_reason: &output.finish_reason,
                }],
                usage: Usage {
                    prompt_tokens: prompt,
                    completion_tokens: usage.output_tokens,
                    total_tokens: prompt + usage.output_tokens,
                    prompt_tokens_details: PromptDetails {
                        cached_tokens: usage.cached_input_tokens,
                    },
                },
            };
            let line = OutputLine {
                id,
                custom_id,
                response: Some(Response {
                    status_code: 200,
                    request_id: &result.job_id,
                    body: ResponseBody::Completion(completion),
                }),
                error: None,
            };
            (line, Destination::Output)
        }
        (JobStatus::Failed, _) if last_status(result).is_some_and(|s| s >= 400) => {
            let status = last_status(result).unwrap_or(500);
            let line = OutputLine {
                id,
                custom_id,
                response: Some(Response {
                    status_code: status,
                    request_id: &result.job_id,
                    body: ResponseBody::Error {
                        error: ApiError {
                            message,
                            kind: error_type(status),
                            param: None,
                            code,
                        },
                    },
                }),
                error: None,
            };
            (line, Destination::Errors)
        }
        (status, _) => {
            let (code, message) = match status {
                JobStatus::Canceled => (
                    CANCELED_CODE,
                    "This request was not executed because the batch was cancelled.",
                ),
                _ if code == "deadline_passed" => (EXPIRED_CODE, message),
                _ => (code, message),
            };
            let line = OutputLine {
                id,
                custom_id,
                response: None,
                error: Some(BatchError { code, message }),
            };
            (line, Destination::Errors)
        }
    };
    // Serializing plain structs of strings and numbers into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
    destination
}

/// OpenAI's error `type` for an HTTP status.
fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    }
}
