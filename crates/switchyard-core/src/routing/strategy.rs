//! The five strategies: each decides which feasible models are good enough for the
//! job and in what order to try them.

use super::feasibility::{Assessed, Drop};
use super::{BudgetState, Candidate, RouteInput, Router, RouterSettings, Strategy};

/// Models kept, best first, as indexes into `Assessed::models`.
pub(super) struct Ranked {
    pub order: Vec<usize>,
    /// Models dropped by the strategy's quality bar (index, reason).
    pub quality_drops: Vec<(usize, Drop)>,
    /// Score per assessed model (meaning depends on the strategy).
    pub scores: Vec<f64>,
}

/// Quality the strategy demands for this job.
pub(super) fn need(strategy: Strategy, input: &RouteInput<'_>, settings: RouterSettings) -> f64 {
    let floor = input.policy.quality_floor;
    if matches!(input.budget, BudgetState::NearLimit { .. }) {
        return floor;
    }
    let required = input.analysis.required_quality;
    match strategy {
        Strategy::Auto => required.max(floor),
        Strategy::CostFirst => floor,
        Strategy::Balanced | Strategy::LatencyFirst | Strategy::AvailabilityFirst => {
            (required - settings.quality_slack).max(floor)
        }
    }
}

/// How much quality each doubling of price must buy under `balanced`.
const BALANCED_QUALITY_PER_DOUBLING: f64 = 0.03;
/// Quality above the need that `balanced` still values; beyond it, more is not worth paying for.
const BALANCED_USEFUL_SURPLUS: f64 = 0.10;

pub(super) fn rank(
    router: &Router,
    strategy: Strategy,
    input: &RouteInput<'_>,
    assessed: &Assessed,
) -> (Ranked, String) {
    let needed = need(strategy, input, router.settings);
    let downgrading = matches!(input.budget, BudgetState::NearLimit { .. });
    let (mut eligible, quality_drops, best_effort) =
        eligible(assessed, needed, input.policy.quality_floor);
    let mut scores = vec![f64::NAN; assessed.models.len()];
    if best_effort {
        for &i in &eligible {
            scores[i] = assessed.models[i].quality;
        }
    } else {
        let effective = if downgrading {
            Strategy::CostFirst
        } else {
            strategy
        };
        order(effective, assessed, needed, &mut eligible, &mut scores);
    }
    let reason = reason(
        router,
        strategy,
        input,
        assessed,
        &eligible,
        needed,
        best_effort,
        downgrading,
    );
    (
        Ranked {
            order: eligible,
            quality_drops,
            scores,
        },
        reason,
    )
}

/// The feasible models that meet the need, and those dropped for quality.
/// When none meets it, the strongest feasible models above the policy's floor
/// (a hard limit), strongest first ("best effort", the third value).
fn eligible(
    assessed: &Assessed,
    needed: f64,
    floor: f64,
) -> (Vec<usize>, Vec<(usize, Drop)>, bool) {
    let feasible: Vec<usize> = (0..assessed.models.len())
        .filter(|&i| assessed.models[i].drop.is_none())
        .collect();
    let mut quality_drops = Vec::new();
    let mut eligible: Vec<usize> = Vec::with_capacity(feasible.len());
    for &i in &feasible {
        let a = &assessed.models[i];
        if a.quality + 1e-9 >= needed {
            eligible.push(i);
        } else {
            quality_drops.push((
                i,
                Drop::BelowQuality {
                    quality: a.quality,
                    needed,
                },
            ));
        }
    }
    let best_effort = eligible.is_empty() && !feasible.is_empty();
    if best_effort {
        // Nothing meets the bar: use the strongest feasible models rather than fail.
        eligible = feasible
            .iter()
            .copied()
            .filter(|&i| assessed.models[i].quality + 1e-9 >= floor)
            .collect();
        eligible.sort_by(|&a, &b| {
            assessed.models[b]
                .quality
                .total_cmp(&assessed.models[a].quality)
        });
        quality_drops.retain(|(i, _)| !eligible.contains(i));
    }
    (eligible, quality_drops, best_effort)
}

