//! The simulated batch APIs against the worker's real batch clients
//! (`switchyard_providers::batch`), one suite run for OpenAI's Files and
//! Batches and for Anthropic's Message Batches: a 5,000-request batch is
//! created, polled to its end and collected with every custom id once; lines
//! the simulator fails or expires come back as failures and expiries; a batch
//! is found again by its idempotency key when listing (what a restarted worker
//! does before creating anything); a cancel reaches the batch and its
//! unanswered lines end canceled; no prompt reaches the simulator twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_core::catalog::Api;
use switchyard_core::config::Timeouts;
use switchyard_core::deferred::{batch_key, custom_id};
use switchyard_core::job::{ChatMessage, ChatRequest, ResponseFormat, Role};
use switchyard_providers::batch::{
    BatchApi, BatchRequest, LineOutcome, LineResult, NewBatch, RemoteBatch, for_api,
};
use switchyard_providers::wire;
use switchyard_providers::{ApiKey, CallRequest, HttpProvider};
use switchyard_sim::{SimConfig, SimHandle};

/// The two APIs with batches, and a model of each.
const APIS: [(Api, &str); 2] = [
    (Api::Openai, "gpt-4.1-mini"),
    (Api::Anthropic, "claude-haiku-4-5"),
];

fn client(sim: &SimHandle, api: Api) -> Arc<dyn BatchApi> {
    let provider = HttpProvider::new(
        wire::for_api(api),
        Some(&sim.base_url(api)),
        Some(ApiKey::new("sim-key".into())),
        Timeouts::default(),
    )
    .unwrap();
    for_api(api, Arc::new(provider)).unwrap()
}

/// `n` requests that differ, so that a prompt seen twice means work sent twice.
fn requests(n: usize) -> Vec<ChatRequest> {
    (0..n)
        .map(|i| ChatRequest {
            messages: vec![ChatMessage {
                role: Role::User,
                content: format!("Summarise ticket {i}: the parcel arrived late."),
            }],
            system: None,
            max_tokens: Some(16),
            temperature: None,
            stop: vec![],
            response_format: ResponseFormat::Text,
        })
        .collect()
}

/// Creates a batch of `chats` under a fresh key; returns the key and the batch.
async fn create(
    api: &dyn BatchApi,
    model: &str,
    chats: &[ChatRequest],
    seed: u128,
) -> (String, RemoteBatch) {
    let key = batch_key(seed);
    let ids: Vec<String> = (0..chats.len()).map(|i| custom_id(&key, i)).collect();
    let batch = NewBatch {
        key: &key,
        requests: chats
            .iter()
            .zip(&ids)
            .map(|(request, id)| BatchRequest {
                custom_id: id,
                call: CallRequest {
                    request,
                    api_model: model,
                    default_max_tokens: None,
                },
            })
            .collect(),
        completion_window: Duration::from_secs(24 * 3600),
    };
    let remote = api.create(batch).await.unwrap();
    (key, remote)
}

