//! `switchyard report`: cost by org node, model, provider, strategy or day, with
//! the savings against the flagship baseline, from ClickHouse or from the Parquet
//! tree (same numbers), as a table, CSV, JSON or a one-page HTML report.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use switchyard_analytics::report::{html, parse_instant};
use switchyard_analytics::{
    ClickHouseConfig, Dimension, Error as AnalyticsError, Format, ReportQuery, Source,
};
use switchyard_loader::env_overrides;

use super::common::BadInput;

/// Output format on stdout.
#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    /// Aligned columns.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON document.
    Json,
}

/// Arguments of `report`.
#[derive(clap::Args)]
pub struct Args {
    /// Group by these (comma-separated or repeated): org, bu, team, project,
    /// model, provider, strategy, day.
    #[arg(long, value_delimiter = ',', default_value = "bu")]
    by: Vec<String>,
    /// First day or instant included (`2026-11-01` or `2026-11-01T09:00:00Z`, UTC).
    #[arg(long)]
    since: Option<String>,
    /// First day or instant excluded.
    #[arg(long)]
    until: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Read from this ClickHouse (HTTP URL) instead of the config's store.
    #[arg(long, env = "SWITCHYARD_CLICKHOUSE_URL", conflicts_with = "parquet")]
    clickhouse_url: Option<String>,
    /// ClickHouse database (with --clickhouse-url).
    #[arg(long, default_value = "switchyard")]
    clickhouse_database: String,
    /// ClickHouse user (with --clickhouse-url); the password is read from
    /// SWITCHYARD_CLICKHOUSE_PASSWORD.
    #[arg(long)]
    clickhouse_user: Option<String>,
    /// Read from this Parquet directory instead of the config's store.
    #[arg(long)]
    parquet: Option<PathBuf>,
    /// Without --clickhouse-url or --parquet: read the store this pipeline config
    /// names (its ClickHouse when set, else its Parquet directory).
    #[arg(
        long,
        short,
        default_value = "pipelines/demo.toml",
        env = "SWITCHYARD_CONFIG"
    )]
    config: PathBuf,
    /// Also write a one-page HTML report with charts to this file.
    #[arg(long)]
    html: Option<PathBuf>,
}

/// Runs the report.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pipeline = switchyard_loader::load_pipeline(&args.config, &env_overrides())?;
    super::access::authorize(
        &pipeline,
        switchyard_core::access::Action::Report,
        &super::access::org_root(&pipeline),
    )?;
    let query = query(&args)?;
    let source = source(&args)?;
    let report = source.report(&query).await.map_err(|e| match e {
        AnalyticsError::Invalid(m) => anyhow::Error::new(BadInput(m)),
        e => anyhow::Error::new(e).context(format!("reading {}", source.describe())),
    })?;
    let format = match args.format {
        OutputFormat::Table => Format::Table,
        OutputFormat::Csv => Format::Csv,
        OutputFormat::Json => Format::Json,
    };
    print!("{}", report.render(format));
    if let Some(path) = &args.html {
        let pages = html::Pages::load(&source, &query).await?;
        std::fs::write(path, html::render(&pages, &source.describe()))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("HTML report written to {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn query(args: &Args) -> anyhow::Result<ReportQuery> {
    let bad = |e: AnalyticsError| BadInput(e.to_string());
    let by = args
        .by
        .iter()
        .map(|s| s.trim().parse::<Dimension>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    let instant = |s: &Option<String>| s.as_deref().map(parse_instant).transpose();
    let query = ReportQuery {
        by,
        since: instant(&args.since).map_err(bad)?,
        until: instant(&args.until).map_err(bad)?,
    };
    query.validate().map_err(bad)?;
    Ok(query)
}

fn source(args: &Args) -> anyhow::Result<Source> {
    if let Some(dir) = &args.parquet {
        return Ok(Source::Parquet(dir.clone()));
    }
    if let Some(url) = args.clickhouse_url.as_deref().filter(|u| !u.is_empty()) {
        // A user and password in the URL count unless the flag and the
        // variable say otherwise.
        let mut config = ClickHouseConfig::new(url, &args.clickhouse_database);
        if let Some(user) = &args.clickhouse_user {
            config.user = Some(user.clone());
        }
        if let Ok(password) = std::env::var("SWITCHYARD_CLICKHOUSE_PASSWORD") {
            config.password = Some(password);
        }
        config.validate().map_err(|e| BadInput(e.to_string()))?;
        return Ok(Source::ClickHouse(config));
    }
    let loaded = switchyard_loader::load_pipeline(&args.config, &env_overrides())?;
    let analytics = &loaded.config.analytics;
    match ClickHouseConfig::from_analytics(analytics)
        .map_err(|e| BadInput(format!("{}: {e}", args.config.display())))?
    {
        Some(ch) => Ok(Source::ClickHouse(ch)),
        None => Ok(Source::Parquet(analytics.parquet_dir.clone())),
    }
}
