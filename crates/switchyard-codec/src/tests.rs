use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use switchyard_core::analysis::TaskCategory;
use switchyard_core::config::{Encoding, TopicConfig, UnknownFields};
use switchyard_core::job::{ChatMessage, ChatRequest, Job, ResponseFormat, Role};
use switchyard_core::result::{
    Attempt, AttemptOutcome, ErrorInfo, JobResult, JobStatus, Output, RoutingSummary, RunMode,
    TokenUsage,
};
use switchyard_core::routing::Strategy;
use switchyard_core::usage::UsageEvent;
use switchyard_core::vocab::JobMode;

use super::*;

fn codec(encoding: Encoding) -> Codec {
    Codec::for_topic(&TopicConfig {
        encoding,
        schema_id: Some(42),
        ..TopicConfig::json("t")
    })
}

const ALL: [Encoding; 3] = [
    Encoding::Json,
    Encoding::AvroConfluent,
    Encoding::AvroSingleObject,
];

pub(crate) fn full_job() -> Job {
    Job {
        job_id: "job-0001".into(),
        batch_id: Some("batch-7".into()),
        project: "acme/retail/search/catalog".into(),
        workload: Some("catalog-enrich".into()),
        strategy: Some(Strategy::CostFirst),
        mode: Some(JobMode::Auto),
        request: ChatRequest {
            messages: vec![
                ChatMessage {
                    role: Role::System,
                    content: "Be brief.".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "Tag this: «café crème» ✓".into(),
                },
                ChatMessage {
                    role: Role::Assistant,
                    content: "food".into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: "And this?".into(),
                },
            ],
            system: Some("You tag products.".into()),
            max_tokens: Some(64),
            temperature: Some(0.25),
            stop: vec!["\n\n".into()],
            response_format: ResponseFormat::JsonObject,
        },
        model: Some("gpt-4o-mini".into()),
        allowed_models: vec!["gpt-4o-mini".into(), "claude-haiku-4.5".into()],
        deadline: Some(
            Utc.with_ymd_and_hms(2026, 11, 25, 10, 30, 0).unwrap()
                + chrono::Duration::milliseconds(123),
        ),
        metadata: BTreeMap::from([("custom_id".to_owned(), "row-9".to_owned())]),
    }
}

fn minimal_job() -> Job {
    Job::new("j", "a/b/c/d", ChatRequest::from_user("hi"))
}

fn usage() -> TokenUsage {
    TokenUsage {
        input_tokens: 1200,
        output_tokens: 340,
        cached_input_tokens: 1024,
        cache_write_input_tokens: 2048,
    }
}

fn full_result() -> JobResult {
    JobResult {
        job_id: "job-0001".into(),
        batch_id: Some("batch-7".into()),
        project: "acme/retail/search/catalog".into(),
        status: JobStatus::Succeeded,
        mode: RunMode::Deferred,
        provider: Some("anthropic".into()),
        model: Some("claude-haiku-4.5".into()),
        output: Some(Output {
            content: "{\"tag\":\"food\"}".into(),
            finish_reason: "stop".into(),
        }),
        usage: usage(),
        cost_usd: 0.001_234_5,
        latency_ms: 812,
        attempts: vec![
            Attempt {
                deployment: "openai-main".into(),
                provider: "openai".into(),
                model: "gpt-4o-mini".into(),
                outcome: AttemptOutcome::ProviderError,
                status_code: Some(503),
                latency_ms: 120,
                usage: TokenUsage::default(),
                cost_usd: 0.0,
                error: Some("service unavailable".into()),
            },
            Attempt {
                deployment: "anthropic-main".into(),
                provider: "anthropic".into(),
                model: "claude-haiku-4.5".into(),
                outcome: AttemptOutcome::Succeeded,
                status_code: Some(200),
                latency_ms: 690,
                usage: usage(),
                cost_usd: 0.001_234_5,
                error: None,
            },
        ],
        routing: Some(RoutingSummary {
            strategy: Strategy::Auto,
            category: TaskCategory::Classification,
            complexity: 0.12,
            required_quality: 0.61,
            chosen_model: "gpt-4o-mini".into(),
            reason: "auto: cheapest".into(),
        }),
        error: None,
        metadata: BTreeMap::from([("custom_id".to_owned(), "row-9".to_owned())]),
        completed_at: Utc.timestamp_millis_opt(1_764_000_000_123).unwrap(),
        approval_id: None,
    }
}

