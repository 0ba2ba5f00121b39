//! `switchyard dev` serves any Kafka client: kcat (an independent librdkafka-based
//! tool, installed by scripts/test.sh) produces jobs and reads their results, and
//! Ctrl-C (SIGINT) drains and exits 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_codec::Codec;
use switchyard_core::result::{JobResult, JobStatus};

use common::*;

#[test]
fn kcat_submits_jobs_and_reads_results_from_dev() {
    let kcat = Command::new("kcat").arg("-V").output();
    assert!(
        kcat.is_ok_and(|o| o.status.success()),
        "kcat is required (scripts/test.sh installs it with apt)"
    );

    let usage = tempfile::tempdir().unwrap();
    let (mut dev, printed) = start_dev(&usage.path().join("usage"));
    let (bootstrap, jobs_topic, results_topic) = (
        printed["bootstrap"].clone(),
        printed["topic jobs"].clone(),
        printed["topic results"].clone(),
    );
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");

    // Produce 20 jobs as `key<TAB>json` lines.
    let jobs = jobs("kcat", 20);
    let mut producer = Command::new("kcat")
        .args(["-P", "-b", &bootstrap, "-t", &jobs_topic, "-K", "\t"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let stdin = producer.stdin.as_mut().unwrap();
        for j in &jobs {
            writeln!(stdin, "{}\t{}", j.job_id, serde_json::to_string(j).unwrap()).unwrap();
        }
    }
    assert!(producer.wait().unwrap().success());

    // Read 20 results back with kcat, one JSON value per line.
    let started = Instant::now();
    // -c 20: exit after 20 messages (the worker joins its group in a few seconds).
    let out = Command::new("timeout")
        .args([
            "90",
            "kcat",
            "-C",
            "-b",
            &bootstrap,
            "-t",
            &results_topic,
            "-o",
            "beginning",
            "-c",
            "20",
            "-q",
            "-f",
            "%s\n",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let codec = Codec::json();
    let results: Vec<JobResult> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| codec.decode(l.as_bytes()).unwrap())
        .collect();
    assert_eq!(results.len(), 20, "after {:?}", started.elapsed());
    let mut ids: Vec<&str> = results.iter().map(|r| r.job_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20);
    assert!(results.iter().all(|r| r.status == JobStatus::Succeeded));

    // Ctrl-C drains and exits 0.
    signal(&dev, "-INT");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = dev.0.try_wait().unwrap() {
            assert!(s.success(), "dev exited with {s:?}");
            break;
        }
        assert!(Instant::now() < deadline, "dev did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `switchyard dev` with its Parquet files in `parquet` and returns it,
/// once ready, with the `name: value` lines it printed (bootstrap, topics, …).
fn start_dev(parquet: &std::path::Path) -> (Proc, HashMap<String, String>) {
    let mut dev = Proc(
        switchyard()
            .args(["dev", "--partitions", "2", "--time-scale", "0.01"])
            .env("SWITCHYARD__ANALYTICS__PARQUET_DIR", parquet)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut printed = HashMap::new();
    for line in BufReader::new(dev.0.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line.starts_with("ready") {
            break;
        }
        if let Some((name, value)) = line.split_once(": ") {
            printed.insert(name.to_owned(), value.to_owned());
        }
    }
    assert!(
        printed
            .get("bootstrap")
            .is_some_and(|b| b.starts_with("127.0.0.1:")),
        "{printed:?}"
    );
    (dev, printed)
}

/// Runs a `switchyard` command to its end.
fn run(args: &[&str]) -> std::process::Output {
    switchyard().args(args).output().unwrap()
}

#[test]
fn the_batch_commands_run_against_dev_from_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, printed) = start_dev(&dir.path().join("usage"));
    let bootstrap = printed["bootstrap"].clone();

    let input = dir.path().join("requests.jsonl");
    let mut lines: Vec<String> = (0..200)
        .map(|i| {
            serde_json::json!({
                "custom_id": format!("row-{i}"),
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini-2024-07-18",
                    "messages": [{"role": "user", "content": format!("Classify as billing, technical or account, one word: case {i}, I was charged twice.")}],
                    "max_tokens": 5
                }
            })
            .to_string()
        })
        .collect();
    // Three bad lines, submitted without them (--skip-invalid).
    lines.insert(10, lines[3].clone());
    lines.insert(50, "{\"custom_id\": \"broken\", ".to_owned());
    lines.push(r#"{"custom_id": "no-messages", "method": "POST", "url": "/v1/chat/completions", "body": {}}"#.to_owned());
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let project = "acme/retail/support/ticket-triage";
    let submit = || {
        let out = run(&[
            "submit",
            input.to_str().unwrap(),
            "--project",
            project,
            "--skip-invalid",
            "--brokers",
            &bootstrap,
            "--format",
            "json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = submit();
    assert_eq!(
        (first["jobs"].as_u64(), first["produced"].as_u64()),
        (Some(200), Some(200))
    );
    assert_eq!(first["invalid"], 3);
    let rejects = format!("{}.rejects.jsonl", input.display());
    assert_eq!(first["rejects_file"], rejects.as_str());
    assert_eq!(
        std::fs::read_to_string(&rejects).unwrap().lines().count(),
        3
    );
    let batch = first["batch_id"].as_str().unwrap().to_owned();

    let output = dir.path().join("results.jsonl");
    let out = run(&[
        "collect",
        &batch,
        "-o",
        output.to_str().unwrap(),
        "--brokers",
        &bootstrap,
        "--timeout",
        "180s",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Nothing failed: no errors file, and collect says why.
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("errors     none: every request succeeded"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!dir.path().join("results.errors.jsonl").exists());
    let written = std::fs::read_to_string(&output).unwrap();
    let ids: Vec<String> = written
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let want: Vec<String> = (0..200).map(|i| format!("row-{i}")).collect();
    assert_eq!(ids, want, "every custom_id once, in input order");

    let out = run(&[
        "status",
        &batch,
        "--brokers",
        &bootstrap,
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["counts"]["succeeded"], 200, "{status}");
    assert!(status["cost_usd"].as_f64().unwrap() > 0.0);
    assert_eq!(status["refused"], 3, "{status}");
    assert_eq!(status["eta"], 0.0, "{status}");
    assert!(
        status["results_per_second"].as_f64().unwrap() > 0.0,
        "{status}"
    );
    let out = run(&["status", &batch, "--brokers", &bootstrap]);
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    for want in [
        "jobs       200\n",
        "refused    3 lines at submit",
        "succeeded  200\n",
        "queued     0\n",
        "eta        done\n",
    ] {
        assert!(table.contains(want), "`{want}` not in:\n{table}");
    }

    let again = submit();
    assert_eq!(again["batch_id"], batch.as_str());
    assert_eq!(again["already_submitted"], true);
    assert_eq!(again["produced"], 0);

    // Ctrl-C drains and exits 0.
    signal(&dev, "-INT");
    assert!(dev.0.wait().unwrap().success());
}
