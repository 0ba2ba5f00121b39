//! Unit tests of approvals: decisions, covers and the approval book.

use super::*;
use crate::access::{Grant, new_key};

fn now() -> DateTime<Utc> {
    "2026-12-06T12:00:00Z".parse().unwrap()
}

fn key(
    seed: u8,
    principal: &str,
    roles: &[(Role, &str)],
) -> (crate::access::KeyRecord, PrivateKey) {
    let grants = roles
        .iter()
        .map(|(role, scope)| Grant {
            role: *role,
            scope: (*scope).into(),
        })
        .collect();
    new_key(
        [seed; 32],
        principal,
        grants,
        now() - chrono::Duration::days(1),
    )
}

fn request(id: &str, job: &str, worst: f64, batch: Option<f64>) -> ApprovalRecord {
    ApprovalRecord::Request(ApprovalRequest {
        id: id.into(),
        job_id: job.into(),
        node: "acme/bu/t/gated".into(),
        submitted_by: Some("erin".into()),
        kind: HoldKind::Threshold,
        reason: "held".into(),
        worst_case_usd: worst,
        batch_worst_case_usd: batch,
        created_at: now(),
        expires_at: now() + chrono::Duration::hours(1),
        held: None,
    })
}

/// A held job of batch `b1`, its message `value`, held at `at`.
fn held(job: &str, value: &str, at: DateTime<Utc>) -> ApprovalRequest {
    let ApprovalRecord::Request(mut r) = request("appr-b1", job, 0.01, None) else {
        unreachable!()
    };
    r.created_at = at;
    r.held = Some(HeldCopy::of(value.as_bytes(), None, None, HeldFrom::Jobs));
    r
}

fn ids(covered: Option<(Tree, Vec<&ApprovalRequest>)>) -> Vec<String> {
    covered.map_or_else(Vec::new, |(_, rs)| {
        rs.iter().map(|r| r.job_id.clone()).collect()
    })
}

/// An approval releases the jobs its approver saw: not one held under the
/// same id afterwards, and nothing when the set cannot be rebuilt. Once
/// some of its jobs are settled, the rest are still covered.
#[test]
fn an_approval_covers_the_jobs_its_approver_saw_and_no_other() {
    let (carol, carol_key) = key(1, "carol", &[(Role::Approver, "acme")]);
    let mut keys = Keyring::default();
    keys.add(carol);
    let mut book = ApprovalBook::default();
    let early = now() - chrono::Duration::minutes(5);
    for (job, value) in [("b1-0", "zero"), ("b1-1", "one")] {
        book.apply(ApprovalRecord::Request(held(job, value, early)));
    }
    let seen: Vec<Hash> = book
        .requests_of("appr-b1")
        .iter()
        .filter_map(|r| r.leaf())
        .collect();
    let plain = Decision::signed(
        &carol_key,
        "carol",
        "appr-b1",
        "acme/bu/t/gated",
        true,
        "ok",
        false,
        now(),
    );
    assert!(
        book.covered(&plain).is_none(),
        "an approval without a cover releases nothing"
    );
    let decision = plain.covering(&carol_key, Tree::new(seen).cover());
    assert!(decision.authentic(&keys).is_ok());
    assert_eq!(ids(book.covered(&decision)), ["b1-0", "b1-1"]);

    // A job held after the decision stays out.
    let late = held("b1-2", "two", now() + chrono::Duration::seconds(1));
    book.apply(ApprovalRecord::Request(late));
    assert_eq!(ids(book.covered(&decision)), ["b1-0", "b1-1"]);

    // One released (and read back from its settled record): the other
    // is still covered, and its proof checks.
    let r0 = held("b1-0", "zero", early);
    let cover = decision.covers.clone().unwrap();
    book.apply(ApprovalRecord::Settled(Settled {
        id: "appr-b1".into(),
        job_id: "b1-0".into(),
        node: r0.node.clone(),
        outcome: Settlement::Released,
        at: now(),
        released_in: Some(ReleasedIn::of(&cover, &r0.leaf().unwrap())),
    }));
    // A copy of the released job held again is not released twice.
    book.apply(ApprovalRecord::Request(held("b1-0", "zero", early)));
    let (tree, rest) = book.covered(&decision).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].job_id, "b1-1");
    let mut copy = decision.clone();
    copy.proof = tree.proof(&rest[0].leaf().unwrap());
    assert!(copy.covers_job("b1-1", b"one"));
    assert!(!copy.covers_job("b1-1", b"one, changed"));
    assert!(!copy.covers_job("b1-2", b"two"));
    assert!(copy.authentic(&keys).is_ok(), "the proof is not signed");

    // The set cannot be rebuilt (a covered job expired meanwhile): nothing.
    book.apply(ApprovalRecord::Settled(Settled {
        id: "appr-b1".into(),
        job_id: "b1-1".into(),
        node: r0.node,
        outcome: Settlement::Expired,
        at: now(),
        released_in: None,
    }));
    assert!(book.covered(&decision).is_none());
}