fn rejected_result() -> JobResult {
    JobResult {
        job_id: "j2".into(),
        batch_id: None,
        project: "a/b/c/d".into(),
        status: JobStatus::Rejected,
        mode: RunMode::Live,
        provider: None,
        model: None,
        output: None,
        usage: TokenUsage::default(),
        cost_usd: 0.0,
        latency_ms: 0,
        attempts: vec![],
        // A refused job carries its decision, with no model chosen.
        routing: Some(RoutingSummary {
            strategy: Strategy::CostFirst,
            category: TaskCategory::Chat,
            complexity: 0.2,
            required_quality: 0.55,
            chosen_model: String::new(),
            reason: "cost-first: chat (complexity 0.20) needs quality >= 0.55; not routed: acme/retail is over budget".into(),
        }),
        error: Some(ErrorInfo {
            code: "budget_exhausted".into(),
            message: "acme/retail is over budget".into(),
        }),
        metadata: BTreeMap::new(),
        completed_at: Utc.timestamp_millis_opt(1_764_000_000_000).unwrap(),
        approval_id: None,
    }
}

fn event() -> UsageEvent {
    UsageEvent {
        event_id: "0193a1b2-0000-7000-8000-000000000001".into(),
        job_id: "job-0001".into(),
        batch_id: None,
        attempt: 1,
        ts: Utc.timestamp_millis_opt(1_764_000_000_456).unwrap(),
        org: "acme".into(),
        business_unit: "retail".into(),
        team: "search".into(),
        project: "catalog".into(),
        workload: "catalog-enrich".into(),
        strategy: Strategy::LatencyFirst,
        category: TaskCategory::Extraction,
        complexity: 0.41,
        chosen_model: "gemini-2.5-flash".into(),
        routing_reason: "auto: extraction (complexity 0.41) needs quality >= 0.77".into(),
        provider: "gemini".into(),
        model: "gemini-2.5-flash".into(),
        deployment: "gemini-main".into(),
        outcome: AttemptOutcome::InvalidOutput,
        usage: usage(),
        cost_usd: 0.000_9,
        baseline_cost_usd: 0.0089,
        latency_ms: 455,
        mode: RunMode::Live,
        live_cost_usd: None,
    }
}

#[test]
fn every_record_round_trips_in_every_encoding() {
    for enc in ALL {
        let c = codec(enc);
        for job in [full_job(), minimal_job()] {
            let bytes = c.encode(&job).unwrap();
            assert_eq!(c.decode::<Job>(&bytes).unwrap(), job, "{enc:?}");
        }
        // Results written before refusals carried a decision have none.
        let mut without_routing = rejected_result();
        without_routing.routing = None;
        for result in [full_result(), rejected_result(), without_routing] {
            let bytes = c.encode(&result).unwrap();
            assert_eq!(c.decode::<JobResult>(&bytes).unwrap(), result, "{enc:?}");
        }
        // Live and deferred events (the latter with the live price of its tokens).
        for e in [event(), event().deferred(0.0018)] {
            assert_eq!(
                c.decode::<UsageEvent>(&c.encode(&e).unwrap()).unwrap(),
                e,
                "{enc:?}"
            );
        }
    }
}

#[test]
fn confluent_framing_is_magic_zero_and_a_big_endian_id() {
    let bytes = codec(Encoding::AvroConfluent)
        .encode(&minimal_job())
        .unwrap();
    assert_eq!(&bytes[..5], &[0, 0, 0, 0, 42]);
}

#[test]
fn single_object_framing_matches_the_reference_writer() {
    let ours = codec(Encoding::AvroSingleObject)
        .encode(&full_job())
        .unwrap();
    let compiled = Job::compiled().unwrap();
    let mut reference = Vec::new();
    let mut writer =
        apache_avro::GenericSingleObjectWriter::new_with_capacity(compiled.schema, 1024).unwrap();
    writer
        .write_value(full_job().to_avro(), &mut reference)
        .unwrap();
    assert_eq!(ours, reference);
}

