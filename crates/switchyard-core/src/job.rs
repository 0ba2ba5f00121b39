//! The prompt job: what a producer puts on the jobs topic, and the checks a job must
//! pass before it is routed. A job that fails these checks is not retried: it goes
//! to the dead-letter topic with the reason.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::vocab::{JobMode, Strategy};

/// Longest accepted `job_id`, in bytes. Job ids are Kafka keys and ClickHouse
/// columns; an unbounded id is a bug on the producer side.
pub const MAX_JOB_ID_BYTES: usize = 256;

/// The metadata key under which `switchyard submit` stamps, on every job of a
/// batch, the worst case of the whole batch in USD (see
/// [`Job::batch_worst_case_usd`]). In the message value, so a signature covers it.
pub const META_BATCH_WORST_CASE_USD: &str = "batch_worst_case_usd";

/// One unit of work: a chat request plus where it comes from and how to route it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    /// Caller-chosen idempotency key; results are keyed by it.
    pub job_id: String,
    /// Set when the job belongs to a bulk batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Full org path: `org/business-unit/team/project`.
    pub project: String,
    /// Business workload the job belongs to; selects per-workload policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Overrides the strategy the org policy would pick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Whether the job may wait for a provider's batch API (`live`, `deferred`,
    /// `auto`); overrides the batch's and the policy's `default_mode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<JobMode>,
    /// The chat request itself.
    pub request: ChatRequest,
    /// Pins the job to one catalog model (routing then only orders its deployments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Restricts routing to these catalog models.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_models: Vec<String>,
    /// Time after which the result is useless; routing and retries respect it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DateTime<Utc>>,
    /// Free-form labels carried to the result (for example a batch's `custom_id`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The provider-neutral chat request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// Conversation turns, oldest first.
    pub messages: Vec<ChatMessage>,
    /// System prompt; may also be given as a leading `system` message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Cap on generated tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0..=2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Stop sequences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    /// Whether the answer must be a JSON object.
    #[serde(default, skip_serializing_if = "ResponseFormat::is_text")]
    pub response_format: ResponseFormat,
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said (plain text).
    pub content: String,
}

/// Speaker of a chat turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the model.
    System,
    /// The end user.
    User,
    /// The model's earlier turns.
    Assistant,
}

impl Role {
    /// The wire name shared by every provider API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

/// Output format the job asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseFormat {
    /// Free text.
    #[default]
    Text,
    /// A single JSON object; a reply that does not parse counts as a failed attempt.
    JsonObject,
}

impl ResponseFormat {
    /// True for the default, so serializers can skip it.
    pub fn is_text(&self) -> bool {
        matches!(self, ResponseFormat::Text)
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFormat::Text => "text",
            ResponseFormat::JsonObject => "json_object",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(ResponseFormat::Text),
            "json_object" => Some(ResponseFormat::JsonObject),
            _ => None,
        }
    }
}

/// The four levels of a project path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProjectPath<'a> {
    /// Top of the tree.
    pub org: &'a str,
    /// Second level.
    pub business_unit: &'a str,
    /// Third level.
    pub team: &'a str,
    /// Leaf.
    pub project: &'a str,
}

impl<'a> ProjectPath<'a> {
    /// Splits `org/bu/team/project`; `None` unless there are exactly four non-empty parts.
    pub fn parse(path: &'a str) -> Option<Self> {
        let mut parts = path.split('/');
        let org = parts.next()?;
        let business_unit = parts.next()?;
        let team = parts.next()?;
        let project = parts.next()?;
        if parts.next().is_some()
            || [org, business_unit, team, project]
                .iter()
                .any(|p| p.is_empty())
        {
            return None;
        }
        Some(Self {
            org,
            business_unit,
            team,
            project,
        })
    }
}

/// Why a decodable job cannot be routed. Each variant is a dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidJob {
    /// `job_id` empty.
    #[error("job_id is empty; give every job a unique idempotency key")]
    EmptyJobId,
    /// `job_id` too long.
    #[error("job_id is {0} bytes; the limit is {MAX_JOB_ID_BYTES}")]
    JobIdTooLong(usize),
    /// Project path malformed.
    #[error("project `{0}` is not a path of four parts `org/business-unit/team/project`")]
    BadProjectPath(String),
    /// No messages.
    #[error("request.messages is empty; a job needs at least one user message")]
    NoMessages,
    /// No user turn.
    #[error("request.messages has no `user` message")]
    NoUserMessage,
    /// `max_tokens` of zero.
    #[error("request.max_tokens is 0; omit it or give a positive cap")]
    ZeroMaxTokens,
    /// Temperature out of range.
    #[error("request.temperature {0} is outside 0..=2")]
    BadTemperature(String),
    /// A pinned model also excluded by its own allow-list.
    #[error("model `{0}` is pinned but not in allowed_models")]
    PinnedNotAllowed(String),
}

impl ChatRequest {
    /// A request of one user message, everything else default.
    pub fn from_user(content: impl Into<String>) -> Self {
        Self {
            messages: vec![ChatMessage {
                role: Role::User,
                content: content.into(),
            }],
            system: None,
            max_tokens: None,
            temperature: None,
            stop: Vec::new(),
            response_format: ResponseFormat::Text,
        }
    }
}

