//! The three input formats a batch file may be in, each in its own module with
//! its wire types (request lines in, result lines out): OpenAI Batch, Anthropic
//! Message Batches and Switchyard's native jobs. This module detects a file's
//! format from its first recognisable line and turns one line into a [`Job`].

pub mod anthropic;
pub mod native;
pub mod openai;

use std::collections::HashMap;

use serde::Deserialize;
use serde::de::{DeserializeOwned, IgnoredAny};
use switchyard_core::batch::BatchFormat;
use switchyard_core::catalog::Catalog;
use switchyard_core::config::LoadedPipeline;
use switchyard_core::job::{ChatMessage, ChatRequest, Job, ResponseFormat};
use switchyard_core::result::{Attempt, AttemptOutcome, JobResult, TokenUsage};
use switchyard_core::routing::Strategy;
use switchyard_core::vocab::JobMode;

/// Metadata key carrying the line's `custom_id` (the native job's own `job_id`).
pub const META_CUSTOM_ID: &str = "custom_id";
/// Metadata key carrying the line's 1-based number in the input file.
pub const META_LINE: &str = "line";

/// Settings every line of a batch gets.
#[derive(Debug, Clone)]
pub struct LineSettings {
    /// Org path of every job.
    pub project: String,
    /// Strategy forced on every job.
    pub strategy: Option<Strategy>,
    /// Workload of every job.
    pub workload: Option<String>,
    /// Mode of every job whose line names none (`submit --mode`).
    pub mode: Option<JobMode>,
    /// Catalog models a request's `model` may pin.
    pub pins: ModelPins,
}

/// Which request `model` values name a catalog model: by catalog name or by the
/// provider's model id. Anything else is ignored and routing chooses.
#[derive(Debug, Clone, Default)]
pub struct ModelPins {
    names: HashMap<String, String>,
}

impl ModelPins {
    /// The pins a catalog allows.
    pub fn from_catalog(catalog: &Catalog) -> Self {
        let mut names = HashMap::new();
        let mut api_ids: HashMap<&str, Vec<&str>> = HashMap::new();
        for m in catalog.models() {
            names.insert(m.name.clone(), m.name.clone());
            api_ids.entry(&m.api_model).or_default().push(&m.name);
        }
        for (api, models) in api_ids {
            // An API id served under several catalog names pins none of them.
            if let [only] = models.as_slice() {
                names
                    .entry(api.to_owned())
                    .or_insert_with(|| (*only).to_owned());
            }
        }
        Self { names }
    }

    /// The catalog model `requested` names, if any.
    pub fn resolve(&self, requested: &str) -> Option<&str> {
        self.names.get(requested).map(String::as_str)
    }
}

/// The provider's API model id of each deployment and catalog model, so that an
/// output line names the model as the provider's own API would (`model` in an
/// OpenAI or Anthropic response), not by Switchyard's catalog name.
#[derive(Debug, Clone, Default)]
pub struct ModelIds {
    by_deployment: HashMap<String, String>,
    by_model: HashMap<String, String>,
}

impl ModelIds {
    /// The ids a pipeline sends: a deployment's `api_model` override, else its
    /// catalog model's `api_model`.
    pub fn from_pipeline(pipeline: &LoadedPipeline) -> Self {
        let by_model: HashMap<String, String> = pipeline
            .catalog
            .models()
            .iter()
            .map(|m| (m.name.clone(), m.api_model.clone()))
            .collect();
        let by_deployment = pipeline
            .config
            .deployments
            .iter()
            .filter_map(|d| {
                let id = d
                    .api_model
                    .clone()
                    .or_else(|| by_model.get(&d.model).cloned())?;
                Some((d.name.clone(), id))
            })
            .collect();
        Self {
            by_deployment,
            by_model,
        }
    }

