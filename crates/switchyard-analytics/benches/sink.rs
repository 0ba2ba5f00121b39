//! Throughput of the usage sink's stages on realistic usage events:
//! decoding events from the usage topic's JSON into rows, writing rows into
//! Parquet (Zstd, rolled into place), and inserting them into ClickHouse
//! (when one answers at SWITCHYARD_BENCH_CLICKHOUSE_URL, default
//! http://127.0.0.1:8123; database `switchyard_bench`, dropped at the end).
//!
//!   cargo bench -p switchyard-analytics --bench sink

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_analytics::progress::Cut;
use switchyard_analytics::sample::event;
use switchyard_analytics::{
    ClickHouseConfig, ClickHouseSink, ParquetConfig, ParquetSink, UsageRow,
};
use switchyard_codec::Codec;
use switchyard_core::usage::UsageEvent;

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
                    sink.push(r).unwrap();
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
