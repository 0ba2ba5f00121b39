#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::job::ChatRequest;
use crate::vocab::{Strategy, TaskCategory};

fn t(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
}

fn routing() -> RoutingSummary {
    RoutingSummary {
        strategy: Strategy::Auto,
        category: TaskCategory::Chat,
        complexity: 0.2,
        required_quality: 0.6,
        chosen_model: "gpt-5-nano".into(),
        reason: "test".into(),
    }
}

fn job(id: &str, at: i64, batch: Option<&str>) -> DeferredJob {
    let mut j = Job::new(id, "a/b/c/d", ChatRequest::from_user("hello"));
    j.batch_id = batch.map(str::to_owned);
    DeferredJob::new(
        j,
        routing(),
        vec!["dep-a".into(), "dep-b".into()],
        0.01,
        t(at),
        t(at + 48 * 3600),
        4096,
    )
}

fn batch(key: &str, jobs: &[&str], state: ProviderBatchState) -> ProviderBatchRecord {
    ProviderBatchRecord {
        key: key.into(),
        deployment: "dep-a".into(),
        provider: "openai".into(),
        model: "gpt-5-nano".into(),
        batch_id: None,
        jobs: jobs.iter().map(|s| (*s).to_owned()).collect(),
        released: Vec::new(),
        state,
        provider_batch_id: None,
        provider_status: None,
        counts: LineCounts::default(),
        created_at: t(0),
        attempt_at: t(0),
        updated_at: t(0),
        cancel_requested: false,
    }
}

fn settings() -> PlanSettings {
    PlanSettings {
        max_wait: Duration::from_secs(600),
        completion_window: Duration::from_secs(24 * 3600),
        margin: Duration::from_secs(3600),
        max_requests: 3,
        max_bytes: 1 << 20,
    }
}

