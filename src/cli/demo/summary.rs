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

/// Prints the report on stdout.
pub fn print(i: &Inputs<'_>) {
    let results = i.results;
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
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
        *by_status.entry(r.status.as_str()).or_default() += 1;
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
    let succeeded = by_status.get("succeeded").copied().unwrap_or(0);
    println!();
    println!(
        "Switchyard demo: {} results in {:.1} s (simulated provider time at {}x real time)",
        results.len(),
        i.elapsed.as_secs_f64(),
        i.time_scale
    );
    println!();
    println!("Jobs");
    for (status, n) in &by_status {
        println!("  {status:<10} {n:>6}");
    }
    println!(
        "  dead-lettered {:>3} (of {} malformed messages sent; each with its reason in the DLQ headers)",
        i.dead_lettered, i.malformed_sent
    );
    println!(
        "  failovers  {failovers:>6} jobs answered by a fallback after the first deployment failed"
    );
    println!();
    println!("Routed-model mix (succeeded jobs)");
    let mut mix: Vec<(String, usize)> = by_model.into_iter().collect();
    mix.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (model, n) in mix.iter().take(12) {
        let price = i
            .catalog
            .get(model)
            .map(|m| {
                format!(
                    "${:.2}/${:.2} per Mtok",
                    m.input_usd_per_mtok, m.output_usd_per_mtok
                )
            })
            .unwrap_or_default();
        println!(
            "  {:<30} {:>6}  {:>5.1}%  {}",
            model,
            n,
            100.0 * *n as f64 / succeeded.max(1) as f64,
            price
        );
    }
    if mix.len() > 12 {
        println!("  … and {} more models", mix.len() - 12);
    }
    if labelled > 0 {
        println!(
            "  quality: {:.1}% of jobs went to a model whose quality for the job's labelled category meets its labelled difficulty",
            100.0 * need_met as f64 / labelled as f64
        );
    }
    println!();
    println!("Latency (worker intake to result, succeeded jobs)");
    println!(
        "  p50 {:>6} ms   p95 {:>6} ms",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95)
    );
    println!();
    println!("Cost");
    println!(
        "  tokens        {} in, {} out, {} cached",
        tokens.input_tokens, tokens.output_tokens, tokens.cached_input_tokens
    );
    println!("  routed        ${cost:.4}   (of which failed attempts ${failed_attempt_cost:.4})");
    println!("  all on {}  ${baseline_cost:.4}", i.baseline);
    if baseline_cost > 0.0 {
        println!(
            "  routed cost is {:.1}% of the flagship baseline: {:.1}% saved",
            100.0 * cost / baseline_cost,
            100.0 * (1.0 - cost / baseline_cost)
        );
        println!("  by strategy:");
        for (s, (n, c, b)) in &by_strategy {
            println!(
                "    {:<20} {:>6} jobs  ${:>9.4} vs ${:>9.4}  ({:.1}% of baseline)",
                s,
                n,
                c,
                b,
                100.0 * c / b.max(1e-12)
            );
        }
        let total_tokens =
            (tokens.input_tokens + tokens.output_tokens + tokens.cached_input_tokens) as f64;
        if total_tokens > 0.0 {
            let scale = 1e9 / total_tokens;
            println!(
                "  at 1B tokens/month with this mix: ${:.0} routed vs ${:.0} on {}",
                cost * scale,
                baseline_cost * scale,
                i.baseline
            );
        }
    }
    println!();
    println!(
        "Usage events written by the sink to Parquet under {} ({} billed attempts), read back by business unit:",
        i.parquet_dir.display(),
        i.by_bu.total.attempts
    );
    print!("{}", i.by_bu.render(switchyard_analytics::Format::Table));
    println!(
        "More: switchyard report --parquet {} --by team,model [--format csv|json] [--html report.html]",
        i.parquet_dir.display()
    );
}