fn dlq_reason(c: &Codec, bytes: &[u8]) -> DecodeError {
    c.decode_job(bytes).unwrap_err()
}

#[test]
fn malformed_inputs_are_refused_with_a_reason() {
    let c = Codec::json();
    let e = dlq_reason(&c, b"{\"job_id\": \"x\", ");
    assert_eq!(e.kind(), "invalid_json");
    assert!(e.to_string().contains("line 1"), "{e}");

    let e = dlq_reason(
        &c,
        br#"{"job_id": 7, "project": "a/b/c/d", "request": {"messages": []}}"#,
    );
    assert!(
        e.to_string()
            .contains("invalid type: integer `7`, expected a string"),
        "{e}"
    );

    let e = dlq_reason(
        &c,
        br#"{"job_id": "x", "project": "a/b/c/d", "request": {}}"#,
    );
    assert!(e.to_string().contains("missing field `messages`"), "{e}");

    let e = dlq_reason(
        &c,
        br#"{"job_id": "x", "project": "a/b/c/d", "request": {"messages": []}}"#,
    );
    assert_eq!(e.kind(), "invalid_job");
    assert!(e.to_string().contains("messages is empty"), "{e}");

    let e = dlq_reason(&c, b"{\"job_id\": \"\xff\xfe\"}");
    assert_eq!(e, DecodeError::InvalidUtf8 { offset: 12 });

    let e = dlq_reason(&c, b"");
    assert_eq!(e, DecodeError::Empty);

    let small = Codec::for_topic(&TopicConfig {
        max_message_bytes: 1024,
        ..TopicConfig::json("t")
    });
    let e = dlq_reason(&small, &vec![b' '; 2048]);
    assert_eq!(
        e,
        DecodeError::TooLarge {
            size: 2048,
            limit: 1024
        }
    );
}

#[test]
fn unknown_fields_follow_the_topic_policy() {
    let text = br#"{"job_id": "x", "project": "a/b/c/d", "priority": 5, "request": {"messages": [{"role": "user", "content": "hi", "name": "bob"}], "top_k": 3}}"#;
    let e = dlq_reason(&Codec::json(), text);
    assert!(e.to_string().contains("unknown field `priority`"), "{e}");
    let lenient = Codec::for_topic(&TopicConfig {
        unknown_fields: UnknownFields::Ignore,
        ..TopicConfig::json("t")
    });
    let job = lenient.decode_job(text).unwrap();
    assert_eq!(job.request.messages[0].content, "hi");
}

#[test]
fn usage_events_from_a_newer_writer_decode_when_unknown_fields_are_ignored() {
    let mut e = event();
    e.batch_id = Some("batch_0123".into());
    let mut v = serde_json::to_value(&e).unwrap();
    v["region"] = "eu-west-1".into();
    v["usage"]["reasoning_tokens"] = 12.into();
    let text = serde_json::to_vec(&v).unwrap();
    let strict = Codec::json();
    let refused = strict.decode::<UsageEvent>(&text).unwrap_err();
    assert!(refused.to_string().contains("unknown field"), "{refused}");
    let lenient = strict.clone().ignoring_unknown_fields();
    assert_eq!(lenient.decode::<UsageEvent>(&text).unwrap(), e);
    // Through the topic's policy as well, and every known key survives stripping.
    let by_policy = Codec::for_topic(&TopicConfig {
        unknown_fields: UnknownFields::Ignore,
        ..TopicConfig::json("switchyard.usage")
    });
    assert_eq!(by_policy.decode::<UsageEvent>(&text).unwrap(), e);
    let mut known = serde_json::to_value(&e).unwrap();
    UsageEvent::strip_unknown(&mut known);
    assert_eq!(known, serde_json::to_value(&e).unwrap());
}

