//! Accuracy of task analysis against the labelled evaluation set in
//! `tests/data/analysis_eval.jsonl` (416 hand-written prompts across the eight
//! categories, each with a difficulty label), and the quality the auto strategy
//! delivers on it with the shipped catalog. Run with `--nocapture` for the report.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use serde::Deserialize;
use switchyard_core::analysis::need::NeedModel;
use switchyard_core::analysis::{DEFAULT_QUALITY_TARGET, TaskAnalyzer, TaskCategory};
use switchyard_core::catalog::Catalog;
use switchyard_core::health::HealthSnapshot;
use switchyard_core::job::{ChatMessage, ChatRequest, Job, ResponseFormat, Role};
use switchyard_core::org::EffectivePolicy;
use switchyard_core::routing::{
    BudgetState, DeploymentInfo, RouteInput, Router, RouterSettings, Strategy,
};

#[derive(Deserialize)]
struct Labelled {
    id: String,
    category: String,
    difficulty: String,
    #[serde(default)]
    system: Option<String>,
    prompt: String,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    response_format: Option<String>,
}

/// Quality a job of each difficulty label needs, on the catalog's 0..1 scale.
fn need(difficulty: &str) -> f64 {
    match difficulty {
        "easy" => 0.60,
        "medium" => 0.75,
        _ => 0.88,
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(path: &Path) -> Vec<(Labelled, Job)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let x: Labelled = serde_json::from_str(l).unwrap();
            let job = Job {
                job_id: x.id.clone(),
                batch_id: None,
                project: "acme/eval/eval/eval".into(),
                workload: None,
                strategy: None,
                mode: None,
                request: ChatRequest {
                    messages: vec![ChatMessage {
                        role: Role::User,
                        content: x.prompt.clone(),
                    }],
                    system: x.system.clone(),
                    max_tokens: x.max_tokens,
                    temperature: None,
                    stop: vec![],
                    response_format: if x.response_format.as_deref() == Some("json_object") {
                        ResponseFormat::JsonObject
                    } else {
                        ResponseFormat::Text
                    },
                },
                model: None,
                allowed_models: vec![],
                deadline: None,
                metadata: Default::default(),
            };
            (x, job)
        })
        .collect()
}

struct Report {
    accuracy: f64,
    need_met: f64,
    mean_complexity: BTreeMap<String, f64>,
}

fn evaluate(path: &Path) -> Report {
    let items = load(path);
    let catalog = Arc::new({
        let path = root().join("pipelines/models.toml");
        Catalog::parse(&path, &std::fs::read_to_string(&path).unwrap()).unwrap()
    });
    let analyzer = TaskAnalyzer::new(
        &catalog,
        NeedModel::builtin().unwrap(),
        DEFAULT_QUALITY_TARGET,
    );
    let deployments = catalog
        .models()
        .iter()
        .enumerate()
        .map(|(i, m)| DeploymentInfo {
            name: m.name.clone(),
            model: i,
            provider: m.provider.clone(),
        })
        .collect();
    let router = Router::new(catalog.clone(), deployments, RouterSettings::default());
    let policy = EffectivePolicy::open(Strategy::Auto, 0.5);
    let mut confusion: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut correct = 0;
    let mut met = 0;
    let mut cx: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for (x, job) in &items {
        let a = analyzer.analyze(job, false);
        let truth = TaskCategory::parse(&x.category).unwrap();
        if a.category == truth {
            correct += 1;
        } else {
            *confusion
                .entry((x.category.clone(), a.category.to_string()))
                .or_default() += 1;
            if std::env::var("EVAL_VERBOSE").is_ok() {
                let head: String = x.prompt.chars().take(150).collect();
                println!(
                    "miss {} {} -> {} {:?}: {}",
                    x.id,
                    x.category,
                    a.category,
                    a.scores,
                    head.replace('\n', " ")
                );
            }
        }
        let e = cx.entry(x.difficulty.clone()).or_default();
        e.0 += a.complexity;
        e.1 += 1;
        let d = router
            .route(
                &RouteInput {
                    job,
                    analysis: &a,
                    policy: &policy,
                    budget: BudgetState::UNCONSTRAINED,
                    now: Utc::now(),
                },
                &|_| HealthSnapshot::fresh(),
                false,
            )
            .unwrap();
        let chosen = catalog.model(d.chain[0].model);
        if chosen.quality_for(truth) + 1e-9 >= need(&x.difficulty) {
            met += 1;
        } else if std::env::var("EVAL_VERBOSE").is_ok() {
            println!(
                "need miss {} ({} {}): {} q={:.2} cx={:.2} as {}",
                x.id,
                x.category,
                x.difficulty,
                chosen.name,
                chosen.quality_for(truth),
                a.complexity,
                a.category
            );
        }
    }
    println!("{}: {} prompts", path.display(), items.len());
    println!(
        "  category accuracy {:.1}%",
        100.0 * correct as f64 / items.len() as f64
    );
    println!(
        "  need met (auto)   {:.1}%",
        100.0 * met as f64 / items.len() as f64
    );
    let mut confusions: Vec<_> = confusion.into_iter().collect();
    confusions.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for ((t, p), n) in confusions.iter().take(12) {
        println!("    {t} -> {p}: {n}");
    }
    let mean_complexity: BTreeMap<String, f64> = cx
        .into_iter()
        .map(|(k, (s, n))| (k, s / n as f64))
        .collect();
    println!("  mean complexity by label: {mean_complexity:?}");
    Report {
        accuracy: correct as f64 / items.len() as f64,
        need_met: met as f64 / items.len() as f64,
        mean_complexity,
    }
}

/// Floors: the analysis must classify at least 78% of the held-out set correctly (80.0% measured),
/// auto must meet the labelled need on at least 95% of it, and complexity must
/// order the difficulty labels.
#[test]
fn analysis_meets_its_floors_on_the_evaluation_set() {
    let r = evaluate(&root().join("tests/data/analysis_eval.jsonl"));
    assert!(
        r.accuracy >= 0.78,
        "category accuracy {:.3} under the 0.78 floor",
        r.accuracy
    );
    assert!(
        r.need_met >= 0.95,
        "auto met the need on {:.3}, under the 0.95 floor",
        r.need_met
    );
    let m = &r.mean_complexity;
    assert!(m["easy"] < m["medium"] && m["medium"] < m["hard"], "{m:?}");
}

/// The demo corpus (used to tune the lexicon) is reported too, to see over-fitting.
#[test]
fn analysis_report_on_the_tuning_corpus() {
    let r = evaluate(&root().join("pipelines/corpus/prompts.jsonl"));
    assert!(r.accuracy >= 0.80, "category accuracy {:.3}", r.accuracy);
}
