//! Turning a ranking of models into a chain of deployments: the primary is the
//! best-ranked model's healthiest deployment; fallbacks go to other providers first,
//! so one provider's outage cannot take out the whole chain.

use super::feasibility::Assessed;
use super::strategy::Ranked;
use super::{ChainEntry, Router};

pub(super) fn build(
    router: &Router,
    ranked: &Ranked,
    assessed: &Assessed,
    max_chain: usize,
) -> Vec<ChainEntry> {
    let mut entries: Vec<ChainEntry> = Vec::new();
    for &i in &ranked.order {
        let a = &assessed.models[i];
        for &d in assessed.deployments_of(a) {
            entries.push(ChainEntry {
                deployment: d,
                model: a.model,
                estimated_cost_usd: a.cost_usd,
                worst_case_usd: a.worst_case_usd,
                expected_latency_ms: a.latency_ms,
            });
        }
    }
    if entries.len() <= 1 {
        return entries;
    }
    let provider = |e: &ChainEntry| router.deployments[e.deployment].provider.as_str();
    let mut chain = Vec::with_capacity(max_chain.min(entries.len()));
    let mut taken = vec![false; entries.len()];
    chain.push(entries[0].clone());
    taken[0] = true;
    // First pass: one entry per provider not yet in the chain, in rank order.
    for (i, e) in entries.iter().enumerate().skip(1) {
        if chain.len() >= max_chain {
            break;
        }
        if !chain.iter().any(|c| provider(c) == provider(e)) {
            chain.push(e.clone());
            taken[i] = true;
        }
    }
    // Second pass: fill with the rest, in rank order.
    for (i, e) in entries.iter().enumerate().skip(1) {
        if chain.len() >= max_chain {
            break;
        }
        if !taken[i] {
            chain.push(e.clone());
        }
    }
    chain
}
