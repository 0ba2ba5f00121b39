//! `switchyard train-router --data FILE... --out FILE`: trains the need model on
//! the train split of labelled files (deterministic: the same files give the same
//! bytes), calibrates its thresholds on the dev split, and writes the model and
//! its card (`FILE` with `.md`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use switchyard_core::analysis::need::calibrate::calibrate;
use switchyard_core::analysis::need::train::{Row, Split, train};

use super::card::{card, dev_aucs};
use super::{card_path, read_rows, write_file};
use crate::cli::common::BadInput;

/// Arguments of `train-router`.
#[derive(clap::Args)]
pub struct Args {
    /// Labelled JSON-lines files (the format of pipelines/routing-data/).
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Where to write the model; its card goes beside it with `.md`.
    #[arg(long)]
    out: PathBuf,
    /// Train on every row, dev split included (the dev figures are then not held out).
    #[arg(long)]
    all: bool,
    /// The date the card states (default: today, UTC).
    #[arg(long)]
    date: Option<String>,
}

/// Trains, calibrates, writes.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rows = read_rows(&args.data)?;
    let splits: &[Split] = if args.all {
        &[Split::Train, Split::Dev]
    } else {
        &[Split::Train]
    };
    let start = Instant::now();
    let progress = |m: &str| eprintln!("{m} ({:.1}s)", start.elapsed().as_secs_f64());
    let trained = train(&rows, splits, &progress).map_err(|e| BadInput(e.to_string()))?;
    let dev: Vec<&Row> = rows.iter().filter(|r| r.split() == Split::Dev).collect();
    let model = if dev.is_empty() {
        trained.model
    } else {
        let c = calibrate(&trained.model, &dev, "dev split: ");
        trained.model.with_calibration(c)
    };
    write_file(&args.out, &model.to_bytes())?;
    let aucs = dev_aucs(&model, &rows)?;
    let date = args
        .date
        .unwrap_or_else(|| chrono::Utc::now().format("%Y-%m-%d").to_string());
    let command = format!(
        "switchyard train-router --data {} --out {}{}",
        args.data
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        args.out.display(),
        if args.all { " --all" } else { "" }
    );
    let provenance = format!("Written by `switchyard train-router` on {date}: `{command}`.");
    let text = card(&model, &args.data, &aucs, &provenance);
    let card_at = card_path(&args.out);
    write_file(&card_at, text.as_bytes())?;
    let total: usize = trained.rows.values().sum();
    println!(
        "trained on {total} rows in {:.1}s; wrote {} and {}",
        start.elapsed().as_secs_f64(),
        args.out.display(),
        card_at.display()
    );
    for a in &aucs {
        println!(
            "  dev auc {:<44} n={:<5} need {}  lexicon {}",
            a.set,
            a.n,
            a.need.map_or("—".into(), |v| format!("{v:.3}")),
            a.lexicon.map_or("—".into(), |v| format!("{v:.3}"))
        );
    }
    Ok(ExitCode::SUCCESS)
}
