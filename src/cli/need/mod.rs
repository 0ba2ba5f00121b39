//! The need model's commands: `train-router` (train on labelled files, write the
//! model and its card), `calibrate` (the cost/quality curve on a labelled file
//! and the threshold each quality target implies) and `eval-router` (how `auto`
//! routes labelled prompts: AUC, adequacy, under-routing, over-spend, recovered
//! quality gap, cost against the flagship). The computing is in
//! `switchyard-need` and the router; these read files and print.

mod calibrate;
mod card;
mod eval;
mod train;

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use switchyard_core::analysis::need::NeedModel;
use switchyard_core::analysis::need::train::{Row, Split};

pub use calibrate::{Args as CalibrateArgs, run as calibrate};
pub use eval::{Args as EvalArgs, run as eval};
pub use train::{Args as TrainArgs, run as train};

use super::common::{BadInput, read_text};

/// Which rows of the labelled files a command uses.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    /// Every row.
    All,
    /// The dev split (held out from training).
    Dev,
    /// The train split.
    Train,
}

impl SplitArg {
    fn keeps(self, row: &Row) -> bool {
        match self {
            SplitArg::All => true,
            SplitArg::Dev => row.split() == Split::Dev,
            SplitArg::Train => row.split() == Split::Train,
        }
    }

    fn label(self) -> &'static str {
        match self {
            SplitArg::All => "all rows",
            SplitArg::Dev => "dev split",
            SplitArg::Train => "train split",
        }
    }
}

/// Reads labelled rows (routing-data JSON lines) from every file, in order.
fn read_rows(files: &[PathBuf]) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for f in files {
        let text = read_text(f)?;
        rows.extend(Row::parse_jsonl(&f.display().to_string(), &text).map_err(BadInput)?);
    }
    if rows.is_empty() {
        return Err(BadInput("the labelled files hold no rows".into()).into());
    }
    Ok(rows)
}

/// A need model file, or the built-in model; calibrated or not.
fn read_model(path: Option<&Path>) -> anyhow::Result<NeedModel> {
    match path {
        None => Ok((*NeedModel::builtin().map_err(|e| BadInput(e.to_string()))?).clone()),
        Some(p) => {
            let bytes = std::fs::read(p)
                .map_err(|e| BadInput(format!("cannot read {}: {e}", p.display())))?;
            NeedModel::parse(&bytes).map_err(|e| {
                BadInput(format!(
                    "{} is not a usable need model: {e} (write one with `switchyard train-router`)",
                    p.display()
                ))
                .into()
            })
        }
    }
}

/// Writes a file, naming it in the error.
fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes)
        .map_err(|e| BadInput(format!("cannot write {}: {e}", path.display())).into())
}

/// The model card's path beside a model file: `x.bin` → `x.md`.
fn card_path(model: &Path) -> PathBuf {
    model.with_extension("md")
}