#[test]
fn undecodable_avro_is_refused_with_a_reason() {
    let c = codec(Encoding::AvroConfluent);
    let good = c.encode(&full_job()).unwrap();

    assert!(
        dlq_reason(&c, b"{\"job_id\":1}")
            .to_string()
            .contains("Confluent header")
    );
    let mut wrong_id = good.clone();
    wrong_id[4] = 7;
    assert!(
        dlq_reason(&c, &wrong_id)
            .to_string()
            .contains("schema id 7 is not the configured one (42)")
    );
    let truncated = &good[..good.len() / 2];
    assert_eq!(dlq_reason(&c, truncated).kind(), "invalid_avro");
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"junk");
    assert!(
        dlq_reason(&c, &trailing)
            .to_string()
            .contains("trailing bytes"),
        "{}",
        dlq_reason(&c, &trailing)
    );
    let mut garbage = vec![0, 0, 0, 0, 42];
    garbage.extend(std::iter::repeat_n(0xFFu8, 64));
    assert_eq!(dlq_reason(&c, &garbage).kind(), "invalid_avro");

    let so = codec(Encoding::AvroSingleObject);
    let mut bad_fp = so.encode(&full_job()).unwrap();
    bad_fp[5] ^= 0xFF;
    assert!(dlq_reason(&so, &bad_fp).to_string().contains("fingerprint"));
    // A result is not a job.
    let result_bytes = so.encode(&full_result()).unwrap();
    assert!(
        dlq_reason(&so, &result_bytes)
            .to_string()
            .contains("fingerprint")
    );
}

#[test]
fn json_results_use_the_documented_field_names() {
    let v: serde_json::Value =
        serde_json::from_slice(&Codec::json().encode(&full_result()).unwrap()).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["usage"]["cached_input_tokens"], 1024);
    assert_eq!(v["routing"]["strategy"], "auto");
    assert_eq!(v["attempts"][0]["outcome"], "provider_error");
    assert_eq!(v["completed_at"], "2025-11-24T16:00:00.123Z");
    assert_eq!(v["mode"], "deferred");
    assert_eq!(v["usage"]["cache_write_input_tokens"], 2048);
    // Live results and zero cache writes keep the shape consumers know.
    let v: serde_json::Value =
        serde_json::from_slice(&Codec::json().encode(&rejected_result()).unwrap()).unwrap();
    assert!(v.get("mode").is_none(), "{v}");
    assert!(v["usage"].get("cache_write_input_tokens").is_none(), "{v}");
    let e: serde_json::Value =
        serde_json::from_slice(&Codec::json().encode(&event().deferred(0.5)).unwrap()).unwrap();
    assert_eq!(
        (e["mode"].as_str(), e["live_cost_usd"].as_f64()),
        (Some("deferred"), Some(0.5))
    );
}

#[test]
fn avro_schemas_default_the_new_fields_for_older_writers() {
    // Schema evolution: every field added with deferred routing and the
    // cache-write price has a default, so records of the older schemas resolve.
    for (name, text, fields) in [
        (
            "job",
            include_str!("../../../schemas/avro/job.avsc"),
            &["mode"][..],
        ),
        (
            "result",
            include_str!("../../../schemas/avro/result.avsc"),
            &["mode", "cache_write_input_tokens"][..],
        ),
        (
            "usage_event",
            include_str!("../../../schemas/avro/usage_event.avsc"),
            &["mode", "live_cost_usd", "cache_write_input_tokens"][..],
        ),
    ] {
        for field in fields {
            let at = text
                .find(&format!("\"name\": \"{field}\""))
                .unwrap_or_else(|| panic!("{name}: {field}"));
            let line = &text[at..text[at..].find('\n').map_or(text.len(), |n| at + n)];
            assert!(
                line.contains("\"default\""),
                "{name}.{field} has no default: {line}"
            );
        }
    }
}

/// A provider's long error text on an attempt is cut like the job's echoes, so
/// one unreadable answer cannot make a later good answer's result unpublishable.
#[test]
fn cap_echoes_cuts_the_attempts_errors_too() {
    let mut r = full_result();
    r.attempts[0].error = Some("z".repeat(100_000));
    r.cap_echoes(1024);
    let e = r.attempts[0].error.as_deref().unwrap();
    assert!(e.len() <= 1024 && e.starts_with("zzz"), "{} bytes", e.len());
    assert_eq!(r.attempts[1].error, None);
    assert_eq!(r.output, full_result().output, "the answer is kept");
    assert_eq!(
        r.metadata
            .get(switchyard_core::result::TRUNCATED_KEY)
            .map(String::as_str),
        Some("attempts.error")
    );
}
