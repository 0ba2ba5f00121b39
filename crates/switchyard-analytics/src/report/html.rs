//! `switchyard report --html FILE`: one self-contained page (inline CSS and SVG,
//! no scripts, nothing fetched) for finance readers: headline figures, spend over
//! time stacked by business unit, spend by model, routed cost against the
//! flagship baseline per strategy, and a table per business unit.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::Utc;

use super::{Dimension, Report, ReportQuery, ReportRow, Source, digits, dollars};
use crate::error::Result;

/// The four reports the page draws.
#[derive(Debug, Clone)]
pub struct Pages {
    /// Grouped by day and business unit.
    pub daily_by_bu: Report,
    /// Grouped by model.
    pub by_model: Report,
    /// Grouped by strategy.
    pub by_strategy: Report,
    /// Grouped by business unit.
    pub by_bu: Report,
}

impl Pages {
    /// Runs the four reports on `source` over the window of `window`.
    pub async fn load(source: &Source, window: &ReportQuery) -> Result<Self> {
        let q = |by: Vec<Dimension>| ReportQuery {
            by,
            since: window.since,
            until: window.until,
        };
        Ok(Self {
            daily_by_bu: source
                .report(&q(vec![Dimension::Day, Dimension::Bu]))
                .await?,
            by_model: source.report(&q(vec![Dimension::Model])).await?,
            by_strategy: source.report(&q(vec![Dimension::Strategy])).await?,
            by_bu: source.report(&q(vec![Dimension::Bu])).await?,
        })
    }
}

const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
const ROUTED: &str = "#4e79a7";
const BASELINE: &str = "#bab0ac";

