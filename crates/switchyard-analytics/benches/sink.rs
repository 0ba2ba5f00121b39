//! Throughput of the usage sink's stages on realistic usage events, through
//! the paths the sink itself takes: decoding chunks of usage-topic JSON into
//! Arrow blocks and ClickHouse `RowBinary` (one decoder thread), writing the
//! blocks into Parquet (Zstd, rolled into place), and inserting rows into ClickHouse
//! (when one answers at SWITCHYARD_BENCH_CLICKHOUSE_URL, default
//! http://127.0.0.1:8123; database `switchyard_bench`, dropped at the end).
//!
//!   cargo bench -p switchyard-analytics --bench sink

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use switchyard_analytics::decode::RawChunk;
use switchyard_analytics::progress::Cut;
use switchyard_analytics::runner::decode_for_stores;
use switchyard_analytics::sample::event;
use switchyard_analytics::sinks::clickhouse::ClickHouseRows;
use switchyard_analytics::{
    ClickHouseConfig, ClickHouseSink, ParquetConfig, ParquetSink, UsageRow,
};
use switchyard_codec::Codec;

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

/// Chunks of 4,096 JSON usage events, as the sink's reader makes them.
fn chunks(n: u64) -> Vec<RawChunk> {
    let codec = Codec::json();
    let mut out = Vec::new();
    let mut chunk = RawChunk::with_capacity(4096);
    for i in 0..n {
        chunk.push(
            (i % 4) as i32,
            i as i64,
            1,
            &codec.encode(&event(i)).unwrap(),
        );
        if chunk.len() == 4096 {
            out.push(std::mem::replace(&mut chunk, RawChunk::with_capacity(4096)));
        }
    }
    if !chunk.is_empty() {
        out.push(chunk);
    }
    out
}

fn decode(c: &mut Criterion) {
    const N: u64 = 4096 * 5;
    let codec = Codec::json();
    let chunks = chunks(N);
    let mut g = c.benchmark_group("sink");
    g.throughput(Throughput::Elements(N));
    for (name, clickhouse) in [
        ("decode_json_to_blocks", false),
        ("decode_json_to_blocks_and_rowbinary", true),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for chunk in &chunks {
                    let d = decode_for_stores(&codec, "switchyard.usage", chunk, clickhouse);
                    assert!(d.error.is_none());
                    std::hint::black_box(d);
                }
            });
        });
    }
    g.finish();
}

fn parquet(c: &mut Criterion) {
    const N: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let codec = Codec::json();
    let blocks: Vec<_> = chunks(N)
        .iter()
        .flat_map(|c| {
            decode_for_stores(&codec, "switchyard.usage", c, false)
                .parquet
                .into_blocks()
        })
        .collect();
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
                let start = Instant::now();
                let mut sink = ParquetSink::open(config).unwrap();
                for b in &blocks {
                    sink.write_batch(b.day, &b.org, &b.batch).unwrap();
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
                let batch = ClickHouseRows::from_rows(&rows(N, next));
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
