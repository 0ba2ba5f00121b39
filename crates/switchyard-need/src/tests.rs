use super::features::{Scratch, featurize, task_segment};
use super::*;

#[derive(serde::Deserialize)]
struct Vector {
    text: String,
    task_segment_bytes: usize,
    shots: u32,
    kind: usize,
    hashed: Vec<(u32, f64)>,
    dense: Vec<f64>,
    logit: f64,
    platt: (f64, f64),
    p: f64,
}

fn vectors() -> Vec<Vector> {
    include_str!("../tests/data/spec_vectors.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn merged(scratch: &Scratch) -> Vec<(u32, f64)> {
    let mut e: Vec<(u32, f64)> = scratch.hashed.iter().map(|h| (h.index, h.value)).collect();
    e.sort_by_key(|&(j, _)| j);
    let mut out: Vec<(u32, f64)> = Vec::new();
    for (j, v) in e {
        match out.last_mut() {
            Some(last) if last.0 == j => last.1 += v,
            _ => out.push((j, v)),
        }
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

/// The port matches the reference implementation stage by stage on the
/// specification's vectors: indices exactly, values to 1e-12.
#[test]
fn features_and_predictions_match_the_reference_vectors() {
    let model = NeedModel::builtin().unwrap();
    let vectors = vectors();
    assert_eq!(vectors.len(), 31);
    for v in &vectors {
        let head: String = v.text.chars().take(40).collect();
        let (segment, shots) = task_segment(&v.text);
        assert_eq!(segment.len(), v.task_segment_bytes, "{head:?}");
        assert_eq!(shots, v.shots, "{head:?}");
        for names in [false, true] {
            let mut scratch = Scratch::default();
            let shape = featurize(&v.text, &mut scratch, names);
            assert_eq!(shape.kind, v.kind, "{head:?}");
            let got = merged(&scratch);
            assert_eq!(got.len(), v.hashed.len(), "{head:?}");
            for ((gi, gv), (wi, wv)) in got.iter().zip(&v.hashed) {
                assert_eq!(gi, wi, "{head:?}");
                assert!(close(*gv, *wv), "{head:?}: {gv} vs {wv}");
            }
            for (i, (g, w)) in shape.dense.iter().zip(&v.dense).enumerate() {
                assert!(
                    close(*g, *w),
                    "{head:?}: {} {g} vs {w}",
                    features::DENSE_NAMES[i]
                );
            }
        }
        let e = model.predict(&v.text);
        assert!(
            close(e.logit, v.logit),
            "{head:?}: {} vs {}",
            e.logit,
            v.logit
        );
        assert_eq!(model.platt()[v.kind], v.platt);
        assert!(close(e.p, v.p), "{head:?}: {} vs {}", e.p, v.p);
        let (explained, _) = model.explain(&v.text, 5);
        assert_eq!(explained, e);
    }
}

#[test]
fn the_shipped_model_survives_a_round_trip() {
    let model = NeedModel::builtin().unwrap();
    let bytes = model.to_bytes();
    let again = NeedModel::parse(&bytes).unwrap();
    assert_eq!(*model, again);
    for v in vectors() {
        assert_eq!(model.predict(&v.text), again.predict(&v.text));
    }
}

#[test]
fn malformed_models_are_refused_with_the_reason() {
    let bytes = NeedModel::builtin().unwrap().to_bytes();
    let err = |b: &[u8]| NeedModel::parse(b).unwrap_err().to_string();
    assert!(err(b"hello").contains("SWNEED01"));
    assert!(err(&bytes[..bytes.len() - 4]).contains("bytes of weights"));
    let mut other = bytes.clone();
    let at = memchr::memmem::find(&other, b"swneed-1").unwrap();
    other[at + 7] = b'9';
    assert!(err(&other).contains("feature version"));
}

#[test]
fn explanations_name_grams_and_dense_features() {
    let model = NeedModel::builtin().unwrap();
    let (e, top) = model.explain(
        "Prove that there are infinitely many primes of the form 4k+3, rigorously.",
        5,
    );
    assert_eq!(top.len(), 5);
    let sum_all: f64 = model
        .explain(
            "Prove that there are infinitely many primes of the form 4k+3, rigorously.",
            usize::MAX,
        )
        .1
        .iter()
        .map(|c| c.contribution)
        .sum();
    assert!((sum_all - e.logit).abs() < 1e-9, "{sum_all} vs {}", e.logit);
    for w in top.windows(2) {
        assert!(w[0].contribution.abs() >= w[1].contribution.abs());
    }
    assert!(
        top.iter().all(|c| c.feature.starts_with("w1 \"")
            || c.feature.starts_with("w2 \"")
            || c.feature.starts_with("c4 \"")
            || features::DENSE_NAMES.contains(&c.feature.as_str())),
        "{top:?}"
    );
}

#[test]
fn few_shot_prompts_are_scored_on_their_last_question() {
    let (seg, shots) = task_segment("Q: 2+2?\nA: 4\n\n\nQ: 3+5?\nA:");
    assert_eq!((seg, shots), ("Q: 3+5?\nA:", 1));
    assert_eq!(task_segment("no answers here"), ("no answers here", 0));
}

#[test]
fn calibration_picks_the_highest_threshold_that_keeps_the_target() {
    use calibrate::{Calibration, Judged, NEVER, auc};
    // Two hard prompts (only strong right) with high p, two easy ones.
    let rows = [
        Judged {
            p: 0.9,
            weak: 0.0,
            strong: 1.0,
        },
        Judged {
            p: 0.6,
            weak: 0.0,
            strong: 1.0,
        },
        Judged {
            p: 0.3,
            weak: 1.0,
            strong: 1.0,
        },
        Judged {
            p: 0.1,
            weak: 1.0,
            strong: 1.0,
        },
    ];
    let c = Calibration::compute("t", &rows, [0.5, 0.75, 1.0].into_iter());
    assert_eq!(c.points, vec![[0.5, NEVER], [0.75, 0.9], [1.0, 0.6]]);
    assert_eq!(c.threshold(0.6), 0.9);
    assert_eq!(c.threshold(0.99), 0.6);
    assert_eq!(c.threshold(0.2), NEVER);
    let c = c.checked().unwrap();
    assert_eq!(c.threshold(1.0), 0.6);
    assert_eq!(
        auc(&[0.9, 0.6, 0.3, 0.1], &[true, true, false, false]),
        Some(1.0)
    );
    assert_eq!(auc(&[0.5, 0.5], &[true, false]), Some(0.5));
}

/// Training is deterministic: the same rows give the same model, byte for byte.
#[test]
fn training_twice_gives_the_same_bytes() {
    let text = include_str!("../../../pipelines/routing-data/premium_written.jsonl");
    let mut rows = train::Row::parse_jsonl("premium", text).unwrap();
    let cheap = include_str!("../../../pipelines/routing-data/demo_labelled.jsonl");
    rows.extend(train::Row::parse_jsonl("demo", cheap).unwrap());
    let fit = || {
        train::train(&rows, &[train::Split::Train], &|_| {})
            .unwrap()
            .model
            .to_bytes()
    };
    let first = fit();
    assert_eq!(first, fit());
    let model = NeedModel::parse(&first).unwrap();
    // It learned something: premium prompts score above cheap ones on average.
    let mean = |tier: train::RequiredTier| {
        let ps: Vec<f64> = rows
            .iter()
            .filter(|r| r.required_tier == Some(tier))
            .map(|r| model.predict(&r.prompt).p)
            .collect();
        ps.iter().sum::<f64>() / ps.len() as f64
    };
    assert!(mean(train::RequiredTier::Premium) > mean(train::RequiredTier::Cheap) + 0.2);
}
