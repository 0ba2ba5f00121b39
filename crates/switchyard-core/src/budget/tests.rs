use std::path::Path;

use chrono::TimeZone;
use proptest::prelude::*;

use super::*;
use crate::org::tests::catalog;
use crate::routing::Strategy;

/// `acme` ($100, reject from 90%) above `acme/bu` ($10, downgrade from 80%).
fn org() -> OrgTree {
    let text = r#"
[org]
name = "acme"
budget_usd_per_month = 100
[[node]]
path = "acme/bu"
budget_usd_per_month = 10
on_budget_exhausted = "downgrade"
budget_soft_limit = 0.8
[[node]]
path = "acme/bu/t"
[[node]]
path = "acme/bu/t/p"
"#;
    OrgTree::parse(Path::new("org.toml"), text, &catalog(), Strategy::Auto, 0.5).unwrap()
}

/// One project under a $100 budget acting from 90% with `action`.
fn single(action: &str) -> (OrgTree, Vec<String>) {
    let text = format!(
        "[org]\nname = \"acme\"\n[[node]]\npath = \"acme/bu\"\nbudget_usd_per_month = 100\non_budget_exhausted = \"{action}\"\n[[node]]\npath = \"acme/bu/t\"\n[[node]]\npath = \"acme/bu/t/p\"\n"
    );
    let org = OrgTree::parse(
        Path::new("org.toml"),
        &text,
        &catalog(),
        Strategy::Auto,
        0.5,
    )
    .unwrap();
    let nodes = org
        .policy("acme/bu/t/p", None)
        .unwrap()
        .budget_nodes
        .clone();
    (org, nodes)
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
}

fn nodes(org: &OrgTree) -> Vec<String> {
    org.policy("acme/bu/t/p", None)
        .unwrap()
        .budget_nodes
        .clone()
}

#[test]
fn reservations_count_until_settled() {
    let org = org();
    let nodes = nodes(&org);
    let mut l = BudgetLedger::new(&org, now());
    let r = l.reserve(&nodes, 7.0);
    assert_eq!(
        l.verdict(&nodes, None, now()),
        Ok(BudgetState::UNCONSTRAINED)
    );
    l.settle(r, 8.5, now());
    assert_eq!(l.spent("acme/bu"), 8.5);
    assert_eq!(l.reserved("acme/bu"), 0.0);
    assert_eq!(
        l.verdict(&nodes, None, now()),
        Ok(BudgetState::NearLimit { headroom_usd: 1.5 })
    );
    l.record("acme/bu/t/p", 2.0, now());
    assert!(matches!(
        l.verdict(&nodes, None, now()),
        Err(BudgetStop::Reject { node, reason }) if node == "acme/bu" && reason.contains("exhausted")
    ));
}

/// Every policy below its threshold, at it, below it with a job too large for
/// what is left, and with nothing left.
#[test]
fn each_policy_acts_from_its_threshold_and_on_jobs_that_do_not_fit() {
    for action in ["reject", "hold", "downgrade"] {
        let (org, nodes) = single(action);
        let mut l = BudgetLedger::new(&org, now());
        let acted = |v: &BudgetVerdict, headroom: f64| match (action, v) {
            ("reject", Err(BudgetStop::Reject { node, .. }))
            | ("hold", Err(BudgetStop::Hold { node, .. })) => node == "acme/bu",
            ("downgrade", Ok(BudgetState::NearLimit { headroom_usd })) => {
                (headroom_usd - headroom).abs() < 1e-9
            }
            _ => false,
        };
        let normal = Ok(BudgetState::UNCONSTRAINED);

        // Below the threshold: $89.50 of $100 spent, a small job fits.
        l.record("acme/bu/t/p", 89.5, now());
        assert_eq!(l.verdict(&nodes, None, now()), normal, "{action}");
        assert_eq!(l.verdict(&nodes, Some(5.0), now()), normal, "{action}");
        // Below the threshold, but the job's estimate is more than what is left.
        let v = l.verdict(&nodes, Some(11.0), now());
        assert!(acted(&v, 10.5), "{action}: {v:?}");
        if let Err(BudgetStop::Reject { reason, .. }) | Err(BudgetStop::Hold { reason, .. }) = &v {
            assert!(reason.contains("does not fit the $10.500000"), "{reason}");
        }

        // At the threshold (in flight counts): $90 of $100.
        let r = l.reserve(&nodes, 0.5);
        let v = l.verdict(&nodes, None, now());
        assert!(acted(&v, 10.0), "{action}: {v:?}");
        if let Err(BudgetStop::Reject { reason, .. }) | Err(BudgetStop::Hold { reason, .. }) = &v {
            assert!(reason.contains("90% spent"), "{reason}");
        }
        l.settle(r, 0.5, now());

        // Spent: downgrading has nothing left to work within.
        l.record("acme/bu/t/p", 10.0, now());
        let v = l.verdict(&nodes, None, now());
        match action {
            "hold" => assert!(matches!(v, Err(BudgetStop::Hold { .. })), "{v:?}"),
            _ => assert!(
                matches!(&v, Err(BudgetStop::Reject { reason, .. }) if reason.contains("exhausted")),
                "{action}: {v:?}"
            ),
        }
    }
}

