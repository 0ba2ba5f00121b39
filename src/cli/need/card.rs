//! The model card `train-router` and `calibrate --write` put beside a model:
//! what it was trained on and under which licences, its features, training
//! settings, threshold calibration, and its AUCs on the dev split next to the
//! lexicon's and the prompt length's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use switchyard_core::analysis::need::calibrate::auc;
use switchyard_core::analysis::need::features::DENSE_NAMES;
use switchyard_core::analysis::need::train::{Row, Split};
use switchyard_core::analysis::need::{NeedModel, VERSION};
use switchyard_core::analysis::{DEFAULT_QUALITY_TARGET, TaskAnalyzer};
use switchyard_core::job::{ChatRequest, Job};

/// AUC of one set of dev rows, premium against cheap.
#[derive(Debug, Clone, Serialize)]
pub(super) struct AucLine {
    /// The set.
    pub set: String,
    /// Rows, and how many need premium.
    pub n: usize,
    pub premium: usize,
    /// The need model's probability.
    pub need: Option<f64>,
    /// The lexicon's complexity (what `required_quality` followed before).
    pub lexicon: Option<f64>,
    /// Prompt length in bytes.
    pub length: Option<f64>,
}

/// Licence of each source, for the card.
fn licence(source: &str) -> &'static str {
    match source {
        "gsm8k" | "mmlu" => {
            "correctness from lm-sys/RouteLLM (Apache-2.0); the GSM8K / MMLU questions are MIT"
        }
        "arena-hard-v0.1" => "lmarena/arena-hard-auto questions (Apache-2.0)",
        "switchyard-written" => "written for Switchyard (Apache-2.0)",
        "switchyard-demo" => "Switchyard's demo corpus (Apache-2.0)",
        _ => "see the data file's README",
    }
}

