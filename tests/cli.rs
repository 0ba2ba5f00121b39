//! The command line as a user meets it: `validate` names the file, line and fix
//! with exit code 2; `route --explain` and `--json` explain a decision, and a
//! refusal with every candidate's reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::process::{Output, Stdio};

use common::*;

fn switchyard(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = common::switchyard()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

#[test]
fn validate_accepts_the_shipped_configs() {
    for file in [
        "pipelines/demo.toml",
        "pipelines/production.toml",
        "pipelines/compose.toml",
    ] {
        let out = switchyard(&["validate", file], None);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
    }
}

#[test]
fn kafka_secrets_come_from_named_variables_and_only_for_secret_properties() {
    let dir = tempfile::tempdir().unwrap();
    let base = demo_config_text();
    let with = |section: &str| {
        let file = dir.path().join("kafka.toml");
        std::fs::write(&file, format!("{base}\n{section}\n")).unwrap();
        switchyard(&["validate", file.to_str().unwrap()], None)
    };
    // A secret property from a variable that is not set: valid, with a warning.
    let out = with("[kafka.client_secret_env]\n\"sasl.password\" = \"SWITCHYARD_TEST_UNSET_SASL\"");
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("`sasl.password` reads its value from SWITCHYARD_TEST_UNSET_SASL"),
        "{said}"
    );
    // A misspelt one is refused at its line, before any client sees it.
    let out = with("[kafka.client_secret_env]\n\"sasl.pasword\" = \"KAFKA_SASL_PASSWORD\"");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`sasl.pasword` is not one of librdkafka's secret properties"),
        "{err}"
    );
    assert!(err.contains("fix: use one of sasl.password"), "{err}");
}

