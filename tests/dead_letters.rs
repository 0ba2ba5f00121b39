//! Poison messages go to the dead-letter topic with the reason, the original bytes
//! and their source partition and offset, and the partition keeps moving.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use switchyard_codec::Codec;
use switchyard_core::config::{Encoding, TopicConfig};
use switchyard_core::result::JobStatus;
use switchyard_embedded::{Stack, StackOptions};

use common::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_json_message_is_dead_lettered_with_its_reason() {
    let options = StackOptions {
        partitions: 1,
        time_scale: 0.01,
        env: env(&[("SWITCHYARD__KAFKA__TOPICS__JOBS__MAX_MESSAGE_BYTES", "4096")]),
        ..StackOptions::default()
    };
    let mut stack = Stack::start(&demo_config(), options).await.unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let consumer = results_consumer(&bootstrap, &topics.results.name);

    let huge = format!(
        r#"{{"job_id": "big", "project": "acme/retail/support/ticket-triage", "request": {{"messages": [{{"role": "user", "content": "{}"}}]}}}}"#,
        "x".repeat(5000)
    );
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        ("invalid_json", br#"{"job_id": "j1", "project": "acme/retail/support/ticket-triage", "request": {"#.to_vec(), "EOF while parsing"),
        ("invalid_json", br#"{"job_id": 17, "project": "acme/retail/support/ticket-triage", "request": {"messages": [{"role": "user", "content": "hi"}]}}"#.to_vec(), "invalid type: integer `17`, expected a string"),
        ("invalid_json", br#"{"job_id": "j3", "project": "acme/retail/support/ticket-triage", "colour": "red", "request": {"messages": [{"role": "user", "content": "hi"}]}}"#.to_vec(), "unknown field `colour`"),
        ("invalid_json", br#"{"job_id": "j4", "project": "acme/retail/support/ticket-triage", "request": {"max_tokens": 10}}"#.to_vec(), "missing field `messages`"),
        ("invalid_job", br#"{"job_id": "j5", "project": "acme/retail/support/ticket-triage", "request": {"messages": []}}"#.to_vec(), "messages is empty"),
        ("invalid_job", br#"{"job_id": "j6", "project": "acme/retail", "request": {"messages": [{"role": "user", "content": "hi"}]}}"#.to_vec(), "is not a path of four parts"),
        ("invalid_utf8", b"{\"job_id\": \"j7\xc3\x28\", \"project\": \"a/b/c/d\"}".to_vec(), "not valid UTF-8"),
        ("too_large", huge.into_bytes(), "the limit is 4096"),
        ("empty", Vec::new(), "empty"),
    ];
    for (_, bytes, _) in &bad {
        produce_raw(
            &bootstrap,
            &topics.jobs.name,
            Some(b"same-partition"),
            bytes,
        )
        .await;
    }
    // A good job after the poison ones, on the same partition: it must still be processed.
    let good = jobs("after-poison", 1);
    produce_jobs(&bootstrap, &topics.jobs, &good).await;
    let results = collect_results(
        &consumer,
        &Codec::for_topic(&topics.results),
        &[good[0].job_id.clone()],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(results[&good[0].job_id][0].status, JobStatus::Succeeded);

    assert!(
        eventually(Duration::from_secs(20), || read_dead_letters(
            &bootstrap,
            &topics.dlq
        )
        .len()
            >= bad.len())
        .await
    );
    let mut letters = read_dead_letters(&bootstrap, &topics.dlq);
    assert_eq!(letters.len(), bad.len());
    // Letters are published concurrently; the source offset says which message each one is.
    letters.sort_by_key(|l| l.headers["switchyard.dlq.offset"].parse::<i64>().unwrap());
    for (i, ((kind, bytes, reason), letter)) in bad.iter().zip(&letters).enumerate() {
        assert_eq!(
            &letter.payload, bytes,
            "letter {i} must carry the original bytes"
        );
        assert_eq!(
            letter.headers["switchyard.dlq.kind"], *kind,
            "letter {i}: {:?}",
            letter.headers
        );
        assert!(
            letter.headers["switchyard.dlq.reason"].contains(reason),
            "letter {i}: {:?}",
            letter.headers
        );
        assert_eq!(letter.headers["switchyard.dlq.topic"], topics.jobs.name);
        assert_eq!(letter.headers["switchyard.dlq.partition"], "0");
        assert_eq!(letter.headers["switchyard.dlq.offset"], i.to_string());
    }
    stack.stop_worker().await.unwrap();
    let (committed, ends) = committed_and_end(
        &bootstrap,
        &stack.pipeline.config.kafka.group_id,
        &topics.jobs.name,
    );
    assert_eq!(committed, ends, "dead-lettered messages are committed too");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_dropped_when_the_topic_says_ignore() {
    let options = StackOptions {
        partitions: 1,
        time_scale: 0.01,
        env: env(&[("SWITCHYARD__KAFKA__TOPICS__JOBS__UNKNOWN_FIELDS", "ignore")]),
        ..StackOptions::default()
    };
    let stack = Stack::start(&demo_config(), options).await.unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let consumer = results_consumer(&bootstrap, &topics.results.name);
    let text = br#"{"job_id": "lenient-1", "project": "acme/retail/support/ticket-triage", "priority": 3, "request": {"messages": [{"role": "user", "content": "Is this spam? 'WIN A CRUISE'", "name": "x"}], "top_k": 5}}"#;
    produce_raw(&bootstrap, &topics.jobs.name, Some(b"lenient-1"), text).await;
    let results = collect_results(
        &consumer,
        &Codec::for_topic(&topics.results),
        &["lenient-1".to_owned()],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(results["lenient-1"][0].status, JobStatus::Succeeded);
    assert_eq!(read_dead_letters(&bootstrap, &topics.dlq).len(), 0);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_avro_is_dead_lettered_and_good_avro_is_processed() {
    let options = StackOptions {
        partitions: 1,
        time_scale: 0.01,
        env: env(&[
            (
                "SWITCHYARD__KAFKA__TOPICS__JOBS__ENCODING",
                "avro-confluent",
            ),
            ("SWITCHYARD__KAFKA__TOPICS__JOBS__SCHEMA_ID", "7"),
        ]),
        ..StackOptions::default()
    };
    let stack = Stack::start(&demo_config(), options).await.unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    assert_eq!(topics.jobs.encoding, Encoding::AvroConfluent);
    let consumer = results_consumer(&bootstrap, &topics.results.name);

    let good = jobs("avro", 1);
    let encoded = Codec::for_topic(&topics.jobs).encode(&good[0]).unwrap();
    let mut wrong_id = encoded.clone();
    wrong_id[4] = 9;
    let truncated = encoded[..encoded.len() / 2].to_vec();
    let json = br#"{"job_id": "not-avro"}"#.to_vec();
    for bytes in [&wrong_id, &truncated, &json] {
        produce_raw(&bootstrap, &topics.jobs.name, Some(b"k"), bytes).await;
    }
    let json_topic = TopicConfig {
        encoding: Encoding::AvroConfluent,
        schema_id: Some(7),
        ..topics.jobs.clone()
    };
    produce_jobs(&bootstrap, &json_topic, &good).await;
    let results = collect_results(
        &consumer,
        &Codec::for_topic(&topics.results),
        &[good[0].job_id.clone()],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(results[&good[0].job_id][0].status, JobStatus::Succeeded);
    assert!(
        eventually(Duration::from_secs(20), || read_dead_letters(
            &bootstrap,
            &topics.dlq
        )
        .len()
            >= 3)
        .await
    );
    let mut letters = read_dead_letters(&bootstrap, &topics.dlq);
    assert_eq!(letters.len(), 3);
    letters.sort_by_key(|l| l.headers["switchyard.dlq.offset"].parse::<i64>().unwrap());
    assert!(
        letters
            .iter()
            .all(|l| l.headers["switchyard.dlq.kind"] == "invalid_avro"),
        "{letters:?}"
    );
    assert!(
        letters[0].headers["switchyard.dlq.reason"]
            .contains("schema id 9 is not the configured one (7)")
    );
    assert!(letters[2].headers["switchyard.dlq.reason"].contains("Confluent header"));
    assert_eq!(letters[1].payload, truncated);
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_result_cannot_be_encoded_is_dead_lettered_with_its_cost_kept() {
    let options = StackOptions {
        partitions: 1,
        time_scale: 0.01,
        worker: false,
        ..StackOptions::default()
    };
    let stack = Stack::start(&demo_config(), options).await.unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    // A results topic in Avro without a schema id cannot take any result (the
    // config check refuses this; here the worker is handed it directly).
    let mut config = stack.pipeline.config.clone();
    config.kafka.topics.results.encoding = Encoding::AvroConfluent;
    config.kafka.topics.results.schema_id = None;
    let good = jobs("unencodable", 2);
    produce_jobs(&bootstrap, &topics.jobs, &good).await;
    let engine = std::sync::Arc::new(stack.new_engine().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = switchyard_embedded::spawn_worker(engine, &config, stop.clone());
    assert!(
        eventually(Duration::from_secs(60), || read_dead_letters(
            &bootstrap,
            &topics.dlq
        )
        .len()
            >= 2)
        .await,
        "both jobs reach the dead-letter topic"
    );
    stop.cancel();
    worker.await.unwrap().unwrap();
    let letters = read_dead_letters(&bootstrap, &topics.dlq);
    for letter in &letters {
        assert_eq!(letter.headers["switchyard.dlq.kind"], "unencodable_outcome");
        let reason = &letter.headers["switchyard.dlq.reason"];
        assert!(reason.contains("the job ran (status succeeded"), "{reason}");
        assert!(reason.contains(&topics.results.name), "{reason}");
        assert!(reason.contains("runs the job again"), "{reason}");
    }
    let mut payloads: Vec<Vec<u8>> = letters.into_iter().map(|l| l.payload).collect();
    payloads.sort();
    let codec = Codec::for_topic(&topics.jobs);
    let mut expected: Vec<Vec<u8>> = good.iter().map(|j| codec.encode(j).unwrap()).collect();
    expected.sort();
    assert_eq!(payloads, expected, "letters carry the original job bytes");
    assert_eq!(
        topic_size(&bootstrap, &topics.results.name),
        0,
        "no result that does not fit"
    );
    assert!(
        topic_size(&bootstrap, &topics.usage.name) >= 2,
        "what the jobs were billed still reaches the usage topic"
    );
    let (committed, ends) = committed_and_end(
        &bootstrap,
        &stack.pipeline.config.kafka.group_id,
        &topics.jobs.name,
    );
    assert_eq!(committed, ends, "the partition keeps moving");
    stack.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_keeps_the_original_key_and_a_null_key_stays_null() {
    let options = StackOptions {
        partitions: 1,
        time_scale: 0.01,
        ..StackOptions::default()
    };
    let stack = Stack::start(&demo_config(), options).await.unwrap();
    let bootstrap = stack.broker.bootstrap().to_owned();
    let topics = stack.pipeline.config.kafka.topics.clone();
    let consumer = results_consumer(&bootstrap, &topics.results.name);
    produce_raw(&bootstrap, &topics.jobs.name, None, b"{\"job_id\": ").await;
    produce_raw(&bootstrap, &topics.jobs.name, Some(b""), b"[1, 2]").await;
    produce_raw(
        &bootstrap,
        &topics.jobs.name,
        Some(b"job-keyed"),
        b"not json",
    )
    .await;
    let good = jobs("after-keys", 1);
    produce_jobs(&bootstrap, &topics.jobs, &good).await;
    collect_results(
        &consumer,
        &Codec::for_topic(&topics.results),
        &[good[0].job_id.clone()],
        Duration::from_secs(60),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(20), || read_dead_letters(
            &bootstrap,
            &topics.dlq
        )
        .len()
            >= 3)
        .await
    );
    let mut letters = read_dead_letters(&bootstrap, &topics.dlq);
    letters.sort_by_key(|l| l.headers["switchyard.dlq.offset"].parse::<i64>().unwrap());
    let keys: Vec<Option<Vec<u8>>> = letters.into_iter().map(|l| l.key).collect();
    assert_eq!(
        keys,
        [None, Some(Vec::new()), Some(b"job-keyed".to_vec())],
        "a null key stays null, an empty one empty, a key the same"
    );
    stack.stop().await.unwrap();
}
