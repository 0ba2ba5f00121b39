//! Parsing and rendering of each format, against lines shaped like the
//! providers' API references.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use switchyard_core::job::{ResponseFormat, Role};
use switchyard_core::result::{
    Attempt, AttemptOutcome, ErrorInfo, JobResult, JobStatus, Output, TokenUsage,
};

use super::*;

fn settings() -> LineSettings {
    let mut names = HashMap::new();
    names.insert("gpt-4o-mini".to_owned(), "gpt-4o-mini".to_owned());
    LineSettings {
        project: "acme/retail/support/ticket-triage".into(),
        strategy: None,
        workload: None,
        mode: None,
        pins: ModelPins { names },
    }
}

#[test]
fn detects_each_format_from_its_keys() {
    assert_eq!(
        detect(br#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}"#),
        Some(BatchFormat::Openai)
    );
    assert_eq!(
        detect(br#"{"custom_id":"a","params":{}}"#),
        Some(BatchFormat::Anthropic)
    );
    assert_eq!(
        detect(br#"{"job_id":"a","request":{}}"#),
        Some(BatchFormat::Native)
    );
    assert_eq!(detect(br#"{"hello":1}"#), None);
    assert_eq!(detect(b"not json"), None);
}

#[test]
fn an_openai_line_becomes_a_job() {
    let line = json!({"custom_id": "req-1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "Classify:"}, {"type": "text", "text": "refund please"}]}],
            "max_completion_tokens": 20, "temperature": 0.1, "stop": "\n\n",
            "response_format": {"type": "json_object"}, "seed": 7}});
    let p = parse_line(
        BatchFormat::Openai,
        line.to_string().as_bytes(),
        &settings(),
    )
    .unwrap();
    assert_eq!(p.custom_id, "req-1");
    let j = p.job;
    assert_eq!(j.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(j.request.messages[0].role, Role::System);
    assert_eq!(j.request.messages[1].content, "Classify:\nrefund please");
    assert_eq!(j.request.max_tokens, Some(20));
    assert_eq!(j.request.stop, vec!["\n\n".to_owned()]);
    assert_eq!(j.request.response_format, ResponseFormat::JsonObject);
    assert_eq!(
        j.metadata.get(META_CUSTOM_ID).map(String::as_str),
        Some("req-1")
    );
    assert_eq!(j.project, "acme/retail/support/ticket-triage");
}

#[test]
fn an_unknown_model_is_left_to_routing() {
    let line = r#"{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"model":"my-finetune","messages":[{"role":"user","content":"hi"}]}}"#;
    let p = parse_line(BatchFormat::Openai, line.as_bytes(), &settings()).unwrap();
    assert_eq!(p.job.model, None);
}

#[test]
fn openai_refusals_name_the_field() {
    let cases = [
        (
            r#"{"custom_id":"x","method":"GET","url":"/v1/chat/completions","body":{"messages":[]}}"#,
            "method is `GET`",
        ),
        (
            r#"{"custom_id":"x","method":"POST","url":"/v1/embeddings","body":{"messages":[]}}"#,
            "only /v1/chat/completions",
        ),
        (
            r#"{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"tool","content":"x"}]}}"#,
            "body.messages[0].role `tool`",
        ),
        (
            r#"{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}}"#,
            "only text blocks",
        ),
        (
            r#"{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"hi"}],"n":3}}"#,
            "`body.n` is not supported",
        ),
        (
            r#"{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"hi"}],"temperature":3}}"#,
            "temperature 3",
        ),
        (
            r#"{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"assistant","content":"hi"}]}}"#,
            "no `user` message",
        ),
        (
            r#"{"custom_id":"x","method":"POST","url":"/v1/chat/completions"}"#,
            "missing field `body`",
        ),
        (
            r#"{"custom_id":"x","method":"POST","url":"/v1/chat/completions","body":{"messages":[{"role":"user","content":"hi"}],"max_tokens":"many"}}"#,
            "body.max_tokens",
        ),
        (r#"{"custom_id":"x","#, "invalid JSON"),
    ];
    for (line, want) in cases {
        let e = parse_line(BatchFormat::Openai, line.as_bytes(), &settings()).unwrap_err();
        assert!(e.reason.contains(want), "{line}: {}", e.reason);
    }
}

#[test]
fn an_anthropic_line_becomes_a_job() {
    let line = json!({"custom_id": "doc-7", "params": {"model": "claude-x", "max_tokens": 300,
        "system": [{"type": "text", "text": "You summarise."}],
        "messages": [{"role": "user", "content": "Summarise this."}],
        "temperature": 0.5, "stop_sequences": ["END"]}});
    let p = parse_line(
        BatchFormat::Anthropic,
        line.to_string().as_bytes(),
        &settings(),
    )
    .unwrap();
    assert_eq!(p.custom_id, "doc-7");
    assert_eq!(p.job.request.system.as_deref(), Some("You summarise."));
    assert_eq!(p.job.request.max_tokens, Some(300));
    assert_eq!(p.job.request.stop, vec!["END".to_owned()]);
    assert_eq!(p.job.model, None);
    let bad = json!({"custom_id": "has space", "params": {"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}});
    let e = parse_line(
        BatchFormat::Anthropic,
        bad.to_string().as_bytes(),
        &settings(),
    )
    .unwrap_err();
    assert!(e.reason.contains("1 to 64 letters"), "{}", e.reason);
    let bad = json!({"custom_id": "a", "params": {"messages": [{"role": "user", "content": "x"}]}});
    let e = parse_line(
        BatchFormat::Anthropic,
        bad.to_string().as_bytes(),
        &settings(),
    )
    .unwrap_err();
    assert!(e.reason.contains("max_tokens"), "{}", e.reason);
}

#[test]
fn a_native_line_keeps_its_id_as_custom_id_and_must_match_the_project() {
    let line = json!({"job_id": "mine-1", "project": "acme/retail/support/ticket-triage",
        "request": {"messages": [{"role": "user", "content": "hi"}]}, "model": "gpt-4o-mini"});
    let p = parse_line(
        BatchFormat::Native,
        line.to_string().as_bytes(),
        &settings(),
    )
    .unwrap();
    assert_eq!(p.custom_id, "mine-1");
    assert_eq!(p.job.model.as_deref(), Some("gpt-4o-mini"));
    let other = json!({"job_id": "mine-2", "project": "acme/finance/payables/invoice-processing",
        "request": {"messages": [{"role": "user", "content": "hi"}]}});
    let e = parse_line(
        BatchFormat::Native,
        other.to_string().as_bytes(),
        &settings(),
    )
    .unwrap_err();
    assert!(e.reason.contains("not the batch's project"), "{}", e.reason);
    assert_eq!(e.custom_id.as_deref(), Some("mine-2"));
}

fn attempt(outcome: AttemptOutcome, status: u16, usage: TokenUsage) -> Attempt {
    Attempt {
        deployment: "sim-mistral-small-4".into(),
        provider: "mistral".into(),
        model: "mistral-small-4".into(),
        outcome,
        status_code: Some(status),
        latency_ms: 5,
        usage,
        cost_usd: 0.0,
        error: None,
    }
}

/// A result; a succeeded one had a first attempt whose answer failed the job's
/// checks (billed, 7 in / 30 out) before the answer (10 + 4 cached in, 2 out).
fn result(status: JobStatus) -> JobResult {
    let mut metadata = BTreeMap::new();
    metadata.insert(META_CUSTOM_ID.to_owned(), "req-1".to_owned());
    let answer = TokenUsage {
        input_tokens: 10,
        output_tokens: 2,
        cached_input_tokens: 4,
        cache_write_input_tokens: 0,
    };
    let wasted = TokenUsage {
        input_tokens: 7,
        output_tokens: 30,
        cached_input_tokens: 0,
        cache_write_input_tokens: 0,
    };
    let attempts = if status == JobStatus::Succeeded {
        vec![
            attempt(AttemptOutcome::InvalidOutput, 200, wasted),
            attempt(AttemptOutcome::Succeeded, 200, answer),
        ]
    } else {
        vec![attempt(
            AttemptOutcome::ProviderError,
            503,
            TokenUsage::default(),
        )]
    };
    let mut usage = TokenUsage::default();
    for a in &attempts {
        usage.add(&a.usage);
    }
    JobResult {
        mode: switchyard_core::result::RunMode::Live,
        job_id: "batch_x-0".into(),
        batch_id: Some("batch_x".into()),
        project: "a/b/c/d".into(),
        status,
        provider: Some("mistral".into()),
        model: Some("mistral-small-4".into()),
        output: (status == JobStatus::Succeeded).then(|| Output {
            content: "billing".into(),
            finish_reason: "stop".into(),
        }),
        usage,
        cost_usd: 0.001,
        latency_ms: 5,
        attempts,
        routing: None,
        error: (status != JobStatus::Succeeded).then(|| ErrorInfo {
            code: "all_attempts_failed".into(),
            message: "every deployment failed".into(),
        }),
        metadata,
        completed_at: Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap(),
        approval_id: None,
    }
}

/// The ids of the pipeline that produced [`result`]: the deployment's own
/// override wins over the catalog's id.
fn models() -> ModelIds {
    ModelIds {
        by_deployment: [(
            "sim-mistral-small-4".to_owned(),
            "mistral-small-2603".to_owned(),
        )]
        .into(),
        by_model: [
            (
                "mistral-small-4".to_owned(),
                "mistral-small-latest".to_owned(),
            ),
            ("gpt-4o-mini".to_owned(), "gpt-4o-mini".to_owned()),
        ]
        .into(),
    }
}

fn rendered(format: BatchFormat, r: &JobResult) -> (Destination, Value) {
    let mut out = Vec::new();
    let d = render(format, r, "req-1", &models(), &mut out);
    (d, serde_json::from_slice(&out).unwrap())
}

#[test]
fn the_model_is_the_api_id_that_answered() {
    let r = result(JobStatus::Succeeded);
    let ids = models();
    assert_eq!(ids.answered(&r), "mistral-small-2603");
    let mut other = r.clone();
    other.attempts[1].deployment = "elsewhere".into();
    assert_eq!(ids.answered(&other), "mistral-small-latest");
    other.attempts[1].model = "unknown-model".into();
    assert_eq!(ids.answered(&other), "unknown-model");
    // An empty map (no pipeline) keeps the catalog name.
    assert_eq!(ModelIds::default().answered(&r), "mistral-small-4");
}

#[test]
fn openai_output_lines_follow_the_batch_output_shape() {
    let (d, v) = rendered(BatchFormat::Openai, &result(JobStatus::Succeeded));
    assert_eq!(d, Destination::Output);
    assert_eq!(v["custom_id"], "req-1");
    assert!(v["id"].as_str().unwrap().starts_with("batch_req_"));
    assert_eq!(v["error"], Value::Null);
    let r = &v["response"];
    assert_eq!(r["status_code"], 200);
    assert_eq!(r["body"]["object"], "chat.completion");
    assert_eq!(r["body"]["choices"][0]["message"]["content"], "billing");
    assert_eq!(r["body"]["choices"][0]["finish_reason"], "stop");
    assert_eq!(r["body"]["model"], "mistral-small-2603");
    // The answer's own tokens, not those of the attempt that failed before it.
    assert_eq!(r["body"]["usage"]["completion_tokens"], 2);
    assert_eq!(r["body"]["usage"]["prompt_tokens"], 14);
    assert_eq!(r["body"]["usage"]["total_tokens"], 16);
    assert_eq!(
        r["body"]["usage"]["prompt_tokens_details"]["cached_tokens"],
        4
    );

    let (d, v) = rendered(BatchFormat::Openai, &result(JobStatus::Failed));
    assert_eq!(d, Destination::Errors);
    assert_eq!(v["response"]["status_code"], 503);
    assert_eq!(
        v["response"]["body"]["error"]["code"],
        "all_attempts_failed"
    );
    assert_eq!(v["response"]["body"]["error"]["type"], "server_error");

    let mut canceled = result(JobStatus::Canceled);
    canceled.attempts.clear();
    let (d, v) = rendered(BatchFormat::Openai, &canceled);
    assert_eq!(d, Destination::Errors);
    assert_eq!(v["response"], Value::Null);
    assert_eq!(v["error"]["code"], "batch_cancelled");
}

#[test]
fn anthropic_result_lines_have_the_four_types() {
    let (_, v) = rendered(BatchFormat::Anthropic, &result(JobStatus::Succeeded));
    assert_eq!(v["custom_id"], "req-1");
    let m = &v["result"]["message"];
    assert_eq!(v["result"]["type"], "succeeded");
    assert_eq!(m["type"], "message");
    assert_eq!(m["content"][0]["text"], "billing");
    assert_eq!(m["stop_reason"], "end_turn");
    assert_eq!(m["stop_sequence"], Value::Null);
    assert_eq!(m["model"], "mistral-small-2603");
    assert_eq!(m["usage"]["input_tokens"], 10);
    assert_eq!(m["usage"]["output_tokens"], 2);
    assert_eq!(m["usage"]["cache_read_input_tokens"], 4);
    let (_, v) = rendered(BatchFormat::Anthropic, &result(JobStatus::Failed));
    assert_eq!(v["result"]["type"], "errored");
    assert_eq!(v["result"]["error"]["type"], "error");
    assert_eq!(v["result"]["error"]["error"]["type"], "overloaded_error");
    let (_, v) = rendered(BatchFormat::Anthropic, &result(JobStatus::Canceled));
    assert_eq!(v["result"], json!({"type": "canceled"}));
    let mut expired = result(JobStatus::Rejected);
    expired.error = Some(ErrorInfo {
        code: "deadline_passed".into(),
        message: "late".into(),
    });
    let (_, v) = rendered(BatchFormat::Anthropic, &expired);
    assert_eq!(v["result"], json!({"type": "expired"}));
}

#[test]
fn native_output_restores_the_callers_job_id() {
    let (_, v) = rendered(BatchFormat::Native, &result(JobStatus::Succeeded));
    assert_eq!(v["job_id"], "req-1");
    assert_eq!(v["status"], "succeeded");
}
