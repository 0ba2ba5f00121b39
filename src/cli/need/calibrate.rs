//! `switchyard calibrate FILE... [--format json]`: on labelled prompts, the
//! cost/quality curve of routing by the need (send every prompt with `p` at or
//! above a threshold to the strong model) and the threshold each quality target
//! implies, RouteLLM style. `--write OUT` stores those thresholds in a copy of
//! the model, with its card.

use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::json;
use switchyard_core::analysis::need::calibrate::{
    Calibration, CurvePoint, Judged, NEVER, calibration_rows, curve, target_grid,
};
use switchyard_core::analysis::need::train::Row;

use super::card::{card, dev_aucs};
use super::{SplitArg, card_path, read_model, read_rows, write_file};
use crate::cli::batch::Report;

/// Arguments of `calibrate`.
#[derive(clap::Args)]
pub struct Args {
    /// Labelled JSON-lines files (the format of pipelines/routing-data/).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The need model [default: the built-in one].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Which rows to calibrate on.
    #[arg(long, value_enum, default_value_t = SplitArg::All)]
    split: SplitArg,
    /// Table for people or one JSON object.
    #[arg(long, value_enum, default_value_t = Report::Table)]
    format: Report,
    /// Write the model with these thresholds here (and its card beside it).
    #[arg(long)]
    write: Option<PathBuf>,
    /// The date the card states (default: today, UTC).
    #[arg(long)]
    date: Option<String>,
}

/// One quality target and what its threshold does on the file.
#[derive(Serialize)]
struct TargetLine {
    target: f64,
    threshold: f64,
    strong_share: f64,
    quality: f64,
    quality_share_of_strong: f64,
    pgr: f64,
    random_quality_same_share: f64,
}

/// Computes and prints the curve and the thresholds.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rows = read_rows(&args.files)?;
    let model = read_model(args.model.as_deref())?;
    let kept: Vec<&Row> = rows.iter().filter(|r| args.split.keeps(r)).collect();
    let (set, chosen) = calibration_rows(&kept);
    let judged: Vec<Judged> = chosen
        .iter()
        .map(|r| {
            let (weak, strong) = r.correctness();
            Judged {
                p: model.predict(&r.prompt).p,
                weak: f64::from(u8::from(weak)),
                strong: f64::from(u8::from(strong)),
            }
        })
        .collect();
    let set = format!("{}: {set}", args.split.label());
    let calibration = Calibration::compute(&set, &judged, target_grid());
    let points = curve(&judged);
    let lines = target_lines(&calibration, &points);
    let shown = decimate(&points);
    match args.format {
        Report::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "set": calibration.set,
                "rows": calibration.rows,
                "strong_quality": calibration.strong_quality,
                "weak_quality": calibration.weak_quality,
                "curve": shown,
                "targets": lines,
            }))?
        ),
        Report::Table => print_table(&calibration, &shown, &lines),
    }
    if let Some(out) = &args.write {
        let model = model.with_calibration(calibration);
        write_file(out, &model.to_bytes())?;
        let aucs = dev_aucs(&model, &rows)?;
        let date = args
            .date
            .clone()
            .unwrap_or_else(|| chrono::Utc::now().format("%Y-%m-%d").to_string());
        let files: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
        let provenance = format!(
            "Weights trained by `switchyard train-router --data {} --out {}` (which reproduces \
             them to float rounding); thresholds calibrated on {date} by `switchyard calibrate {} \
             --split {} --write {}`.",
            files.join(" "),
            out.display(),
            files.join(" "),
            match args.split {
                SplitArg::All => "all",
                SplitArg::Dev => "dev",
                SplitArg::Train => "train",
            },
            out.display()
        );
        let text = card(&model, &args.files, &aucs, &provenance);
        write_file(&card_path(out), text.as_bytes())?;
        eprintln!("wrote {} and {}", out.display(), card_path(out).display());
    }
    Ok(ExitCode::SUCCESS)
}

/// What each listed target's threshold does (targets 0.80 and up).
fn target_lines(c: &Calibration, points: &[CurvePoint]) -> Vec<TargetLine> {
    let gap = c.strong_quality - c.weak_quality;
    c.points
        .iter()
        .filter(|[t, _]| *t >= 0.80 - 1e-9)
        .map(|&[target, threshold]| {
            let at = points
                .iter()
                .find(|p| p.threshold == threshold)
                .copied()
                .unwrap_or(CurvePoint {
                    threshold,
                    strong_share: 0.0,
                    quality: c.weak_quality,
                });
            TargetLine {
                target,
                threshold,
                strong_share: at.strong_share,
                quality: at.quality,
                quality_share_of_strong: at.quality / c.strong_quality.max(1e-12),
                pgr: if gap > 0.0 {
                    (at.quality - c.weak_quality) / gap
                } else {
                    f64::NAN
                },
                random_quality_same_share: c.weak_quality + at.strong_share * gap,
            }
        })
        .collect()
}

/// The curve at every 5% of strong share (the first point at or past each step).
fn decimate(points: &[CurvePoint]) -> Vec<CurvePoint> {
    let mut out: Vec<CurvePoint> = Vec::new();
    let mut next = 0.0;
    for p in points {
        if p.strong_share + 1e-12 >= next {
            out.push(*p);
            next = (p.strong_share / 0.05).floor() * 0.05 + 0.05;
        }
    }
    if let (Some(last), Some(end)) = (out.last(), points.last())
        && last != end
    {
        out.push(*end);
    }
    out
}

fn threshold_text(t: f64) -> String {
    if t >= NEVER {
        "never".into()
    } else {
        format!("{t:.4}")
    }
}

fn print_table(c: &Calibration, curve: &[CurvePoint], lines: &[TargetLine]) {
    println!(
        "{}: {} prompts; strong model alone {:.4}, weak model alone {:.4}",
        c.set, c.rows, c.strong_quality, c.weak_quality
    );
    println!("\ncost/quality curve (route p >= threshold to the strong model)");
    println!(
        "  {:>9}  {:>12}  {:>8}",
        "threshold", "strong share", "quality"
    );
    for p in curve {
        println!(
            "  {:>9}  {:>12.3}  {:>8.4}",
            threshold_text(p.threshold),
            p.strong_share,
            p.quality
        );
    }
    println!("\nthreshold per quality target (share of the strong model's quality to keep)");
    println!(
        "  {:>6}  {:>9}  {:>12}  {:>8}  {:>10}  {:>6}  {:>14}",
        "target", "threshold", "strong share", "quality", "of strong", "pgr", "random, same %"
    );
    for l in lines {
        println!(
            "  {:>6.2}  {:>9}  {:>12.3}  {:>8.4}  {:>10.3}  {:>6.3}  {:>14.4}",
            l.target,
            threshold_text(l.threshold),
            l.strong_share,
            l.quality,
            l.quality_share_of_strong,
            l.pgr,
            l.random_quality_same_share
        );
    }
}