    /// The API model id that answered `result`: by the answering attempt's
    /// deployment, else its catalog model; the catalog name when this pipeline
    /// knows neither (an empty map keeps catalog names).
    pub fn answered<'a>(&'a self, result: &'a JobResult) -> &'a str {
        let catalog_name = result.model.as_deref().unwrap_or("");
        let Some(a) = answering(result) else {
            return self
                .by_model
                .get(catalog_name)
                .map_or(catalog_name, String::as_str);
        };
        self.by_deployment
            .get(&a.deployment)
            .or_else(|| self.by_model.get(&a.model))
            .map_or(a.model.as_str(), String::as_str)
    }
}

/// The attempt whose answer a succeeded result carries.
pub(crate) fn answering(result: &JobResult) -> Option<&Attempt> {
    result
        .attempts
        .iter()
        .rev()
        .find(|a| a.outcome == AttemptOutcome::Succeeded)
}

/// The tokens of the answer itself: the answering attempt's usage, as the
/// provider's response reported it. Earlier failed attempts may have billed
/// tokens too; those are in the result's total, its cost and the usage events.
pub(crate) fn answer_usage(result: &JobResult) -> TokenUsage {
    answering(result).map_or(result.usage, |a| a.usage)
}

/// Why a line was refused, with its `custom_id` when it got that far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The line's `custom_id`, if it could be read.
    pub custom_id: Option<String>,
    /// What is wrong, for people.
    pub reason: String,
}

impl LineError {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            custom_id: None,
            reason: reason.into(),
        }
    }

    pub(crate) fn with_id(mut self, custom_id: &str) -> Self {
        self.custom_id = Some(custom_id.to_owned());
        self
    }
}

/// A line turned into a job, before its id and batch are assigned.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedLine {
    /// The line's `custom_id`.
    pub custom_id: String,
    /// The job (`job_id` and `batch_id` are set by the submitter).
    pub job: Job,
}

#[derive(Deserialize)]
struct Probe {
    custom_id: Option<IgnoredAny>,
    body: Option<IgnoredAny>,
    params: Option<IgnoredAny>,
    job_id: Option<IgnoredAny>,
    request: Option<IgnoredAny>,
}

/// The format a line is in, if it is a recognisable JSON object.
pub fn detect(line: &[u8]) -> Option<BatchFormat> {
    let p: Probe = serde_json::from_slice(line).ok()?;
    match (p.custom_id, p.body, p.params, p.job_id, p.request) {
        (Some(_), Some(_), None, _, _) => Some(BatchFormat::Openai),
        (Some(_), None, Some(_), _, _) => Some(BatchFormat::Anthropic),
        (_, _, _, Some(_), Some(_)) => Some(BatchFormat::Native),
        _ => None,
    }
}

/// Turns one line of a file in `format` into a job.
pub fn parse_line(
    format: BatchFormat,
    line: &[u8],
    settings: &LineSettings,
) -> Result<ParsedLine, LineError> {
    let mut parsed = match format {
        BatchFormat::Openai => openai::parse(line, settings)?,
        BatchFormat::Anthropic => anthropic::parse(line, settings)?,
        BatchFormat::Native => native::parse(line, settings)?,
    };
    let job = &mut parsed.job;
    if settings.strategy.is_some() {
        job.strategy = settings.strategy;
    }
    if let Some(w) = &settings.workload {
        job.workload = Some(w.clone());
    }
    if job.mode.is_none() {
        job.mode = settings.mode;
    }
    // The real id (`batch_…-N`, under 60 bytes) is assigned once the file's hash is known.
    job.job_id = "pending".to_owned();
    if let Err(e) = job.validate() {
        return Err(LineError::new(e.to_string()).with_id(&parsed.custom_id));
    }
    Ok(parsed)
}

/// Why `line` is not JSON at all, if it is not: what a line refused before the
/// file's format is known should say.
pub(crate) fn syntax_error(line: &[u8]) -> Option<LineError> {
    from_line::<IgnoredAny>(line).err()
}

