//! The usage sink against the embedded broker, without ClickHouse: what is not
//! a usage event goes to the sink's dead-letter topic before its offset is
//! committed, a newer worker's events (with fields this sink does not know)
//! are written, two sinks with one `sink_id` cannot share a Parquet directory,
//! and alerts reach a webhook once per transition.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use switchyard_analytics::sinks::parquet::reader;
use switchyard_analytics::{SinkMetrics, SinkOptions, SinkReport};
use switchyard_codec::Codec;
use switchyard_core::alert::{Alert, AlertKind};
use switchyard_core::config::PipelineConfig;
use switchyard_kafka::EmbeddedBroker;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use common::webhook::Receiver;
use common::*;

/// A broker with the cluster's topics, one partition each.
fn broker() -> EmbeddedBroker {
    let topics = switchyard_embedded::default_topics(1);
    let refs: Vec<(&str, i32)> = topics.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    EmbeddedBroker::start(&refs).unwrap()
}

/// The demo pipeline on `broker`, its sink writing Parquet under `parquet`
/// with short flush and roll intervals, plus `env` overrides.
fn sink_config(broker: &EmbeddedBroker, parquet: &Path, env: &[(&str, &str)]) -> PipelineConfig {
    let mut vars = vec![
        (
            "SWITCHYARD__ANALYTICS__PARQUET_DIR".to_owned(),
            format!("\"{}\"", parquet.display()),
        ),
        (
            "SWITCHYARD__ANALYTICS__FLUSH_INTERVAL".to_owned(),
            "\"100ms\"".to_owned(),
        ),
        (
            "SWITCHYARD__ANALYTICS__PARQUET_ROLL_INTERVAL".to_owned(),
            "\"200ms\"".to_owned(),
        ),
    ];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let mut pipeline = switchyard_loader::load_pipeline(&demo_config(), &vars).unwrap();
    pipeline.config.kafka.brokers = broker.bootstrap().to_owned();
    pipeline.config
}

/// A sink running on the test's runtime until [`RunningSink::stop`].
struct RunningSink {
    stop: CancellationToken,
    task: JoinHandle<switchyard_analytics::Result<SinkReport>>,
}

impl RunningSink {
    fn start(config: &PipelineConfig, options: SinkOptions) -> Self {
        let stop = CancellationToken::new();
        let (config, token) = (config.clone(), stop.clone());
        let task = tokio::spawn(async move {
            switchyard_analytics::run_sink_with(&config, options, token.cancelled_owned()).await
        });
        Self { stop, task }
    }

    async fn stop(self) -> SinkReport {
        self.stop.cancel();
        self.task.await.unwrap().unwrap()
    }
}

/// Options for a test sink: short grace periods.
fn options() -> SinkOptions {
    SinkOptions {
        drain_grace: Duration::from_secs(5),
        revoke_grace: Duration::from_secs(2),
        ..SinkOptions::default()
    }
}

/// Rows in the Parquet files under `dir`.
fn parquet_rows(dir: &Path) -> usize {
    let mut rows = 0;
    for file in reader::files(dir, None, None).unwrap() {
        reader::for_each_batch(&file, &["kafka_offset"], |b| {
            rows += b.num_rows();
            Ok(())
        })
        .unwrap();
    }
    rows
}

/// The offset the analytics group committed on partition 0 of the usage topic.
fn committed(config: &PipelineConfig) -> i64 {
    let (committed, _) = committed_and_end(
        &config.kafka.brokers,
        &config.analytics.group_id,
        &config.kafka.topics.usage.name,
    );
    committed.get(&0).copied().unwrap_or(-1)
}

/// A usage event as a worker writes it.
fn usage_event(i: u64) -> Vec<u8> {
    Codec::json()
        .encode(&switchyard_analytics::sample::event(i))
        .unwrap()
}