impl Job {
    /// A job with no batch, workload, strategy, pin, deadline or metadata.
    pub fn new(
        job_id: impl Into<String>,
        project: impl Into<String>,
        request: ChatRequest,
    ) -> Self {
        Self {
            job_id: job_id.into(),
            batch_id: None,
            project: project.into(),
            workload: None,
            strategy: None,
            mode: None,
            request,
            model: None,
            allowed_models: Vec::new(),
            deadline: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Structural checks that need no catalog or policy.
    pub fn validate(&self) -> Result<(), InvalidJob> {
        if self.job_id.is_empty() {
            return Err(InvalidJob::EmptyJobId);
        }
        if self.job_id.len() > MAX_JOB_ID_BYTES {
            return Err(InvalidJob::JobIdTooLong(self.job_id.len()));
        }
        if ProjectPath::parse(&self.project).is_none() {
            return Err(InvalidJob::BadProjectPath(self.project.clone()));
        }
        let request = &self.request;
        if request.messages.is_empty() {
            return Err(InvalidJob::NoMessages);
        }
        if !request.messages.iter().any(|m| m.role == Role::User) {
            return Err(InvalidJob::NoUserMessage);
        }
        if request.max_tokens == Some(0) {
            return Err(InvalidJob::ZeroMaxTokens);
        }
        if let Some(t) = request.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(InvalidJob::BadTemperature(t.to_string()));
        }
        if let Some(model) = &self.model
            && !self.allowed_models.is_empty()
            && !self.allowed_models.contains(model)
        {
            return Err(InvalidJob::PinnedNotAllowed(model.clone()));
        }
        Ok(())
    }

    /// The job's project path, split. Call after [`Job::validate`].
    pub fn project_path(&self) -> Option<ProjectPath<'_>> {
        ProjectPath::parse(&self.project)
    }

    /// Stamps the worst case of the job's whole batch, USD, into its metadata:
    /// written so that it reads back as the same number.
    pub fn stamp_batch_worst_case(&mut self, usd: f64) {
        self.metadata
            .insert(META_BATCH_WORST_CASE_USD.to_owned(), usd.to_string());
    }

    /// The worst case of the job's whole batch, USD, as `switchyard submit`
    /// stamped it: `None` for a job outside a batch or without the stamp;
    /// `Err` with the text when the stamp is not a finite number of at least 0
    /// (admission then holds the job rather than guess).
    pub fn batch_worst_case_usd(&self) -> Option<Result<f64, &str>> {
        self.batch_id.as_ref()?;
        let text = self.metadata.get(META_BATCH_WORST_CASE_USD)?;
        Some(
            text.parse::<f64>()
                .ok()
                .filter(|usd| usd.is_finite() && *usd >= 0.0)
                .ok_or(text.as_str()),
        )
    }

    /// The system prompt: the `system` field, else a leading system message.
    pub fn system_prompt(&self) -> Option<&str> {
        self.request.system.as_deref().or_else(|| {
            self.request
                .messages
                .iter()
                .find(|m| m.role == Role::System)
                .map(|m| m.content.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Job {
        Job {
            workload: Some("catalog-enrich".into()),
            ..Job::new(
                "j-1",
                "acme/retail/search/catalog",
                ChatRequest {
                    max_tokens: Some(64),
                    temperature: Some(0.2),
                    ..ChatRequest::from_user("Hello")
                },
            )
        }
    }

    #[test]
    fn a_minimal_job_is_valid() {
        assert_eq!(sample().validate(), Ok(()));
    }

    #[test]
    fn each_structural_fault_is_named() {
        let mut j = sample();
        j.job_id.clear();
        assert_eq!(j.validate(), Err(InvalidJob::EmptyJobId));
        let mut j = sample();
        j.project = "acme/retail".into();
        assert!(matches!(j.validate(), Err(InvalidJob::BadProjectPath(_))));
        let mut j = sample();
        j.project = "acme//search/x".into();
        assert!(matches!(j.validate(), Err(InvalidJob::BadProjectPath(_))));
        let mut j = sample();
        j.request.messages.clear();
        assert_eq!(j.validate(), Err(InvalidJob::NoMessages));
        let mut j = sample();
        j.request.messages[0].role = Role::Assistant;
        assert_eq!(j.validate(), Err(InvalidJob::NoUserMessage));
        let mut j = sample();
        j.request.max_tokens = Some(0);
        assert_eq!(j.validate(), Err(InvalidJob::ZeroMaxTokens));
        let mut j = sample();
        j.request.temperature = Some(3.5);
        assert!(matches!(j.validate(), Err(InvalidJob::BadTemperature(_))));
        let mut j = sample();
        j.model = Some("a".into());
        j.allowed_models = vec!["b".into()];
        assert!(matches!(j.validate(), Err(InvalidJob::PinnedNotAllowed(_))));
    }

    #[test]
    fn unknown_fields_are_refused_by_the_strict_shape() {
        let text = r#"{"job_id":"x","project":"a/b/c/d","request":{"messages":[{"role":"user","content":"hi"}]},"colour":"red"}"#;
        let err = serde_json::from_str::<Job>(text).unwrap_err().to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn a_batch_worst_case_reads_back_as_stamped_and_only_on_a_batch_job() {
        let mut j = sample();
        j.stamp_batch_worst_case(0.1 + 0.2);
        assert_eq!(j.batch_worst_case_usd(), None, "not a batch job");
        j.batch_id = Some("batch_1".into());
        assert_eq!(j.batch_worst_case_usd(), Some(Ok(0.1 + 0.2)));
        for bad in ["", "cheap", "-1", "NaN", "inf"] {
            j.metadata
                .insert(META_BATCH_WORST_CASE_USD.into(), bad.into());
            assert_eq!(j.batch_worst_case_usd(), Some(Err(bad)));
        }
        j.metadata.clear();
        assert_eq!(j.batch_worst_case_usd(), None);
    }

    #[test]
    fn project_paths_split_into_four_levels() {
        let p = ProjectPath::parse("acme/retail/search/catalog").unwrap();
        assert_eq!(
            (p.org, p.business_unit, p.team, p.project),
            ("acme", "retail", "search", "catalog")
        );
        assert!(ProjectPath::parse("a/b/c/d/e").is_none());
    }
}