#[test]
fn a_refusal_higher_up_wins_over_a_downgrade_below() {
    let org = org();
    let nodes = nodes(&org);
    let mut l = BudgetLedger::new(&org, now());
    // acme/bu ($10, downgrade from 80%) is at 85%: downgrade within $1.50.
    l.record("acme/bu/t/p", 8.5, now());
    assert_eq!(
        l.verdict(&nodes, None, now()),
        Ok(BudgetState::NearLimit { headroom_usd: 1.5 })
    );
    // acme ($100, reject from 90%) is at 91% through another business unit.
    l.record("acme/other/t/p", 82.5, now());
    assert!(matches!(
        l.verdict(&nodes, None, now()),
        Err(BudgetStop::Reject { node, .. }) if node == "acme"
    ));
}

#[test]
fn a_new_month_starts_from_zero() {
    let org = org();
    let nodes = nodes(&org);
    let mut l = BudgetLedger::new(&org, now());
    l.record("acme/bu/t/p", 50.0, now());
    let next = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    assert!(matches!(
        l.verdict(&nodes, None, next),
        Ok(BudgetState::Normal { .. })
    ));
    assert_eq!(l.spent("acme/bu"), 0.0);
}

proptest! {
    /// Whatever the sequence of jobs, reservations and settlements, a job the
    /// ledger admits (with its estimate) never takes a node past its limit.
    #[test]
    fn admitted_work_never_overshoots(costs in proptest::collection::vec(0.01f64..3.0, 1..60)) {
        let org = org();
        let nodes = nodes(&org);
        let mut l = BudgetLedger::new(&org, now());
        let mut open = Vec::new();
        for (i, c) in costs.iter().enumerate() {
            if let Ok(state) = l.verdict(&nodes, Some(*c), now()) {
                // A downgrade routes within the headroom; a job that fits a normal budget is admitted.
                let fits = match state { BudgetState::Normal { .. } => true, BudgetState::NearLimit { headroom_usd } => *c <= headroom_usd };
                if fits {
                    open.push((l.reserve(&nodes, *c), *c));
                }
            }
            if i % 3 == 2 && let Some((r, c)) = open.pop() {
                l.settle(r, c, now());
            }
            let committed = l.spent("acme/bu") + l.reserved("acme/bu");
            prop_assert!(committed <= 10.0 + 1e-9, "committed {committed}");
        }
    }
}

#[test]
fn checked_reservations_never_pass_together_on_the_same_headroom() {
    for action in ["reject", "hold", "downgrade"] {
        let (org, nodes) = single(action);
        let mut ledger = BudgetLedger::new(&org, now());
        // Jobs of $30 against $100: three fit, the fourth finds the
        // headroom taken by the others' reservations (none settled yet).
        let passed = (0..4)
            .filter(|_| ledger.reserve_checked(&nodes, 30.0, now()).is_ok())
            .count();
        assert_eq!(passed, 3, "{action}");
        assert!(ledger.reserved(&nodes[0]) <= 100.0, "{action}");
        let refused = ledger.reserve_checked(&nodes, 30.0, now()).unwrap_err();
        match action {
            "hold" => assert!(matches!(refused, BudgetStop::Hold { .. })),
            _ => assert!(matches!(refused, BudgetStop::Reject { .. }), "{action}"),
        }
    }
}

