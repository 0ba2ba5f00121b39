//! The usage sink and the cost reports against a real ClickHouse server (started
//! by scripts/test.sh) and the embedded broker with the real worker: sums per org
//! node equal the results' tokens at catalog prices to the cent; a sink killed
//! with SIGKILL and restarted, or a ClickHouse that is unreachable for part of
//! the run, changes nothing; Parquet and ClickHouse reports agree; the Parquet
//! files read in pyarrow and DuckDB; the schema and report SQL run on current
//! ClickHouse (chdb).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/analytics.rs"]
mod analytics;
mod common;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use switchyard_analytics::report::clickhouse::group_sql;
use switchyard_analytics::{ClickHouseConfig, Dimension, Report, ReportQuery, Source};
use switchyard_codec::Codec;
use switchyard_core::result::JobResult;
use switchyard_embedded::Stack;

use analytics::*;
use common::{Proc, collect_results, jobs, produce_jobs, results_consumer, signal, switchyard};

/// Runs `n` jobs through the stack and returns their results.
async fn run_jobs(stack: &Stack, prefix: &str, n: usize) -> Vec<JobResult> {
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let consumer = results_consumer(&bootstrap, &topics.results.name);
    let jobs = jobs(prefix, n);
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    produce_jobs(&bootstrap, &topics.jobs, &jobs).await;
    let results = collect_results(
        &consumer,
        &Codec::for_topic(&topics.results),
        &ids,
        Duration::from_secs(180),
    )
    .await;
    // The consumer reads the topic from the start: keep only this run's jobs.
    ids.iter().map(|id| results[id][0].clone()).collect()
}

fn query(by: Vec<Dimension>) -> ReportQuery {
    ReportQuery {
        by,
        since: None,
        until: None,
    }
}