#[test]
fn a_secret_written_in_kafka_client_is_refused_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kafka.toml");
    let text = demo_config_text().replace(
        "[kafka.topics.jobs]",
        "[kafka.client]\n\"sasl.password\" = \"hunter2-in-the-file\"\n\n[kafka.topics.jobs]",
    );
    std::fs::write(&file, text).unwrap();
    let out = switchyard(&["validate", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kafka.toml:"), "{err}");
    assert!(err.contains("`sasl.password` is a secret"), "{err}");
    assert!(err.contains("client_secret_env"), "{err}");
    assert!(!err.contains("hunter2"), "the secret was echoed: {err}");
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.json");
    std::fs::write(
        &job,
        r#"{"job_id":"pipe","project":"acme/retail/support/ticket-triage","request":{"messages":[{"role":"user","content":"Tag this ticket: refund please"}]}}"#,
    )
    .unwrap();
    for args in [
        vec![
            "route",
            "--explain",
            "--json",
            "--job",
            job.to_str().unwrap(),
        ],
        vec!["route", "--explain", "--job", job.to_str().unwrap()],
    ] {
        let mut child = common::switchyard()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the command writes (`| head -0`).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            matches!(out.status.code(), Some(0) | Some(141)),
            "{args:?}: {:?} {err}",
            out.status
        );
        assert!(
            !err.contains("panicked") && !err.contains("error"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn commands_find_the_demo_files_from_any_directory() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.json");
    std::fs::write(
        &job,
        r#"{"job_id":"anywhere","project":"acme/retail/support/ticket-triage","request":{"messages":[{"role":"user","content":"Tag this ticket: refund please"}]}}"#,
    )
    .unwrap();
    let out = common::switchyard()
        .current_dir(dir.path())
        .args(["route", "--job", "job.json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain ("));
    let out = common::switchyard()
        .current_dir(dir.path())
        .args(["validate", "pipelines/demo.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_config_names_file_line_key_and_fix_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let text = demo_config_text().replace("max_in_flight = 512", "max_in_flight = \"lots\"");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, &text).unwrap();
    let line = text
        .lines()
        .position(|l| l.contains("max_in_flight"))
        .unwrap()
        + 1;
    let out = switchyard(&["validate", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "bad.toml:{line}: `worker.max_in_flight`: invalid type"
        )),
        "{err}"
    );
    assert!(err.contains("fix:"), "{err}");

    // A deployment naming a model the catalog does not have.
    let text = text
        .replacen("model = \"gpt-5-nano\"", "model = \"gpt-9\"", 1)
        .replace("max_in_flight = \"lots\"", "max_in_flight = 512");
    std::fs::write(&file, &text).unwrap();
    let line = text.lines().position(|l| l.contains("\"gpt-9\"")).unwrap() + 1;
    let out = switchyard(&["validate", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("bad.toml:{line}: `deployments["))
            && err.contains("model `gpt-9` is not in the catalog"),
        "{err}"
    );
}

const JOB: &str = r#"{"job_id": "cli-1", "project": "acme/engineering/platform/code-assist", "workload": "code-assist",
 "request": {"messages": [{"role": "user", "content": "Write a thread-safe LRU cache in Rust with unit tests covering eviction edge cases."}], "max_tokens": 2000}}"#;

#[test]
fn route_explain_shows_analysis_candidates_and_chain() {
    let out = switchyard(&["route", "--explain"], Some(JOB));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "analysis",
        "category          code",
        "features fired:",
        "candidates (",
        "dropped:",
        "chain (auto):",
        "reason: auto: code",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

/// Health only allows openai, anthropic and gemini; this job allows only models of
/// other providers, so nothing can serve it.
const UNSERVABLE: &str = r#"{"job_id": "cli-2", "project": "acme/health/clinical/clinical-notes",
 "allowed_models": ["deepseek-flash", "groq-llama-3.1-8b"],
 "request": {"messages": [{"role": "user", "content": "Summarize this discharge note for the patient."}], "max_tokens": 400}}"#;

#[test]
fn route_explain_shows_why_every_candidate_was_dropped_when_nothing_fits() {
    let out = switchyard(&["route", "--explain"], Some(UNSERVABLE));
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("candidates (0 ranked, "), "{text}");
    for needle in [
        r#"deepseek-flash"#,
        r#"dropped: {"reason":"policy_denied","rule":"provider `deepseek` not allowed"}"#,
        r#"dropped: {"reason":"policy_denied","rule":"provider `groq` not allowed"}"#,
        r#"dropped: {"reason":"not_requested"}"#,
        "rejected (no_feasible_model): no model can serve this job: ",
        "reason: availability-first: summarization",
        "not routed: no model can serve this job",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
    // Every catalog model is listed, none kept.
    let rows = text.lines().filter(|l| l.contains("dropped: ")).count();
    assert!(rows >= 30, "{rows} rows in:\n{text}");
    assert!(
        !text.lines().any(|l| l.trim_end().ends_with("kept")),
        "{text}"
    );

    let out = switchyard(&["route", "--json"], Some(UNSERVABLE));
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "no_feasible_model");
    assert!(v["chain"].as_array().unwrap().is_empty());
    let candidates = v["decision"]["candidates"].as_array().unwrap();
    assert!(candidates.len() >= 30);
    assert!(
        candidates
            .iter()
            .all(|c| c["dropped"]["reason"].is_string() && c["rank"].is_null())
    );
    let groq = candidates
        .iter()
        .find(|c| c["model"] == "groq-llama-3.1-8b")
        .unwrap();
    assert_eq!(groq["dropped"]["reason"], "policy_denied");
    assert_eq!(v["decision"]["strategy"], "availability-first");
}

#[test]
fn route_json_is_one_object_for_scripts_with_any_strategy() {
    for strategy in [
        "auto",
        "balanced",
        "cost-first",
        "latency-first",
        "availability-first",
    ] {
        let out = switchyard(&["route", "--json", "--strategy", strategy], Some(JOB));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["decision"]["strategy"], strategy);
        assert_eq!(v["analysis"]["category"], "code");
        assert!(!v["chain"].as_array().unwrap().is_empty());
        assert!(v["decision"]["candidates"].as_array().unwrap().len() >= 20);
    }
    let out = switchyard(&["route", "--strategy", "cheapest"], Some(JOB));
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown strategy is bad usage"
    );
}