#[test]
fn a_late_event_from_last_month_changes_neither_month_wrongly() {
    let org = org();
    let nodes = nodes(&org);
    let dec = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
    let nov_last = Utc.with_ymd_and_hms(2026, 11, 30, 23, 59, 59).unwrap();
    let mut l = BudgetLedger::new(&org, dec);
    l.record("acme/bu/t/p", 5.0, dec);
    // An event finished at 23:59:59 and read at 00:00:00 (or published late).
    l.record("acme/bu/t/p", 3.0, nov_last);
    assert_eq!(l.spent("acme/bu"), 5.0, "December keeps its own spend");
    assert_eq!(
        l.spent_in("acme/bu", (2026, 11)),
        3.0,
        "November gets the late event"
    );
    assert!(matches!(
        l.verdict(&nodes, None, dec),
        Ok(BudgetState::Normal { .. })
    ));
    // And a verdict does not turn the month back.
    l.record("acme/bu/t/p", 1.0, nov_last);
    assert_eq!(l.spent("acme/bu"), 5.0);
}

#[test]
fn months_roll_over_in_the_orgs_time_zone() {
    let text = "[org]\nname = \"acme\"\ntime_zone = \"America/New_York\"\nbudget_usd_per_month = 10\n[[node]]\npath = \"acme/bu\"\n[[node]]\npath = \"acme/bu/t\"\n[[node]]\npath = \"acme/bu/t/p\"\n";
    let org = OrgTree::parse(Path::new("org.toml"), text, &catalog(), Strategy::Auto, 0.5).unwrap();
    // 03:00 UTC on 1 December is still 30 November in New York.
    let at = Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap();
    let l = BudgetLedger::new(&org, at);
    assert_eq!(l.month_of(at), (2026, 11));
}

#[test]
fn other_workers_spend_and_reservations_count_and_stale_reservations_expire() {
    let org = org();
    let nodes = nodes(&org);
    let mut a = BudgetLedger::new(&org, now());
    let mut b = BudgetLedger::new(&org, now());
    let r = a.reserve(&nodes, 3.0);
    a.settle(r, 2.5, now());
    let _in_flight = a.reserve(&nodes, 4.0);
    for s in a.snapshots("worker-a", now()) {
        b.observe("worker-b", s);
    }
    let state = b.node_state("acme/bu", now()).unwrap();
    assert_eq!(state.spent_usd, 2.5);
    assert_eq!(state.in_flight_usd, 4.0);
    assert_eq!(state.headroom_usd, 10.0 - 6.5);
    // A worker that stopped publishing has nothing in flight any more; its
    // settled spend stays.
    let later = now() + chrono::Duration::seconds(30);
    let state = b.node_state("acme/bu", later).unwrap();
    assert_eq!(state.in_flight_usd, 0.0);
    assert_eq!(state.spent_usd, 2.5);
    // A worker's own snapshots are not counted twice.
    for s in a.snapshots("worker-a", now()) {
        a.observe("worker-a", s);
    }
    assert_eq!(a.node_state("acme/bu", now()).unwrap().spent_usd, 2.5);
}

#[test]
fn a_restarted_worker_starts_from_the_snapshots() {
    let org = org();
    let nodes = nodes(&org);
    let mut before = BudgetLedger::new(&org, now());
    let r = before.reserve(&nodes, 9.0);
    before.settle(r, 8.5, now());
    let published = before.snapshots("old-instance", now());
    // The restarted process is a new instance that reads the topic.
    let mut after = BudgetLedger::new(&org, now());
    for s in published {
        after.observe("new-instance", s);
    }
    assert_eq!(after.spent("acme/bu"), 8.5);
    assert_eq!(
        after.verdict(&nodes, None, now()),
        Ok(BudgetState::NearLimit { headroom_usd: 1.5 })
    );
}

#[test]
fn quotas_count_every_worker_and_roll_over_with_their_period() {
    let text = "[org]\nname = \"acme\"\n[[node]]\npath = \"acme/bu\"\njobs_per_minute = 3\ntokens_per_day = 1000\n[[node]]\npath = \"acme/bu/t\"\n[[node]]\npath = \"acme/bu/t/p\"\n";
    let org = OrgTree::parse(Path::new("org.toml"), text, &catalog(), Strategy::Auto, 0.5).unwrap();
    let nodes: Vec<String> = vec!["acme/bu".into()];
    let t0 = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 5).unwrap();
    let mut a = BudgetLedger::new(&org, t0);
    let mut b = BudgetLedger::new(&org, t0);
    a.count(&nodes, 100, t0);
    a.count(&nodes, 100, t0);
    for s in a.snapshots("a", t0) {
        b.observe("b", s);
    }
    b.count(&nodes, 100, t0);
    let stop = b.quota_verdict(&nodes, 100, t0).unwrap_err();
    assert_eq!(stop.quota, "jobs_per_minute");
    assert_eq!(stop.code(), "quota_jobs_per_minute");
    assert_eq!(
        stop.until,
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 1, 0).unwrap()
    );
    // The next minute has room; the day's tokens still count.
    let t1 = t0 + chrono::Duration::seconds(60);
    assert!(b.quota_verdict(&nodes, 100, t1).is_ok());
    let stop = b.quota_verdict(&nodes, 800, t1).unwrap_err();
    assert_eq!(stop.quota, "tokens_per_day");
    assert_eq!(
        stop.until,
        Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap()
    );
}

