//! A provider key never appears in anything a run writes: the worker's logs (at
//! debug level, JSON and pretty), results, usage events or dead letters, even when
//! the provider quotes it back (the simulated OpenAI models refuse some calls with
//! "Incorrect API key provided: <the key>"). One run reads the key from the
//! environment, the other from a key file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use switchyard_codec::Codec;

use common::*;

const KEY: &str = "sk-live-Sw1tchYardT3stK3y-9f8e7d6c5b4a";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_nowhere_in_logs_results_usage_or_dead_letters() {
    let mut broker = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["broker", "--partitions", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(broker.stdout.take().unwrap()).lines();
    let bootstrap = loop {
        let line = lines.next().unwrap().unwrap();
        if let Some(b) = line.strip_prefix("bootstrap: ") {
            break b.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let catalog = switchyard_loader::load_catalog(&path("pipelines/models.toml")).unwrap();
    let mut sim_config = switchyard_sim::SimConfig::from_catalog(&catalog);
    sim_config.time_scale = 0.01;
    // Some failures too, so error paths are logged; the OpenAI models refuse a
    // share of calls as if the key were invalid, quoting it in their message.
    for (model, b) in sim_config.models.iter_mut() {
        b.error_rate = 0.2;
        b.rate_limit_rate = 0.1;
        b.retry_after = Duration::from_millis(100);
        if model.starts_with("gpt-") {
            b.invalid_key_rate = 0.4;
        }
    }
    let sim = switchyard_sim::start(sim_config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_process_config(dir.path(), &format!("http://{}", sim.addr()));
    // The same pipeline, with the key in a file (as mounted secrets are, newline included).
    let key_file = dir.path().join("sim.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let file_config = dir.path().join("pipeline-key-file.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("api_key_env = \"SWITCHYARD_SIM_KEY\""));
    std::fs::write(
        &file_config,
        text.replace(
            "api_key_env = \"SWITCHYARD_SIM_KEY\"",
            &format!("api_key_file = \"{}\"", key_file.display()),
        ),
    )
    .unwrap();
    let pipeline = switchyard_loader::load_pipeline(&config, &[]).unwrap();
    let topics = pipeline.config.kafka.topics.clone();
    let consumer = results_consumer(&bootstrap, &topics.results.name);

    let mut logs = Vec::new();
    for (format, config) in [("json", &config), ("pretty", &file_config)] {
        let mut worker = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", "--config"])
            .arg(config)
            .env("SWITCHYARD_BROKERS", &bootstrap)
            .env(
                "SWITCHYARD_SIM_KEY",
                if format == "json" { KEY } else { "" },
            )
            .env("SWITCHYARD_LOG_FORMAT", format)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let jobs = jobs(&format!("secret-{format}"), 30);
        produce_jobs(&bootstrap, &topics.jobs, &jobs).await;
        produce_raw(
            &bootstrap,
            &topics.jobs.name,
            Some(b"broken"),
            b"{\"job_id\": \"broken\", \"project\":",
        )
        .await;
        let ids: Vec<String> = jobs.iter().map(|j| j.job_id.clone()).collect();
        collect_results(
            &consumer,
            &Codec::for_topic(&topics.results),
            &ids,
            Duration::from_secs(90),
        )
        .await;
        Command::new("kill")
            .args(["-TERM", &worker.id().to_string()])
            .status()
            .unwrap();
        let mut out = Vec::new();
        worker.stdout.take().unwrap().read_to_end(&mut out).unwrap();
        worker.stderr.take().unwrap().read_to_end(&mut out).unwrap();
        assert!(worker.wait().unwrap().success());
        assert!(
            out.len() > 10_000,
            "debug logging should say a lot ({} bytes)",
            out.len()
        );
        logs.extend(out);
    }
    let refused: u64 = sim.stats().models.values().map(|m| m.errors(401)).sum();
    assert!(
        refused >= 5,
        "the key was refused and quoted only {refused} times"
    );
    let logs = String::from_utf8_lossy(&logs);
    assert!(!logs.contains(KEY), "the key leaked into the worker's logs");
    assert!(
        !logs.contains(&KEY[8..24]),
        "part of the key leaked into the worker's logs"
    );
    for topic in [&topics.results.name, &topics.usage.name, &topics.dlq] {
        let mut all = Vec::new();
        switchyard_kafka::scan_to_end(
            &kafka_config(&bootstrap),
            topic,
            switchyard_kafka::ScanFrom::Beginning,
            &Default::default(),
            Duration::from_secs(20),
            |m| {
                all.extend_from_slice(m.payload);
            },
        )
        .unwrap();
        assert!(!all.is_empty(), "{topic} is empty");
        let all = String::from_utf8_lossy(&all);
        assert!(!all.contains(KEY), "the key leaked into {topic}");
        assert!(
            !all.contains(&KEY[8..24]),
            "part of the key leaked into {topic}"
        );
        if *topic == topics.results.name {
            assert!(
                all.contains("Incorrect API key provided: ***"),
                "the provider's quote of the key is in the results, scrubbed"
            );
        }
    }
    sim.shutdown().await.unwrap();
    let _ = broker.kill();
    let _ = broker.wait();
}
