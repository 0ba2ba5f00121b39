//! The Avro mapping of each record, field by field, against `schemas/avro/*.avsc`.

use apache_avro::types::Value;
use switchyard_core::analysis::TaskCategory;
use switchyard_core::job::{ChatMessage, ChatRequest, Job, ResponseFormat, Role};
use switchyard_core::result::{
    Attempt, AttemptOutcome, ErrorInfo, JobResult, JobStatus, Output, RoutingSummary, RunMode,
    TokenUsage,
};
use switchyard_core::routing::Strategy;
use switchyard_core::usage::UsageEvent;
use switchyard_core::vocab::JobMode;

use crate::avro::{
    self, AvroRecord, Compiled, Fields, SchemaSlot, long, map, opt, record, string, strings,
    symbol, timestamp,
};

static JOB: SchemaSlot = SchemaSlot::new(include_str!("../../../schemas/avro/job.avsc"));
static RESULT: SchemaSlot = SchemaSlot::new(include_str!("../../../schemas/avro/result.avsc"));
static USAGE: SchemaSlot = SchemaSlot::new(include_str!("../../../schemas/avro/usage_event.avsc"));

const ROLES: &[&str] = &["system", "user", "assistant"];
const JOB_MODES: &[&str] = &["live", "deferred", "auto"];
const RUN_MODES: &[&str] = &["live", "deferred"];
const FORMATS: &[&str] = &["text", "json_object"];
const STATUSES: &[&str] = &["succeeded", "failed", "rejected", "canceled", "held"];
const OUTCOMES: &[&str] = &[
    "succeeded",
    "rate_limited",
    "provider_error",
    "timeout",
    "rejected",
    "invalid_output",
    "skipped",
];
const CATEGORIES: &[&str] = &[
    "classification",
    "extraction",
    "summarization",
    "chat",
    "code",
    "reasoning",
    "math",
    "creative",
];

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    Strategy::parse(s).ok_or_else(|| format!("unknown strategy `{s}`"))
}

fn parse_category(s: &str) -> Result<TaskCategory, String> {
    TaskCategory::parse(s).ok_or_else(|| format!("unknown category `{s}`"))
}

fn parse_outcome(s: &str) -> Result<AttemptOutcome, String> {
    AttemptOutcome::parse(s).ok_or_else(|| format!("unknown attempt outcome `{s}`"))
}

fn parse_run_mode(s: &str) -> Result<RunMode, String> {
    RunMode::parse(s).ok_or_else(|| format!("unknown mode `{s}`"))
}

fn usage_value(u: &TokenUsage) -> Value {
    record(vec![
        ("input_tokens", long(u.input_tokens)),
        ("output_tokens", long(u.output_tokens)),
        ("cached_input_tokens", long(u.cached_input_tokens)),
        ("cache_write_input_tokens", long(u.cache_write_input_tokens)),
    ])
}

fn usage_from(v: Value) -> Result<TokenUsage, String> {
    let mut f = Fields::of("TokenUsage", v)?;
    Ok(TokenUsage {
        input_tokens: f.u64("input_tokens")?,
        output_tokens: f.u64("output_tokens")?,
        cached_input_tokens: f.u64("cached_input_tokens")?,
        cache_write_input_tokens: f.u64("cache_write_input_tokens")?,
    })
}

impl AvroRecord for Job {
    const NAME: &'static str = "Job";