/// Deserializes `line`, naming the path of the offending field on failure.
pub(crate) fn from_line<T: DeserializeOwned>(line: &[u8]) -> Result<T, LineError> {
    let mut de = serde_json::Deserializer::from_slice(line);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = strip_position(&inner.to_string());
        if path.is_empty() || path == "." || path == "?" || inner.is_syntax() || inner.is_eof() {
            LineError::new(format!(
                "invalid JSON at column {}: {message}",
                inner.column()
            ))
        } else {
            LineError::new(format!("{path}: {message}"))
        }
    })?;
    de.end()
        .map_err(|e| LineError::new(format!("trailing characters after the JSON object: {e}")))?;
    Ok(value)
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A request whose fields are all optional, as the formats' builders fill it.
pub(crate) fn request(
    messages: Vec<ChatMessage>,
    system: Option<String>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    stop: Vec<String>,
    response_format: ResponseFormat,
) -> ChatRequest {
    ChatRequest {
        messages,
        system,
        max_tokens,
        temperature,
        stop,
        response_format,
    }
}

/// A job for `settings.project` with the line's `custom_id` and number in metadata.
pub(crate) fn job_for(
    custom_id: &str,
    request: ChatRequest,
    model: Option<&str>,
    settings: &LineSettings,
) -> Job {
    let mut job = Job::new(String::new(), settings.project.clone(), request);
    job.model = model
        .and_then(|m| settings.pins.resolve(m))
        .map(str::to_owned);
    job.metadata
        .insert(META_CUSTOM_ID.to_owned(), custom_id.to_owned());
    job
}

/// Where a rendered result line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// The output file.
    Output,
    /// The errors file (OpenAI's `error_file`); other formats write everything to the output.
    Errors,
}

/// Renders `result` (whose line had `custom_id`) as one output line in `format`,
/// without the newline, into `out`; `models` names the answering model.
pub fn render(
    format: BatchFormat,
    result: &JobResult,
    custom_id: &str,
    models: &ModelIds,
    out: &mut Vec<u8>,
) -> Destination {
    match format {
        BatchFormat::Openai => openai::render(result, custom_id, models, out),
        BatchFormat::Anthropic => anthropic::render(result, custom_id, models, out),
        BatchFormat::Native => native::render(result, custom_id, out),
    }
}

/// Text of a message content given as a string or as text blocks (both APIs allow either).
#[derive(Debug, Default)]
pub(crate) struct TextContent(pub Option<String>);

impl<'de> Deserialize<'de> for TextContent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TextContent;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of text blocks")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TextContent, E> {
                Ok(TextContent(Some(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<TextContent, E> {
                Ok(TextContent(Some(v)))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<TextContent, E> {
                Ok(TextContent(None))
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<TextContent, E> {
                Ok(TextContent(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TextContent, A::Error> {
                let mut text = String::new();
                let mut i = 0usize;
                while let Some(block) = seq.next_element::<TextBlock>()? {
                    if block.kind != "text" {
                        return Err(serde::de::Error::custom(format!(
                            "block {i} is of type `{}`; only text blocks are supported",
                            block.kind
                        )));
                    }
                    let Some(t) = block.text else {
                        return Err(serde::de::Error::custom(format!(
                            "text block {i} has no `text`"
                        )));
                    };
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&t);
                    i += 1;
                }
                Ok(TextContent(Some(text)))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct TextBlock {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// Stop sequences given as one string or an array of strings.
#[derive(Debug, Default)]
pub(crate) struct Stops(pub Vec<String>);

impl<'de> Deserialize<'de> for Stops {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Stops;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Stops, E> {
                Ok(Stops(vec![v.to_owned()]))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Stops, E> {
                Ok(Stops(Vec::new()))
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Stops, E> {
                Ok(Stops(Vec::new()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Stops, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(Stops(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Rejects a field the format allows but Switchyard cannot honour.
pub(crate) fn unsupported(field: &str, present: bool, why: &str) -> Result<(), LineError> {
    if present {
        Err(LineError::new(format!("`{field}` is not supported: {why}")))
    } else {
        Ok(())
    }
}

/// The status code of the last attempt that got an HTTP answer.
pub(crate) fn last_status(result: &JobResult) -> Option<u16> {
    result.attempts.iter().rev().find_map(|a| a.status_code)
}

/// A stable, short hex id derived from a job id (for response ids).
pub(crate) fn short_hash(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(&Sha256::digest(s.as_bytes())[..12])
}

#[cfg(test)]
mod tests;
