//! Chaos: worker processes killed with SIGKILL while providers take 2 s and
//! flap, workers scaled up and down (one stopped in the middle of a
//! rebalance), a worker whose every slot stays busy past
//! `max.poll.interval.ms`, and a storm of poison messages among good jobs. What
//! must hold: no accepted job is lost, every bad message is dead-lettered, the
//! commit point never sticks, and duplicate results stay few (they are counted
//! and bounded).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchyard_codec::Codec;
use switchyard_core::config::Topics;
use switchyard_core::job::{ChatRequest, Job};
use switchyard_sim::{ModelBehaviour, SimConfig, SimHandle};

use common::*;

/// Every model answers after `latency`, instantly decoded.
async fn sim(latency: Duration) -> SimHandle {
    let config = SimConfig {
        default: ModelBehaviour {
            ttft: latency,
            tokens_per_second: 1e7,
            ..ModelBehaviour::default()
        },
        ..SimConfig::default()
    };
    switchyard_sim::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// The demo pipeline on `sim` with `max_in_flight` jobs per worker, a short
/// session timeout (so that a killed worker's partitions move on quickly) and
/// `client` settings for librdkafka.
fn config(dir: &Path, sim: &SimHandle, max_in_flight: usize, client: &str) -> PathBuf {
    let text = write_process_config(dir, &format!("http://{}", sim.addr()));
    let mut text = std::fs::read_to_string(text).unwrap();
    text = text.replace(
        "max_in_flight = 512",
        &format!("max_in_flight = {max_in_flight}"),
    );
    text = text.replace(
        "[kafka.topics.jobs]",
        &format!(
            "[kafka.client]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n{client}\n\n[kafka.topics.jobs]"
        ),
    );
    let p = dir.join("chaos.toml");
    std::fs::write(&p, text).unwrap();
    p
}

async fn produce(bootstrap: &str, topic: &str, messages: Vec<(Option<String>, Vec<u8>)>) {
    // Room for the oversized poison messages; lz4 keeps the embedded broker's
    // 5 MB per partition from dropping anything.
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "2")
        .set("compression.type", "lz4")
        .set("message.max.bytes", "2000000")
        .create()
        .unwrap();
    let mut pending = Vec::new();
    for (key, payload) in &messages {
        pending.push(
            switchyard_kafka::produce::enqueue(
                &producer,
                topic,
                key.as_deref().map(str::as_bytes),
                payload,
                None,
            )
            .await
            .unwrap(),
        );
    }
    for p in pending {
        switchyard_kafka::produce::acknowledged(p).await.unwrap();
    }
}

fn encoded(jobs: &[Job]) -> Vec<(Option<String>, Vec<u8>)> {
    let codec = Codec::json();
    jobs.iter()
        .map(|j| (Some(j.job_id.clone()), codec.encode(j).unwrap()))
        .collect()
}

