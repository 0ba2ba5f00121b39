//! docker-compose.yml cannot run here (no Docker engine), so its consistency with
//! the code is checked instead: the services a user needs exist, Kafka runs in
//! KRaft mode, every topic the pipeline uses is created (the batch registry
//! compacted), the configs the containers use load and point at the compose
//! services, and the image ships those configs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use switchyard_core::config::Topics;
use yaml_rust2::{Yaml, YamlLoader};

use common::*;

fn compose() -> Yaml {
    let text = std::fs::read_to_string(path("docker-compose.yml")).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

fn service<'a>(c: &'a Yaml, name: &str) -> &'a Yaml {
    let s = &c["services"][name];
    assert!(
        !s.is_badvalue(),
        "service `{name}` is missing from docker-compose.yml"
    );
    s
}

fn env(s: &Yaml) -> BTreeMap<String, String> {
    s["environment"]
        .as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => format!("{other:?}"),
                    };
                    (k.as_str().unwrap().to_owned(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn command(s: &Yaml) -> Vec<String> {
    s["command"]
        .as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_services_a_user_needs_are_defined() {
    let c = compose();
    for name in [
        "kafka",
        "kafka-init",
        "clickhouse",
        "worker",
        "sink",
        "sim-provider",
    ] {
        service(&c, name);
    }
    let kafka = service(&c, "kafka");
    assert!(
        kafka["image"]
            .as_str()
            .unwrap()
            .starts_with("apache/kafka:")
    );
    let e = env(kafka);
    assert_eq!(e["KAFKA_PROCESS_ROLES"], "broker,controller", "KRaft mode");
    assert!(e["KAFKA_CONTROLLER_QUORUM_VOTERS"].contains("kafka:9093"));
    assert!(
        service(&c, "clickhouse")["image"]
            .as_str()
            .unwrap()
            .starts_with("clickhouse/clickhouse-server:")
    );
}

#[test]
fn every_topic_the_pipeline_uses_is_created() {
    let c = compose();
    let init = command(service(&c, "kafka-init")).join("\n");
    let t = Topics::default();
    for topic in [
        &t.jobs.name,
        &t.results.name,
        &t.usage.name,
        &t.dlq,
        &t.held,
        &t.batches,
    ] {
        assert!(
            init.contains(&format!("--topic {topic} ")),
            "kafka-init does not create {topic}"
        );
    }
    let batches_line = init
        .lines()
        .find(|l| l.contains(&format!("--topic {} ", t.batches)))
        .unwrap();
    assert!(
        batches_line.contains("cleanup.policy=compact"),
        "the batch registry must be compacted"
    );
}

#[test]
fn the_container_configs_load_and_point_at_the_compose_services() {
    let c = compose();
    let worker = service(&c, "worker");
    let sink = service(&c, "sink");
    for s in [worker, sink] {
        let e = env(s);
        let config = e["SWITCHYARD_CONFIG"]
            .strip_prefix("/etc/switchyard/")
            .expect("configs are shipped in /etc/switchyard");
        let loaded = switchyard_loader::load_pipeline(&path("pipelines").join(config), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e["SWITCHYARD_BROKERS"], "kafka:9092");
        assert_eq!(loaded.config.kafka.brokers, "kafka:9092");
        for d in &loaded.config.deployments {
            let url = d.base_url.as_deref().unwrap_or_default();
            assert!(
                url.starts_with("http://sim-provider:9100/"),
                "{}: {url}",
                d.name
            );
        }
        if let Some(url) = e.get("SWITCHYARD_CLICKHOUSE_URL") {
            assert_eq!(url, "http://clickhouse:8123");
            assert_eq!(
                loaded.config.analytics.clickhouse_url.as_deref(),
                Some("http://clickhouse:8123")
            );
        }
    }
    assert_eq!(command(worker), ["run"]);
    assert_eq!(command(sink), ["sink"]);
    let sim = command(service(&c, "sim-provider"));
    assert!(sim.windows(2).any(|w| w == ["--port", "9100"]));
    let sim_config = sim.iter().skip_while(|a| *a != "--config").nth(1).unwrap();
    let sim_file = path("pipelines").join(sim_config.strip_prefix("/etc/switchyard/").unwrap());
    switchyard_sim::SimConfig::load(&sim_file).unwrap_or_else(|e| panic!("{e}"));
    // The production example loads too (keys are only read when the worker starts).
    switchyard_loader::load_pipeline(&path("pipelines/production.toml"), &[])
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn the_image_ships_the_binary_and_the_configs() {
    let dockerfile = std::fs::read_to_string(path("Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY pipelines /etc/switchyard"));
    assert!(dockerfile.contains("cargo build --release --locked --bin switchyard"));
    assert!(dockerfile.contains("ENTRYPOINT [\"switchyard\"]"));
}