    fn compiled() -> Result<&'static Compiled, String> {
        JOB.get()
    }

    fn to_avro(&self) -> Value {
        let r = &self.request;
        let messages = r
            .messages
            .iter()
            .map(|m| {
                record(vec![
                    ("role", symbol(ROLES, m.role.as_str())),
                    ("content", string(&m.content)),
                ])
            })
            .collect();
        let request = record(vec![
            ("messages", Value::Array(messages)),
            ("system", opt(r.system.as_deref(), string)),
            ("max_tokens", opt(r.max_tokens, |n| long(u64::from(n)))),
            ("temperature", opt(r.temperature, Value::Float)),
            ("stop", strings(&r.stop)),
            (
                "response_format",
                symbol(FORMATS, r.response_format.as_str()),
            ),
        ]);
        record(vec![
            ("job_id", string(&self.job_id)),
            ("batch_id", opt(self.batch_id.as_deref(), string)),
            ("project", string(&self.project)),
            ("workload", opt(self.workload.as_deref(), string)),
            ("strategy", opt(self.strategy, |s| string(s.as_str()))),
            ("request", request),
            ("model", opt(self.model.as_deref(), string)),
            ("allowed_models", strings(&self.allowed_models)),
            ("deadline", opt(self.deadline.as_ref(), timestamp)),
            ("metadata", map(&self.metadata)),
            ("mode", opt(self.mode, |m| symbol(JOB_MODES, m.as_str()))),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, String> {
        let mut f = Fields::of("Job", value)?;
        let mut r = Fields::of("ChatRequest", f.take("request")?)?;
        let messages = r
            .array("messages")?
            .into_iter()
            .map(|m| {
                let mut m = Fields::of("ChatMessage", m)?;
                let role = m.symbol("role")?;
                Ok(ChatMessage {
                    role: Role::parse(&role).ok_or_else(|| format!("unknown role `{role}`"))?,
                    content: m.string("content")?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let max_tokens = match avro::unwrap_opt(r.take("max_tokens")?) {
            None => None,
            Some(Value::Long(n)) => Some(
                u32::try_from(n).map_err(|_| format!("request.max_tokens {n} is out of range"))?,
            ),
            Some(other) => {
                return Err(format!(
                    "request.max_tokens: expected a long, found {other:?}"
                ));
            }
        };
        let temperature = match avro::unwrap_opt(r.take("temperature")?) {
            None => None,
            Some(Value::Float(x)) => Some(x),
            Some(other) => {
                return Err(format!(
                    "request.temperature: expected a float, found {other:?}"
                ));
            }
        };
        let format = r.symbol("response_format")?;
        let request = ChatRequest {
            messages,
            system: r.opt_string("system")?,
            max_tokens,
            temperature,
            stop: r.strings("stop")?,
            response_format: ResponseFormat::parse(&format)
                .ok_or_else(|| format!("unknown response_format `{format}`"))?,
        };
        let deadline = avro::unwrap_opt(f.take("deadline")?)
            .map(avro::as_timestamp)
            .transpose()?;
        let mode = match avro::unwrap_opt(f.take("mode")?) {
            None => None,
            Some(Value::Enum(_, m) | Value::String(m)) => {
                Some(JobMode::parse(&m).ok_or_else(|| format!("unknown mode `{m}`"))?)
            }
            Some(other) => return Err(format!("Job.mode: expected a symbol, found {other:?}")),
        };
        Ok(Job {
            job_id: f.string("job_id")?,
            batch_id: f.opt_string("batch_id")?,
            project: f.string("project")?,
            workload: f.opt_string("workload")?,
            strategy: f
                .opt_string("strategy")?
                .map(|s| parse_strategy(&s))
                .transpose()?,
            mode,
            request,
            model: f.opt_string("model")?,
            allowed_models: f.strings("allowed_models")?,
            deadline,
            metadata: f.map("metadata")?,
        })
    }

    fn strip_unknown(value: &mut serde_json::Value) {
        const JOB_KEYS: &[&str] = &[
            "job_id",
            "batch_id",
            "project",
            "workload",
            "strategy",
            "request",
            "model",
            "allowed_models",
            "deadline",
            "metadata",
            "mode",
        ];
        const REQUEST_KEYS: &[&str] = &[
            "messages",
            "system",
            "max_tokens",
            "temperature",
            "stop",
            "response_format",
        ];
        const MESSAGE_KEYS: &[&str] = &["role", "content"];
        let Some(obj) = value.as_object_mut() else {
            return;
        };
        obj.retain(|k, _| JOB_KEYS.contains(&k.as_str()));
        let Some(req) = obj.get_mut("request").and_then(|r| r.as_object_mut()) else {
            return;
        };
        req.retain(|k, _| REQUEST_KEYS.contains(&k.as_str()));
        if let Some(msgs) = req.get_mut("messages").and_then(|m| m.as_array_mut()) {
            for m in msgs.iter_mut().filter_map(|m| m.as_object_mut()) {
                m.retain(|k, _| MESSAGE_KEYS.contains(&k.as_str()));
            }
        }
    }
}

impl AvroRecord for JobResult {
    const NAME: &'static str = "JobResult";

    fn compiled() -> Result<&'static Compiled, String> {
        RESULT.get()
    }

    fn to_avro(&self) -> Value {
        let attempts = self
            .attempts
            .iter()
            .map(|a| {
                record(vec![
                    ("deployment", string(&a.deployment)),
                    ("provider", string(&a.provider)),
                    ("model", string(&a.model)),
                    ("outcome", symbol(OUTCOMES, a.outcome.as_str())),
                    (
                        "status_code",
                        opt(a.status_code, |c| Value::Int(i32::from(c))),
                    ),
                    ("latency_ms", long(a.latency_ms)),
                    ("usage", usage_value(&a.usage)),
                    ("cost_usd", Value::Double(a.cost_usd)),
                    ("error", opt(a.error.as_deref(), string)),
                ])
            })
            .collect();
        let routing = opt(self.routing.as_ref(), |r| {
            record(vec![
                ("strategy", string(r.strategy.as_str())),
                ("category", symbol(CATEGORIES, r.category.as_str())),
                ("complexity", Value::Double(r.complexity)),
                ("required_quality", Value::Double(r.required_quality)),
                ("chosen_model", string(&r.chosen_model)),
                ("reason", string(&r.reason)),
            ])
        });
        record(vec![
            ("job_id", string(&self.job_id)),
            ("batch_id", opt(self.batch_id.as_deref(), string)),
            ("project", string(&self.project)),
            ("status", symbol(STATUSES, self.status.as_str())),
            ("provider", opt(self.provider.as_deref(), string)),
            ("model", opt(self.model.as_deref(), string)),
            (
                "output",
                opt(self.output.as_ref(), |o| {
                    record(vec![
                        ("content", string(&o.content)),
                        ("finish_reason", string(&o.finish_reason)),
                    ])
                }),
            ),
            ("usage", usage_value(&self.usage)),
            ("cost_usd", Value::Double(self.cost_usd)),
            ("latency_ms", long(self.latency_ms)),
            ("attempts", Value::Array(attempts)),
            ("routing", routing),
            (
                "error",
                opt(self.error.as_ref(), |e| {
                    record(vec![
                        ("code", string(&e.code)),
                        ("message", string(&e.message)),
                    ])
                }),
            ),
            ("metadata", map(&self.metadata)),
            ("completed_at", timestamp(&self.completed_at)),
            ("approval_id", opt(self.approval_id.as_deref(), string)),
            ("mode", symbol(RUN_MODES, self.mode.as_str())),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, String> {
        let mut f = Fields::of("JobResult", value)?;
        let status = f.symbol("status")?;
        let output = avro::unwrap_opt(f.take("output")?)
            .map(|o| {
                let mut o = Fields::of("Output", o)?;
                Ok::<_, String>(Output {
                    content: o.string("content")?,
                    finish_reason: o.string("finish_reason")?,
                })
            })
            .transpose()?;
        let attempts = f
            .array("attempts")?
            .into_iter()
            .map(|a| {
                let mut a = Fields::of("Attempt", a)?;
                let status_code = match avro::unwrap_opt(a.take("status_code")?) {
                    None => None,
                    Some(Value::Int(c)) => Some(
                        u16::try_from(c).map_err(|_| format!("status_code {c} is out of range"))?,
                    ),
                    Some(other) => {
                        return Err(format!(
                            "Attempt.status_code: expected an int, found {other:?}"
                        ));
                    }
                };
                Ok(Attempt {
                    deployment: a.string("deployment")?,
                    provider: a.string("provider")?,
                    model: a.string("model")?,
                    outcome: parse_outcome(&a.symbol("outcome")?)?,
                    status_code,
                    latency_ms: a.u64("latency_ms")?,
                    usage: usage_from(a.take("usage")?)?,
                    cost_usd: a.f64("cost_usd")?,
                    error: a.opt_string("error")?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let routing = avro::unwrap_opt(f.take("routing")?)
            .map(|r| {
                let mut r = Fields::of("RoutingSummary", r)?;
                Ok::<_, String>(RoutingSummary {
                    strategy: parse_strategy(&r.string("strategy")?)?,
                    category: parse_category(&r.symbol("category")?)?,
                    complexity: r.f64("complexity")?,
                    required_quality: r.f64("required_quality")?,
                    chosen_model: r.string("chosen_model")?,
                    reason: r.string("reason")?,
                })
            })
            .transpose()?;
        let error = avro::unwrap_opt(f.take("error")?)
            .map(|e| {
                let mut e = Fields::of("ErrorInfo", e)?;
                Ok::<_, String>(ErrorInfo {
                    code: e.string("code")?,
                    message: e.string("message")?,
                })
            })
            .transpose()?;
        Ok(JobResult {
            job_id: f.string("job_id")?,
            batch_id: f.opt_string("batch_id")?,
            project: f.string("project")?,
            status: JobStatus::parse(&status)
                .ok_or_else(|| format!("unknown status `{status}`"))?,
            mode: parse_run_mode(&f.symbol("mode")?)?,
            provider: f.opt_string("provider")?,
            model: f.opt_string("model")?,
            output,
            usage: usage_from(f.take("usage")?)?,
            cost_usd: f.f64("cost_usd")?,
            latency_ms: f.u64("latency_ms")?,
            attempts,
            routing,
            error,
            metadata: f.map("metadata")?,
            completed_at: f.timestamp("completed_at")?,
            approval_id: f.opt_string("approval_id")?,
        })
    }
}

impl AvroRecord for UsageEvent {
    const NAME: &'static str = "UsageEvent";

    fn compiled() -> Result<&'static Compiled, String> {
        USAGE.get()
    }

    fn to_avro(&self) -> Value {
        record(vec![
            ("event_id", string(&self.event_id)),
            ("job_id", string(&self.job_id)),
            ("batch_id", opt(self.batch_id.as_deref(), string)),
            (
                "attempt",
                Value::Int(i32::try_from(self.attempt).unwrap_or(i32::MAX)),
            ),
            ("ts", timestamp(&self.ts)),
            ("org", string(&self.org)),
            ("business_unit", string(&self.business_unit)),
            ("team", string(&self.team)),
            ("project", string(&self.project)),
            ("workload", string(&self.workload)),
            ("strategy", string(self.strategy.as_str())),
            ("category", symbol(CATEGORIES, self.category.as_str())),
            ("complexity", Value::Double(self.complexity)),
            ("chosen_model", string(&self.chosen_model)),
            ("routing_reason", string(&self.routing_reason)),
            ("provider", string(&self.provider)),
            ("model", string(&self.model)),
            ("deployment", string(&self.deployment)),
            ("outcome", symbol(OUTCOMES, self.outcome.as_str())),
            ("usage", usage_value(&self.usage)),
            ("cost_usd", Value::Double(self.cost_usd)),
            ("baseline_cost_usd", Value::Double(self.baseline_cost_usd)),
            ("latency_ms", long(self.latency_ms)),
            ("mode", symbol(RUN_MODES, self.mode.as_str())),
            ("live_cost_usd", opt(self.live_cost_usd, Value::Double)),
        ])
    }

    fn from_avro(value: Value) -> Result<Self, String> {
        let mut f = Fields::of("UsageEvent", value)?;
        Ok(UsageEvent {
            event_id: f.string("event_id")?,
            job_id: f.string("job_id")?,
            batch_id: f.opt_string("batch_id")?,
            attempt: u32::try_from(f.u64("attempt")?)
                .map_err(|_| "attempt out of range".to_owned())?,
            ts: f.timestamp("ts")?,
            org: f.string("org")?,
            business_unit: f.string("business_unit")?,
            team: f.string("team")?,
            project: f.string("project")?,
            workload: f.string("workload")?,
            strategy: parse_strategy(&f.string("strategy")?)?,
            category: parse_category(&f.symbol("category")?)?,
            complexity: f.f64("complexity")?,
            chosen_model: f.string("chosen_model")?,
            routing_reason: f.string("routing_reason")?,
            provider: f.string("provider")?,
            model: f.string("model")?,
            deployment: f.string("deployment")?,
            outcome: parse_outcome(&f.symbol("outcome")?)?,
            usage: usage_from(f.take("usage")?)?,
            cost_usd: f.f64("cost_usd")?,
            baseline_cost_usd: f.f64("baseline_cost_usd")?,
            latency_ms: f.u64("latency_ms")?,
            mode: parse_run_mode(&f.symbol("mode")?)?,
            live_cost_usd: match avro::unwrap_opt(f.take("live_cost_usd")?) {
                None => None,
                Some(Value::Double(x)) => Some(x),
                Some(other) => {
                    return Err(format!(
                        "UsageEvent.live_cost_usd: expected a double, found {other:?}"
                    ));
                }
            },
        })
    }

    fn strip_unknown(value: &mut serde_json::Value) {
        const EVENT_KEYS: &[&str] = &[
            "event_id",
            "job_id",
            "batch_id",
            "attempt",
            "ts",
            "org",
            "business_unit",
            "team",
            "project",
            "workload",
            "strategy",
            "category",
            "complexity",
            "chosen_model",
            "routing_reason",
            "provider",
            "model",
            "deployment",
            "outcome",
            "usage",
            "cost_usd",
            "baseline_cost_usd",
            "latency_ms",
            "mode",
            "live_cost_usd",
        ];
        const USAGE_KEYS: &[&str] = &[
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "cache_write_input_tokens",
        ];
        let Some(obj) = value.as_object_mut() else {
            return;
        };
        obj.retain(|k, _| EVENT_KEYS.contains(&k.as_str()));
        if let Some(usage) = obj.get_mut("usage").and_then(|u| u.as_object_mut()) {
            usage.retain(|k, _| USAGE_KEYS.contains(&k.as_str()));
        }
    }
}