#[test]
fn the_list_shows_a_held_batch_at_its_whole_worst_case_with_its_jobs() {
    let mut book = ApprovalBook::default();
    for n in 0..3 {
        book.apply(request("appr-b1", &format!("b1-{n}"), 0.004, Some(0.016)));
    }
    book.apply(request("appr-j9", "j9", 0.02, None));
    let list = book.summary();
    assert_eq!(list.len(), 2);
    // Three of the batch's four jobs are held so far: the batch's figure.
    assert_eq!((list[0].id.as_str(), list[0].jobs), ("appr-b1", 3));
    assert_eq!(list[0].worst_case_usd, 0.016);
    assert_eq!((list[1].id.as_str(), list[1].jobs), ("appr-j9", 1));
    assert_eq!(list[1].worst_case_usd, 0.02);
    // A request written before batches were priced reads, without one.
    let old = r#"{"type":"request","id":"appr-x","job_id":"x","node":"a/b/c/d","submitted_by":null,"kind":"threshold","reason":"r","worst_case_usd":0.5,"created_at":"2026-12-06T12:00:00Z","expires_at":"2026-12-06T13:00:00Z"}"#;
    let ApprovalRecord::Request(r) = serde_json::from_str(old).unwrap() else {
        panic!("not a request");
    };
    assert_eq!(r.batch_worst_case_usd, None);
}

#[test]
fn only_an_approver_who_did_not_submit_the_work_decides_and_overrides_need_an_admin() {
    let (carol, carol_key) = key(1, "carol", &[(Role::Approver, "acme/finance")]);
    let (dave, dave_key) = key(
        2,
        "dave",
        &[(Role::Approver, "acme"), (Role::BuAdmin, "acme/finance")],
    );
    let (erin, erin_key) = key(3, "erin", &[(Role::Submitter, "acme")]);
    // A second key of carol's: the same principal.
    let (carol2, carol2_key) = key(4, "carol", &[(Role::Approver, "acme")]);
    let mut keys = Keyring::default();
    for k in [carol, dave, erin, carol2] {
        keys.add(k);
    }
    let node = "acme/finance/fpa/pricing";
    let decide = |k: &PrivateKey, who: &str, approve: bool, over: bool| {
        Decision::signed(k, who, "appr-b1", node, approve, "ok", over, now())
    };
    assert!(
        decide(&carol_key, "carol", true, false)
            .check(&keys, Some("erin"), HoldKind::Threshold)
            .is_ok()
    );
    assert!(
        decide(&carol_key, "carol", false, false)
            .check(&keys, Some("erin"), HoldKind::Budget)
            .is_ok(),
        "anyone with approver may reject"
    );
    // Her own work, with either of her keys.
    for (k, who) in [(&carol_key, "carol"), (&carol2_key, "carol")] {
        assert!(matches!(
            decide(k, who, true, false).check(&keys, Some("carol"), HoldKind::Threshold),
            Err(DecisionError::OwnWork(_))
        ));
    }
    // A submitter is no approver.
    assert!(matches!(
        decide(&erin_key, "erin", true, false).check(&keys, None, HoldKind::Threshold),
        Err(DecisionError::Role(_))
    ));
    // A budget override needs an admin role too, and must say so.
    assert!(matches!(
        decide(&carol_key, "carol", true, true).check(&keys, Some("erin"), HoldKind::Budget),
        Err(DecisionError::Role(_))
    ));
    assert!(
        decide(&dave_key, "dave", true, true)
            .check(&keys, Some("erin"), HoldKind::Budget)
            .is_ok()
    );
    assert!(
        decide(&dave_key, "dave", true, false)
            .check(&keys, Some("erin"), HoldKind::Budget)
            .is_err()
    );
    // A forged or altered decision.
    let mut altered = decide(&carol_key, "carol", false, false);
    altered.approve = true;
    assert!(matches!(
        altered.check(&keys, None, HoldKind::Threshold),
        Err(DecisionError::Signature(_))
    ));
    let mut borrowed = decide(&carol_key, "carol", true, false);
    borrowed.principal = "dave".into();
    assert!(borrowed.check(&keys, None, HoldKind::Threshold).is_err());

    // Once carol's key is revoked, a decision she dates before the
    // revocation does not count either.
    let backdated = Decision::signed(
        &carol_key,
        "carol",
        "appr-b1",
        node,
        true,
        "ok",
        false,
        now() - chrono::Duration::hours(1),
    );
    assert!(
        backdated
            .check(&keys, Some("erin"), HoldKind::Threshold)
            .is_ok()
    );
    let carol_id = keys.holder(&carol_key, now()).unwrap().key_id.clone();
    keys.revoke(&carol_id, now());
    assert!(matches!(
        backdated.check(&keys, Some("erin"), HoldKind::Threshold),
        Err(DecisionError::Signature(_))
    ));
}