#[test]
fn a_worker_keeps_what_the_others_cannot_see_within_its_share_of_the_headroom() {
    let org = org();
    let nodes = nodes(&org);
    let mut a = BudgetLedger::new(&org, now());
    let mut b = BudgetLedger::new(&org, now());
    // Both are live and have read their own first snapshot back.
    for s in a.snapshots("a", now()) {
        b.observe("b", s.clone());
        a.observe("a", s);
    }
    for s in b.snapshots("b", now()) {
        a.observe("a", s.clone());
        b.observe("b", s);
    }
    // `acme/bu` has $10 and two workers: `a` may have $5 unseen at most. The
    // first job always passes (nothing unseen yet), the next ones while their
    // sum stays within $5.
    assert_eq!(a.budget_share_exceeded(&nodes, 4.0, now()), None);
    let _r1 = a.reserve(&nodes, 4.0);
    assert_eq!(a.budget_share_exceeded(&nodes, 1.0, now()), None);
    let _r2 = a.reserve(&nodes, 1.0);
    let why = a.budget_share_exceeded(&nodes, 1.0, now()).unwrap();
    assert!(why.contains("shared with 1 other worker"), "{why}");
    // Once its figures are back from the topic (so `b` sees them too), the
    // whole headroom counts again.
    for s in a.snapshots("a", now()) {
        b.observe("b", s.clone());
        a.observe("a", s);
    }
    assert_eq!(a.budget_share_exceeded(&nodes, 1.0, now()), None);
    assert_eq!(b.node_state("acme/bu", now()).unwrap().in_flight_usd, 5.0);
    // Alone, a worker has the whole headroom; and when its own snapshots stop
    // coming back (the topic is unreachable) the share is not enforced.
    let mut alone = BudgetLedger::new(&org, now());
    let _r = alone.reserve(&nodes, 8.0);
    assert_eq!(alone.budget_share_exceeded(&nodes, 1.0, now()), None);
    let later = now() + chrono::Duration::seconds(30);
    assert_eq!(a.budget_share_exceeded(&nodes, 9.0, later), None);
}

#[test]
fn quota_shares_hold_the_unseen_jobs_of_one_worker() {
    let text = "[org]\nname = \"acme\"\n[[node]]\npath = \"acme/bu\"\njobs_per_minute = 10\n[[node]]\npath = \"acme/bu/t\"\n[[node]]\npath = \"acme/bu/t/p\"\n";
    let org = OrgTree::parse(Path::new("org.toml"), text, &catalog(), Strategy::Auto, 0.5).unwrap();
    let nodes: Vec<String> = vec!["acme/bu".into()];
    let t0 = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 5).unwrap();
    let mut a = BudgetLedger::new(&org, t0);
    let mut b = BudgetLedger::new(&org, t0);
    for s in b.snapshots("b", t0) {
        a.observe("a", s);
    }
    for s in a.snapshots("a", t0) {
        a.observe("a", s);
    }
    let mut admitted = 0;
    while a.quota_verdict(&nodes, 10, t0).is_ok()
        && a.quota_share_exceeded(&nodes, 10, t0).is_none()
    {
        a.count(&nodes, 10, t0);
        admitted += 1;
    }
    assert_eq!(
        admitted, 5,
        "half of 10 jobs a minute while the other worker cannot see them"
    );
    for s in a.snapshots("a", t0) {
        b.observe("b", s.clone());
        a.observe("a", s);
    }
    assert!(a.quota_share_exceeded(&nodes, 10, t0).is_none());
    assert_eq!(b.quota_use("acme/bu", t0).jobs_minute, 5);
}