/// Orders the eligible models by the strategy, writing each one's score.
fn order(
    strategy: Strategy,
    assessed: &Assessed,
    needed: f64,
    eligible: &mut [usize],
    scores: &mut [f64],
) {
    let m = |i: usize| &assessed.models[i];
    match strategy {
        Strategy::Auto | Strategy::CostFirst => {
            for &i in eligible.iter() {
                scores[i] = m(i).cost_usd;
            }
            eligible.sort_by(|&a, &b| {
                m(a).cost_usd
                    .total_cmp(&m(b).cost_usd)
                    .then(m(b).quality.total_cmp(&m(a).quality))
            });
        }
        Strategy::Balanced => {
            let cheapest = eligible
                .iter()
                .map(|&i| m(i).cost_usd)
                .fold(f64::INFINITY, f64::min)
                .max(1e-9);
            for &i in eligible.iter() {
                let doublings = (m(i).cost_usd.max(1e-9) / cheapest).log2();
                let useful = m(i).quality.min(needed + BALANCED_USEFUL_SURPLUS);
                scores[i] = useful - BALANCED_QUALITY_PER_DOUBLING * doublings;
            }
            eligible.sort_by(|&a, &b| {
                scores[b]
                    .total_cmp(&scores[a])
                    .then(m(a).cost_usd.total_cmp(&m(b).cost_usd))
            });
        }
        Strategy::LatencyFirst => {
            for &i in eligible.iter() {
                scores[i] = m(i).latency_ms;
            }
            eligible.sort_by(|&a, &b| {
                m(a).latency_ms
                    .total_cmp(&m(b).latency_ms)
                    .then(m(a).cost_usd.total_cmp(&m(b).cost_usd))
            });
        }
        Strategy::AvailabilityFirst => {
            // Success rates within a point are equally available; among those, every
            // model already meets the need, so the cheaper one leads.
            for &i in eligible.iter() {
                scores[i] = (m(i).success_rate * 100.0).round() / 100.0;
            }
            eligible.sort_by(|&a, &b| {
                scores[b]
                    .total_cmp(&scores[a])
                    .then(m(a).cost_usd.total_cmp(&m(b).cost_usd))
            });
        }
    }
}

/// The opening of every reason: strategy, what the job is and what it needs,
/// with the learned need and the threshold that decided.
pub(super) fn head(strategy: Strategy, input: &RouteInput<'_>, needed: f64) -> String {
    let a = input.analysis;
    let n = &a.need;
    format!(
        "{strategy}: {} (complexity {:.2}; need {:.2} {} threshold {:.2} for target {:.2}) needs quality >= {needed:.2}",
        a.category,
        a.complexity,
        n.p,
        if n.premium { ">=" } else { "<" },
        n.threshold,
        n.quality_target
    )
}

#[allow(clippy::too_many_arguments)]
fn reason(
    router: &Router,
    strategy: Strategy,
    input: &RouteInput<'_>,
    assessed: &Assessed,
    eligible: &[usize],
    needed: f64,
    best_effort: bool,
    downgrading: bool,
) -> String {
    let head = head(strategy, input, needed);
    let Some(&first) = eligible.first() else {
        return format!("{head}; no feasible model");
    };
    let chosen = &router.catalog.model(assessed.models[first].model).name;
    if best_effort {
        return format!(
            "{head}; none of the feasible models reaches it, so {chosen} (best available, {:.2}) leads",
            assessed.models[first].quality
        );
    }
    if downgrading {
        return format!(
            "{head}; budget near its limit: downgraded to the cheapest model above the floor, {chosen}"
        );
    }
    let n = eligible.len();
    match strategy {
        Strategy::Auto | Strategy::CostFirst => format!(
            "{head}; {chosen} is the cheapest of {n} that do (est. ${:.6})",
            assessed.models[first].cost_usd
        ),
        Strategy::Balanced => {
            format!("{head}; {chosen} has the best quality for its price among {n}")
        }
        Strategy::LatencyFirst => format!(
            "{head}; {chosen} is the fastest of {n} (expected {:.0} ms)",
            assessed.models[first].latency_ms
        ),
        Strategy::AvailabilityFirst => format!(
            "{head}; {chosen} has the best observed success rate ({:.3}) among {n}",
            assessed.models[first].success_rate
        ),
    }
}

pub(super) fn explain(router: &Router, assessed: &Assessed, ranked: &Ranked) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = assessed
        .models
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let spec = router.catalog.model(a.model);
            let dropped = a.drop.clone().or_else(|| {
                ranked
                    .quality_drops
                    .iter()
                    .find(|(j, _)| *j == i)
                    .map(|(_, d)| d.clone())
            });
            Candidate {
                model: spec.name.clone(),
                provider: spec.provider.clone(),
                quality: a.quality,
                estimated_cost_usd: a.cost_usd,
                expected_latency_ms: a.latency_ms,
                success_rate: a.success_rate,
                score: ranked.scores[i],
                rank: ranked.order.iter().position(|&j| j == i),
                dropped,
            }
        })
        .collect();
    out.sort_by_key(|c| (c.rank.is_none(), c.rank));
    out
}
