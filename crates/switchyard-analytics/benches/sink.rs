//! Throughput of the usage sink's stages on realistic usage events:
//! decoding events from the usage topic's JSON into rows, writing rows into
//! Parquet (Zstd, rolled into place), and inserting them into ClickHouse
//! (when one answers at SWITCHYARD_BENCH_CLICKHOUSE_URL, default
//! http://127.0.0.1:8123; database `switchyard_bench`, dropped at the end).
//!
//!   cargo bench -p switchyard-analytics --bench sink

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_analytics::progress::Cut;
use switchyard_analytics::{
    ClickHouseConfig, ClickHouseSink, ParquetConfig, ParquetSink, UsageRow,
};
use switchyard_codec::Codec;
use switchyard_core::analysis::TaskCategory;
use switchyard_core::result::{AttemptOutcome, TokenUsage};
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

fn event(i: u64) -> UsageEvent {
    let (bu, team, project) = PROJECTS[(i % 6) as usize];
    let (provider, model) = MODELS[(i % 5) as usize];
    let input = 200 + (i * 37) % 3000;
    let output = 50 + (i * 11) % 900;
    UsageEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        job_id: format!("job-{:012}", i / 2),
        batch_id: (i % 3 == 0).then(|| "batch_3f0c2a9e".to_owned()),
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
        outcome: if i % 50 == 0 {
            AttemptOutcome::Timeout
        } else {
            AttemptOutcome::Succeeded
        },
        usage: TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cached_input_tokens: (i % 4) * 64,
        },
        cost_usd: (input as f64 * 0.4 + output as f64 * 1.6) / 1e6,
        baseline_cost_usd: (input as f64 * 5.0 + output as f64 * 25.0) / 1e6,
        latency_ms: 300 + i % 4000,
    }
}

fn rows(n: u64, first_offset: i64) -> Vec<UsageRow> {
    (0..n)
        .map(|i| {
            UsageRow::from_event(
                event(i),
                "switchyard.usage",
                (i % 4) as i32,
                first_offset + i as i64,
            )
        })
        .collect()
}

fn decode(c: &mut Criterion) {
    let codec = Codec::json();
    let payloads: Vec<Vec<u8>> = (0..10_000)
        .map(|i| codec.encode(&event(i)).unwrap())
        .collect();
    let mut g = c.benchmark_group("sink");
    g.throughput(Throughput::Elements(payloads.len() as u64));
    g.bench_function("decode_json_to_rows", |b| {
        b.iter(|| {
            for (i, p) in payloads.iter().enumerate() {
                let e: UsageEvent = codec.decode(p).unwrap();
                std::hint::black_box(UsageRow::from_event(e, "switchyard.usage", 0, i as i64));
            }
        });
    });
    g.finish();
}

fn parquet(c: &mut Criterion) {
    const N: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let batch = rows(N, 0);
    let mut g = c.benchmark_group("sink");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    let mut round = 0i64;
    g.bench_function("parquet_200k_rows", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let config = ParquetConfig {
                    dir: dir.path().join(format!("r{round}")),
                    sink_id: "bench".into(),
                    topic: "switchyard.usage".into(),
                    max_file_bytes: 128 << 20,
                    roll_interval: Duration::from_secs(60),
                    row_group_rows: 128 * 1024,
                    zstd_level: 1,
                };
                let rows = batch.clone();
                let start = Instant::now();
                let mut sink = ParquetSink::open(config).unwrap();
                for r in rows {
                    sink.push(r);
                }
                let cut: Cut = (0..4).map(|p| (p, N as i64)).collect();
                sink.roll(&cut).unwrap();
                total += start.elapsed();
            }
            total
        });
    });
    g.finish();
}

fn clickhouse(c: &mut Criterion) {
    const N: u64 = 100_000;
    let url = std::env::var("SWITCHYARD_BENCH_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = ClickHouseConfig::new(&url, "switchyard_bench");
    let Ok(mut sink) =
        runtime.block_on(ClickHouseSink::connect(config.clone(), "switchyard.usage"))
    else {
        eprintln!("no ClickHouse at {url}: skipping the ClickHouse benchmark");
        return;
    };
    let mut g = c.benchmark_group("sink");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    let mut next = 0i64;
    g.bench_function("clickhouse_100k_rows", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch = rows(N, next);
                next += N as i64;
                let start = Instant::now();
                runtime.block_on(sink.write(&batch)).unwrap();
                total += start.elapsed();
            }
            total
        });
    });
    g.finish();
    let _ = runtime.block_on(
        config
            .server_client()
            .query("DROP DATABASE IF EXISTS switchyard_bench")
            .execute(),
    );
}

criterion_group!(benches, decode, parquet, clickhouse);
criterion_main!(benches);