/// Waits until every id has a result; returns the result count per id.
async fn until_answered(
    bootstrap: &str,
    ids: &[String],
    timeout: Duration,
) -> HashMap<String, usize> {
    let topics = Topics::default();
    let deadline = Instant::now() + timeout;
    loop {
        let counts = result_counts(bootstrap, &topics.results);
        let missing = ids.iter().filter(|id| !counts.contains_key(*id)).count();
        if missing == 0 || Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn duplicates(counts: &HashMap<String, usize>) -> usize {
    counts.values().map(|c| c.saturating_sub(1)).sum()
}

fn assert_none_lost(ids: &[String], counts: &HashMap<String, usize>) {
    let lost: Vec<&String> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} jobs lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

/// Waits until the group has committed everything on the jobs topic.
async fn until_committed(bootstrap: &str, timeout: Duration) -> bool {
    let topics = Topics::default();
    let bootstrap = bootstrap.to_owned();
    eventually(timeout, move || {
        uncommitted(&bootstrap, "switchyard-workers", &topics.jobs.name).0 == 0
    })
    .await
}

/// The tests of this file run one at a time: each starts several worker
/// processes, a broker and a simulator, and measures what rebalances and
/// session timeouts do; run side by side on two cores, they slow each other's
/// rebalances past the timeouts they exercise.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A broker of `partitions` partitions, a simulator answering after
/// `latency`, the pipeline config (`max_in_flight`, librdkafka `client`
/// settings) and `n` jobs already on the jobs topic.
struct Scenario {
    _broker: Proc,
    bootstrap: String,
    sim: SimHandle,
    dir: tempfile::TempDir,
    config: PathBuf,
    ids: Vec<String>,
    /// Last, so that it is dropped last: the next test starts once this
    /// one's broker, simulator and directory are gone.
    _one_at_a_time: tokio::sync::MutexGuard<'static, ()>,
}

impl Scenario {
    async fn start(
        partitions: u32,
        latency: Duration,
        max_in_flight: usize,
        client: &str,
        prefix: &str,
        n: usize,
    ) -> Self {
        let one_at_a_time = ONE_AT_A_TIME.lock().await;
        let (broker, bootstrap) = start_broker(partitions);
        let sim = sim(latency).await;
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), &sim, max_in_flight, client);
        let jobs = jobs(prefix, n);
        produce(&bootstrap, &Topics::default().jobs.name, encoded(&jobs)).await;
        Self {
            _broker: broker,
            bootstrap,
            sim,
            dir,
            config,
            ids: jobs.into_iter().map(|j| j.job_id).collect(),
            _one_at_a_time: one_at_a_time,
        }
    }

    fn worker(&self) -> Proc {
        start_worker(&self.config, &self.bootstrap, &[])
    }

    /// Waits for every job's result and the group's commit of every job,
    /// checks that none was lost, and returns the result count per job.
    async fn settled(&self, within: Duration) -> HashMap<String, usize> {
        let counts = until_answered(&self.bootstrap, &self.ids, within).await;
        assert!(until_committed(&self.bootstrap, Duration::from_secs(60)).await);
        assert_none_lost(&self.ids, &counts);
        counts
    }

    /// Prints the duplicate results of `what` and checks that they are at
    /// most `percent` of the jobs.
    fn assert_duplicates_within(
        &self,
        counts: &HashMap<String, usize>,
        percent: usize,
        what: &str,
    ) {
        let dupes = duplicates(counts);
        eprintln!("{what}: {dupes} duplicate results");
        assert!(
            dupes * 100 <= percent * self.ids.len(),
            "{dupes} duplicates of {}",
            self.ids.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_kills_with_2s_providers_lose_nothing_and_duplicate_at_most_5_percent() {
    let run = Scenario::start(6, Duration::from_secs(2), 512, "", "kill", 3000).await;
    let mut worker = run.worker();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        signal(&worker, "-KILL");
        worker = run.worker();
    }
    let counts = run.settled(Duration::from_secs(240)).await;
    drop(worker);
    run.assert_duplicates_within(&counts, 5, "two kill -9 during 3,000 jobs at 2 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_one_to_three_to_two_workers_duplicates_at_most_2_percent() {
    let run = Scenario::start(6, Duration::from_secs(2), 128, "", "scale", 3000).await;
    let first = run.worker();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let second = run.worker();
    let third = run.worker();
    tokio::time::sleep(Duration::from_secs(12)).await;
    signal(&third, "-TERM");
    let counts = run.settled(Duration::from_secs(240)).await;
    drop((first, second, third));
    run.assert_duplicates_within(&counts, 2, "scaling 1 -> 3 -> 2 during 3,000 jobs at 2 s");
}

/// A worker stopped while a rebalance is taking its partitions away: the
/// broker refuses the commit of what it finished there until the group has
/// synced, so the stopping worker stays in the rebalance long enough to hand
/// that work over instead of leaving it to be redone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_during_a_rebalance_hands_over_what_it_finished() {
    let run = Scenario::start(6, Duration::from_secs(4), 128, "", "handover", 900).await;
    let log = run.dir.path().join("first.log");
    let first = start_worker_logged(&run.config, &run.bootstrap, &log);
    tokio::time::sleep(Duration::from_secs(7)).await;
    // The second worker's join revokes the first one's partitions; while its
    // revoke waits for the jobs in flight (4 s each), it is told to stop.
    let second = run.worker();
    let joined = eventually(Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Partitions revoked"))
    })
    .await;
    assert!(joined, "the second worker never caused a rebalance");
    signal(&first, "-TERM");
    let counts = run.settled(Duration::from_secs(240)).await;
    drop((first, second));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("Completing the rebalance to hand over"),
        "the stop did not land during the revoke:\n{text}"
    );
    let dupes = duplicates(&counts);
    eprintln!("a worker stopped during a rebalance, 900 jobs at 4 s: {dupes} duplicate results");
    let handover: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("partitions") || l.contains("rebalance") || l.contains("top"))
        .collect();
    assert!(
        dupes * 100 <= 2 * run.ids.len(),
        "{dupes} duplicates of {}; the stopped worker's log:\n{}",
        run.ids.len(),
        handover.join("\n")
    );
}

