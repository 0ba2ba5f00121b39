//! docker-compose.yml cannot run here (no Docker engine), so its consistency with
//! the code is checked instead: the services a user needs exist, Kafka runs in
//! KRaft mode, every topic the pipeline uses is created (the batch registry
//! compacted), the configs the containers use load and point at the compose
//! services, and the image ships those configs. Prometheus scrapes the workers'
//! and the sink's telemetry endpoints and loads the alert rules; Grafana is
//! provisioned with both data sources and the dashboard, each file it mounts
//! existing and pointing at the compose services.

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
        "prometheus",
        "grafana",
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
    let sink_dlq = switchyard_core::config::AnalyticsConfig::default().dlq_topic;
    for topic in [
        &t.jobs.name,
        &t.results.name,
        &t.usage.name,
        &t.dlq,
        &t.held,
        &t.batches,
        &t.budgets,
        &sink_dlq,
        &t.alerts,
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
    let budgets_line = init
        .lines()
        .find(|l| l.contains(&format!("--topic {} ", t.budgets)))
        .unwrap();
    assert!(
        budgets_line.contains("cleanup.policy=compact"),
        "the budget snapshots must be compacted"
    );
    let alerts_line = init
        .lines()
        .find(|l| l.contains(&format!("--topic {} ", t.alerts)))
        .unwrap();
    assert!(
        alerts_line.contains("cleanup.policy=compact")
            && alerts_line.contains("min.compaction.lag.ms="),
        "the alerts topic is compacted, and keeps what the sink compares duplicates with"
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
    assert_eq!(command(worker), ["run", "--metrics-addr", "0.0.0.0:9464"]);
    assert_eq!(command(sink), ["sink", "--metrics-addr", "0.0.0.0:9464"]);
    for s in [worker, sink] {
        let exposed: Vec<&str> = s["expose"]
            .as_vec()
            .map(|v| v.iter().filter_map(Yaml::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            exposed,
            ["9464"],
            "the telemetry port is exposed to Prometheus"
        );
    }
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

/// A service's bind mounts of repository files: container path → host path.
fn mounts(s: &Yaml) -> BTreeMap<String, std::path::PathBuf> {
    s["volumes"]
        .as_vec()
        .map(|v| {
            v.iter()
                .filter_map(Yaml::as_str)
                .filter_map(|m| {
                    let mut parts = m.split(':');
                    let host = parts.next()?.strip_prefix("./")?;
                    let container = parts.next()?;
                    Some((container.to_owned(), path(host)))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn yaml_file(p: &std::path::Path) -> Yaml {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

#[test]
fn prometheus_scrapes_the_workers_and_the_sink_and_loads_the_alert_rules() {
    let c = compose();
    let prometheus = service(&c, "prometheus");
    assert!(
        prometheus["image"]
            .as_str()
            .unwrap()
            .starts_with("prom/prometheus:")
    );
    let m = mounts(prometheus);
    let config_path = &m["/etc/prometheus/prometheus.yml"];
    assert!(
        command(prometheus).contains(&"--config.file=/etc/prometheus/prometheus.yml".to_owned())
    );
    let config = yaml_file(config_path);
    // Rule files are relative to the config, which sits beside them in the container.
    for rule_file in config["rule_files"].as_vec().unwrap() {
        let name = rule_file.as_str().unwrap();
        let mounted = &m[&format!("/etc/prometheus/{name}")];
        assert_eq!(mounted, &config_path.parent().unwrap().join(name));
        assert!(mounted.is_file(), "{}", mounted.display());
    }
    let mut targets = Vec::new();
    for job in config["scrape_configs"].as_vec().unwrap() {
        for sd in job["dns_sd_configs"].as_vec().into_iter().flatten() {
            for name in sd["names"].as_vec().unwrap() {
                targets.push(format!(
                    "{}:{}",
                    name.as_str().unwrap(),
                    sd["port"].as_i64().unwrap()
                ));
            }
        }
        for sc in job["static_configs"].as_vec().into_iter().flatten() {
            for t in sc["targets"].as_vec().unwrap() {
                targets.push(t.as_str().unwrap().to_owned());
            }
        }
    }
    targets.sort();
    // The port is the one the workers and the sink are told to listen on.
    assert_eq!(targets, ["sink:9464", "worker:9464"]);
}

#[test]
fn grafana_is_provisioned_with_both_data_sources_and_the_dashboard() {
    let c = compose();
    let grafana = service(&c, "grafana");
    assert!(
        grafana["image"]
            .as_str()
            .unwrap()
            .starts_with("grafana/grafana:")
    );
    let m = mounts(grafana);
    for host in m.values() {
        assert!(host.exists(), "{} is mounted but missing", host.display());
    }
    let datasources = m["/etc/grafana/provisioning/datasources"].clone();
    let mut uids = BTreeMap::new();
    for entry in std::fs::read_dir(&datasources).unwrap() {
        for ds in yaml_file(&entry.unwrap().path())["datasources"]
            .as_vec()
            .unwrap()
        {
            uids.insert(
                ds["uid"].as_str().unwrap().to_owned(),
                (ds["type"].as_str().unwrap().to_owned(), ds.clone()),
            );
        }
    }
    let (kind, prom) = &uids["prometheus"];
    assert_eq!(kind, "prometheus");
    assert_eq!(prom["url"].as_str(), Some("http://prometheus:9090"));
    let (kind, ch) = &uids["clickhouse"];
    assert_eq!(kind, "grafana-clickhouse-datasource");
    assert_eq!(ch["jsonData"]["host"].as_str(), Some("clickhouse"));
    assert_eq!(ch["jsonData"]["port"].as_i64(), Some(8123));
    assert_eq!(
        ch["jsonData"]["defaultDatabase"].as_str(),
        Some("switchyard")
    );
    assert!(
        env(grafana)["GF_INSTALL_PLUGINS"].contains("grafana-clickhouse-datasource"),
        "the ClickHouse data source is a plugin Grafana must install"
    );

    // The dashboard provider reads the folder the dashboard is mounted in.
    let providers = m["/etc/grafana/provisioning/dashboards"].clone();
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(&providers).unwrap() {
        for p in yaml_file(&entry.unwrap().path())["providers"]
            .as_vec()
            .unwrap()
        {
            folders.push(p["options"]["path"].as_str().unwrap().to_owned());
        }
    }
    let dashboard_mount = m
        .keys()
        .find(|k| k.ends_with(".json"))
        .expect("a dashboard is mounted");
    assert!(
        folders.iter().any(
            |f| std::path::Path::new(dashboard_mount).parent() == Some(std::path::Path::new(f))
        ),
        "{dashboard_mount} is not in a provisioned folder {folders:?}"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&m[dashboard_mount]).unwrap()).unwrap();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let uid = panel["datasource"]["uid"].as_str().unwrap();
        let (kind, _) = uids.get(uid).unwrap_or_else(|| {
            panic!(
                "panel {} uses data source {uid}, not provisioned",
                panel["title"]
            )
        });
        assert_eq!(panel["datasource"]["type"].as_str(), Some(kind.as_str()));
    }
}
