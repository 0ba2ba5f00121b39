//! Producing many messages fast and knowing that every one was acknowledged: a
//! threaded producer whose delivery callback counts successes and failures, so
//! no per-message future is allocated. `flush` then says whether all arrived.
//! The callback also keeps the offset of the last registry record delivered,
//! which a submit's claim is judged by.

use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchyard_core::access::PrivateKey;
use switchyard_core::access::sign;

use rdkafka::ClientContext;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use switchyard_core::config::KafkaConfig;
use switchyard_kafka::client::producer_config;

use crate::{Error, Result};

/// Counts deliveries.
pub struct DeliveryCounter {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
    registry_topic: String,
    registry_offset: AtomicI64,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                if m.topic() == self.registry_topic {
                    self.registry_offset.store(m.offset(), Ordering::Relaxed);
                }
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock()
                    && first.is_none()
                {
                    *first = Some(e.to_string());
                }
            }
        }
    }
}

/// A producer for one bulk send.
pub struct Sender {
    producer: ThreadedProducer<DeliveryCounter>,
    sent: u64,
    /// Signs jobs (`switchyard.key_id`, `switchyard.ts`, `switchyard.sig`).
    signer: Option<PrivateKey>,
}

impl Sender {
    /// An idempotent, acks=all producer for the cluster.
    pub fn new(kafka: &KafkaConfig) -> Result<Self> {
        let mut config = producer_config(kafka);
        // Bulk sends favour throughput: bigger batches, a little more linger.
        config
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000");
        for (k, v) in &kafka.client {
            config.set(k, v);
        }
        let counter = DeliveryCounter {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
            registry_topic: kafka.topics.batches.clone(),
            registry_offset: AtomicI64::new(-1),
        };
        let producer = ThreadedProducer::from_config_and_context(&config, counter)
            .map_err(Error::kafka("producer setup"))?;
        Ok(Self {
            producer,
            sent: 0,
            signer: None,
        })
    }

    /// Signs the jobs it sends with `key` from now on.
    pub fn sign_with(&mut self, key: Option<PrivateKey>) {
        self.signer = key;
    }

    /// Queues one job, signed when the sender has a key.
    pub fn send_job(&mut self, topic: &str, key: &[u8], payload: &[u8]) -> Result<()> {
        let headers = self.signer.as_ref().map(|k| {
            let s = sign::sign(k, payload, chrono::Utc::now());
            OwnedHeaders::new()
                .insert(Header {
                    key: sign::KEY_ID,
                    value: Some(s.key_id.as_bytes()),
                })
                .insert(Header {
                    key: sign::TS,
                    value: Some(s.ts.as_bytes()),
                })
                .insert(Header {
                    key: sign::SIG,
                    value: Some(s.sig.as_bytes()),
                })
        });
        self.send_with(topic, key, payload, headers)
    }

    /// Queues one message, waiting while the local queue is full.
    pub fn send(&mut self, topic: &str, key: &[u8], payload: &[u8]) -> Result<()> {
        self.send_with(topic, key, payload, None)
    }

    fn send_with(
        &mut self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).key(key).payload(payload);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => {
                    self.sent += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(Error::kafka("produce")(e)),
            }
        }
    }

    /// Connects and learns the topics' leaders now, so the first sends do not
    /// wait for it. Errors are left for the sends to report.
    pub fn warm_up(&self, topics: &[&str]) {
        for t in topics {
            let _ = self
                .producer
                .client()
                .fetch_metadata(Some(t), Duration::from_secs(10));
        }
    }

    /// Offset of the last registry record acknowledged (-1 before any): after a
    /// registry record is sent and flushed alone, its own offset.
    pub fn last_registry_offset(&self) -> i64 {
        self.producer
            .context()
            .registry_offset
            .load(Ordering::Relaxed)
    }

    /// Messages acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.producer.context().delivered.load(Ordering::Relaxed)
    }

    /// Waits for every acknowledgement; fails if any message sent so far was not
    /// delivered. The producer stays usable.
    pub fn flush(&self, timeout: Duration) -> Result<u64> {
        // rdkafka's own flush sleeps in steps of 100 ms while the background
        // thread serves the delivery reports; ask librdkafka to send now and
        // check often instead.
        let deadline = Instant::now() + timeout;
        loop {
            match self.producer.flush(Duration::ZERO) {
                Ok(()) => break,
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                    if Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(Error::kafka("flush")(e)),
            }
        }
        let ctx = self.producer.context();
        let failed = ctx.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = ctx
                .first_error
                .lock()
                .ok()
                .and_then(|f| f.clone())
                .unwrap_or_default();
            return Err(Error::Undelivered {
                sent: self.sent,
                failed,
                first,
            });
        }
        Ok(ctx.delivered.load(Ordering::Relaxed))
    }
}
