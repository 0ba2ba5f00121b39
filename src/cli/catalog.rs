//! `switchyard catalog check PRICES.json`: the catalog's prices beside
//! LiteLLM's public price map; exit code 1 when any differs beyond the
//! tolerance. The comparison is `switchyard_core::catalog::price_check`; this
//! reads the files and prints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use serde::Serialize;
use switchyard_core::catalog::Catalog;
use switchyard_core::catalog::price_check::{self, PriceCheck, PriceComparison, PriceMap, Verdict};

use super::common::{BadInput, Overrides, TableOrJson, load_pipeline};

/// Arguments of `catalog`.
#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: CatalogCommand,
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Compare every catalog price (live, cached, cache-write, batch,
    /// long-context) with LiteLLM's model_prices_and_context_window.json;
    /// exit code 1 when any differs by more than the tolerance.
    Check(CheckArgs),
}

#[derive(clap::Args)]
struct CheckArgs {
    /// LiteLLM's price map (model_prices_and_context_window.json, in the
    /// litellm wheel on PyPI or the BerriAI/litellm repository).
    prices: PathBuf,
    /// Catalog file to check.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "pipelines/models.toml",
        conflicts_with = "config"
    )]
    models: PathBuf,
    /// Check the catalog this pipeline config names instead.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Largest difference that still agrees, in percent of LiteLLM's price.
    #[arg(long, value_name = "PCT", default_value_t = 1.0)]
    tolerance: f64,
    #[arg(long, value_enum, default_value_t = TableOrJson::Table)]
    format: TableOrJson,
}

/// Runs `catalog`.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        CatalogCommand::Check(a) => check(a),
    }
}

fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    if !(args.tolerance.is_finite() && args.tolerance >= 0.0) {
        return Err(BadInput(format!(
            "--tolerance {} is not a percentage; give 0 or more, such as 1",
            args.tolerance
        ))
        .into());
    }
    let (catalog, catalog_path) = load_catalog(&args)?;
    let text = std::fs::read_to_string(&args.prices).map_err(|e| {
        BadInput(format!(
            "cannot read the price map {}: {e}; download LiteLLM's model_prices_and_context_window.json \
             (from github.com/BerriAI/litellm, or `pip download litellm --no-deps` and unzip the wheel: \
             litellm/model_prices_and_context_window_backup.json) and pass its path",
            args.prices.display()
        ))
    })?;
    let map = PriceMap::parse(&text).map_err(|e| {
        BadInput(format!(
            "{} is not LiteLLM's price map: {e}; pass model_prices_and_context_window.json \
             (in the litellm wheel on PyPI, or from github.com/BerriAI/litellm)",
            args.prices.display()
        ))
    })?;
    let result = price_check::check(&catalog, &map, args.tolerance);
    match args.format {
        TableOrJson::Json => println!(
            "{}",
            serde_json::to_string_pretty(&Report {
                catalog_file: catalog_path.display().to_string(),
                prices_file: args.prices.display().to_string(),
                passed: result.passed(),
                check: &result,
            })?
        ),
        TableOrJson::Table => print_table(
            &result,
            &format!(
                "{} ({} models) against {} ({} entries), tolerance {}%",
                catalog_path.display(),
                catalog.models().len(),
                args.prices.display(),
                map.len(),
                args.tolerance
            ),
        ),
    }
    Ok(if result.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The JSON output: the files, the outcome, then every comparison.
#[derive(Serialize)]
struct Report<'a> {
    catalog_file: String,
    prices_file: String,
    passed: bool,
    #[serde(flatten)]
    check: &'a PriceCheck,
}

/// The catalog `--config` names, else the `--models` file.
fn load_catalog(args: &CheckArgs) -> anyhow::Result<(Catalog, PathBuf)> {
    if let Some(config) = &args.config {
        let pipeline = load_pipeline(config, &Overrides::default())?;
        return Ok((pipeline.catalog, pipeline.config.catalog));
    }
    let text = switchyard_loader::read_disk(&args.models).map_err(|e| {
        BadInput(format!(
            "cannot read the catalog {}: {e}; pass an existing file with --models, \
             or a pipeline config with --config",
            args.models.display()
        ))
    })?;
    Ok((Catalog::parse(&args.models, &text)?, args.models.clone()))
}

fn print_table(result: &PriceCheck, heading: &str) {
    println!("{heading}");
    let differences: Vec<&PriceComparison> = result.differences().collect();
    if !differences.is_empty() {
        println!("\ndiffers ({}):", differences.len());
        print_rows(&differences);
        if differences.iter().any(|p| p.implied) {
            println!("  * the catalog leaves this price out; the figure is what it bills instead");
        }
    }
    let unchecked: Vec<&PriceComparison> = result.with(Verdict::Unchecked).collect();
    if !unchecked.is_empty() {
        println!(
            "\nunchecked: catalog prices LiteLLM does not list ({}):",
            unchecked.len()
        );
        print_rows(&unchecked);
    }
    let batch: Vec<&PriceComparison> = result.with(Verdict::NoBatchPrice).collect();
    if !batch.is_empty() {
        println!(
            "\nbatch prices LiteLLM lists and the catalog leaves out (the model is served live only) ({}):",
            batch.len()
        );
        print_rows(&batch);
    }
    if !result.unlisted.is_empty() {
        println!("\nnot in the price map ({}):", result.unlisted.len());
        for u in &result.unlisted {
            println!("  {:<30} tried {}", u.model, u.tried.join(", "));
        }
    }
    let agree = result.with(Verdict::Agrees).count();
    println!(
        "\n{agree} prices agree within {}%, {} differ, {} unchecked; {} models not in the price map.",
        result.tolerance_pct,
        differences.len(),
        unchecked.len(),
        result.unlisted.len()
    );
}

fn print_rows(rows: &[&PriceComparison]) {
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|p| {
            let mut catalog = p.catalog.map_or("-".into(), number);
            if p.implied {
                catalog.push('*');
            }
            [
                p.model.clone(),
                p.field.clone(),
                catalog,
                p.litellm.map_or("-".into(), number),
                p.diff_pct.map_or(String::new(), |d| format!("{d:+.1}%")),
                match &p.litellm_field {
                    Some(f) => format!("{} {f}", p.litellm_model),
                    None => p.litellm_model.clone(),
                },
            ]
        })
        .collect();
    let header = [
        "model",
        "price",
        "catalog",
        "LiteLLM",
        "diff",
        "LiteLLM key and field",
    ]
    .map(String::from);
    let widths: Vec<usize> = (0..6)
        .map(|i| {
            std::iter::once(&header)
                .chain(&table)
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&header).chain(&table) {
        println!(
            "  {:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        );
    }
}

/// A price or token count without float noise (`0.09999999999999999` → `0.1`).
fn number(x: f64) -> String {
    let s = format!("{x:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_print_without_float_noise() {
        assert_eq!(super::number(0.099_999_999_999_999_99), "0.1");
        assert_eq!(super::number(272_000.0), "272000");
        assert_eq!(super::number(0.0375), "0.0375");
    }
}
