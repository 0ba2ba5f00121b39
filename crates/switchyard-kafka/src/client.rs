//! librdkafka client settings for Switchyard's consumers and producers, built from
//! the pipeline config. Offsets are stored by the application (only finished jobs'
//! offsets) and committed by librdkafka's auto-commit timer and on shutdown.

use std::time::Duration;

use rdkafka::ClientConfig;
use switchyard_core::config::{Compression, KafkaConfig};
use tracing::error;

/// Settings for a consumer in `group_id` that commits only what the caller stores.
pub fn consumer_config(
    kafka: &KafkaConfig,
    group_id: &str,
    commit_interval: Duration,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set("group.id", group_id)
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            commit_interval.as_millis().max(1).to_string(),
        )
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "2000")
        .set("fetch.wait.max.ms", "100")
        .set("enable.partition.eof", "false")
        // Prefetch at most 16 MB: jobs wait in Kafka, not in the worker's memory.
        .set("queued.max.messages.kbytes", "16384")
        // librdkafka postpones a partition's next fetch by this much once the
        // prefetch bound is reached (1 s by default): a worker that drains its
        // queue would then sit idle. With 20 ms it refetches as soon as there is
        // room (19k to 30k jobs/s in `switchyard bench`).
        .set("fetch.queue.backoff.ms", "20");
    apply_overrides(&mut c, kafka);
    c
}

/// Settings for an idempotent producer with small batching delay, compressing
/// with lz4.
pub fn producer_config(kafka: &KafkaConfig) -> ClientConfig {
    producer_config_with(kafka, Compression::Lz4)
}

/// As [`producer_config`], compressing as a topic's settings say.
pub fn producer_config_with(kafka: &KafkaConfig, compression: Compression) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("compression.type", compression.as_str())
        .set("queue.buffering.max.messages", "1000000")
        .set("message.timeout.ms", "120000");
    apply_overrides(&mut c, kafka);
    c
}

/// Settings for a group-less reader (tools that scan a topic: collect, status, ledger rebuild).
pub fn reader_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set("group.id", "switchyard-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100");
    apply_overrides(&mut c, kafka);
    c
}

fn apply_overrides(c: &mut ClientConfig, kafka: &KafkaConfig) {
    apply_with(c, kafka, |var| std::env::var(var).ok());
}

/// Applies `kafka.client`, then the secrets of `kafka.client_secret_env` as
/// `env` gives them.
fn apply_with(c: &mut ClientConfig, kafka: &KafkaConfig, env: impl Fn(&str) -> Option<String>) {
    for (k, v) in &kafka.client {
        c.set(k, v);
    }
    for (property, var) in &kafka.client_secret_env {
        match env(var) {
            Some(value) if !value.trim().is_empty() => {
                c.set(property, value.trim());
            }
            _ => {
                error!(property = %property, variable = %var, "Kafka client secret is not set; export the variable (the client connects without it).")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_properties_come_from_the_environment() {
        let kafka = KafkaConfig {
            brokers: "localhost:9092".into(),
            group_id: "g".into(),
            topics: Default::default(),
            client: [("security.protocol".to_owned(), "SASL_SSL".to_owned())].into(),
            client_secret_env: [
                ("sasl.password".to_owned(), "KAFKA_SASL_PASSWORD".to_owned()),
                ("ssl.key.password".to_owned(), "UNSET".to_owned()),
            ]
            .into(),
        };
        let env = |var: &str| (var == "KAFKA_SASL_PASSWORD").then(|| "hunter2\n".to_owned());
        let mut c = ClientConfig::new();
        apply_with(&mut c, &kafka, env);
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.password"), Some("hunter2"));
        assert_eq!(c.get("ssl.key.password"), None);
    }
}
