//! Messages under one `job_id` while the first runs: a resend (the same
//! bytes, or the same job encoded again) waits for the running job's result
//! (one result, all committed);
//! another job under that id is dead-lettered as `job_id_conflict`, not taken
//! for the running one (whose result would silently stand for it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use switchyard_codec::Codec;
use switchyard_core::job::{ChatRequest, Job};
use switchyard_core::result::{JobResult, JobStatus, TokenUsage};
use switchyard_kafka::client::{producer_config, reader_config};
use switchyard_providers::{
    BoxFuture, CallRequest, Completion, Provider, ProviderError, RateLimitInfo,
};
use switchyard_worker::Engine;
use tokio_util::sync::CancellationToken;

/// Answers once the test opens its gate (so the copies arrive while the job
/// runs, however loaded the machine), counting its calls.
struct Gated {
    calls: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

impl Provider for Gated {
    fn kind(&self) -> &'static str {
        "gated"
    }

    fn complete<'a>(
        &'a self,
        call: CallRequest<'a>,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let content = format!("answer to: {}", call.request.messages[0].content);
        Box::pin(async move {
            let _ = self.gate.acquire().await;
            Ok(Completion {
                content,
                finish_reason: "stop".into(),
                usage: TokenUsage {
                    input_tokens: 10,
                    output_tokens: 5,
                    ..TokenUsage::default()
                },
                status: 200,
                rate_limit: RateLimitInfo::default(),
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resend_waits_for_the_running_job_and_another_job_under_its_id_is_dead_lettered() {
    let topics = switchyard_core::config::Topics::default();
    let broker = common::broker(1);
    let dir = tempfile::tempdir().unwrap();
    let org = "[org]\nname = \"acme\"\n[[node]]\npath = \"acme/bu\"\n[[node]]\npath = \"acme/bu/team\"\n[[node]]\npath = \"acme/bu/team/app\"\n";
    let p = common::pipeline(dir.path(), org, broker.bootstrap());
    let slow = Arc::new(Gated {
        calls: AtomicUsize::new(0),
        gate: tokio::sync::Semaphore::new(0),
    });
    let deployments = common::deployments(&p, slow.clone());
    let engine = Arc::new(Engine::new(&p, deployments).unwrap());

    let producer: ThreadedProducer<DefaultProducerContext> =
        producer_config(&p.config.kafka).create().unwrap();
    let codec = Codec::json();
    let job = |text: &str| {
        let job = Job::new("order-17", "acme/bu/team/app", ChatRequest::from_user(text));
        codec.encode(&job).unwrap()
    };
    let first = job("Classify this ticket: refund please");
    let other = job("Summarise the attached contract");
    // The same job encoded again: its JSON keys sorted, so other bytes.
    let sorted: serde_json::Value = serde_json::from_slice(&first).unwrap();
    let reencoded = serde_json::to_vec(&sorted).unwrap();
    assert_ne!(reencoded, first);
    let stop = CancellationToken::new();
    let worker = {
        let (engine, config, stop) = (engine.clone(), p.config.clone(), stop.clone());
        tokio::spawn(async move {
            switchyard_worker::run(engine, &config, stop.cancelled_owned()).await
        })
    };
    let send = |bytes: &[u8]| {
        producer
            .send(
                BaseRecord::to(&topics.jobs.name)
                    .key("order-17")
                    .payload(bytes),
            )
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    };
    // The message; once it runs, its resend and another job under its id.
    send(&first);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while slow.calls.load(Ordering::SeqCst) == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    send(&first);
    send(&reencoded);
    send(&other);
    let letters = read(&p.config.kafka, &topics.dlq, 1, Duration::from_secs(60)).await;
    // The resend was taken before the other job (one partition, in order):
    // it waits on the running job by now. Let the job answer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    slow.gate.add_permits(1);
    // The resend's wait ends with the running job; give it time to commit.
    let results = read(
        &p.config.kafka,
        &topics.results.name,
        2,
        Duration::from_secs(10),
    )
    .await;
    stop.cancel();
    worker.await.unwrap().unwrap();

    assert_eq!(slow.calls.load(Ordering::SeqCst), 1, "the job ran once");
    assert_eq!(results.len(), 1, "one result for the job and its resends");
    let r: JobResult = codec.decode(results[0].payload().unwrap()).unwrap();
    assert_eq!(r.status, JobStatus::Succeeded);
    let content = r.output.unwrap().content;
    assert!(content.contains("refund please"), "{content}");
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(
        letter.payload().unwrap(),
        &other[..],
        "the other job, kept whole"
    );
    let kind = letter
        .headers()
        .unwrap()
        .iter()
        .find(|h| h.key == "switchyard.dlq.kind")
        .and_then(|h| h.value)
        .unwrap();
    assert_eq!(kind, b"job_id_conflict");
    // All three offsets are committed.
    let consumer: BaseConsumer = reader_config(&p.config.kafka)
        .set("group.id", &p.config.kafka.group_id)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topics.jobs.name, 0);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        committed.elements()[0].offset(),
        Offset::Offset(4),
        "every message is committed"
    );
}

/// Up to `n` messages of `topic` (one partition), waiting at most `wait`.
async fn read(
    kafka: &switchyard_core::config::KafkaConfig,
    topic: &str,
    n: usize,
    wait: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: BaseConsumer = reader_config(kafka).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + wait;
    while out.len() < n && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(m.detach());
        }
        tokio::task::yield_now().await;
    }
    out
}