/// A small Parquet tree as the sink writes it: two teams, one failed attempt.
fn usage_tree(dir: &std::path::Path) {
    use switchyard_analytics::progress::Cut;
    use switchyard_analytics::{ParquetConfig, ParquetSink, UsageRow};
    use switchyard_core::analysis::TaskCategory;
    use switchyard_core::result::{AttemptOutcome, TokenUsage};
    use switchyard_core::routing::Strategy;
    use switchyard_core::usage::UsageEvent;

    let mut sink = ParquetSink::open(ParquetConfig {
        dir: dir.to_owned(),
        sink_id: "cli-test".into(),
        topic: "switchyard.usage".into(),
        max_file_bytes: 1 << 20,
        roll_interval: std::time::Duration::from_secs(60),
        row_group_rows: 1024,
        zstd_level: 1,
    })
    .unwrap();
    for i in 0..30u32 {
        let team = if i % 3 == 0 { "search" } else { "support" };
        let event = UsageEvent {
            event_id: format!("ev-{i}"),
            job_id: format!("job-{}", i / 2),
            batch_id: None,
            attempt: i % 2,
            ts: chrono::DateTime::from_timestamp(1_795_514_400 + i64::from(i) * 3600, 0).unwrap(),
            org: "acme".into(),
            business_unit: "retail".into(),
            team: team.into(),
            project: "p".into(),
            workload: String::new(),
            strategy: Strategy::Auto,
            category: TaskCategory::Chat,
            complexity: 0.2,
            chosen_model: "gpt-5-nano".into(),
            routing_reason: "cheapest".into(),
            provider: "openai".into(),
            model: "gpt-5-nano".into(),
            deployment: "d".into(),
            outcome: if i == 7 {
                AttemptOutcome::Timeout
            } else {
                AttemptOutcome::Succeeded
            },
            usage: TokenUsage {
                input_tokens: 1000,
                output_tokens: 500,
                cached_input_tokens: 0,
                cache_write_input_tokens: 0,
            },
            cost_usd: 0.25,
            baseline_cost_usd: 2.5,
            live_cost_usd: None,
            mode: switchyard_core::result::RunMode::Live,
            latency_ms: 100,
        };
        sink.push(UsageRow::from_event(
            event,
            "switchyard.usage",
            0,
            i64::from(i),
        ))
        .unwrap();
    }
    let cut: Cut = [(0, 30)].into();
    sink.roll(&cut).unwrap();
}

