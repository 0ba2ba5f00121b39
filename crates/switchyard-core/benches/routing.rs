//! Routing decision cost: the learned need estimate alone, task analysis (lexicon
//! and need), and the full decision (analysis plus feasibility over every catalog
//! model, ranking, chain) for typical prompts, with the shipped 34-model catalog
//! and need model; and the need estimate over the demo corpus with the caches
//! evicted before each prompt, as a busy worker meets it.
//! `cargo bench -p switchyard-core --bench routing`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use switchyard_core::analysis::need::NeedModel;
use switchyard_core::analysis::{DEFAULT_QUALITY_TARGET, TaskAnalyzer};
use switchyard_core::catalog::Catalog;
use switchyard_core::health::HealthSnapshot;
use switchyard_core::job::{ChatRequest, Job};
use switchyard_core::org::EffectivePolicy;
use switchyard_core::routing::{
    BudgetState, DeploymentInfo, RouteInput, Router, RouterSettings, Strategy,
};

fn job(prompt: &str, max_tokens: u32) -> Job {
    Job::new(
        "bench",
        "acme/retail/support/ticket-triage",
        ChatRequest {
            max_tokens: Some(max_tokens),
            temperature: Some(0.2),
            ..ChatRequest::from_user(prompt)
        },
    )
}

fn bench(c: &mut Criterion) {
    let catalog = Arc::new(
        Catalog::parse(
            Path::new("models.toml"),
            include_str!("../../../pipelines/models.toml"),
        )
        .unwrap(),
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
    let analyzer = TaskAnalyzer::new(
        &catalog,
        NeedModel::builtin().unwrap(),
        DEFAULT_QUALITY_TARGET,
    );
    let typical = job(
        "Hi, I ordered the walnut desk (order 88213) two weeks ago and the tracking hasn't moved since Tuesday. \
         Can you tell me whether it's lost and if I can get a refund or a replacement shipped faster? Thanks, Dana",
        300,
    );
    let code = job(&format!("Refactor this function so it streams the file instead of loading it whole:\n```python\n{}\n```", "def load(path):\n    data = open(path).read()\n    return [json.loads(l) for l in data.splitlines()]\n".repeat(4)), 800);
    let long = job(&format!("Summarize the key points of this report for the board:\n\n{}", "Revenue grew 12% on stronger enterprise renewals while churn in the SMB segment rose slightly. ".repeat(40)), 400);
    for (name, job) in [
        ("typical_chat", &typical),
        ("code_snippet", &code),
        ("long_document", &long),
    ] {
        let text = switchyard_core::analysis::job_text(job).into_owned();
        let model = NeedModel::builtin().unwrap();
        c.bench_function(&format!("need/{name}"), |b| {
            b.iter(|| model.predict(black_box(&text)))
        });
        c.bench_function(&format!("analyze/{name}"), |b| {
            b.iter(|| analyzer.analyze(black_box(job), false))
        });
        for strategy in [Strategy::Auto, Strategy::LatencyFirst] {
            let policy = EffectivePolicy::open(strategy, 0.5);
            c.bench_function(&format!("decide/{name}/{strategy}"), |b| {
                b.iter(|| {
                    let analysis = analyzer.analyze(black_box(job), false);
                    let input = RouteInput {
                        job,
                        analysis: &analysis,
                        policy: &policy,
                        budget: BudgetState::UNCONSTRAINED,
                        now: Utc::now(),
                    };
                    router
                        .route(&input, &|_| HealthSnapshot::fresh(), false)
                        .unwrap()
                })
            });
        }
    }
}

/// The need estimate of each prompt of the demo corpus in turn (690 bytes on
/// average), after writing 16 MiB elsewhere: in the worker, the HTTP client,
/// Kafka and the lexicon run between two estimates and evict the model's
/// tables, so the warm figures above understate what a job pays.
fn need_cold(c: &mut Criterion) {
    let corpus = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../pipelines/corpus/prompts.jsonl"
    ))
    .unwrap();
    let prompts: Vec<String> = corpus
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["prompt"].as_str().unwrap().to_owned()
        })
        .collect();
    let model = NeedModel::builtin().unwrap();
    let mut elsewhere = vec![0u8; 16 << 20];
    let mut next = 0;
    c.bench_function("need/corpus_cold_cache", |b| {
        b.iter_batched(
            || {
                for i in (0..elsewhere.len()).step_by(64) {
                    elsewhere[i] = elsewhere[i].wrapping_add(1);
                }
                next = (next + 1) % prompts.len();
                &prompts[next]
            },
            |text| model.predict(black_box(text)),
            BatchSize::PerIteration,
        )
    });
    black_box(&elsewhere);
}

criterion_group!(benches, bench, need_cold);
criterion_main!(benches);