/// A worker told to stop just as another joins: it keeps taking part in the
/// group while its jobs in flight finish (8 s each), so the rebalance does
/// not pass it by (librdkafka's mock broker goes on without a member that
/// has not rejoined within 5 s) and leave its final commit refused for a
/// generation it never saw, with all it finished redone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_draining_through_a_rebalance_hands_over_what_it_finished() {
    let run = Scenario::start(6, Duration::from_secs(8), 128, "", "drain", 600).await;
    let log = run.dir.path().join("first.log");
    let first = start_worker_logged(&run.config, &run.bootstrap, &log);
    let logged = |path: &std::path::Path, what: &str| {
        std::fs::read_to_string(path).is_ok_and(|l| l.contains(what))
    };
    let assigned = eventually(Duration::from_secs(20), || {
        logged(&log, "Partitions assigned")
    })
    .await;
    assert!(assigned, "the first worker never joined");
    // The second worker is told to start at once; the first is stopped as
    // the second is about to join, so the join lands in the first one's
    // drain, while its jobs have a few seconds left.
    let second_log = run.dir.path().join("second.log");
    let second = start_worker_logged(&run.config, &run.bootstrap, &second_log);
    let started = eventually(Duration::from_secs(20), || {
        logged(&second_log, "Worker started")
    })
    .await;
    assert!(started, "the second worker never started");
    signal(&first, "-TERM");
    let counts = run.settled(Duration::from_secs(240)).await;
    drop((first, second));
    let dupes = duplicates(&counts);
    eprintln!("a worker draining through a rebalance, 600 jobs at 8 s: {dupes} duplicate results");
    let text = std::fs::read_to_string(&log).unwrap();
    let drained = text.find("Draining").expect("the worker never drained");
    assert!(
        text[drained..].contains("Partitions revoked"),
        "the rebalance did not come during the drain:\n{text}"
    );
    assert!(
        dupes * 100 <= 2 * run.ids.len(),
        "{dupes} duplicates of {}; the stopped worker's log:\n{text}",
        run.ids.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_kills_while_providers_flap_lose_nothing() {
    let run = Scenario::start(6, Duration::from_millis(300), 512, "", "flap", 5000).await;
    let catalog = switchyard_loader::load_catalog(&path("pipelines/models.toml")).unwrap();
    let providers: Vec<String> = ["openai", "anthropic", "gemini"]
        .into_iter()
        .map(str::to_owned)
        .collect();

    let mut worker = run.worker();
    for round in 0..4 {
        // One provider down for a while (every one of its models answers 503).
        let down = &providers[round % providers.len()];
        for m in catalog.models().iter().filter(|m| &m.provider == down) {
            run.sim.set_outage(&m.api_model, Some(503));
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        signal(&worker, "-KILL");
        worker = run.worker();
        for m in catalog.models().iter().filter(|m| &m.provider == down) {
            run.sim.set_outage(&m.api_model, None);
        }
    }
    let counts = run.settled(Duration::from_secs(240)).await;
    drop(worker);
    eprintln!(
        "four kill -9 during 5,000 jobs with a provider down each time: {} duplicate results",
        duplicates(&counts)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_slots_stay_busy_keeps_its_place_in_the_group() {
    // Calls outlast max.poll.interval.ms: a worker that stops polling while
    // its two slots are busy is evicted, and its results come twice.
    let busy = "\"max.poll.interval.ms\" = \"7000\"";
    let run = Scenario::start(2, Duration::from_secs(9), 2, busy, "busy", 6).await;
    let worker = run.worker();
    let counts = run.settled(Duration::from_secs(120)).await;
    drop(worker);
    assert_eq!(duplicates(&counts), 0, "{counts:?}");
}

/// Bad messages of every kind, small and oversized.
fn poison() -> Vec<(&'static str, Vec<u8>)> {
    let mut out: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let codec = Codec::json();
    let ok = |id: &str| {
        Job::new(
            id,
            "acme/retail/support/ticket-triage",
            ChatRequest::from_user("hi"),
        )
    };
    for i in 0..100 {
        out.push(("not_json", format!("not json {i}").into_bytes()));
        out.push((
            "wrong_shape",
            format!(r#"{{"job_id": "bad-{i}", "project": 7}}"#).into_bytes(),
        ));
        out.push(("empty", Vec::new()));
        let mut j = ok(&format!("bad-path-{i}"));
        j.project = "acme/retail".into();
        out.push(("invalid_job", codec.encode(&j).unwrap()));
        let mut j = ok(&format!("bad-temp-{i}"));
        j.request.temperature = Some(9.0);
        out.push(("invalid_job", codec.encode(&j).unwrap()));
    }
    out
}

/// Oversized messages: an invalid one of 1,040,000 bytes; a job whose project
/// is 400 KB; a valid job with 950 KB of metadata (echoed into its result).
fn oversized() -> Vec<(Option<String>, Vec<u8>, &'static str)> {
    let codec = Codec::json();
    let mut out = Vec::new();
    out.push((None, vec![b'{'; 1_040_000], "dlq"));
    let mut j = Job::new(
        "huge-project",
        format!("acme/retail/support/{}", "p".repeat(400_000)),
        ChatRequest::from_user("hi"),
    );
    j.request.max_tokens = Some(10);
    out.push((Some(j.job_id.clone()), codec.encode(&j).unwrap(), "result"));
    let mut j = Job::new(
        "huge-metadata",
        "acme/retail/support/ticket-triage",
        ChatRequest::from_user("Classify: refund please"),
    );
    j.metadata = (0..95)
        .map(|i| (format!("k{i:03}"), "m".repeat(10_000)))
        .collect::<BTreeMap<_, _>>();
    out.push((Some(j.job_id.clone()), codec.encode(&j).unwrap(), "result"));
    let mut j = Job::new(
        "huge-metadata-value",
        "acme/retail/support/ticket-triage",
        ChatRequest::from_user("Classify: refund please"),
    );
    j.metadata.insert("note".into(), "n".repeat(900_000));
    out.push((Some(j.job_id.clone()), codec.encode(&j).unwrap(), "result"));
    out.push((None, vec![b'['; 1_000_500], "dlq"));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_storm_never_sticks_the_commit_point_nor_reruns_good_jobs() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let (_broker, bootstrap) = start_broker(8);
    let sim = sim(Duration::from_millis(50)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &sim, 512, "");
    let topics = Topics::default();
    let good = jobs("storm", 1000);
    let good_ids: Vec<String> = good.iter().map(|j| j.job_id.clone()).collect();
    let bad = poison();
    let big = oversized();
    // Interleaved: a bad message after every second good one, the oversized
    // ones spread through the run.
    let mut messages: Vec<(Option<String>, Vec<u8>)> = Vec::new();
    let mut bad_iter = bad.iter();
    let good_encoded = encoded(&good);
    for (i, g) in good_encoded.into_iter().enumerate() {
        messages.push(g);
        if i % 2 == 1
            && let Some((_, b)) = bad_iter.next()
        {
            messages.push((None, b.clone()));
        }
        if i % 200 == 100
            && let Some((k, b, _)) = big.get(i / 200)
        {
            messages.push((k.clone(), b.clone()));
        }
    }
    for (_, b) in bad_iter {
        messages.push((None, b.clone()));
    }
    let bad_count = bad.len() + big.iter().filter(|(_, _, w)| *w == "dlq").count();
    produce(&bootstrap, &topics.jobs.name, messages).await;

    let worker = start_worker(&config, &bootstrap, &[]);
    let mut expected: Vec<String> = good_ids.clone();
    expected.extend(
        big.iter()
            .filter(|(_, _, w)| *w == "result")
            .filter_map(|(k, _, _)| k.clone()),
    );
    let counts = until_answered(&bootstrap, &expected, Duration::from_secs(180)).await;
    assert!(
        until_committed(&bootstrap, Duration::from_secs(60)).await,
        "the commit point stuck behind a poison message"
    );
    assert_none_lost(&expected, &counts);
    assert_eq!(duplicates(&counts), 0);
    let letters = read_dead_letters(&bootstrap, &topics.dlq);
    assert_eq!(
        letters.len(),
        bad_count,
        "every bad message is dead-lettered once"
    );
    let cut: Vec<_> = letters
        .iter()
        .filter(|l| l.headers.contains_key("switchyard.dlq.original_size"))
        .collect();
    assert_eq!(
        cut.len(),
        2,
        "both oversized originals are cut, with their size"
    );
    assert!(
        cut.iter()
            .all(|l| l.headers["switchyard.dlq.original_sha256"].len() == 64)
    );

    // A restart runs nothing again: the commit point is past everything.
    signal(&worker, "-KILL");
    drop(worker);
    let again = start_worker(&config, &bootstrap, &[]);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = result_counts(&bootstrap, &topics.results);
    drop(again);
    assert_eq!(
        duplicates(&after),
        0,
        "jobs behind poison messages ran again after a restart"
    );
}