/// The dev-split AUCs of `model`: per source, pooled, and Arena-Hard against
/// the written cheap prompts when both are there.
pub(super) fn dev_aucs(model: &NeedModel, rows: &[Row]) -> anyhow::Result<Vec<AucLine>> {
    let dev: Vec<&Row> = rows
        .iter()
        .filter(|r| r.split() == Split::Dev && r.label().is_some())
        .collect();
    let catalog = switchyard_loader::load_catalog(Path::new("pipelines/models.toml"))?;
    let analyzer = TaskAnalyzer::new(
        &catalog,
        std::sync::Arc::new(model.clone()),
        DEFAULT_QUALITY_TARGET,
    );
    let scored: Vec<(&Row, f64, f64)> = dev
        .iter()
        .map(|r| {
            let job = Job::new("card", "card", ChatRequest::from_user(&r.prompt));
            (
                *r,
                model.predict(&r.prompt).p,
                analyzer.analyze(&job, false).complexity,
            )
        })
        .collect();
    let line = |set: String, keep: &dyn Fn(&Row) -> bool| {
        let rs: Vec<&(&Row, f64, f64)> = scored.iter().filter(|(r, _, _)| keep(r)).collect();
        let labels: Vec<bool> = rs.iter().map(|(r, _, _)| r.label() == Some(true)).collect();
        let of = |f: &dyn Fn(&(&Row, f64, f64)) -> f64| {
            auc(&rs.iter().map(|x| f(x)).collect::<Vec<_>>(), &labels)
        };
        AucLine {
            set,
            n: rs.len(),
            premium: labels.iter().filter(|l| **l).count(),
            need: of(&|x| x.1),
            lexicon: of(&|x| x.2),
            length: of(&|x| x.0.prompt.len() as f64),
        }
    };
    let mut sources: Vec<&str> = dev.iter().map(|r| r.source.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    let mut out: Vec<AucLine> = sources
        .iter()
        .map(|s| line((*s).to_owned(), &|r: &Row| r.source == *s))
        .collect();
    out.push(line("pooled".into(), &|_| true));
    if sources.contains(&"arena-hard-v0.1") && sources.contains(&"switchyard-written") {
        out.push(line(
            "arena-hard-v0.1 vs switchyard-written cheap".into(),
            &|r: &Row| {
                r.source == "arena-hard-v0.1"
                    || (r.source == "switchyard-written" && r.label() == Some(false))
            },
        ));
    }
    Ok(out)
}

fn fmt_auc(a: Option<f64>) -> String {
    a.map_or_else(|| "—".into(), |a| format!("{a:.3}"))
}

/// The card's markdown.
pub(super) fn card(
    model: &NeedModel,
    files: &[PathBuf],
    aucs: &[AucLine],
    provenance: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Need model `{VERSION}`\n");
    let _ = writeln!(
        s,
        "The probability, per job, that a cheap \
         model falls short (a premium model is needed), from the prompt alone, computed in Rust \
         with no network: a logistic regression over hashed word unigrams, word bigrams and byte \
         4-grams (2^18 buckets per kind) and {} dense structural features, with disjoint weights \
         for open-ended and multiple-choice prompts, each kind calibrated by cross-fitted Platt \
         scaling. Specification: `docs/need-model.md`.\n",
        DENSE_NAMES.len() - 1
    );
    let _ = writeln!(s, "{provenance}\n");
    data_section(&mut s, model, files);
    training_section(&mut s, model);
    thresholds_section(&mut s, model);
    metrics_section(&mut s, files, aucs);
    s
}

fn data_section(s: &mut String, model: &NeedModel, files: &[PathBuf]) {
    let h = model.header();
    let _ = writeln!(s, "## Data\n");
    let _ = writeln!(
        s,
        "Files: {}.\n",
        files
            .iter()
            .map(|f| format!("`{}`", f.display()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(
        s,
        "Trained on the `{}` split (a hash of the row id, of the subject for MMLU, so whole MMLU \
         subjects are held out); rows that neither model answered are left out.\n",
        h.get("trained_on")
            .and_then(|v| v.as_array())
            .map(|a| a
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(" + "))
            .unwrap_or_default()
    );
    let _ = writeln!(s, "| group | rows | weight | licence |\n|---|---|---|---|");
    let weights = h.get("row_weight").and_then(|v| v.as_object());
    if let Some(rows) = h.get("rows").and_then(|v| v.as_object()) {
        for (group, n) in rows {
            let source = match group.as_str() {
                "written-cheap" | "written-premium" => "switchyard-written",
                "demo" => "switchyard-demo",
                g => g,
            };
            let w = weights
                .and_then(|w| w.get(group))
                .and_then(|w| w.as_f64())
                .unwrap_or(1.0);
            let _ = writeln!(s, "| {group} | {n} | {w} | {} |", licence(source));
        }
    }
}

fn training_section(s: &mut String, model: &NeedModel) {
    let h = model.header();
    let _ = writeln!(s, "\n## Features and training\n");
    let _ = writeln!(
        s,
        "Dense features: {}. L2 penalties: hashed weights {} (open, multiple choice), dense \
         weights {}, intercepts none; truncated Newton with preconditioned conjugate gradients to \
         max |gradient| <= 1e-10. Platt pairs (a, b): open {:?}, multiple choice {:?}.\n",
        DENSE_NAMES[..DENSE_NAMES.len() - 1].join(", "),
        h.get("lambda_hash")
            .map(|v| v.to_string())
            .unwrap_or_default(),
        h.get("lambda_dense")
            .map(|v| v.to_string())
            .unwrap_or_default(),
        model.platt()[0],
        model.platt()[1],
    );
}

fn thresholds_section(s: &mut String, model: &NeedModel) {
    let _ = writeln!(s, "## Thresholds\n");
    match model.calibration() {
        Some(c) => {
            let _ = writeln!(
                s,
                "Calibrated on {} ({} prompts; strong model alone {:.4}, weak model alone {:.4}). \
                 A quality target keeps that share of the strong model's quality with the highest \
                 threshold on the need that does.\n",
                c.set, c.rows, c.strong_quality, c.weak_quality
            );
            let _ = writeln!(s, "| quality target | threshold |\n|---|---|");
            for [t, th] in &c.points {
                let pct = (t * 100.0).round() as i64;
                if pct >= 80 && (pct % 5 == 0 || pct == 92) {
                    let shown = if *th > 1.0 {
                        "never (cheap is enough)".into()
                    } else {
                        format!("{th:.4}")
                    };
                    let _ = writeln!(s, "| {t:.2} | {shown} |");
                }
            }
        }
        None => {
            let _ = writeln!(s, "Not calibrated.");
        }
    }
}

fn metrics_section(s: &mut String, files: &[PathBuf], aucs: &[AucLine]) {
    let _ = writeln!(s, "\n## Metrics (dev split, AUC premium vs cheap)\n");
    let _ = writeln!(
        s,
        "| set | n (premium) | need model | lexicon complexity | length |\n|---|---|---|---|---|"
    );
    for a in aucs {
        let _ = writeln!(
            s,
            "| {} | {} ({}) | {} | {} | {} |",
            a.set,
            a.n,
            a.premium,
            fmt_auc(a.need),
            fmt_auc(a.lexicon),
            fmt_auc(a.length)
        );
    }
    let _ = writeln!(
        s,
        "\nRouting figures (adequacy, under-routing, over-spend, recovered quality gap, cost): \
         `switchyard eval-router {} --split dev`.",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    );
}