#[test]
fn records_round_trip_as_json_with_their_kind() {
    let r = DeferredRecord::Job(job("j1", 0, None));
    let text = serde_json::to_string(&r).unwrap();
    assert!(text.starts_with(r#"{"kind":"job""#), "{text}");
    assert_eq!(serde_json::from_str::<DeferredRecord>(&text).unwrap(), r);
    let b = DeferredRecord::Batch(batch("sy01", &["j1"], ProviderBatchState::Intent));
    let text = serde_json::to_string(&b).unwrap();
    assert!(text.contains(r#""kind":"batch""#) && text.contains(r#""state":"intent""#));
    assert_eq!(serde_json::from_str::<DeferredRecord>(&text).unwrap(), b);
    assert_eq!(b.key(), "sy01");
}

#[test]
fn custom_ids_name_the_key_and_the_request() {
    let b = batch("sy00ff", &["a", "b"], ProviderBatchState::Intent);
    assert_eq!(b.custom_id(1), "sy00ff-1");
    assert_eq!(b.index_of("sy00ff-1"), Some(1));
    assert_eq!(b.index_of("sy00ff-2"), None, "out of range");
    assert_eq!(b.index_of("sy00fe-1"), None, "another batch");
    let key = batch_key(u128::MAX);
    assert_eq!(key.len(), 26);
    assert!(key.starts_with("sy") && key.bytes().skip(2).all(|b| b.is_ascii_hexdigit()));
    assert!(custom_id(&key, 99_999).len() <= 64);
}

#[test]
fn the_book_follows_jobs_into_batches_and_out_when_collected() {
    let mut book = Book::new();
    book.apply("j1", Some(DeferredRecord::Job(job("j1", 0, None))), 0);
    book.apply("j2", Some(DeferredRecord::Job(job("j2", 1, None))), 1);
    assert_eq!(book.waiting().count(), 2);
    let intent = batch("k1", &["j1", "j2"], ProviderBatchState::Intent);
    book.apply("k1", Some(DeferredRecord::Batch(intent.clone())), 2);
    assert_eq!(book.waiting().count(), 0);
    assert_eq!(book.jobs_of("k1").len(), 2);
    assert_eq!(book.open_batches().count(), 1);

    // j2's line failed: it is handed on (written again), which frees it.
    let again = job("j2", 1, None).after_failure(
        "dep-a",
        crate::result::Attempt::skipped(
            crate::result::AttemptTarget {
                deployment: "dep-a",
                provider: "openai",
                model: "gpt-5-nano",
            },
            "expired".into(),
        ),
    );
    assert_eq!(again.next_deployment(&|_| true), Some("dep-b"));
    book.apply("j2", Some(DeferredRecord::Job(again)), 3);
    assert_eq!(book.jobs_of("k1").len(), 1);
    let waiting: Vec<&str> = book
        .waiting()
        .map(|j| j.record.job.job_id.as_str())
        .collect();
    assert_eq!(waiting, ["j2"]);

    // Collected: j1 is done, j2 (handed on, so released) is not.
    let mut done = intent;
    done.state = ProviderBatchState::Collected;
    done.released = vec!["j2".into()];
    book.apply("k1", Some(DeferredRecord::Batch(done)), 4);
    assert!(book.job("j1").is_none());
    assert!(book.job("j2").is_some());
    assert_eq!(book.open_batches().count(), 0);
    assert_eq!(book.batch("k1").unwrap().requests, 2);
    book.apply("j2", None, 5);
    assert!(book.is_idle());
}

#[test]
fn a_replayed_hand_off_neither_frees_a_batched_job_nor_undoes_a_hand_on() {
    let mut book = Book::new();
    book.apply("j1", Some(DeferredRecord::Job(job("j1", 0, None))), 0);
    let open = batch("k1", &["j1"], ProviderBatchState::Submitted);
    book.apply("k1", Some(DeferredRecord::Batch(open)), 1);
    // The jobs topic delivered the job again: admission handed it off twice.
    book.apply("j1", Some(DeferredRecord::Job(job("j1", 0, None))), 2);
    assert_eq!(book.jobs_of("k1").len(), 1, "the replay freed the job");
    assert_eq!(book.waiting().count(), 0);

    // Handed on by the gatherer: freed, with its attempt; a late replay of
    // the original hand-off does not undo that.
    let target = crate::result::AttemptTarget {
        deployment: "dep-a",
        provider: "openai",
        model: "gpt-5-nano",
    };
    let attempt = crate::result::Attempt::skipped(target, "expired".into());
    let again = job("j1", 0, None).after_failure("dep-a", attempt);
    book.apply("j1", Some(DeferredRecord::Job(again)), 3);
    assert_eq!(book.waiting().count(), 1);
    book.apply("j1", Some(DeferredRecord::Job(job("j1", 0, None))), 4);
    let waiting = book.job("j1").unwrap();
    assert_eq!((waiting.record.handed_on, waiting.offset), (1, 3));
}

#[test]
fn a_compacted_log_folds_like_the_whole_one() {
    // j1 handed on after k1 listed it, then listed by k2. Compaction dropped
    // j1's first record; k1's record (before j1's latest) no longer claims it.
    let mut book = Book::new();
    book.apply(
        "k1",
        Some(DeferredRecord::Batch(batch(
            "k1",
            &["j1"],
            ProviderBatchState::Submitted,
        ))),
        2,
    );
    book.apply("j1", Some(DeferredRecord::Job(job("j1", 0, None))), 3);
    assert_eq!(book.waiting().count(), 1);
    assert!(book.jobs_of("k1").is_empty());
    book.apply(
        "k2",
        Some(DeferredRecord::Batch(batch(
            "k2",
            &["j1"],
            ProviderBatchState::Intent,
        ))),
        4,
    );
    assert_eq!(book.jobs_of("k2").len(), 1);
    assert_eq!(book.waiting().count(), 0);
}

#[test]
fn plans_group_by_deployment_and_batch_and_cut_by_count_age_and_deadline() {
    let mut book = Book::new();
    for (i, b) in [(0, None), (1, None), (2, None), (3, None), (4, Some("bx"))] {
        let id = format!("j{i}");
        book.apply(&id, Some(DeferredRecord::Job(job(&id, i, b))), i);
    }
    let s = settings();
    let usable = |_: &str| true;
    let none = |_: &str| false;
    // At t=10 s: only the full group of three goes; the rest gathers.
    let steps = plan(&book, t(10), &s, &usable, &none);
    assert_eq!(
        steps,
        vec![Step::Submit {
            deployment: "dep-a".into(),
            batch_id: None,
            jobs: vec!["j0".into(), "j1".into(), "j2".into()],
        }]
    );
    // After max_wait, every group goes, one provider batch per Switchyard batch.
    let steps = plan(&book, t(700), &s, &usable, &none);
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert!(steps.contains(&Step::Submit {
        deployment: "dep-a".into(),
        batch_id: Some("bx".into()),
        jobs: vec!["j4".into()],
    }));
    // A canceled batch's waiting jobs end canceled.
    let steps = plan(&book, t(10), &s, &usable, &|b: &str| b == "bx");
    assert!(steps.contains(&Step::Cancel {
        job_id: "j4".into()
    }));
    // A job due within the window plus margin goes at once; one due within
    // the window alone goes live; one with no usable deployment goes live.
    let mut book = Book::new();
    let mut urgent = job("u", 0, None);
    urgent.due = t(25 * 3600);
    book.apply("u", Some(DeferredRecord::Job(urgent)), 0);
    assert!(matches!(
        plan(&book, t(10), &s, &usable, &none)[..],
        [Step::Submit { .. }]
    ));
    assert!(matches!(
        plan(&book, t(2 * 3600), &s, &usable, &none)[..],
        [Step::Live { .. }]
    ));
    let steps = plan(&book, t(10), &s, &|_: &str| false, &none);
    let [Step::Live { why, .. }] = &steps[..] else {
        panic!("{steps:?}")
    };
    assert!(why.contains("no deployment"), "{why}");
}

#[test]
fn plans_cut_by_size() {
    let mut book = Book::new();
    for i in 0..3 {
        let id = format!("j{i}");
        let mut j = job(&id, i, None);
        j.request_bytes = 600 << 10;
        book.apply(&id, Some(DeferredRecord::Job(j)), i);
    }
    let s = PlanSettings {
        max_requests: 100,
        ..settings()
    };
    let steps = plan(&book, t(700), &s, &|_: &str| true, &|_: &str| false);
    let sizes: Vec<usize> = steps
        .iter()
        .map(|s| match s {
            Step::Submit { jobs, .. } => jobs.len(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(sizes, [1, 1, 1]);
}

#[test]
fn a_job_released_after_a_hold_on_its_live_run_counts_its_earlier_cost_once() {
    let target = crate::result::AttemptTarget {
        deployment: "dep-a",
        provider: "openai",
        model: "gpt-5-nano",
    };
    let mut attempt = crate::result::Attempt::skipped(target, "errored".into());
    attempt.cost_usd = 0.25;
    let failed = job("j1", 0, None).after_failure("dep-a", attempt);
    assert_eq!(failed.unsettled_cost_usd(), 0.25);
    let decision = crate::access::approval::Decision {
        id: "appr-j1".into(),
        node: "a/b/c/d".into(),
        approve: true,
        reason: String::new(),
        override_budget: true,
        key_id: "k".into(),
        principal: "bob".into(),
        at: t(10),
        covers: None,
        proof: None,
        sig: String::new(),
    };
    let back = failed.clone().released(decision.clone());
    // Its live run settled the earlier cost; the result still shows it.
    assert_eq!(back.unsettled_cost_usd(), 0.0);
    assert_eq!(back.earlier_cost_usd(), 0.25);
    assert_eq!(back.released_by.as_deref(), Some(&decision));
    // Written again, it is no replay of the record it came from.
    assert_eq!(back.handed_on, failed.handed_on + 1);
    let json = serde_json::to_string(&DeferredRecord::Job(back.clone())).unwrap();
    assert_eq!(
        serde_json::from_str::<DeferredRecord>(&json).unwrap(),
        DeferredRecord::Job(back)
    );
}
