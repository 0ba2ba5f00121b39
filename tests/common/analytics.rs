//! Helpers of the analytics tests: a throw-away ClickHouse database per test, SQL
//! over HTTP, a TCP proxy that can take ClickHouse "down", the embedded stack
//! with the sink pointed at them, and the costs a run should have produced,
//! computed from the results' token counts and the catalog's list prices.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchyard_core::catalog::Catalog;
use switchyard_core::result::{AttemptOutcome, JobResult};
use switchyard_embedded::{Stack, StackOptions};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::common::demo_config;

/// The ClickHouse the tests use (scripts/test.sh starts one).
pub fn clickhouse_url() -> String {
    std::env::var("SWITCHYARD_TEST_CLICKHOUSE_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// A database of its own for one test, dropped at the end.
pub struct TestDb {
    pub url: String,
    pub name: String,
}

impl TestDb {
    pub async fn new() -> Self {
        let url = clickhouse_url();
        let ping = reqwest::get(format!("{url}/ping")).await;
        assert!(
            ping.is_ok_and(|r| r.status().is_success()),
            "no ClickHouse at {url}: run the tests with scripts/test.sh, which starts one"
        );
        let name = format!(
            "switchyard_test_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Self { url, name }
    }

    /// Runs `sql` in this database, returning the TSV lines of its answer.
    pub async fn sql(&self, sql: &str) -> Vec<Vec<String>> {
        sql_at(&self.url, &self.name, sql).await
    }

    /// One number.
    pub async fn number(&self, sql: &str) -> f64 {
        self.sql(sql).await[0][0].parse().unwrap()
    }

    pub async fn drop_database(&self) {
        sql_at(
            &self.url,
            "default",
            &format!("DROP DATABASE IF EXISTS {}", self.name),
        )
        .await;
    }
}

pub async fn sql_at(url: &str, database: &str, sql: &str) -> Vec<Vec<String>> {
    try_sql_at(url, database, sql)
        .await
        .unwrap_or_else(|e| panic!("{e}\nfor: {sql}"))
}

/// As [`sql_at`], with ClickHouse's refusal as an error.
pub async fn try_sql_at(url: &str, database: &str, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let response = reqwest::Client::new()
        .post(format!("{url}/?database={database}"))
        .body(format!("{sql} FORMAT TabSeparated"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    if !status.is_success() {
        return Err(format!("ClickHouse said {status}: {text}"));
    }
    Ok(text
        .lines()
        .map(|l| l.split('\t').map(str::to_owned).collect())
        .collect())
}

/// A TCP proxy to ClickHouse that the test can take down (every connection,
/// open or new, is cut) and bring back.
pub struct Proxy {
    pub url: String,
    up: watch::Sender<bool>,
}

impl Proxy {
    pub async fn start(upstream_url: &str) -> Self {
        let upstream = upstream_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (up, watch) = watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut down = watch.clone();
                if !*down.borrow() {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { url, up }
    }

    pub fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

/// The embedded stack with the sink writing Parquet under `parquet` and
/// ClickHouse at `clickhouse_url` (database `database`), flushing every 300 ms.
pub async fn stack_with_sink(
    parquet: &Path,
    clickhouse_url: &str,
    database: &str,
    time_scale: f64,
    sink: bool,
) -> Stack {
    Stack::start(
        &demo_config(),
        StackOptions {
            partitions: 4,
            time_scale,
            sink,
            env: sink_env(parquet, clickhouse_url, database),
            ..StackOptions::default()
        },
    )
    .await
    .unwrap()
}

/// `SWITCHYARD__…` overrides pointing the sink at a Parquet dir and a database.
pub fn sink_env(parquet: &Path, clickhouse_url: &str, database: &str) -> Vec<(String, String)> {
    vec![
        (
            "SWITCHYARD__ANALYTICS__PARQUET_DIR".into(),
            format!("\"{}\"", parquet.display()),
        ),
        (
            "SWITCHYARD__ANALYTICS__CLICKHOUSE_URL".into(),
            format!("\"{clickhouse_url}\""),
        ),
        (
            "SWITCHYARD__ANALYTICS__CLICKHOUSE_DATABASE".into(),
            format!("\"{database}\""),
        ),
        (
            "SWITCHYARD__ANALYTICS__FLUSH_INTERVAL".into(),
            "\"300ms\"".into(),
        ),
        (
            "SWITCHYARD__ANALYTICS__PARQUET_ROLL_INTERVAL".into(),
            "\"600ms\"".into(),
        ),
        (
            "SWITCHYARD__ANALYTICS__CLICKHOUSE_MAX_BACKOFF".into(),
            "\"1s\"".into(),
        ),
    ]
}

/// Sums expected per org node, from the results' attempts priced by the catalog.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Expected {
    pub cost_usd: f64,
    pub failed_cost_usd: f64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub attempts: u64,
}

/// Expected sums keyed by `org`, `org/bu`, `org/bu/team` and the full project path.
pub fn expected_by_node(
    results: impl IntoIterator<Item = JobResult>,
    catalog: &Catalog,
) -> BTreeMap<String, Expected> {
    let mut out: BTreeMap<String, Expected> = BTreeMap::new();
    for r in results {
        let parts: Vec<&str> = r.project.split('/').collect();
        for a in r.attempts.iter().filter(|a| a.usage.total() > 0) {
            let m = catalog.get(&a.model).unwrap();
            let cost = (a.usage.input_tokens as f64 * m.input_usd_per_mtok
                + a.usage.output_tokens as f64 * m.output_usd_per_mtok
                + a.usage.cached_input_tokens as f64 * m.cached_input_usd_per_mtok)
                / 1e6;
            for depth in 1..=parts.len() {
                let e = out.entry(parts[..depth].join("/")).or_default();
                e.cost_usd += cost;
                if a.outcome != AttemptOutcome::Succeeded {
                    e.failed_cost_usd += cost;
                }
                e.input_tokens += a.usage.input_tokens;
                e.output_tokens += a.usage.output_tokens;
                e.attempts += 1;
            }
        }
    }
    out
}

/// Asserts that ClickHouse's sums per org node (all four levels, read with
/// plain SQL) equal `expected` to the cent and the tokens exactly, in the
/// events table and in both rollups.
pub async fn assert_sums_match(db: &TestDb, expected: &BTreeMap<String, Expected>) {
    let levels = [
        "org",
        "concat(org, '/', business_unit)",
        "concat(org, '/', business_unit, '/', team)",
        "concat(org, '/', business_unit, '/', team, '/', project)",
    ];
    let tables = [
        (
            "usage_events FINAL",
            "count()",
            "sum(if(outcome != 'succeeded', cost_usd, 0.))",
        ),
        ("usage_daily", "sum(attempts)", "sum(failed_cost_usd)"),
        ("usage_hourly", "sum(attempts)", "sum(failed_cost_usd)"),
    ];
    for (table, attempts, failed) in tables {
        let mut seen = 0;
        for key in levels {
            let rows = db
                .sql(&format!(
                    "SELECT {key} AS node, sum(cost_usd), sum(input_tokens), sum(output_tokens), {attempts}, {failed} \
                     FROM {table} GROUP BY node ORDER BY node"
                ))
                .await;
            for row in rows {
                let node = &row[0];
                let want = expected.get(node).unwrap_or_else(|| {
                    panic!("{table} has usage for {node} that no result billed")
                });
                let cost: f64 = row[1].parse().unwrap();
                assert!(
                    (cost - want.cost_usd).abs() < 0.005,
                    "{table} {node}: ClickHouse ${cost} vs ${} from the results",
                    want.cost_usd
                );
                assert_eq!(
                    row[2].parse::<u64>().unwrap(),
                    want.input_tokens,
                    "{table} {node}"
                );
                assert_eq!(
                    row[3].parse::<u64>().unwrap(),
                    want.output_tokens,
                    "{table} {node}"
                );
                assert_eq!(
                    row[4].parse::<u64>().unwrap(),
                    want.attempts,
                    "{table} {node}"
                );
                let failed: f64 = row[5].parse().unwrap();
                assert!(
                    (failed - want.failed_cost_usd).abs() < 0.005,
                    "{table} {node}: failed attempts ${failed} vs ${}",
                    want.failed_cost_usd
                );
                seen += 1;
            }
        }
        assert_eq!(
            seen,
            expected.len(),
            "every org node with usage is in {table}"
        );
    }
}

/// The usage topic's size in messages.
pub fn usage_events(stack: &Stack) -> u64 {
    crate::common::topic_size(
        stack.broker.bootstrap(),
        &stack.pipeline.config.kafka.topics.usage.name,
    ) as u64
}

/// Waits until ClickHouse holds `n` rows (counting copies) or the timeout.
pub async fn wait_for_rows(db: &TestDb, n: u64, timeout: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Until the sink has migrated, the table does not exist: nothing yet.
        let have = try_sql_at(&db.url, &db.name, "SELECT count() FROM usage_events")
            .await
            .map_or(0, |rows| rows[0][0].parse().unwrap());
        if have >= n || tokio::time::Instant::now() >= deadline {
            return have;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs a Python script from tests/data/analytics with arguments and returns its
/// stdout parsed as JSON. The interpreter is `SWITCHYARD_TEST_PYTHON` (set by
/// scripts/test.sh to one that has pyarrow, duckdb and chdb), else `python3`.
pub fn python(script: &str, args: &[&str]) -> serde_json::Value {
    let python = std::env::var("SWITCHYARD_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .arg(crate::common::path(&format!(
            "tests/data/analytics/{script}"
        )))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A shared handle on a temp dir (tests hand paths to processes).
pub fn temp_dir() -> Arc<tempfile::TempDir> {
    Arc::new(tempfile::tempdir().unwrap())
}

/// Path of the Parquet tree inside `dir`.
pub fn parquet_dir(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("usage")
}

/// The ready SQL of the README's "Cost analytics" section, one query per block,
/// without the trailing semicolon.
pub fn readme_sql() -> Vec<String> {
    let readme = std::fs::read_to_string(crate::common::path("README.md")).unwrap();
    let start = readme.find("## Cost analytics").unwrap();
    let end = start + readme[start..].find("\n## Running").unwrap();
    readme[start..end]
        .split("```sql\n")
        .skip(1)
        .map(|block| {
            let sql = &block[..block.find("```").unwrap()];
            sql.trim().trim_end_matches(';').to_owned()
        })
        .collect()
}
