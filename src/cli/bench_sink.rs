//! `switchyard bench-sink`: usage-sink throughput through a Kafka broker. Usage
//! events (realistic org paths, models and token counts) are produced to the
//! usage topic first; then the sink reads them in its consumer group and writes
//! Parquet, and ClickHouse with `--clickhouse-url`, until every event is
//! consumed, written out and committed. The broker runs in a child process
//! (`switchyard broker`), so the CPU time measured is the sink's alone. The clock
//! starts at the first event consumed (after the group join) and stops when the
//! sink has rolled its files, ClickHouse holds every row and the offsets are
//! committed.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard_analytics::{SinkOptions, SinkReport, run_sink_with, sample};
use switchyard_codec::Codec;
use switchyard_core::config::PipelineConfig;
use switchyard_loader::env_overrides;

use super::bench::{cpu_time, peak_rss_mb, produce_all, spawn_child};
use super::common::BadInput;

/// Arguments of `bench-sink`.
#[derive(clap::Args)]
pub struct Args {
    /// Usage events to write.
    #[arg(long, default_value_t = 400_000)]
    events: u64,
    /// Partitions of the usage topic.
    #[arg(long, default_value_t = 48)]
    partitions: i32,
    /// Also insert into this ClickHouse (HTTP URL); database `switchyard_bench`,
    /// dropped first.
    #[arg(long)]
    clickhouse_url: Option<String>,
    /// Pipeline config for the topic names and sink settings.
    #[arg(long, default_value = "pipelines/demo.toml")]
    config: std::path::PathBuf,
}

/// Runs the benchmark and prints events/s and CPU per event.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.events == 0 {
        return Err(BadInput("--events must be positive".into()).into());
    }
    let (_broker, brokers) = spawn_child(
        &["broker", "--partitions", &args.partitions.to_string()],
        "bootstrap:",
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let config = bench_config(&args, &brokers, dir.path()).await?;
    let retained = produce_events(&config, &brokers, args.events).await?;
    eprintln!("Running the sink…");
    let consumed = Arc::new(AtomicU64::new(0));
    let options = SinkOptions {
        consumed: Some(consumed.clone()),
        ..SinkOptions::default()
    };
    let clock = Arc::new(SinkClock::default());
    let all_consumed = clock.clone().watch(consumed, retained);
    let report = run_sink_with(&config, options, all_consumed).await?;
    print_figures(&report, &clock, args.clickhouse_url.is_some())?;
    Ok(ExitCode::SUCCESS)
}

/// The pipeline config with the benchmark's broker, a fresh Parquet directory
/// under `dir`, and ClickHouse (its bench database dropped first) when asked.
async fn bench_config(
    args: &Args,
    brokers: &str,
    dir: &std::path::Path,
) -> anyhow::Result<PipelineConfig> {
    let mut config = switchyard_loader::load_pipeline(&args.config, &env_overrides())?.config;
    config.kafka.brokers = brokers.to_owned();
    let analytics = &mut config.analytics;
    analytics.parquet_dir = dir.join("usage");
    analytics.flush_interval = Duration::from_secs(1);
    analytics.parquet_roll_interval = Duration::from_secs(60);
    analytics.clickhouse_url = args.clickhouse_url.clone();
    analytics.clickhouse_database = "switchyard_bench".into();
    if let Some(url) = &args.clickhouse_url {
        let ch = switchyard_analytics::ClickHouseConfig::new(url, "switchyard_bench");
        ch.server_client()
            .query("DROP DATABASE IF EXISTS switchyard_bench")
            .execute()
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "ClickHouse at {}: {e}",
                    switchyard_analytics::redact_url(url)
                )
            })?;
    }
    Ok(config)
}

/// Produces `events` sample usage events to the usage topic; gives how many
/// the broker retained (the ones the sink will read).
async fn produce_events(
    config: &PipelineConfig,
    brokers: &str,
    events: u64,
) -> anyhow::Result<u64> {
    eprintln!("Producing {events} usage events…");
    let codec = Codec::for_topic(&config.kafka.topics.usage);
    let encoded = (0..events).map(|i| {
        let e = sample::event(i);
        Ok((e.job_id.clone(), codec.encode(&e)?))
    });
    produce_all(brokers, &config.kafka.topics.usage.name, encoded).await?;

    // The embedded broker keeps about 5 MB per partition: count what it retained.
    let retained = {
        let kafka = config.kafka.clone();
        let topic = config.kafka.topics.usage.name.clone();
        tokio::task::spawn_blocking(move || {
            switchyard_kafka::group_lag(
                &kafka,
                "switchyard-bench-count",
                &topic,
                Duration::from_secs(10),
            )
        })
        .await??
    } as u64;
    if retained < events {
        eprintln!(
            "The broker retained {retained} of {events} events (its per-partition retention); measuring those. Use more --partitions to keep all."
        );
    }
    Ok(retained)
}

/// When the sink consumed its first event (with the process's CPU time then)
/// and when it had consumed them all.
#[derive(Default)]
struct SinkClock {
    started: std::sync::Mutex<Option<(Instant, Option<Duration>)>>,
    read_all: std::sync::Mutex<Option<Instant>>,
}

impl SinkClock {
    /// Resolves once `consumed` reaches `total`, marking the times on the way:
    /// the sink's shutdown signal.
    async fn watch(self: Arc<Self>, consumed: Arc<AtomicU64>, total: u64) {
        loop {
            let n = consumed.load(Ordering::Relaxed);
            if n > 0
                && let Ok(mut s) = self.started.lock()
                && s.is_none()
            {
                *s = Some((Instant::now(), cpu_time()));
            }
            if n >= total {
                if let Ok(mut r) = self.read_all.lock() {
                    *r = Some(Instant::now());
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Prints events/s, rows per store, CPU per event, the split between reading
/// and writing out, and the peak RSS.
fn print_figures(report: &SinkReport, clock: &SinkClock, clickhouse: bool) -> anyhow::Result<()> {
    let (elapsed, cpu) = {
        let s = clock
            .started
            .lock()
            .map_err(|_| anyhow::anyhow!("clock lock"))?;
        let (t0, c0) = s.ok_or_else(|| anyhow::anyhow!("no event was consumed"))?;
        (
            t0.elapsed(),
            cpu_time().zip(c0).map(|(a, b)| a.saturating_sub(b)),
        )
    };
    let n = report.consumed as f64;
    println!(
        "{} events in {:.2} s: {:.0} events/s into Parquet{}",
        report.consumed,
        elapsed.as_secs_f64(),
        n / elapsed.as_secs_f64(),
        if clickhouse { " and ClickHouse" } else { "" }
    );
    println!(
        "  Parquet: {} rows in {} files; ClickHouse: {} rows",
        report.parquet_rows, report.parquet_files, report.clickhouse_rows
    );
    if let Some(cpu) = cpu {
        println!(
            "  CPU: {:.2} s, {:.2} µs per event",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / n
        );
    }
    let read_at = clock.read_all.lock().ok().and_then(|r| *r);
    if let (Some(read_at), Some((t0, _))) = (read_at, clock.started.lock().ok().and_then(|s| *s)) {
        println!(
            "  of which reading every event: {:.2} s; writing out, closing files and committing: {:.2} s",
            read_at.duration_since(t0).as_secs_f64(),
            read_at.elapsed().as_secs_f64()
        );
    }
    if let Some(rss) = peak_rss_mb() {
        println!("  peak RSS: {rss:.0} MB");
    }
    Ok(())
}