/// The two reports have the same groups, counts and (to float rounding) money.
fn assert_reports_agree(a: &Report, b: &Report) {
    let strip = |r: &Report| {
        r.rows
            .iter()
            .chain(std::iter::once(&r.total))
            .map(|row| {
                (
                    row.keys.clone(),
                    row.jobs,
                    row.attempts,
                    row.input_tokens,
                    row.output_tokens,
                    row.cached_input_tokens,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(a), strip(b));
    for (x, y) in a
        .rows
        .iter()
        .chain([&a.total])
        .zip(b.rows.iter().chain([&b.total]))
    {
        for (p, q) in [
            (x.cost_usd, y.cost_usd),
            (x.failed_cost_usd, y.failed_cost_usd),
            (x.baseline_cost_usd, y.baseline_cost_usd),
        ] {
            assert!((p - q).abs() < 1e-9, "{:?}: {p} vs {q}", x.keys);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_sums_equal_catalog_prices_per_org_node_and_both_stores_report_the_same() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("usage");
    let mut stack = stack_with_sink(&parquet, &db.url, &db.name, 0.01, true).await;
    let results = run_jobs(&stack, "sums", 400).await;
    assert!(stack.sink_caught_up(Duration::from_secs(60)).await.unwrap());
    let events = usage_events(&stack);
    stack.stop_sink().await.unwrap();

    let expected = expected_by_node(results.clone(), stack.catalog());
    assert_eq!(
        expected["acme"].attempts, events,
        "one usage event per billed attempt"
    );
    assert_sums_match(&db, &expected).await;
    assert_eq!(
        db.number("SELECT count() FROM usage_events").await as u64,
        events,
        "no row inserted twice"
    );
    // The rollups hold the same money and tokens.
    for table in ["usage_hourly", "usage_daily"] {
        let cost = db
            .number(&format!("SELECT sum(cost_usd) FROM {table}"))
            .await;
        assert!(
            (cost - expected["acme"].cost_usd).abs() < 0.005,
            "{table}: {cost}"
        );
        let attempts = db
            .number(&format!("SELECT sum(attempts) FROM {table}"))
            .await;
        assert_eq!(attempts as u64, events, "{table}");
    }

    // The README's ready SQL runs and finds this run's usage.
    let ready = readme_sql();
    assert_eq!(ready.len(), 5);
    for sql in &ready {
        assert!(
            !db.sql(sql).await.is_empty(),
            "no rows from the README's\n{sql}"
        );
    }

    let ch = Source::ClickHouse(ClickHouseConfig::new(&db.url, &db.name));
    let pq = Source::Parquet(parquet.clone());
    for by in [
        vec![Dimension::Org],
        vec![Dimension::Bu, Dimension::Model],
        vec![Dimension::Team, Dimension::Strategy],
        vec![Dimension::Project, Dimension::Provider, Dimension::Day],
    ] {
        let q = query(by);
        let (a, b) = (pq.report(&q).await.unwrap(), ch.report(&q).await.unwrap());
        assert_reports_agree(&a, &b);
    }
    // Windows cut both stores alike: one around the run holds it all, one
    // before it holds nothing.
    let now = chrono::Utc::now();
    for (since, until, all) in [
        (
            now - chrono::Duration::hours(1),
            now + chrono::Duration::hours(1),
            true,
        ),
        (
            now - chrono::Duration::days(3),
            now - chrono::Duration::days(2),
            false,
        ),
    ] {
        let q = ReportQuery {
            by: vec![Dimension::Team, Dimension::Day],
            since: Some(since),
            until: Some(until),
        };
        let (a, b) = (pq.report(&q).await.unwrap(), ch.report(&q).await.unwrap());
        assert_reports_agree(&a, &b);
        assert_eq!(
            a.total.attempts,
            if all { events } else { 0 },
            "{since}..{until}"
        );
    }

    // The baseline is the same tokens at the flagship's list prices.
    let total = pq.report(&query(vec![Dimension::Org])).await.unwrap().total;
    assert_eq!(total.jobs, results.len() as u64);
    let flagship = stack
        .catalog()
        .get(&stack.pipeline.config.routing.baseline_model)
        .unwrap();
    let baseline: f64 = results
        .iter()
        .flat_map(|r| &r.attempts)
        .filter(|a| a.usage.total() > 0)
        .map(|a| flagship.cost_usd(&a.usage))
        .sum();
    assert!(
        (total.baseline_cost_usd - baseline).abs() < 0.005,
        "baseline ${} vs ${baseline} from the catalog",
        total.baseline_cost_usd
    );
    assert!((total.savings_usd() - (baseline - total.cost_usd)).abs() < 0.005);
    assert!(
        total.savings_pct() > 50.0,
        "routing saves against the flagship: {total:?}"
    );

    // The files are plain Parquet to other readers.
    let seen = python("read_parquet.py", &[parquet.to_str().unwrap()]);
    for reader in ["pyarrow", "duckdb"] {
        assert_eq!(seen[reader]["rows"].as_u64().unwrap(), events, "{reader}");
        let cost = seen[reader]["cost_usd"].as_f64().unwrap();
        assert!(
            (cost - expected["acme"].cost_usd).abs() < 0.005,
            "{reader}: {cost}"
        );
        assert_eq!(
            seen[reader]["orgs"],
            serde_json::json!(["acme"]),
            "{reader}"
        );
    }
    assert_eq!(seen["pyarrow"]["ts_type"], "timestamp[ms, tz=UTC]");
    stack.stop().await.unwrap();
    db.drop_database().await;
}

/// `switchyard sink` as its own process, on the stack's broker, logging at
/// debug level to `log` (printed by [`sink_log`] when an assertion fails).
fn start_sink(
    config: &std::path::Path,
    stack: &Stack,
    env: &[(String, String)],
    log: &std::path::Path,
) -> Proc {
    let file = std::fs::File::create(log).unwrap();
    let child = switchyard()
        .args(["sink", "--config"])
        .arg(config)
        .env("SWITCHYARD_BROKERS", stack.broker.bootstrap())
        .env("RUST_LOG", "info,switchyard_analytics=debug")
        .envs(env.iter().map(|(k, v)| (k, v.trim_matches('"'))))
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    Proc(child)
}

/// The last lines a sink logged.
fn sink_log(log: &std::path::Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_killed_mid_stream_and_restarted_gives_the_same_sums() {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("usage");
    let env = sink_env(&parquet, &db.url, &db.name);
    // Real-ish latencies so usage keeps arriving while the sink is killed.
    let stack = stack_with_sink(&parquet, &db.url, &db.name, 0.2, false).await;
    let config = common::write_process_config(dir.path(), "http://127.0.0.1:9");

    let first = start_sink(&config, &stack, &env, &dir.path().join("sink-1.log"));
    let run = run_jobs(&stack, "kill", 600);
    let kill = async {
        // Once ClickHouse has some rows, kill the sink without warning.
        assert!(wait_for_rows(&db, 1, Duration::from_secs(120)).await >= 1);
        signal(&first, "-KILL");
        drop(first);
    };
    let (results, ()) = tokio::join!(run, kill);
    let events = usage_events(&stack);
    let held = db.number("SELECT count() FROM usage_events").await as u64;
    assert!(
        held < events,
        "the sink was killed before it had everything ({held} of {events})"
    );

    let log = dir.path().join("sink-2.log");
    let second = start_sink(&config, &stack, &env, &log);
    assert!(
        stack
            .sink_caught_up(Duration::from_secs(120))
            .await
            .unwrap(),
        "the restarted sink did not catch up:\n{}",
        sink_log(&log)
    );
    assert_eq!(
        wait_for_rows(&db, events, Duration::from_secs(30)).await,
        events
    );
    signal(&second, "-TERM");
    let mut second = second;
    let exit = tokio::task::spawn_blocking(move || second.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "sink exit status {exit:?}");

    let expected = expected_by_node(results, stack.catalog());
    assert_sums_match(&db, &expected).await;
    assert_eq!(
        db.number("SELECT count() FROM usage_events").await as u64,
        events,
        "re-delivered events were not inserted twice"
    );
    let pq = Source::Parquet(parquet.clone())
        .report(&query(vec![Dimension::Team]))
        .await
        .unwrap();
    assert_eq!(pq.total.attempts, events, "Parquet holds every event once");
    // Raw rows, as other readers see them (the report above collapses copies).
    let seen = python("read_parquet.py", &[parquet.to_str().unwrap()]);
    assert_eq!(
        seen["pyarrow"]["rows"].as_u64().unwrap(),
        events,
        "no row written twice across the kill"
    );
    let ch = Source::ClickHouse(ClickHouseConfig::new(&db.url, &db.name))
        .report(&query(vec![Dimension::Team]))
        .await
        .unwrap();
    assert_reports_agree(&pq, &ch);
    stack.stop().await.unwrap();
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_for_part_of_the_run_loses_nothing() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(&db.url).await;
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("usage");
    // ClickHouse is unreachable from the start: the sink cannot even migrate.
    proxy.set_up(false);
    let mut stack = stack_with_sink(&parquet, &proxy.url, &db.name, 0.01, true).await;
    let mut results = run_jobs(&stack, "down-a", 200).await;
    let events_while_down = usage_events(&stack);

    // Parquet goes on while ClickHouse is down...
    let pq = Source::Parquet(parquet.clone());
    assert!(
        common::eventually(Duration::from_secs(30), || {
            switchyard_analytics::report::parquet::report(&parquet, &query(vec![Dimension::Org]))
                .is_ok_and(|r| r.total.attempts == events_while_down)
        })
        .await,
        "Parquet has every event while ClickHouse is down"
    );
    // ...but nothing is committed that ClickHouse does not hold.
    assert!(!stack.sink_caught_up(Duration::from_secs(2)).await.unwrap());

    proxy.set_up(true);
    results.extend(run_jobs(&stack, "down-b", 200).await);
    // Down again mid-stream, with inserts in flight, then back.
    proxy.set_up(false);
    results.extend(run_jobs(&stack, "down-c", 100).await);
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set_up(true);

    assert!(stack.sink_caught_up(Duration::from_secs(90)).await.unwrap());
    let events = usage_events(&stack);
    stack.stop_sink().await.unwrap();
    let expected = expected_by_node(results, stack.catalog());
    assert_sums_match(&db, &expected).await;
    assert_eq!(
        db.number("SELECT count() FROM usage_events").await as u64,
        events
    );
    let q = query(vec![Dimension::Project, Dimension::Model]);
    let ch = Source::ClickHouse(ClickHouseConfig::new(&db.url, &db.name));
    assert_reports_agree(&pq.report(&q).await.unwrap(), &ch.report(&q).await.unwrap());
    stack.stop().await.unwrap();
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_stopped_while_clickhouse_is_down_exits_and_commits_nothing_clickhouse_lacks() {
    let db = TestDb::new().await;
    let proxy = Proxy::start(&db.url).await;
    proxy.set_up(false);
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("usage");
    let stack = stack_with_sink(&parquet, &proxy.url, &db.name, 0.01, false).await;
    let config = common::write_process_config(dir.path(), "http://127.0.0.1:9");
    let mut env = sink_env(&parquet, &proxy.url, &db.name);
    // Few rows may wait for ClickHouse: the sink reaches its limit and holds.
    env.push((
        "SWITCHYARD__ANALYTICS__CLICKHOUSE_MAX_PENDING_EVENTS".into(),
        "50".into(),
    ));
    let first_log = dir.path().join("sink-1.log");
    let first = start_sink(&config, &stack, &env, &first_log);
    let results = run_jobs(&stack, "held", 300).await;
    let events = usage_events(&stack);
    assert!(events > 50);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // SIGTERM: the sink gives ClickHouse its grace period (30 s), then exits 0.
    let stopped = std::time::Instant::now();
    signal(&first, "-TERM");
    let mut first = first;
    let exit = tokio::task::spawn_blocking(move || first.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        exit.success(),
        "sink exit status {exit:?}:\n{}",
        sink_log(&first_log)
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(50),
        "the sink took {:?} to stop:\n{}",
        stopped.elapsed(),
        sink_log(&first_log)
    );
    let (committed, _) = common::committed_and_end(
        stack.broker.bootstrap(),
        &stack.pipeline.config.analytics.group_id,
        &stack.pipeline.config.kafka.topics.usage.name,
    );
    assert!(
        committed.values().all(|o| *o <= 0),
        "nothing is committed while ClickHouse holds nothing: {committed:?}"
    );

    // ClickHouse back: the next sink writes everything, once.
    proxy.set_up(true);
    let second_log = dir.path().join("sink-2.log");
    let second = start_sink(&config, &stack, &env, &second_log);
    assert!(
        stack
            .sink_caught_up(Duration::from_secs(120))
            .await
            .unwrap(),
        "the second sink did not catch up:\n{}",
        sink_log(&second_log)
    );
    assert_eq!(
        wait_for_rows(&db, events, Duration::from_secs(30)).await,
        events
    );
    drop(second);
    assert_sums_match(&db, &expected_by_node(results, stack.catalog())).await;
    let seen = python("read_parquet.py", &[parquet.to_str().unwrap()]);
    assert_eq!(seen["pyarrow"]["rows"].as_u64().unwrap(), events);
    stack.stop().await.unwrap();
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_usage_upgrades_to_per_insert_rollups_with_every_sum_kept() {
    use switchyard_analytics::sinks::clickhouse::ClickHouseRows;
    use switchyard_analytics::sinks::clickhouse::migrate::{migrate, migrate_to};
    use switchyard_analytics::{ClickHouseSink, UsageRow};

    let db = TestDb::new().await;
    let config = ClickHouseConfig::new(&db.url, &db.name);
    let topic = "switchyard.usage";
    let rows = |from: u64, n: u64| -> Vec<UsageRow> {
        (from..from + n)
            .map(|i| {
                let e = switchyard_analytics::sample::event(i);
                UsageRow::from_event(e, topic, (i % 3) as i32, i as i64)
            })
            .collect()
    };
    // A database at migration 0002, holding rows a sink of that time inserted.
    assert_eq!(migrate_to(&config, 2).await.unwrap(), vec![1, 2]);
    // This version's rows carry the columns 0005 adds: they are added first
    // (with 0005's defaults) so that the rows can be written; the upgrade
    // below finds them there and adds them no second time.
    for column in [
        "cache_write_input_tokens UInt64 DEFAULT 0",
        "mode String DEFAULT 'live'",
        "live_cost_usd Float64 DEFAULT cost_usd",
    ] {
        db.sql(&format!("ALTER TABLE usage_events ADD COLUMN {column}"))
            .await;
    }
    let before = rows(0, 500);
    let mut insert = config
        .client()
        .insert::<UsageRow>("usage_events")
        .await
        .unwrap();
    for r in &before {
        insert.write(r).await.unwrap();
    }
    insert.end().await.unwrap();

    // The upgrade: the materialized failed cost reads on old rows, and the
    // offsets table is filled from them.
    // (and the audit tables arrive beside them).
    assert_eq!(migrate(&config).await.unwrap(), vec![3, 4, 5]);
    let max_offsets = db
        .sql("SELECT kafka_partition, max(max_offset) FROM usage_offsets GROUP BY kafka_partition ORDER BY kafka_partition")
        .await;
    assert_eq!(
        max_offsets,
        vec![
            vec!["0".to_owned(), "498".to_owned()],
            vec!["1".to_owned(), "499".to_owned()],
            vec!["2".to_owned(), "497".to_owned()],
        ]
    );

    // A sink of this version starts from there and adds the rest.
    let after = rows(500, 700);
    let mut sink = ClickHouseSink::connect(config.clone(), topic)
        .await
        .unwrap();
    let all: Vec<UsageRow> = before.iter().chain(&after).cloned().collect();
    // Re-delivered old rows are skipped by offset; only the new ones go in.
    let outcome = sink
        .write(&ClickHouseRows::from_rows(&all[400..]))
        .await
        .unwrap();
    assert_eq!((outcome.inserted, outcome.skipped), (700, 100));

    let cost: f64 = all.iter().map(|r| r.cost_usd).sum();
    let failed: f64 = all
        .iter()
        .filter(|r| r.outcome != "succeeded")
        .map(|r| r.cost_usd)
        .sum();
    assert!(failed > 0.0, "the sample has failed attempts");
    for table in ["usage_events", "usage_daily", "usage_hourly"] {
        let attempts = if table == "usage_events" {
            "count()"
        } else {
            "sum(attempts)"
        };
        let got = db
            .sql(&format!(
                "SELECT {attempts}, sum(cost_usd), sum(failed_cost_usd) FROM {table}"
            ))
            .await;
        assert_eq!(got[0][0], all.len().to_string(), "{table}");
        let (c, f): (f64, f64) = (got[0][1].parse().unwrap(), got[0][2].parse().unwrap());
        assert!((c - cost).abs() < 1e-6, "{table}: ${c} vs ${cost}");
        assert!(
            (f - failed).abs() < 1e-6,
            "{table}: failed ${f} vs ${failed}"
        );
    }
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_insert_while_catching_up_inserts_no_row_twice() {
    use switchyard_analytics::sinks::clickhouse::ClickHouseRows;
    use switchyard_analytics::{ClickHouseSink, UsageRow};

    let db = TestDb::new().await;
    let config = ClickHouseConfig::new(&db.url, &db.name);
    let topic = "switchyard.usage";
    let rows = |partition: i32, from: i64, n: i64| -> Vec<UsageRow> {
        (from..from + n)
            .map(|o| {
                let e = switchyard_analytics::sample::event(o as u64 * 7 + partition as u64);
                UsageRow::from_event(e, topic, partition, o)
            })
            .collect()
    };
    let batch = |parts: &[Vec<UsageRow>]| ClickHouseRows::from_rows(&parts.concat());
    // One sink wrote partition 0 up to offset 999, further than the group committed.
    let mut first = ClickHouseSink::connect(config.clone(), topic)
        .await
        .unwrap();
    first.write(&batch(&[rows(0, 0, 1000)])).await.unwrap();

    // The next owner's first insert fails (the table is away for a moment), so
    // it no longer knows what its insert left behind.
    let mut next = ClickHouseSink::connect(config.clone(), topic)
        .await
        .unwrap();
    db.sql("RENAME TABLE usage_events TO usage_events_away")
        .await;
    assert!(next.write(&batch(&[rows(1, 0, 100)])).await.is_err());
    db.sql("RENAME TABLE usage_events_away TO usage_events")
        .await;
    // It catches up from the commit point: rows ClickHouse holds, and new ones.
    let outcome = next
        .write(&batch(&[rows(0, 800, 100), rows(1, 0, 100)]))
        .await
        .unwrap();
    assert_eq!((outcome.inserted, outcome.skipped), (100, 100));
    let outcome = next.write(&batch(&[rows(0, 900, 200)])).await.unwrap();
    assert_eq!(
        (outcome.inserted, outcome.skipped),
        (100, 100),
        "offsets 900-999 were already in ClickHouse"
    );
    assert_eq!(db.number("SELECT count() FROM usage_events").await, 1200.0);
    assert_eq!(
        db.number("SELECT sum(attempts) FROM usage_daily").await,
        1200.0
    );
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_abandoned_by_its_client_is_stopped_instead_of_waited_for_forever() {
    use switchyard_analytics::sinks::clickhouse::ClickHouseRows;
    use switchyard_analytics::{ClickHouseSink, UsageRow};

    let db = TestDb::new().await;
    let mut config = ClickHouseConfig::new(&db.url, &db.name);
    config.timeout = Duration::from_secs(2);
    let topic = "switchyard.usage";
    let mut sink = ClickHouseSink::connect(config.clone(), topic)
        .await
        .unwrap();
    // A query under this database's sink prefix that runs for a long time, as
    // an insert does whose client vanished mid-body.
    let query_id = format!("switchyard-sink-{}-abandoned", db.name);
    let url = format!("{}/?query_id={query_id}&max_block_size=100", db.url);
    let hanging = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .body("SELECT sleepEachRow(0.025) FROM system.numbers LIMIT 100000 FORMAT Null")
            .send()
            .await
    });
    let running = format!("SELECT count() FROM system.processes WHERE query_id = '{query_id}'");
    for _ in 0..100 {
        if db.number(&running).await > 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        db.number(&running).await,
        1.0,
        "the long query never started"
    );

    // A rebalance: the sink waits for older inserts, then stops the abandoned one.
    sink.forget_partitions(std::time::Instant::now() + Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rows: Vec<UsageRow> = (0..10)
        .map(|i| UsageRow::from_event(switchyard_analytics::sample::event(i), topic, 0, i as i64))
        .collect();
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        sink.write(&ClickHouseRows::from_rows(&rows)),
    )
    .await
    .expect("the sink still waits for the abandoned query after 20 s")
    .unwrap();
    assert_eq!(outcome.inserted, 10);
    assert_eq!(db.number(&running).await, 0.0);
    hanging.abort();
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schema_and_report_sql_run_on_current_clickhouse() {
    // A Parquet tree from a short run, loaded into chdb (current ClickHouse,
    // in-process) through the migrations, then the report's own SQL.
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("usage");
    let stack = Stack::start(
        &common::demo_config(),
        switchyard_embedded::StackOptions {
            time_scale: 0.01,
            sink: true,
            env: sink_env(&parquet, "", "switchyard"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    run_jobs(&stack, "chdb", 150).await;
    assert!(stack.sink_caught_up(Duration::from_secs(60)).await.unwrap());
    stack.stop().await.unwrap();

    let q = query(vec![Dimension::Team, Dimension::Model]);
    let sql = group_sql(&q)
        .replacen('?', "0", 1)
        .replacen('?', "9223372036854775807", 1);
    let schemas = common::path("schemas/clickhouse");
    let ready = dir.path().join("ready.json");
    std::fs::write(&ready, serde_json::to_string(&readme_sql()).unwrap()).unwrap();
    let out = python(
        "chdb_check.py",
        &[
            schemas.to_str().unwrap(),
            parquet.to_str().unwrap(),
            &sql,
            ready.to_str().unwrap(),
        ],
    );
    let counts = out["ready_sql_rows"].as_array().unwrap();
    assert_eq!(counts.len(), 5);
    assert!(
        counts.iter().all(|n| n.as_u64().unwrap() > 0),
        "the README's SQL finds the usage on current ClickHouse: {counts:?}"
    );
    assert!(
        out["version"].as_str().unwrap() > "20",
        "chdb runs a current ClickHouse: {}",
        out["version"]
    );
    let report = switchyard_analytics::report::parquet::report(&parquet, &q).unwrap();
    let mut chdb: HashMap<Vec<String>, (u64, f64)> = HashMap::new();
    for row in out["rows"].as_array().unwrap() {
        let keys = row[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        // Current ClickHouse may quote 64-bit integers in JSON.
        let attempts = row[2]
            .as_u64()
            .or_else(|| row[2].as_str().and_then(|s| s.parse().ok()))
            .unwrap();
        chdb.insert(keys, (attempts, row[6].as_f64().unwrap()));
    }
    assert_eq!(chdb.len(), report.rows.len());
    for row in &report.rows {
        let (attempts, cost) = chdb[&row.keys];
        assert_eq!(attempts, row.attempts, "{:?}", row.keys);
        assert!((cost - row.cost_usd).abs() < 1e-9, "{:?}", row.keys);
    }
    let daily: f64 = out["daily_cost_usd"].as_f64().unwrap();
    assert!(
        (daily - report.total.cost_usd).abs() < 1e-9,
        "the daily rollup view works"
    );
}