/// A usage event from a newer worker: two fields this sink does not know.
fn newer_usage_event(i: u64) -> Vec<u8> {
    let mut v = serde_json::to_value(switchyard_analytics::sample::event(i)).unwrap();
    v["region"] = "eu-west-1".into();
    v["usage"]["reasoning_tokens"] = 7.into();
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_is_not_a_usage_event_is_dead_lettered_and_a_newer_workers_events_are_written() {
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    // Strict on the usage topic, as an operator may have set it: the sink
    // still takes events with fields it does not know.
    let config = sink_config(
        &broker,
        dir.path(),
        &[("SWITCHYARD__KAFKA__TOPICS__USAGE__UNKNOWN_FIELDS", "reject")],
    );
    let usage = config.kafka.topics.usage.name.clone();
    let bootstrap = config.kafka.brokers.clone();
    let messages: Vec<(Option<&[u8]>, Vec<u8>)> = vec![
        (Some(b"job-1"), usage_event(1)),
        (None, b"{\"event_id\": ".to_vec()),
        (Some(b"job-3"), newer_usage_event(3)),
        (Some(b"job-4"), Vec::new()),
        (Some(b"job-5"), usage_event(5)),
    ];
    for (key, payload) in &messages {
        produce_raw(&bootstrap, &usage, *key, payload).await;
    }
    let sink = RunningSink::start(&config, options());
    assert!(
        eventually(Duration::from_secs(30), || committed(&config) == 5).await,
        "the sink committed {} of 5",
        committed(&config)
    );
    let report = sink.stop().await;
    assert_eq!((report.undecodable, report.dead_lettered), (2, 2));
    assert_eq!(
        parquet_rows(dir.path()),
        3,
        "the newer worker's event is written"
    );

    let mut letters = read_dead_letters(&bootstrap, &config.analytics.dlq_topic);
    letters.sort_by_key(|l| l.headers["switchyard.dlq.offset"].parse::<i64>().unwrap());
    assert_eq!(letters.len(), 2);
    for (letter, (offset, kind)) in letters.iter().zip([(1usize, "invalid_json"), (3, "empty")]) {
        let (key, payload) = &messages[offset];
        assert_eq!(
            letter.key.as_deref(),
            *key,
            "the original key, null when it had none"
        );
        assert_eq!(&letter.payload, payload, "the original bytes");
        assert_eq!(letter.headers["switchyard.dlq.kind"], kind);
        assert_eq!(letter.headers["switchyard.dlq.topic"], usage);
        assert_eq!(letter.headers["switchyard.dlq.partition"], "0");
        assert_eq!(letter.headers["switchyard.dlq.offset"], offset.to_string());
        assert!(
            letter.headers["switchyard.dlq.reason"].starts_with("not a usage event: "),
            "{:?}",
            letter.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_never_commits_past_a_message_whose_dead_letter_is_not_acknowledged() {
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    // A dead-letter topic that does not exist, and no topic creation on
    // demand: every letter waits.
    let mut config = sink_config(
        &broker,
        dir.path(),
        &[(
            "SWITCHYARD__ANALYTICS__DLQ_TOPIC",
            "\"switchyard.usage.dlq-missing\"",
        )],
    );
    config
        .kafka
        .client
        .insert("allow.auto.create.topics".into(), "false".into());
    let usage = config.kafka.topics.usage.name.clone();
    let bootstrap = config.kafka.brokers.clone();
    produce_raw(&bootstrap, &usage, Some(b"job-0"), &usage_event(0)).await;
    produce_raw(&bootstrap, &usage, Some(b"job-1"), b"not json").await;
    produce_raw(&bootstrap, &usage, Some(b"job-2"), &usage_event(2)).await;

    let metrics = Arc::new(SinkMetrics::new(dir.path(), false));
    let sink = RunningSink::start(
        &config,
        SinkOptions {
            metrics: metrics.clone(),
            ..options()
        },
    );
    assert!(
        eventually(Duration::from_secs(30), || parquet_rows(dir.path()) == 2).await,
        "both events reach Parquet"
    );
    assert!(
        eventually(Duration::from_secs(10), || committed(&config) == 1).await,
        "the commit reaches the undecodable message ({})",
        committed(&config)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        committed(&config),
        1,
        "and stays there while its dead letter is not acknowledged"
    );
    assert!(
        eventually(Duration::from_secs(10), || metrics.lag() == Some(2)).await,
        "the lag counts what is not committed ({:?})",
        metrics.lag()
    );
    assert_eq!(metrics.parquet_rows(), 2);
    assert_eq!(metrics.dead_letters(), 0);
    let report = sink.stop().await;
    assert_eq!((report.undecodable, report.dead_lettered), (1, 0));
    assert_eq!(committed(&config), 1, "stopping commits nothing past it");

    // With the dead-letter topic back, a restarted sink reads the message
    // again, dead-letters it and moves on; the events are not written twice.
    let config = sink_config(&broker, dir.path(), &[]);
    let metrics = Arc::new(SinkMetrics::new(dir.path(), false));
    let sink = RunningSink::start(
        &config,
        SinkOptions {
            metrics: metrics.clone(),
            ..options()
        },
    );
    assert!(
        eventually(Duration::from_secs(30), || committed(&config) == 3).await,
        "the restarted sink commits everything ({})",
        committed(&config)
    );
    assert!(eventually(Duration::from_secs(10), || metrics.lag() == Some(0)).await);
    assert_eq!(metrics.dead_letters(), 1);
    let report = sink.stop().await;
    assert_eq!(report.dead_lettered, 1);
    let letters = read_dead_letters(&bootstrap, &config.analytics.dlq_topic);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].payload, b"not json");
    assert_eq!(letters[0].key.as_deref(), Some(&b"job-1"[..]));
    assert_eq!(parquet_rows(dir.path()), 2);
}

/// The sink's config with its webhook at `url`, retrying fast.
fn alert_config(broker: &EmbeddedBroker, parquet: &Path, url: &str) -> PipelineConfig {
    let url = format!("\"{url}\"");
    sink_config(
        broker,
        parquet,
        &[
            ("SWITCHYARD__ALERTS__WEBHOOK_URL", url.as_str()),
            ("SWITCHYARD__ALERTS__WEBHOOK_BASE_BACKOFF", "\"20ms\""),
            ("SWITCHYARD__ALERTS__WEBHOOK_MAX_BACKOFF", "\"100ms\""),
        ],
    )
}

/// Publishes `alert` as a worker does: JSON, keyed by its key.
async fn publish_alert(config: &PipelineConfig, alert: &Alert) {
    let bytes = serde_json::to_vec(alert).unwrap();
    produce_raw(
        &config.kafka.brokers,
        &config.kafka.topics.alerts,
        Some(alert.key().as_bytes()),
        &bytes,
    )
    .await;
}

/// Whether the alerts group has committed the whole alerts topic.
fn alerts_committed(config: &PipelineConfig) -> bool {
    let (committed, ends) = committed_and_end(
        &config.kafka.brokers,
        &switchyard_analytics::alerts::group_id(&config.analytics.group_id),
        &config.kafka.topics.alerts,
    );
    ends.iter()
        .all(|(p, end)| committed.get(p).copied().unwrap_or(-1).max(0) == *end)
}

fn at(minute: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_795_600_000 + minute * 60, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_the_webhook_once_per_transition_across_workers_and_restarts() {
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(0).await;
    let config = alert_config(&broker, dir.path(), &receiver.url);
    let budget = Alert::firing(
        AlertKind::BudgetThreshold,
        "acme/retail",
        0.8,
        0.81,
        at(0),
        "2026-11",
    );
    let circuit = Alert::firing(
        AlertKind::CircuitOpen,
        "sim-gpt-6.1-sol",
        1.0,
        1.0,
        at(1),
        "",
    );
    // Two workers report the budget crossing, then both its resolution.
    publish_alert(&config, &budget).await;
    publish_alert(
        &config,
        &Alert {
            value: 0.82,
            ..budget.clone()
        },
    )
    .await;
    publish_alert(&config, &circuit).await;
    publish_alert(&config, &budget.resolved(0.5, at(2))).await;
    publish_alert(&config, &budget.resolved(0.49, at(3))).await;

    let metrics = Arc::new(SinkMetrics::new(dir.path(), false));
    let sink = RunningSink::start(
        &config,
        SinkOptions {
            metrics: metrics.clone(),
            ..options()
        },
    );
    assert!(
        eventually(Duration::from_secs(30), || alerts_committed(&config)).await,
        "the alerts group reads the topic to its end"
    );
    let got = receiver.accepted();
    let seen: Vec<(String, String, String)> = got
        .iter()
        .map(|v| {
            (
                v["kind"].as_str().unwrap().to_owned(),
                v["state"].as_str().unwrap().to_owned(),
                v["node"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "budget_threshold".into(),
                "firing".into(),
                "acme/retail".into()
            ),
            (
                "circuit_open".into(),
                "firing".into(),
                "sim-gpt-6.1-sol".into()
            ),
            (
                "budget_threshold".into(),
                "resolved".into(),
                "acme/retail".into()
            ),
        ],
        "{got:?}"
    );
    assert_eq!(
        got[0],
        serde_json::json!({"kind": "budget_threshold", "state": "firing", "node": "acme/retail",
            "threshold": 0.8, "value": 0.81, "at": "2026-11-25T09:46:40Z"}),
        "one JSON object with the six fields"
    );
    assert_eq!(metrics.webhook_deliveries(), 3);
    sink.stop().await;

    // While the sink is down, a late worker reports the circuit again; the
    // restarted sink knows from the topic that it was sent, and sends only
    // what is new.
    publish_alert(
        &config,
        &Alert {
            at: at(4),
            ..circuit.clone()
        },
    )
    .await;
    publish_alert(&config, &circuit.resolved(0.0, at(5))).await;
    let sink = RunningSink::start(&config, options());
    assert!(eventually(Duration::from_secs(30), || alerts_committed(&config)).await);
    sink.stop().await;
    let got = receiver.accepted();
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!(
        (got[3]["kind"].as_str(), got[3]["state"].as_str()),
        (Some("circuit_open"), Some("resolved"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_twice_then_succeeds_gets_the_alert_once() {
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(2).await;
    let config = alert_config(&broker, dir.path(), &receiver.url);
    let lag = Alert::firing(
        AlertKind::ConsumerLag,
        "switchyard-workers",
        10_000.0,
        12_000.0,
        at(0),
        "",
    );
    publish_alert(&config, &lag).await;
    let metrics = Arc::new(SinkMetrics::new(dir.path(), false));
    let sink = RunningSink::start(
        &config,
        SinkOptions {
            metrics: metrics.clone(),
            ..options()
        },
    );
    assert!(eventually(Duration::from_secs(30), || alerts_committed(&config)).await);
    sink.stop().await;
    assert_eq!(
        receiver.posts.load(Ordering::SeqCst),
        3,
        "two failures, one success"
    );
    assert_eq!(receiver.accepted().len(), 1);
    assert_eq!(
        (
            metrics.webhook_deliveries(),
            metrics.webhook_failures(),
            metrics.webhook_given_up()
        ),
        (1, 2, 0)
    );
}

/// Waits up to `timeout` for `f` to hold, polling (for tests without a runtime).
fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

#[test]
fn a_second_sink_with_the_same_id_is_refused_and_a_killed_sinks_lock_blocks_nothing() {
    let (_broker, bootstrap) = start_broker(1);
    let dir = tempfile::tempdir().unwrap();
    let config = write_process_config(dir.path(), "http://127.0.0.1:9");
    let parquet = dir.path().join("usage");
    let sink = || {
        let mut c = switchyard();
        c.args(["sink", "--config"])
            .arg(&config)
            .env("SWITCHYARD_BROKERS", &bootstrap)
            .env(
                "SWITCHYARD__ANALYTICS__PARQUET_DIR",
                format!("\"{}\"", parquet.display()),
            )
            .stdout(std::process::Stdio::null());
        c
    };
    let lock = parquet.join("_switchyard/lock-switchyard-analytics");
    let holds = |p: &Proc| {
        std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&format!("pid {} ", p.0.id())))
    };
    let first = Proc(sink().stderr(std::process::Stdio::null()).spawn().unwrap());
    assert!(
        wait_for(Duration::from_secs(30), || holds(&first)),
        "the first sink takes the lock"
    );

    let mut second = Proc(sink().stderr(std::process::Stdio::piped()).spawn().unwrap());
    assert!(
        wait_for(Duration::from_secs(30), || second
            .0
            .try_wait()
            .unwrap()
            .is_some()),
        "a second sink with the same id must not run"
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!second.0.wait().unwrap().success());
    assert!(
        err.contains(&format!("pid {} on ", first.0.id()))
            && err.contains("sink_id `switchyard-analytics`")
            && err.contains("analytics.sink_id"),
        "the refusal names the holder and the fix: {err}"
    );
    assert!(holds(&first), "the refused sink left the lock file alone");

    // Killed, the first sink holds nothing: the OS dropped its lock.
    signal(&first, "-KILL");
    let mut first = first;
    first.0.wait().unwrap();
    let third = Proc(sink().stderr(std::process::Stdio::null()).spawn().unwrap());
    assert!(
        wait_for(Duration::from_secs(30), || holds(&third)),
        "a killed sink's lock does not block the next one"
    );
    signal(&third, "-TERM");
    let mut third = third;
    assert!(third.0.wait().unwrap().success());
}
