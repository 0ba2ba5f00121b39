//! The demo's closing report, computed from the results topic alone.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use switchyard_core::analysis::TaskCategory;
use switchyard_core::catalog::Catalog;
use switchyard_core::result::{AttemptOutcome, JobResult, JobStatus, TokenUsage};

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

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The demo's figures, as printed (table) or written for scripts (JSON).
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    /// Results read back (one per job, the rejected one included).
    pub results: usize,
    /// Wall-clock seconds of the whole run.
    pub elapsed_s: f64,
    /// Simulated provider time as a fraction of real time.
    pub time_scale: f64,
    /// Results by status.
    pub by_status: BTreeMap<String, usize>,
    /// Malformed messages sent, and how many reached the dead-letter topic.
    pub malformed_sent: usize,
    /// Messages dead-lettered by the worker.
    pub dead_lettered: u64,
    /// Succeeded jobs answered by a fallback after the first deployment failed.
    pub failovers: usize,
    /// Succeeded jobs per routed model, most used first.
    pub model_mix: Vec<ModelShare>,
    /// Share of labelled jobs routed to a model whose quality for the labelled
    /// category meets the labelled difficulty's need, percent.
    pub quality_need_met_pct: Option<f64>,
    /// Latency from worker intake to result (succeeded jobs), ms.
    pub p50_ms: u64,
    /// 95th percentile of the same, ms.
    pub p95_ms: u64,
    /// Tokens of the successful attempts.
    pub tokens: TokenUsage,
    /// What routing cost, failed attempts included, USD.
    pub cost_usd: f64,
    /// The part of it spent on failed attempts, USD.
    pub failed_attempts_cost_usd: f64,
    /// The flagship baseline model.
    pub baseline_model: String,
    /// The same tokens on the baseline model, USD.
    pub baseline_cost_usd: f64,
    /// Per strategy: jobs, cost and baseline.
    pub by_strategy: Vec<StrategyCost>,
    /// Where the usage sink wrote its Parquet files.
    pub parquet_dir: String,
    /// Billed attempts read back from those files.
    pub parquet_attempts: u64,
}

/// One routed model's share of the succeeded jobs.
#[derive(Debug, serde::Serialize)]
pub struct ModelShare {
    /// Catalog name.
    pub model: String,
    /// Succeeded jobs it answered.
    pub jobs: usize,
    /// List price per million input tokens, USD.
    pub input_usd_per_mtok: Option<f64>,
    /// List price per million output tokens, USD.
    pub output_usd_per_mtok: Option<f64>,
}

/// Cost of one strategy's jobs against the baseline.
#[derive(Debug, serde::Serialize)]
pub struct StrategyCost {
    /// Strategy name.
    pub strategy: String,
    /// Succeeded jobs routed by it.
    pub jobs: usize,
    /// Their cost, USD.
    pub cost_usd: f64,
    /// The same tokens on the baseline model, USD.
    pub baseline_cost_usd: f64,
}

impl Summary {
    /// Routed cost as a percentage of the baseline.
    pub fn pct_of_baseline(cost: f64, baseline: f64) -> f64 {
        100.0 * cost / baseline.max(1e-12)
    }
}

/// Computes the figures from the results topic and the sink's Parquet files.
pub fn summarize(i: &Inputs<'_>) -> Summary {
    let results = i.results;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_model: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_strategy: BTreeMap<String, (usize, f64, f64)> = BTreeMap::new();
    let mut latencies: Vec<u64> = Vec::with_capacity(results.len());
    let mut failovers = 0;
    let mut cost = 0.0;
    let mut baseline_cost = 0.0;
    let mut failed_attempt_cost = 0.0;
    let mut tokens = TokenUsage::default();
    let baseline_model = i.catalog.get(i.baseline);
    let (mut labelled, mut need_met) = (0usize, 0usize);
    for r in results.values() {
        *by_status.entry(r.status.as_str().to_owned()).or_default() += 1;
        if r.status != JobStatus::Succeeded {
            continue;
        }
        if let Some(m) = &r.model {
            *by_model.entry(m.clone()).or_default() += 1;
            let category = i
                .labels
                .get(&r.job_id)
                .and_then(|(c, d)| TaskCategory::parse(c).map(|c| (c, d)));
            if let (Some((category, difficulty)), Some(spec)) = (category, i.catalog.get(m)) {
                labelled += 1;
                if spec.quality_for(category) + 1e-9 >= labelled_need(difficulty) {
                    need_met += 1;
                }
            }
        }
        if r.failovers() > 0 {
            failovers += 1;
        }
        latencies.push(r.latency_ms);
        cost += r.cost_usd;
        failed_attempt_cost += r
            .attempts
            .iter()
            .filter(|a| a.outcome != AttemptOutcome::Succeeded)
            .map(|a| a.cost_usd)
            .sum::<f64>();
        // The flagship would have needed the successful attempt's tokens once.
        let needed = r
            .attempts
            .iter()
            .find(|a| a.outcome == AttemptOutcome::Succeeded)
            .map(|a| a.usage)
            .unwrap_or(r.usage);
        tokens.add(&needed);
        let base = baseline_model.map_or(0.0, |b| b.cost_usd(&needed));
        baseline_cost += base;
        if let Some(routing) = &r.routing {
            let e = by_strategy.entry(routing.strategy.to_string()).or_default();
            e.0 += 1;
            e.1 += r.cost_usd;
            e.2 += base;
        }
    }
    latencies.sort_unstable();
    let mut model_mix: Vec<ModelShare> = by_model
        .into_iter()
        .map(|(model, jobs)| {
            let spec = i.catalog.get(&model);
            ModelShare {
                input_usd_per_mtok: spec.map(|m| m.input_usd_per_mtok),
                output_usd_per_mtok: spec.map(|m| m.output_usd_per_mtok),
                model,
                jobs,
            }
        })
        .collect();
    model_mix.sort_by_key(|m| std::cmp::Reverse(m.jobs));
    Summary {
        results: results.len(),
        elapsed_s: i.elapsed.as_secs_f64(),
        time_scale: i.time_scale,
        by_status,
        malformed_sent: i.malformed_sent,
        dead_lettered: i.dead_lettered,
        failovers,
        model_mix,
        quality_need_met_pct: (labelled > 0).then(|| 100.0 * need_met as f64 / labelled as f64),
        p50_ms: percentile(&latencies, 0.50),
        p95_ms: percentile(&latencies, 0.95),
        tokens,
        cost_usd: cost,
        failed_attempts_cost_usd: failed_attempt_cost,
        baseline_model: i.baseline.to_owned(),
        baseline_cost_usd: baseline_cost,
        by_strategy: by_strategy
            .into_iter()
            .map(
                |(strategy, (jobs, cost_usd, baseline_cost_usd))| StrategyCost {
                    strategy,
                    jobs,
                    cost_usd,
                    baseline_cost_usd,
                },
            )
            .collect(),
        parquet_dir: i.parquet_dir.display().to_string(),
        parquet_attempts: i.by_bu.total.attempts,
    }
}

