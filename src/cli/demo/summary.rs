//! The demo's closing report: the figures of the results topic, summed by the
//! analytics report code, with the run's own counts, printed for a person or
//! as JSON.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use switchyard_analytics::report::results::ResultsSummary;
use switchyard_core::analysis::TaskCategory;
use switchyard_core::catalog::Catalog;
use switchyard_core::result::JobResult;

/// What the report is made of.
pub struct Inputs<'a> {
    pub results: &'a HashMap<String, JobResult>,
    /// job_id → (labelled category, labelled difficulty).
    pub labels: &'a HashMap<String, (String, String)>,
    pub catalog: &'a Catalog,
    pub baseline: &'a str,
    pub dead_lettered: u64,
    pub malformed_sent: usize,
    pub elapsed: Duration,
    pub time_scale: f64,
    pub parquet_dir: &'a Path,
    /// The usage the sink wrote to Parquet, read back by business unit.
    pub by_bu: &'a switchyard_analytics::Report,
}

/// Quality a job of each difficulty label needs (the same scale as the catalog).
pub fn labelled_need(difficulty: &str) -> f64 {
    match difficulty {
        "easy" => 0.60,
        "medium" => 0.75,
        _ => 0.88,
    }
}

/// The demo's figures, as printed (table) or written for scripts (JSON): the
/// run's own counts, the figures of its results (from the analytics report
/// code), and where the sink's Parquet files are.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    /// Wall-clock seconds of the whole run.
    pub elapsed_s: f64,
    /// Simulated provider time as a fraction of real time.
    pub time_scale: f64,
    /// Malformed messages sent, and how many reached the dead-letter topic.
    pub malformed_sent: usize,
    /// Messages dead-lettered by the worker.
    pub dead_lettered: u64,
    /// Jobs by status, failovers, model mix, latency, cost against the baseline.
    #[serde(flatten)]
    pub results: ResultsSummary,
    /// Where the usage sink wrote its Parquet files.
    pub parquet_dir: String,
    /// Billed attempts read back from those files.
    pub parquet_attempts: u64,
}

/// Sums the results topic (with the corpus labels as each job's need) and
/// adds the run's counts and the sink's Parquet files.
pub fn summarize(i: &Inputs<'_>) -> Summary {
    let need = |r: &JobResult| {
        let (category, difficulty) = i.labels.get(&r.job_id)?;
        Some((TaskCategory::parse(category)?, labelled_need(difficulty)))
    };
    Summary {
        elapsed_s: i.elapsed.as_secs_f64(),
        time_scale: i.time_scale,
        malformed_sent: i.malformed_sent,
        dead_lettered: i.dead_lettered,
        results: ResultsSummary::of(i.results.values(), i.catalog, i.baseline, need),
        parquet_dir: i.parquet_dir.display().to_string(),
        parquet_attempts: i.by_bu.total.attempts,
    }
}

/// Prints the report on stdout for a person.
pub fn print(s: &Summary, by_bu: &switchyard_analytics::Report) {
    let r = &s.results;
    println!();
    println!(
        "Switchyard demo: {} results in {:.1} s (simulated provider time at {}x real time)",
        r.results, s.elapsed_s, s.time_scale
    );
    println!();
    println!("Jobs");
    for (status, n) in &r.by_status {
        println!("  {status:<10} {n:>6}");
    }
    println!(
        "  dead-lettered {:>3} (of {} malformed messages sent; each with its reason in the DLQ headers)",
        s.dead_lettered, s.malformed_sent
    );
    println!(
        "  failovers  {:>6} jobs answered by a fallback after the first deployment failed",
        r.failovers
    );
    println!();
    println!("Routed-model mix (succeeded jobs)");
    for m in r.model_mix.iter().take(12) {
        let price = match (m.input_usd_per_mtok, m.output_usd_per_mtok) {
            (Some(i), Some(o)) => format!("${i:.2}/${o:.2} per Mtok"),
            _ => String::new(),
        };
        println!(
            "  {:<30} {:>6}  {:>5.1}%  {}",
            m.model,
            m.jobs,
            r.share_pct(m),
            price
        );
    }
    if r.model_mix.len() > 12 {
        println!("  … and {} more models", r.model_mix.len() - 12);
    }
    if let Some(pct) = r.quality_need_met_pct {
        println!(
            "  quality: {pct:.1}% of jobs went to a model whose quality for the job's labelled category meets its labelled difficulty"
        );
    }
    println!();
    println!("Latency (worker intake to result, succeeded jobs)");
    println!("  p50 {:>6} ms   p95 {:>6} ms", r.p50_ms, r.p95_ms);
    println!();
    print_cost(r);
    println!();
    println!(
        "Usage events written by the sink to Parquet under {} ({} billed attempts), read back by business unit:",
        s.parquet_dir, s.parquet_attempts
    );
    print!("{}", by_bu.render(switchyard_analytics::Format::Table));
    println!(
        "More: switchyard report --parquet {} --by team,model [--format csv|json] [--html report.html]",
        s.parquet_dir
    );
}

/// The cost section: tokens, routed cost, the baseline, by strategy.
fn print_cost(r: &ResultsSummary) {
    println!("Cost");
    println!(
        "  tokens        {} in, {} out, {} cached",
        r.tokens.input_tokens, r.tokens.output_tokens, r.tokens.cached_input_tokens
    );
    println!(
        "  routed        ${:.4}   (of which failed attempts ${:.4})",
        r.cost_usd, r.failed_attempts_cost_usd
    );
    println!("  all on {}  ${:.4}", r.baseline_model, r.baseline_cost_usd);
    if r.baseline_cost_usd <= 0.0 {
        return;
    }
    let pct = ResultsSummary::pct_of_baseline(r.cost_usd, r.baseline_cost_usd);
    println!(
        "  routed cost is {pct:.1}% of the flagship baseline: {:.1}% saved",
        100.0 - pct
    );
    println!("  by strategy:");
    for c in &r.by_strategy {
        println!(
            "    {:<20} {:>6} jobs  ${:>9.4} vs ${:>9.4}  ({:.1}% of baseline)",
            c.strategy,
            c.jobs,
            c.cost_usd,
            c.baseline_cost_usd,
            ResultsSummary::pct_of_baseline(c.cost_usd, c.baseline_cost_usd)
        );
    }
    if let Some((routed, baseline)) = r.cost_at_tokens(1e9) {
        println!(
            "  at 1B tokens/month with this mix: ${routed:.0} routed vs ${baseline:.0} on {}",
            r.baseline_model
        );
    }
}