/// Polls until the batch ends (a few seconds at most).
async fn ended(api: &dyn BatchApi, id: &str) -> RemoteBatch {
    for _ in 0..500 {
        let b = api.retrieve(id).await.unwrap();
        if b.status.is_final() {
            return b;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("batch {id} did not end");
}

/// Lines by custom id, asserting that none comes twice.
fn by_id(lines: Vec<LineResult>) -> HashMap<String, LineOutcome> {
    let mut out = HashMap::new();
    for l in lines {
        let id = l.custom_id.clone();
        assert!(out.insert(l.custom_id, l.outcome).is_none(), "{id} twice");
    }
    out
}

fn config(f: impl FnOnce(&mut SimConfig)) -> SimConfig {
    let mut c = common::fast();
    c.batch.processing_time = Duration::from_secs(30);
    f(&mut c);
    c
}

#[tokio::test]
async fn five_thousand_requests_are_collected_once_each() {
    for (api, model) in APIS {
        let sim = common::sim(config(|_| {})).await;
        let batches = client(&sim, api);
        let chats = requests(5_000);
        let (key, created) = create(&*batches, model, &chats, 1).await;
        let done = ended(&*batches, &created.id).await;
        assert_eq!(done.counts.succeeded, 5_000, "{api:?}: {done:?}");
        let lines = by_id(batches.results(&done).await.unwrap());
        assert_eq!(lines.len(), 5_000, "{api:?}");
        for i in 0..5_000 {
            match &lines[&custom_id(&key, i)] {
                LineOutcome::Answered(c) => {
                    assert!(!c.content.is_empty());
                    assert!(c.usage.output_tokens > 0 && c.usage.input_tokens > 0);
                }
                other => panic!("{api:?} line {i}: {other:?}"),
            }
        }
        let stats = sim.stats();
        assert_eq!((stats.batch.batches, stats.batch.requests), (1, 5_000));
        assert_eq!(stats.repeated_prompts, 0, "{api:?}: a prompt came twice");
        sim.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn failed_and_expired_lines_come_back_as_such() {
    for (api, model) in APIS {
        let sim = common::sim(config(|c| {
            c.batch.line_error_rate = 0.2;
            c.batch.line_expired_rate = 0.2;
        }))
        .await;
        let batches = client(&sim, api);
        let (_, created) = create(&*batches, model, &requests(400), 2).await;
        let done = ended(&*batches, &created.id).await;
        let lines = by_id(batches.results(&done).await.unwrap());
        assert_eq!(lines.len(), 400);
        let count = |f: fn(&LineOutcome) -> bool| lines.values().filter(|o| f(o)).count() as u64;
        let failed = count(|o| matches!(o, LineOutcome::Failed(_)));
        let expired = count(|o| matches!(o, LineOutcome::Expired));
        let answered = count(|o| matches!(o, LineOutcome::Answered(_)));
        assert!(
            failed > 20 && expired > 20 && answered > 150,
            "{api:?}: {failed} {expired} {answered}"
        );
        assert_eq!(failed + expired + answered, 400);
        assert_eq!(
            (
                done.counts.errored,
                done.counts.expired,
                done.counts.succeeded
            ),
            // OpenAI's request counts have only completed and failed
            // (expired lines count as failed); Anthropic's say each.
            match api {
                Api::Anthropic => (failed, expired, answered),
                _ => (failed + expired, 0, answered),
            },
            "{api:?}: the counts say what the results say"
        );
        for o in lines.values() {
            if let LineOutcome::Failed(e) = o {
                assert!(
                    e.is_retryable(),
                    "{api:?}: a server error is worth another try: {e}"
                );
            }
        }
        sim.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_batch_is_found_again_by_its_key() {
    for (api, model) in APIS {
        let sim = common::sim(config(|c| {
            c.batch.processing_time = Duration::from_secs(3600)
        }))
        .await;
        let batches = client(&sim, api);
        let (_, other) = create(&*batches, model, &requests(3), 3).await;
        let (key, created) = create(&*batches, model, &requests(5), 4).await;
        let page = batches.list(None).await.unwrap();
        assert_eq!(page.batches.len(), 2);
        assert_eq!(page.batches[0].id, created.id, "{api:?}: newest first");
        match batches.carries(&page.batches[0], &key) {
            // OpenAI keeps the key in the batch's metadata.
            Some(carries) => {
                assert!(carries);
                assert_eq!(batches.carries(&page.batches[1], &key), Some(false));
                assert_eq!(page.batches[1].id, other.id);
            }
            // Anthropic's batches say it only through their custom ids.
            None => assert_eq!(api, Api::Anthropic),
        }
        assert_eq!(sim.stats().batch.lists, 1);
        sim.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_cancel_reaches_the_batch_and_ends_its_open_lines() {
    for (api, model) in APIS {
        let sim = common::sim(config(|c| {
            c.batch.processing_time = Duration::from_secs(3600)
        }))
        .await;
        let batches = client(&sim, api);
        let (_, created) = create(&*batches, model, &requests(50), 5).await;
        let canceling = batches.cancel(&created.id).await.unwrap();
        assert_eq!(canceling.counts.succeeded, 0);
        let done = ended(&*batches, &created.id).await;
        // OpenAI counts canceled lines as failed.
        let canceled = match api {
            Api::Anthropic => done.counts.canceled,
            _ => done.counts.errored,
        };
        assert_eq!(
            (canceled, done.counts.succeeded),
            (50, 0),
            "{api:?}: {done:?}"
        );
        let lines = by_id(batches.results(&done).await.unwrap());
        assert!(
            lines.values().all(|o| matches!(o, LineOutcome::Canceled)),
            "{api:?}"
        );
        let stats = sim.stats();
        assert_eq!((stats.batch.cancels, stats.batch.answered), (1, 0));
        sim.shutdown().await.unwrap();
    }
}