/// Prints the report on stdout for a person.
pub fn print(s: &Summary, by_bu: &switchyard_analytics::Report) {
    let succeeded = s.by_status.get("succeeded").copied().unwrap_or(0);
    println!();
    println!(
        "Switchyard demo: {} results in {:.1} s (simulated provider time at {}x real time)",
        s.results, s.elapsed_s, s.time_scale
    );
    println!();
    println!("Jobs");
    for (status, n) in &s.by_status {
        println!("  {status:<10} {n:>6}");
    }
    println!(
        "  dead-lettered {:>3} (of {} malformed messages sent; each with its reason in the DLQ headers)",
        s.dead_lettered, s.malformed_sent
    );
    println!(
        "  failovers  {:>6} jobs answered by a fallback after the first deployment failed",
        s.failovers
    );
    println!();
    println!("Routed-model mix (succeeded jobs)");
    for m in s.model_mix.iter().take(12) {
        let price = match (m.input_usd_per_mtok, m.output_usd_per_mtok) {
            (Some(i), Some(o)) => format!("${i:.2}/${o:.2} per Mtok"),
            _ => String::new(),
        };
        println!(
            "  {:<30} {:>6}  {:>5.1}%  {}",
            m.model,
            m.jobs,
            100.0 * m.jobs as f64 / succeeded.max(1) as f64,
            price
        );
    }
    if s.model_mix.len() > 12 {
        println!("  … and {} more models", s.model_mix.len() - 12);
    }
    if let Some(pct) = s.quality_need_met_pct {
        println!(
            "  quality: {pct:.1}% of jobs went to a model whose quality for the job's labelled category meets its labelled difficulty"
        );
    }
    println!();
    println!("Latency (worker intake to result, succeeded jobs)");
    println!("  p50 {:>6} ms   p95 {:>6} ms", s.p50_ms, s.p95_ms);
    println!();
    println!("Cost");
    println!(
        "  tokens        {} in, {} out, {} cached",
        s.tokens.input_tokens, s.tokens.output_tokens, s.tokens.cached_input_tokens
    );
    println!(
        "  routed        ${:.4}   (of which failed attempts ${:.4})",
        s.cost_usd, s.failed_attempts_cost_usd
    );
    println!("  all on {}  ${:.4}", s.baseline_model, s.baseline_cost_usd);
    if s.baseline_cost_usd > 0.0 {
        let pct = Summary::pct_of_baseline(s.cost_usd, s.baseline_cost_usd);
        println!(
            "  routed cost is {pct:.1}% of the flagship baseline: {:.1}% saved",
            100.0 - pct
        );
        println!("  by strategy:");
        for c in &s.by_strategy {
            println!(
                "    {:<20} {:>6} jobs  ${:>9.4} vs ${:>9.4}  ({:.1}% of baseline)",
                c.strategy,
                c.jobs,
                c.cost_usd,
                c.baseline_cost_usd,
                Summary::pct_of_baseline(c.cost_usd, c.baseline_cost_usd)
            );
        }
        let total_tokens =
            (s.tokens.input_tokens + s.tokens.output_tokens + s.tokens.cached_input_tokens) as f64;
        if total_tokens > 0.0 {
            let scale = 1e9 / total_tokens;
            println!(
                "  at 1B tokens/month with this mix: ${:.0} routed vs ${:.0} on {}",
                s.cost_usd * scale,
                s.baseline_cost_usd * scale,
                s.baseline_model
            );
        }
    }
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
