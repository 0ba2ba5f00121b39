//! The telemetry endpoint as an operator meets it: a `switchyard run` process
//! with `--metrics-addr 127.0.0.1:0` against `switchyard broker` and the
//! simulator prints its URL, serves `/healthz` at once and `/readyz` once it is
//! ready (503 with the reasons before), and its `/metrics`, after a few jobs and
//! a dead letter, has every family `docs/metrics.md` documents for a worker,
//! documents every family it has, and passes `promtool check metrics`. The alert
//! rules and the Prometheus config pass `promtool check`, and the rules and the
//! Grafana dashboard use only documented series and ClickHouse tables that the
//! schemas create. promtool must be on PATH (Debian's `prometheus` package;
//! scripts/test.sh installs it): without it these tests fail, saying so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use switchyard_codec::Codec;
use switchyard_sim::SimConfig;

use common::*;

/// `GET base + path`: status and body, or `None` when nothing answers.
async fn get(base: &str, path: &str) -> Option<(u16, String)> {
    let r = reqwest::get(format!("{base}{path}")).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// A process config whose org adds quotas to a node, so that the quota
/// families have series.
fn config_with_quotas(dir: &std::path::Path, sim_base: &str) -> std::path::PathBuf {
    let org = std::fs::read_to_string(path("pipelines/org.toml"))
        .unwrap()
        .replace(
            "[[node]]\npath = \"acme/retail/support\"\n",
            "[[node]]\npath = \"acme/retail/support\"\njobs_per_minute = 100000\njobs_per_day = 1000000\ntokens_per_day = 1000000000\n",
        );
    assert!(
        org.contains("jobs_per_minute = 100000"),
        "the org file changed"
    );
    let org_path = dir.join("org.toml");
    std::fs::write(&org_path, org).unwrap();
    let config = write_process_config(dir, sim_base);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("org = \"{}\"", path("pipelines/org.toml").display()),
        &format!("org = \"{}\"", org_path.display()),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// The value of one series of an exposition (its name and labels as written),
/// or -1 when it is missing.
fn value(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(-1.0)
}

/// The families of an exposition, from its `# TYPE` lines.
fn families(exposition: &str) -> Vec<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_metrics_have_the_documented_families_and_pass_promtool() {
    let promtool = promtool();
    let (_broker, bootstrap) = start_broker(2);
    let catalog = switchyard_loader::load_catalog(&path("pipelines/models.toml")).unwrap();
    let mut sim_config = SimConfig::from_catalog(&catalog);
    sim_config.time_scale = 0.01;
    let sim = switchyard_sim::start(sim_config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_quotas(dir.path(), &format!("http://{}", sim.addr()));
    let (worker, base) = start_worker_with_metrics(&config, &bootstrap, &[]);
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");
    assert_eq!(get(&base, "/healthz").await.map(|r| r.0), Some(200));

    // Ready once it has joined its group and read the budgets.
    let mut last = None;
    for _ in 0..600 {
        last = get(&base, "/readyz").await;
        if last.as_ref().is_some_and(|(s, _)| *s == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, Some((200, "ready\n".to_owned())));

    let pipeline = switchyard_loader::load_pipeline(&config, &[]).unwrap();
    let topics = &pipeline.config.kafka.topics;
    let jobs = jobs("metrics", 12);
    produce_jobs(&bootstrap, &topics.jobs, &jobs).await;
    produce_raw(&bootstrap, &topics.jobs.name, Some(b"bad"), b"{not json").await;
    let consumer = results_consumer(&bootstrap, &topics.results.name);
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    let codec = Codec::for_topic(&topics.results);
    collect_results(&consumer, &codec, &ids, Duration::from_secs(120)).await;

    // The counters, the dead letter and the consumer lag (measured every 5 s) show.
    let mut text = String::new();
    for _ in 0..300 {
        text = get(&base, "/metrics").await.unwrap().1;
        let done = text.contains("switchyard_dead_letters_total{kind=\"invalid_json\"} 1\n")
            && text
                .contains("switchyard_consumer_lag{topic=\"switchyard.jobs\",partition=\"0\"} 0\n")
            && text
                .contains("switchyard_consumer_lag{topic=\"switchyard.jobs\",partition=\"1\"} 0\n");
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let finished: f64 = text
        .lines()
        .filter(|l| l.starts_with("switchyard_jobs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(finished, 12.0, "{text}");
    for line in [
        "switchyard_dead_letters_total{kind=\"invalid_json\"} 1\n",
        "switchyard_consumer_lag{topic=\"switchyard.jobs\",partition=\"0\"} 0\n",
        "switchyard_jobs_in_flight 0\n",
        "switchyard_job_duration_seconds_count{status=\"succeeded\"} 12\n",
        "switchyard_quota_limit{node=\"acme/retail/support\",quota=\"jobs_per_minute\"} 100000\n",
        "switchyard_budget_limit_usd{node=\"acme\"} 60000\n",
        "switchyard_circuit_state{deployment=\"sim-gpt-5-nano\"} 0\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // The minute's count may have rolled over while the lag settled; the day's
    // holds every job (a test across the zone's midnight is the one exception).
    let minute = value(
        &text,
        "switchyard_quota_used{node=\"acme/retail/support\",quota=\"jobs_per_minute\"}",
    );
    assert!(minute >= 0.0, "the minute quota's use is shown:\n{text}");
    let day = value(
        &text,
        "switchyard_quota_used{node=\"acme/retail/support\",quota=\"jobs_per_day\"}",
    );
    assert!(
        day >= 1.0,
        "jobs of the node count against its quota: {day}"
    );
    let calls: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("switchyard_provider_calls_total{") && l.contains("outcome=\"succeeded\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(calls >= 12.0, "{calls} successful calls counted");

    // Every family documented for a worker is there, and every family there is documented.
    let documented = documented_families();
    let present: BTreeSet<String> = families(&text).into_iter().collect();
    for section in [
        "Worker (`switchyard run`, and `switchyard dev`)",
        "Every process",
    ] {
        let names = documented
            .get(section)
            .unwrap_or_else(|| panic!("docs/metrics.md has no section {section:?}"));
        for name in names {
            let linux_only =
                name == "process_cpu_seconds_total" || name == "process_resident_memory_bytes";
            if linux_only && !cfg!(target_os = "linux") {
                continue;
            }
            assert!(
                present.contains(name),
                "`{name}` is documented but not exposed"
            );
        }
    }
    let all: BTreeSet<&String> = documented.values().flatten().collect();
    for name in &present {
        assert!(
            all.contains(name),
            "`{name}` is exposed but not in docs/metrics.md"
        );
    }
    assert_eq!(
        present.len(),
        families(&text).len(),
        "a family appears twice"
    );

    run_promtool(&promtool, &["check", "metrics"], Some(&text));
    signal(&worker, "-TERM");
    drop(worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sinks_metrics_count_its_rows_and_lag_and_pass_promtool() {
    let promtool = promtool();
    let (_broker, bootstrap) = start_broker(2);
    let catalog = switchyard_loader::load_catalog(&path("pipelines/models.toml")).unwrap();
    let mut sim_config = SimConfig::from_catalog(&catalog);
    sim_config.time_scale = 0.01;
    let sim = switchyard_sim::start(sim_config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_process_config(dir.path(), &format!("http://{}", sim.addr()));
    let usage = dir.path().join("usage");
    let usage_dir = usage.to_str().unwrap();
    let env = [("SWITCHYARD__ANALYTICS__PARQUET_DIR", usage_dir)];
    let (sink, base) = start_with_metrics("sink", &config, &bootstrap, &env);
    let worker = start_worker(&config, &bootstrap, &[]);

    // Parquet only (the demo config names no ClickHouse): ready once its
    // directory takes a file.
    let mut last = None;
    for _ in 0..300 {
        last = get(&base, "/readyz").await;
        if last.as_ref().is_some_and(|(s, _)| *s == 200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, Some((200, "ready\n".to_owned())));

    let pipeline = switchyard_loader::load_pipeline(&config, &[]).unwrap();
    let topics = &pipeline.config.kafka.topics;
    let jobs = jobs("sink-metrics", 10);
    produce_jobs(&bootstrap, &topics.jobs, &jobs).await;
    let consumer = results_consumer(&bootstrap, &topics.results.name);
    let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
    let codec = Codec::for_topic(&topics.results);
    collect_results(&consumer, &codec, &ids, Duration::from_secs(120)).await;

    // Every job bills at least one attempt: every usage event read is rolled
    // into Parquet (every 2 s) and committed, so the lag (measured every 5 s)
    // is 0.
    let mut text = String::new();
    for _ in 0..300 {
        text = get(&base, "/metrics").await.unwrap().1;
        let rows = value(&text, "switchyard_sink_rows_total{store=\"parquet\"}");
        let events = value(&text, "switchyard_sink_events_total");
        if rows >= 10.0 && rows == events && value(&text, "switchyard_sink_lag") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = value(&text, "switchyard_sink_rows_total{store=\"parquet\"}");
    assert!(rows >= 10.0, "{text}");
    assert_eq!(rows, value(&text, "switchyard_sink_events_total"), "{text}");
    for line in [
        "switchyard_sink_rows_total{store=\"clickhouse\"} 0\n",
        "switchyard_sink_skipped_total{reason=\"duplicate\"} 0\n",
        "switchyard_sink_lag 0\n",
        "switchyard_sink_store_writable{store=\"parquet\"} 1\n",
        "component=\"sink\"} 1\n",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(
        !text.contains("store_writable{store=\"clickhouse\"}"),
        "{text}"
    );

    let documented = documented_families();
    let present: BTreeSet<String> = families(&text).into_iter().collect();
    for name in &documented["Sink (`switchyard sink`)"] {
        assert!(
            present.contains(name),
            "`{name}` is documented but not exposed"
        );
    }
    let all: BTreeSet<&String> = documented.values().flatten().collect();
    for name in &present {
        assert!(
            all.contains(name),
            "`{name}` is exposed but not in docs/metrics.md"
        );
    }
    run_promtool(&promtool, &["check", "metrics"], Some(&text));

    // A Parquet directory that takes no file makes the sink unready.
    std::fs::remove_dir_all(&usage).unwrap();
    std::fs::write(&usage, b"not a directory").unwrap();
    let (status, body) = get(&base, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("parquet: cannot write in the Parquet directory"),
        "{body}"
    );
    signal(&worker, "-TERM");
    drop(worker);
    drop(sink);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_reach_kafka_is_alive_but_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_process_config(dir.path(), "http://127.0.0.1:9");
    // Nothing listens on port 1: no group, no budgets.
    let (worker, base) = start_worker_with_metrics(&config, "127.0.0.1:1", &[]);
    assert_eq!(get(&base, "/healthz").await, Some((200, "ok\n".to_owned())));
    let (status, body) = get(&base, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready\n"), "{body}");
    assert!(
        body.contains("group: no partitions assigned by consumer group `switchyard-workers`"),
        "{body}"
    );
    assert!(
        body.contains("budgets: still reading the budget snapshots"),
        "{body}"
    );
    assert!(!body.contains("deployments:"), "no circuit is open: {body}");
    let (status, text) = get(&base, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("switchyard_build_info{version=\""), "{text}");
    assert!(text.contains("component=\"worker\"} 1\n"), "{text}");
    // The worker keeps its heap off transparent huge pages (peak memory with
    // thousands of calls in flight; Linux reports it from 5.0 on).
    let status = std::fs::read_to_string(format!("/proc/{}/status", worker.0.id())).unwrap();
    if let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    }
    drop(worker);
}

#[test]
fn a_bad_metrics_address_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_process_config(dir.path(), "http://127.0.0.1:9");
    let out = switchyard()
        .args(["run", "--metrics-addr", "localhost:9464", "--config"])
        .arg(&config)
        .env("SWITCHYARD_BROKERS", "127.0.0.1:1")
        .env("SWITCHYARD_SIM_KEY", "k")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--metrics-addr: `localhost:9464` is not a socket address"),
        "{err}"
    );

    // In the config file, the key is checked with the rest.
    let env = [(
        "SWITCHYARD__OBSERVABILITY__METRICS_ADDR".to_owned(),
        "metrics.internal:9464".to_owned(),
    )];
    let err = switchyard_loader::load_pipeline(&config, &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("observability.metrics_addr"), "{err}");
    assert!(
        err.contains("`metrics.internal:9464` is not a socket address"),
        "{err}"
    );
    let env = [(
        "SWITCHYARD__OBSERVABILITY__METRICS_ADDR".to_owned(),
        "0.0.0.0:9464".to_owned(),
    )];
    let loaded = switchyard_loader::load_pipeline(&config, &env).unwrap();
    assert_eq!(
        loaded.config.observability.metrics_addr.as_deref(),
        Some("0.0.0.0:9464")
    );
}

#[test]
fn dev_prints_its_metrics_url_with_its_bootstrap_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut dev = Proc(
        switchyard()
            .args(["dev", "--partitions", "1", "--metrics-addr", "127.0.0.1:0"])
            .env(
                "SWITCHYARD__ANALYTICS__PARQUET_DIR",
                dir.path().join("usage"),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut printed = Vec::new();
    for line in BufReader::new(dev.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("ready") {
            break;
        }
        printed.push(line);
    }
    assert!(printed[0].starts_with("bootstrap: "), "{printed:?}");
    let url = printed[1]
        .strip_prefix("metrics: http://127.0.0.1:")
        .unwrap_or_else(|| panic!("{printed:?}"));
    let url = format!("http://127.0.0.1:{url}");
    let text = blocking_text(&url);
    assert!(text.contains("component=\"dev\"} 1\n"), "{text}");
    assert!(
        text.contains("# TYPE switchyard_jobs_total counter\n"),
        "{text}"
    );
    signal(&dev, "-INT");
    assert!(dev.0.wait().unwrap().success());
}

/// `GET url`'s body, from a test without an async runtime of its own.
fn blocking_text(url: &str) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

#[test]
fn the_alert_rules_and_the_prometheus_config_pass_promtool() {
    let promtool = promtool();
    let rules = path("pipelines/observability/alerts.yml");
    run_promtool(
        &promtool,
        &["check", "rules", rules.to_str().unwrap()],
        None,
    );
    let config = path("pipelines/observability/prometheus.yml");
    run_promtool(
        &promtool,
        &["check", "config", config.to_str().unwrap()],
        None,
    );
}

/// Every `switchyard_…`/`process_…` name in a PromQL expression, as a family
/// (histogram series names cut to their family).
fn series_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("switchyard_").or_else(|| rest.find("process_")) {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        out.insert(family.to_owned());
    }
    out
}

#[test]
fn the_alert_rules_mirror_every_built_in_alert_over_documented_series() {
    let documented: BTreeSet<String> = documented_families().into_values().flatten().collect();
    let text = std::fs::read_to_string(path("pipelines/observability/alerts.yml")).unwrap();
    let doc = yaml_rust2::YamlLoader::load_from_str(&text)
        .unwrap()
        .remove(0);
    let mut kinds = BTreeSet::new();
    let mut thresholds = BTreeSet::new();
    for group in doc["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            for family in series_in(expr) {
                assert!(
                    documented.contains(&family),
                    "{expr}: `{family}` is not in docs/metrics.md"
                );
            }
            let kind = rule["labels"]["kind"].as_str().unwrap().to_owned();
            if kind == "budget_threshold" {
                thresholds.insert(rule["labels"]["threshold"].as_str().unwrap().to_owned());
            }
            kinds.insert(kind);
        }
    }
    let built_in: BTreeSet<String> = [
        "budget_threshold",
        "quota_exhausted",
        "circuit_open",
        "error_rate",
        "latency",
        "dead_letters",
        "consumer_lag",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(kinds, built_in);
    assert_eq!(thresholds, ["0.5", "0.8", "1"].map(str::to_owned).into());
}

/// The tables the ClickHouse migrations create.
fn clickhouse_tables() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(path("schemas/clickhouse")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("CREATE TABLE IF NOT EXISTS ") {
                out.insert(rest.split_whitespace().next().unwrap().to_owned());
            }
        }
    }
    out
}

#[test]
fn the_dashboard_parses_and_reads_only_documented_series_and_existing_tables() {
    let text =
        std::fs::read_to_string(path("pipelines/observability/grafana/switchyard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dashboard["uid"], "switchyard");
    let documented: BTreeSet<String> = documented_families().into_values().flatten().collect();
    let tables = clickhouse_tables();
    assert!(tables.contains("usage_daily"), "{tables:?}");
    let mut used = BTreeSet::new();
    let mut sql_panels = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        let uid = panel["datasource"]["uid"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            match uid {
                "prometheus" => {
                    let expr = target["expr"].as_str().unwrap();
                    let families = series_in(expr);
                    assert!(!families.is_empty(), "{title}: {expr}");
                    for family in families {
                        assert!(
                            documented.contains(&family),
                            "{title}: `{family}` is not in docs/metrics.md"
                        );
                        used.insert(family);
                    }
                }
                "clickhouse" => {
                    sql_panels += 1;
                    let sql = target["rawSql"].as_str().unwrap();
                    let table = sql
                        .split("FROM ")
                        .nth(1)
                        .unwrap()
                        .split_whitespace()
                        .next()
                        .unwrap();
                    assert!(
                        tables.contains(table),
                        "{title}: `{table}` is not created by schemas/clickhouse"
                    );
                }
                other => panic!("{title}: unknown data source `{other}`"),
            }
        }
    }
    assert!(sql_panels >= 2, "spend from the ClickHouse rollups");
    for family in [
        "switchyard_jobs_total",
        "switchyard_job_duration_seconds",
        "switchyard_jobs_in_flight",
        "switchyard_consumer_lag",
        "switchyard_provider_calls_total",
        "switchyard_circuit_state",
        "switchyard_budget_spend_usd",
        "switchyard_budget_headroom_usd",
        "switchyard_quota_used",
        "switchyard_dead_letters_total",
    ] {
        assert!(
            used.contains(family),
            "the dashboard does not show {family}"
        );
    }
}
