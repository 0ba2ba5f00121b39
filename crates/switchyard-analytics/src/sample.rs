//! Realistic usage events for benchmarks and load tests (`switchyard
//! bench-sink`, the sink's criterion benchmark): varied org paths, models,
//! token counts and outcomes, so that compression and grouping see real shapes.

use chrono::{TimeZone, Utc};
use switchyard_core::analysis::TaskCategory;
use switchyard_core::result::{AttemptOutcome, RunMode, TokenUsage};
use switchyard_core::routing::Strategy;
use switchyard_core::usage::UsageEvent;

const PROJECTS: [(&str, &str, &str); 6] = [
    ("retail", "support", "ticket-triage"),
    ("retail", "search", "query-rewrite"),
    ("finance", "risk", "kyc-extraction"),
    ("engineering", "platform", "code-review"),
    ("legal", "contracts", "clause-summaries"),
    ("people", "recruiting", "cv-screening"),
];
const MODELS: [(&str, &str); 5] = [
    ("openai", "gpt-6-luna"),
    ("anthropic", "claude-haiku-5-5"),
    ("google", "gemini-3.5-flash-lite"),
    ("deepseek", "deepseek-flash"),
    ("anthropic", "claude-opus-5-5"),
];

/// Usage event number `i`: six projects in five business units, five models,
/// a retry on every other event, one timeout in fifty; a fresh event id.
pub fn event(i: u64) -> UsageEvent {
    let (bu, team, project) = PROJECTS[(i % 6) as usize];
    let (provider, model) = MODELS[(i % 5) as usize];
    let input = 200 + (i * 37) % 3000;
    let output = 50 + (i * 11) % 900;
    UsageEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        job_id: format!("job-{:012}", i / 2),
        batch_id: i.is_multiple_of(3).then(|| "batch_3f0c2a9e".to_owned()),
        attempt: (i % 2) as u32,
        ts: Utc
            .timestamp_millis_opt(1_795_514_400_000 + (i as i64) * 7)
            .single()
            .unwrap_or_default(),
        org: "acme".into(),
        business_unit: bu.into(),
        team: team.into(),
        project: project.into(),
        workload: "nightly-enrichment".into(),
        strategy: Strategy::Auto,
        category: TaskCategory::Extraction,
        complexity: 0.37,
        chosen_model: model.into(),
        routing_reason: "cheapest model meeting quality 0.76 for extraction".into(),
        provider: provider.into(),
        model: model.into(),
        deployment: format!("{provider}-{model}"),
        outcome: if i.is_multiple_of(50) {
            AttemptOutcome::Timeout
        } else {
            AttemptOutcome::Succeeded
        },
        usage: TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: (i % 4) * 64,
            cache_write_input_tokens: 0,
        },
        cost_usd: (input as f64 * 0.4 + output as f64 * 1.6) / 1e6,
        baseline_cost_usd: (input as f64 * 5.0 + output as f64 * 25.0) / 1e6,
        latency_ms: 300 + i % 4000,
        // One event in ten was served through a provider's batch API.
        mode: if i.is_multiple_of(10) {
            RunMode::Deferred
        } else {
            RunMode::Live
        },
        live_cost_usd: i
            .is_multiple_of(10)
            .then_some((input as f64 * 0.8 + output as f64 * 3.2) / 1e6),
    }
}
