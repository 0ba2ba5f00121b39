//! `switchyard demo` end to end, as a user runs it: at least 2,000 jobs from the
//! shipped corpus through the embedded broker, worker and usage sink, with a
//! provider outage part-way. Its JSON report must show every job done, every
//! malformed message dead-lettered, failovers absorbing the outage, routing well
//! under the flagship's cost, and the sink's Parquet files holding every billed
//! attempt.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

#[test]
fn the_demo_completes_every_job_through_an_outage_for_a_fraction_of_the_flagship_cost() {
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("usage");
    // Run from an empty directory: the demo's files are compiled in.
    let out = switchyard()
        .current_dir(dir.path())
        .args(["demo", "--jobs", "2000", "--format", "json"])
        .env("SWITCHYARD__ANALYTICS__PARQUET_DIR", &parquet)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    assert!(
        stderr.contains("Outage: provider"),
        "no provider outage: {stderr}"
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = |k: &str| s["by_status"][k].as_u64().unwrap_or(0);

    // One result per job, plus the job sent on purpose to an unknown project.
    assert_eq!(s["results"], 2001, "{s}");
    assert_eq!(status("succeeded"), 2000, "{s}");
    assert_eq!(status("rejected"), 1, "{s}");
    assert_eq!(s["dead_lettered"], s["malformed_sent"], "{s}");
    assert_eq!(s["malformed_sent"], 5);
    assert!(
        s["failovers"].as_u64().unwrap() > 0,
        "the outage moved no traffic: {s}"
    );

    // Routed by task, the workload costs a fraction of the flagship baseline
    // (about a third with each workload's strategy), with auto at about half of
    // it at the default quality target: 46% without the outage, keeping 0.96 of
    // the flagship's quality (`demo::tests`), 50% with it, since the outage moves
    // traffic to dearer fallbacks.
    let cost = s["cost_usd"].as_f64().unwrap();
    let baseline = s["baseline_cost_usd"].as_f64().unwrap();
    assert!(cost > 0.0 && cost < 0.4 * baseline, "{cost} vs {baseline}");
    let auto = s["by_strategy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["strategy"] == "auto")
        .unwrap();
    assert!(
        auto["cost_usd"].as_f64().unwrap() <= 0.55 * auto["baseline_cost_usd"].as_f64().unwrap(),
        "{auto}"
    );
    // Quality against the corpus labels holds up while a whole provider is down
    // (the evaluation test measures it on held-out prompts without outages).
    assert!(s["quality_need_met_pct"].as_f64().unwrap() >= 90.0, "{s}");
    assert!(s["model_mix"].as_array().unwrap().len() >= 4, "{s}");
    assert!(s["p50_ms"].as_u64().unwrap() <= s["p95_ms"].as_u64().unwrap());

    // The sink wrote every billed attempt to Parquet where the report says.
    assert_eq!(s["parquet_dir"], parquet.display().to_string());
    assert!(s["parquet_attempts"].as_u64().unwrap() >= 2000, "{s}");
    // The deferred pass: the same jobs again, patient, mostly through the
    // providers' batch APIs, for less than the routed live run.
    let d = &s["deferred"];
    let jobs = d["jobs"].as_u64().unwrap();
    assert!(d["succeeded"].as_u64().unwrap() >= jobs * 95 / 100, "{d}");
    assert!(d["served_deferred"].as_u64().unwrap() >= jobs / 2, "{d}");
    assert!(
        d["cost_usd"].as_f64().unwrap() < 0.8 * d["live_cost_usd"].as_f64().unwrap(),
        "{d}"
    );
    let files = walk(&parquet)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .count();
    assert!(files > 0, "no Parquet files under {}", parquet.display());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
