//! A panic while a job is processed (here, a provider client that panics)
//! must not lose the job or leak what it held: the job ends in one failed
//! result saying why, its budget reservation is released, and the partition's
//! commit point moves past it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use switchyard_codec::Codec;
use switchyard_core::job::{ChatRequest, Job};
use switchyard_core::result::{JobResult, JobStatus};
use switchyard_kafka::client::{producer_config, reader_config};
use switchyard_providers::{BoxFuture, CallRequest, Completion, Provider, ProviderError};
use switchyard_worker::Engine;
use tokio_util::sync::CancellationToken;

struct Panicking;

impl Provider for Panicking {
    fn kind(&self) -> &'static str {
        "panicking"
    }

    fn complete<'a>(
        &'a self,
        _call: CallRequest<'a>,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async { panic!("a provider client bug") })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_job_ends_failed_releases_its_reservation_and_commits() {
    let topics = switchyard_core::config::Topics::default();
    let broker = common::broker(2);
    let dir = tempfile::tempdir().unwrap();
    let org = "[org]\nname = \"acme\"\n[[node]]\npath = \"acme/bu\"\nbudget_usd_per_month = 100\n[[node]]\npath = \"acme/bu/team\"\n[[node]]\npath = \"acme/bu/team/app\"\n";
    let p = common::pipeline(dir.path(), org, broker.bootstrap());
    let deployments = common::deployments(&p, Arc::new(Panicking));
    let engine = Arc::new(Engine::new(&p, deployments).unwrap());

    let producer: ThreadedProducer<DefaultProducerContext> =
        producer_config(&p.config.kafka).create().unwrap();
    let codec = Codec::json();
    let n = 12;
    for i in 0..n {
        let job = Job::new(
            format!("panics-{i}"),
            "acme/bu/team/app",
            ChatRequest::from_user("Classify this ticket: refund please"),
        );
        let bytes = codec.encode(&job).unwrap();
        producer
            .send(
                BaseRecord::to(&topics.jobs.name)
                    .key(&job.job_id)
                    .payload(&bytes),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let stop = CancellationToken::new();
    let worker = {
        let (engine, config, stop) = (engine.clone(), p.config.clone(), stop.clone());
        tokio::spawn(async move {
            switchyard_worker::run(engine, &config, stop.cancelled_owned()).await
        })
    };
    let results = read_results(&p.config.kafka, &topics.results.name, n).await;
    stop.cancel();
    worker.await.unwrap().unwrap();

    assert_eq!(results.len(), n);
    for r in &results {
        assert_eq!(r.status, JobStatus::Failed, "{r:?}");
        let e = r.error.as_ref().unwrap();
        assert_eq!(e.code, "internal_error");
        assert!(e.message.contains("a provider client bug"), "{}", e.message);
        assert!(r.routing.is_some());
    }
    assert_eq!(engine.budget_use("acme/bu").1, 0.0, "a reservation leaked");
    // Every offset is committed: a restart would not run them again.
    let consumer: BaseConsumer = reader_config(&p.config.kafka)
        .set("group.id", &p.config.kafka.group_id)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for part in 0..2 {
        tpl.add_partition(&topics.jobs.name, part);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    let total: i64 = committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum();
    assert_eq!(total, n as i64);
}

async fn read_results(
    kafka: &switchyard_core::config::KafkaConfig,
    topic: &str,
    n: usize,
) -> Vec<JobResult> {
    let consumer: BaseConsumer = reader_config(kafka).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for part in 0..2 {
        tpl.add_partition_offset(topic, part, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let codec = Codec::json();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            out.push(codec.decode::<JobResult>(m.payload().unwrap()).unwrap());
        }
        tokio::task::yield_now().await;
    }
    out
}