/// The page, as one HTML document. `source` names where the numbers came from.
pub fn render(pages: &Pages, source: &str) -> String {
    let total = &pages.by_bu.total;
    let window = window_text(&pages.by_bu.query);
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Switchyard LLM spend report</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1080px;color:#222;padding:0 1rem}}
h1{{margin-bottom:.2rem}} .sub{{color:#666;margin-top:0}}
.cards{{display:flex;gap:1rem;flex-wrap:wrap;margin:1.5rem 0}}
.card{{flex:1;min-width:150px;border:1px solid #ddd;border-radius:8px;padding:.8rem 1rem}}
.card b{{display:block;font-size:1.5rem;margin-top:.3rem}}
section{{margin:2.5rem 0}} svg text{{font-size:12px;fill:#333}}
table{{border-collapse:collapse;width:100%}} th,td{{padding:.35rem .6rem;border-bottom:1px solid #eee;text-align:right}}
th:first-child,td:first-child{{text-align:left}} .legend span{{display:inline-block;margin-right:1rem}}
.swatch{{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}}
.empty{{color:#888;font-style:italic}}
</style></head><body>
<h1>LLM spend report</h1>
<p class="sub">{window} &middot; from {source} &middot; generated {generated}</p>
<div class="cards">
<div class="card">Spend<b>{spend}</b></div>
<div class="card">Flagship baseline<b>{baseline}</b></div>
<div class="card">Saved by routing<b>{saved} ({pct:.1}%)</b></div>
<div class="card">Jobs<b>{jobs}</b></div>
<div class="card">Cost per 1k jobs<b>{per_k}</b></div>
</div>
"#,
        window = esc(&window),
        source = esc(source),
        generated = Utc::now().format("%Y-%m-%d %H:%M UTC"),
        spend = dollars(total.cost_usd),
        baseline = dollars(total.baseline_cost_usd),
        saved = dollars(total.savings_usd()),
        pct = total.savings_pct(),
        jobs = digits(total.jobs),
        per_k = dollars(total.avg_cost_per_job_usd() * 1000.0),
    );
    section(
        &mut out,
        "Spend over time by business unit",
        &spend_over_time(&pages.daily_by_bu),
    );
    section(&mut out, "Spend by model", &spend_by_model(&pages.by_model));
    section(
        &mut out,
        "Routed cost against the flagship baseline, by strategy",
        &savings_by_strategy(&pages.by_strategy),
    );
    section(&mut out, "By business unit", &bu_table(&pages.by_bu));
    out.push_str("</body></html>\n");
    out
}

fn section(out: &mut String, title: &str, body: &str) {
    let _ = write!(out, "<section><h2>{}</h2>\n{body}</section>\n", esc(title));
}

fn window_text(q: &ReportQuery) -> String {
    match (q.since, q.until) {
        (None, None) => "All recorded usage".into(),
        (Some(s), None) => format!("Since {}", s.format("%Y-%m-%d %H:%M UTC")),
        (None, Some(u)) => format!("Until {}", u.format("%Y-%m-%d %H:%M UTC")),
        (Some(s), Some(u)) => format!(
            "{} to {}",
            s.format("%Y-%m-%d %H:%M UTC"),
            u.format("%Y-%m-%d %H:%M UTC")
        ),
    }
}

const EMPTY: &str = "<p class=\"empty\">No usage in this window.</p>\n";

/// Stacked columns: one per day, one colour per business unit.
fn spend_over_time(report: &Report) -> String {
    if report.rows.is_empty() {
        return EMPTY.into();
    }
    let mut days: BTreeMap<&str, BTreeMap<&str, f64>> = BTreeMap::new();
    let mut bu_totals: BTreeMap<&str, f64> = BTreeMap::new();
    for r in &report.rows {
        *days
            .entry(&r.keys[0])
            .or_default()
            .entry(&r.keys[1])
            .or_default() += r.cost_usd;
        *bu_totals.entry(&r.keys[1]).or_default() += r.cost_usd;
    }
    let mut bus: Vec<(&str, f64)> = bu_totals.into_iter().collect();
    bus.sort_by(|a, b| b.1.total_cmp(&a.1));
    let colour = |bu: &str| {
        let i = bus.iter().position(|(b, _)| *b == bu).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    };
    let max = days
        .values()
        .map(|m| m.values().sum::<f64>())
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let (width, height, left, bottom, top) = (1000.0, 320.0, 80.0, 40.0, 10.0);
    let plot_h = height - bottom - top;
    let step = (width - left) / days.len() as f64;
    let bar = (step * 0.7).min(60.0);
    let mut svg = format!(
        "<svg viewBox=\"0 0 {width} {height}\" width=\"100%\" role=\"img\" aria-label=\"Spend over time by business unit\">\n"
    );
    axis(&mut svg, left, top, plot_h, width, max);
    let label_every = (days.len() / 12).max(1);
    for (i, (day, by_bu)) in days.iter().enumerate() {
        let x = left + step * i as f64 + (step - bar) / 2.0;
        let mut y = top + plot_h;
        for (bu, _) in &bus {
            let Some(v) = by_bu.get(bu) else { continue };
            let h = plot_h * v / max;
            y -= h;
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{} {}: {}</title></rect>",
                colour(bu),
                esc(day),
                esc(bu),
                dollars(*v)
            );
        }
        if i % label_every == 0 {
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                height - bottom + 18.0,
                esc(day)
            );
        }
    }
    svg.push_str("</svg>\n<p class=\"legend\">");
    for (bu, total) in &bus {
        let _ = write!(
            svg,
            "<span><i class=\"swatch\" style=\"background:{}\"></i>{} {}</span>",
            colour(bu),
            esc(bu),
            dollars(*total)
        );
    }
    svg.push_str("</p>\n");
    svg
}

/// Horizontal gridlines and dollar labels of a vertical chart.
fn axis(svg: &mut String, left: f64, top: f64, plot_h: f64, width: f64, max: f64) {
    for k in 0..=4 {
        let v = max * f64::from(k) / 4.0;
        let y = top + plot_h - plot_h * f64::from(k) / 4.0;
        let _ = writeln!(
            svg,
            "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{width}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 6.0,
            y + 4.0,
            dollars(v)
        );
    }
}

/// Horizontal bars: each model's spend, largest first (top 15, then the rest).
fn spend_by_model(report: &Report) -> String {
    if report.rows.is_empty() {
        return EMPTY.into();
    }
    let mut rows: Vec<(String, f64)> = report
        .rows
        .iter()
        .map(|r| (r.keys[0].clone(), r.cost_usd))
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    if rows.len() > 16 {
        let rest: f64 = rows[15..].iter().map(|r| r.1).sum();
        let n = rows.len() - 15;
        rows.truncate(15);
        rows.push((format!("{n} other models"), rest));
    }
    let bars: Vec<Bar> = rows
        .iter()
        .enumerate()
        .map(|(i, (model, cost))| {
            let share = 100.0 * cost / report.total.cost_usd.max(f64::MIN_POSITIVE);
            Bar {
                label: model.clone(),
                value: *cost,
                colour: PALETTE[i % PALETTE.len()],
                text: format!("{} ({share:.1}%)", dollars(*cost)),
            }
        })
        .collect();
    horizontal_bars(&bars, "Spend by model")
}

/// Two bars per strategy: routed cost and what the flagship would have cost.
fn savings_by_strategy(report: &Report) -> String {
    if report.rows.is_empty() {
        return EMPTY.into();
    }
    let mut bars = Vec::new();
    for r in report.rows.iter().chain(std::iter::once(&report.total)) {
        let name = r
            .keys
            .first()
            .cloned()
            .unwrap_or_else(|| "all strategies".into());
        bars.push(Bar {
            label: format!("{name}: flagship"),
            value: r.baseline_cost_usd,
            colour: BASELINE,
            text: dollars(r.baseline_cost_usd),
        });
        bars.push(Bar {
            label: format!("{name}: routed"),
            value: r.cost_usd,
            colour: ROUTED,
            text: format!("{} (saved {:.1}%)", dollars(r.cost_usd), r.savings_pct()),
        });
    }
    let mut out = horizontal_bars(&bars, "Routed cost against the flagship baseline");
    let _ = writeln!(
        out,
        "<p class=\"legend\"><span><i class=\"swatch\" style=\"background:{ROUTED}\"></i>routed (what was paid)</span><span><i class=\"swatch\" style=\"background:{BASELINE}\"></i>the same tokens on the flagship model</span></p>"
    );
    out
}

/// One bar of a horizontal chart.
struct Bar {
    label: String,
    value: f64,
    colour: &'static str,
    /// Printed after the bar.
    text: String,
}

/// A horizontal bar chart.
fn horizontal_bars(bars: &[Bar], label: &str) -> String {
    let max = bars
        .iter()
        .map(|b| b.value)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE);
    let (width, row, left, right) = (1000.0, 24.0, 260.0, 200.0);
    let height = row * bars.len() as f64 + 10.0;
    let mut svg = format!(
        "<svg viewBox=\"0 0 {width} {height}\" width=\"100%\" role=\"img\" aria-label=\"{}\">\n",
        esc(label)
    );
    for (i, bar) in bars.iter().enumerate() {
        let y = 5.0 + row * i as f64;
        let w = (width - left - right) * bar.value / max;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n<rect x=\"{left}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\" fill=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            left - 8.0,
            y + 15.0,
            esc(&bar.label),
            y + 3.0,
            row - 6.0,
            bar.colour,
            left + w + 6.0,
            y + 15.0,
            esc(&bar.text)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn bu_table(report: &Report) -> String {
    if report.rows.is_empty() {
        return EMPTY.into();
    }
    let mut out = String::from(
        "<table><thead><tr><th>Business unit</th><th>Jobs</th><th>Spend</th><th>Cost per 1k jobs</th><th>Failed attempts' cost</th><th>Flagship baseline</th><th>Saved</th></tr></thead><tbody>\n",
    );
    let line = |out: &mut String, name: &str, r: &ReportRow| {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({:.1}%)</td></tr>",
            esc(name),
            digits(r.jobs),
            dollars(r.cost_usd),
            dollars(r.avg_cost_per_job_usd() * 1000.0),
            dollars(r.failed_cost_usd),
            dollars(r.baseline_cost_usd),
            dollars(r.savings_usd()),
            r.savings_pct()
        );
    };
    for r in &report.rows {
        line(&mut out, &r.keys[0], r);
    }
    out.push_str("</tbody><tfoot>\n");
    line(&mut out, "Total", &report.total);
    out.push_str("</tfoot></table>\n");
    out
}

/// Text for HTML content and attribute values.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