#[test]
fn report_reads_a_parquet_tree_as_csv_json_and_html() {
    let dir = tempfile::tempdir().unwrap();
    let usage = dir.path().join("usage");
    usage_tree(&usage);
    let html = dir.path().join("spend.html");
    let out = switchyard(
        &[
            "report",
            "--parquet",
            usage.to_str().unwrap(),
            "--by",
            "team",
            "--format",
            "csv",
            "--html",
            html.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let csv = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("team,jobs,attempts,"), "{csv}");
    assert_eq!(
        lines[1],
        "acme/retail/search,10,10,10000,5000,0,2.500000,0.250000,0.000000,25.000000,22.500000,90.00,22.500000,0.000000,0"
    );
    assert_eq!(
        lines[2],
        "acme/retail/support,15,20,20000,10000,0,5.000000,0.333333,0.250000,50.000000,45.000000,90.00,45.000000,0.000000,0"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("Spend over time by business unit") && page.contains("<svg"));

    let out = switchyard(
        &[
            "report",
            "--parquet",
            usage.to_str().unwrap(),
            "--by",
            "day",
            "--since",
            "2026-11-25",
            "--format",
            "json",
        ],
        None,
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 30 hourly events from 2026-11-24T10:00Z: 16 on the 25th.
    assert_eq!(json["total"]["attempts"], 16);
    assert_eq!(json["rows"][0]["day"], "2026-11-25");
}

#[test]
fn report_mistakes_are_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (
            vec!["report", "--parquet", "/nonexistent/usage"],
            "not a directory",
        ),
        (
            vec![
                "report",
                "--parquet",
                dir.path().to_str().unwrap(),
                "--by",
                "division",
            ],
            "unknown report dimension",
        ),
        (
            vec![
                "report",
                "--parquet",
                dir.path().to_str().unwrap(),
                "--since",
                "last week",
            ],
            "is not a time",
        ),
    ] {
        let out = switchyard(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn a_clickhouse_password_in_the_url_is_used_but_never_printed_or_logged() {
    // The ClickHouse of the tests (scripts/test.sh starts one): its `default`
    // user has no password, so a wrong one written in the URL is refused by
    // the server, which shows that the credentials were sent.
    let base = std::env::var("SWITCHYARD_TEST_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let with_secret = base.replacen("://", "://default:s3cret-pw@", 1);
    let out = common::switchyard()
        .env("RUST_LOG", "debug")
        .args([
            "report",
            "--clickhouse-url",
            &with_secret,
            "--clickhouse-database",
            "switchyard_no_such_database",
            "--by",
            "org",
        ])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(!said.contains("s3cret-pw"), "the password leaked: {said}");
    assert!(
        said.contains("Wrong password"),
        "the server should have refused the URL's password: {said}"
    );
}

#[test]
fn a_side_file_that_is_the_input_or_the_output_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("requests.jsonl");
    let good = serde_json::json!({
        "custom_id": "req-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Classify: billing or technical? 'I was charged twice.'"}], "max_tokens": 8}
    });
    let text = format!("{good}\nnot json\n");
    std::fs::write(&file, &text).unwrap();
    let hard = dir.path().join("hard-link.jsonl");
    std::fs::hard_link(&file, &hard).unwrap();
    let same_names = [
        file.clone(),
        dir.path().join(".").join("requests.jsonl"),
        hard.clone(),
    ];
    for rejects in &same_names {
        let out = switchyard(
            &[
                "submit",
                file.to_str().unwrap(),
                "--project",
                "acme/retail/support/ticket-triage",
                "--skip-invalid",
                "--rejects",
                rejects.to_str().unwrap(),
                "--brokers",
                "127.0.0.1:1",
            ],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{rejects:?}: {err}");
        assert!(
            err.contains("--rejects") && err.contains("is the input file itself"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            text,
            "the input is untouched"
        );
    }
    let output = dir.path().join("results.jsonl");
    let out = switchyard(
        &[
            "collect",
            "batch_0123456789abcdef01234567",
            "-o",
            output.to_str().unwrap(),
            "--errors",
            dir.path().join("./results.jsonl").to_str().unwrap(),
            "--brokers",
            "127.0.0.1:1",
            "--timeout",
            "1s",
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--errors") && err.contains("is the output file itself"),
        "{err}"
    );
    assert!(!output.exists());
}

#[test]
fn estimate_prices_a_file_under_every_strategy_live_and_deferred_against_the_flagship() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("requests.jsonl");
    let prompts = [
        "Classify this ticket as billing, technical or account: 'I was charged twice this month.'",
        "Extract the invoice number, date and total from: Invoice INV-2291, 2026-10-03, total EUR 1,240.00.",
        "Summarize in two sentences: The quarterly review found that onboarding time fell by 18% after the new checklist, while support tickets about access rose slightly.",
        "Prove that the sum of the first n odd numbers is n squared, step by step, and then generalise to arithmetic progressions.",
        "Write a Rust function that parses an ISO 8601 duration such as P3DT4H and returns the total seconds, with tests.",
    ];
    // A dated snapshot the catalog does not list: routing chooses the model.
    let lines: Vec<String> = (0..50)
        .map(|i| {
            serde_json::json!({
                "custom_id": format!("req-{i}"),
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini-2024-07-18",
                    "messages": [{"role": "user", "content": prompts[i % prompts.len()]}],
                    "max_tokens": 400
                }
            })
            .to_string()
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = switchyard(
        &["estimate", file.to_str().unwrap(), "--format", "json"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(e["requests"], 50);
    assert_eq!(e["format"], "openai");
    let baseline = e["baseline_cost_usd"].as_f64().unwrap();
    assert!(baseline > 0.0);
    let strategies = e["strategies"].as_array().unwrap();
    assert_eq!(strategies.len(), 5);
    let cost = |name: &str| {
        strategies.iter().find(|s| s["strategy"] == name).unwrap()["cost_usd"]
            .as_f64()
            .unwrap()
    };
    for s in strategies {
        let c = s["cost_usd"].as_f64().unwrap();
        assert!(c > 0.0 && c < baseline, "{s}");
        assert!(
            c >= cost("cost-first") - 1e-12,
            "cost-first is the cheapest: {s}"
        );
        let saving = s["saving"].as_f64().unwrap();
        assert!((saving - (1.0 - c / baseline)).abs() < 1e-9, "{s}");
        assert_eq!(s["unroutable"], 0);
        assert!(!s["models"].as_array().unwrap().is_empty());
        // Through the providers' batch APIs: every request has a model with a
        // batch price, and the saving against the flagship's live price splits
        // into what routing saved and what deferral saved.
        let deferred = s["deferred_cost_usd"].as_f64().unwrap();
        assert!(deferred > 0.0 && deferred < c, "{s}");
        assert_eq!(s["deferred_requests"], 50, "{s}");
        let routing = s["routing_savings_usd"].as_f64().unwrap();
        let deferral = s["deferral_savings_usd"].as_f64().unwrap();
        assert!(deferral > 0.0, "{s}");
        assert!(
            (routing + deferral - (baseline - deferred)).abs() < 1e-9,
            "{s}"
        );
    }

    // The same validation as submit: the duplicate custom_id is refused too.
    let broken = path("tests/data/batch/broken_openai.jsonl");
    let out = switchyard(&["estimate", broken.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "4 of 49 lines",
        "nothing was priced",
        "line 12: custom_id `ticket-5` is already used on line 5",
        "pass --skip-invalid to price the 45 valid lines",
    ] {
        assert!(err.contains(want), "`{want}` not in:\n{err}");
    }
}

#[test]
fn catalog_check_passes_on_litellms_prices_and_names_a_changed_one() {
    let fixture = "tests/fixtures/litellm/model_prices_and_context_window.json";
    let out = switchyard(&["catalog", "check", fixture], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 differ"), "{stdout}");
    // Models the fixture does not hold are listed, not failed.
    assert!(stdout.contains("not in the price map"), "{stdout}");

    // Every kind of price was compared: live, cached, cache write, batch and
    // a long-context tier.
    let out = switchyard(&["catalog", "check", fixture, "--format", "json"], None);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], true);
    let agreed: Vec<(String, String)> = report["prices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["verdict"] == "agrees")
        .map(|p| {
            (
                p["model"].as_str().unwrap().to_owned(),
                p["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (model, field) in [
        ("gpt-5.4", "output_usd_per_mtok"),
        ("grok-4.5", "cached_input_usd_per_mtok"),
        ("claude-sonnet-5-5", "cache_write_input_usd_per_mtok"),
        ("claude-haiku-5-5", "batch_input_usd_per_mtok"),
        ("gemini-3.1-pro-preview", "long_context.output_usd_per_mtok"),
        ("gpt-6.1-sol", "long_context.input_usd_per_mtok"),
    ] {
        assert!(
            agreed.contains(&(model.into(), field.into())),
            "{model} {field} not compared"
        );
    }

    // One price changed by 10%: exit code 1, naming the model and the field.
    let text = std::fs::read_to_string(root().join(fixture)).unwrap();
    let mut prices: serde_json::Value = serde_json::from_str(&text).unwrap();
    prices["claude-sonnet-5-5"]["output_cost_per_token"] = serde_json::json!(1.1e-05);
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("prices.json");
    std::fs::write(&changed, prices.to_string()).unwrap();
    let out = switchyard(&["catalog", "check", changed.to_str().unwrap()], None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("claude-sonnet-5-5"))
        .unwrap_or_else(|| panic!("no line names the model:\n{stdout}"));
    for want in ["output_usd_per_mtok", "10", "11", "-9.1%"] {
        assert!(line.contains(want), "`{want}` not in `{line}`");
    }
    assert!(stdout.contains(" 1 differ"), "{stdout}");
    // A wider tolerance lets it pass.
    let out = switchyard(
        &[
            "catalog",
            "check",
            changed.to_str().unwrap(),
            "--tolerance",
            "10",
        ],
        None,
    );
    assert!(out.status.success());

    // A missing file is the user's input: exit code 2, the file and the fix.
    let out = switchyard(&["catalog", "check", "no/such/prices.json"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no/such/prices.json") && err.contains("model_prices_and_context_window"),
        "{err}"
    );
}
