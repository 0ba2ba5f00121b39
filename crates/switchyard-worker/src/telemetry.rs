//! What a worker's telemetry endpoint shows and checks: its counters
//! ([`crate::Metrics`]), then the engine's live state read at each scrape
//! (circuit breakers, and per budgeted or rationed org node the budget, spend,
//! in flight, headroom and quota use that the ledger holds for every worker),
//! and the readiness checks of `/readyz`: joined the consumer group, budgets
//! read, at least one deployment whose circuit is not open.

use std::sync::Arc;

use switchyard_core::budget::{NodeBudget, QuotaUse};
use switchyard_core::health::CircuitState;
use switchyard_core::org::Quota;
use switchyard_telemetry::{Family, Telemetry};

use crate::engine::Engine;

/// Registers the worker's renderers and readiness checks for `engine`, whose
/// worker runs in consumer group `group`.
pub fn register(telemetry: &mut Telemetry, engine: &Arc<Engine>, group: &str) {
    let metrics = engine.metrics.clone();
    telemetry.add_renderer(Arc::new(move |out: &mut String| {
        metrics.render_prometheus(out);
    }));
    let e = engine.clone();
    telemetry.add_renderer(Arc::new(move |out: &mut String| {
        render_circuits(&e, out);
        render_budgets(&e, out);
        render_quotas(&e, out);
    }));
    let m = engine.metrics.clone();
    let group = group.to_owned();
    telemetry.add_check(
        "group",
        Arc::new(move || {
            if m.group_joined() {
                Ok(())
            } else {
                Err(format!(
                    "no partitions assigned by consumer group `{group}` yet (joining, or rebalancing)"
                ))
            }
        }),
    );
    let m = engine.metrics.clone();
    telemetry.add_check(
        "budgets",
        Arc::new(move || {
            if m.budgets_caught_up() {
                Ok(())
            } else {
                Err("still reading the budget snapshots; no job is taken until every budget is known".into())
            }
        }),
    );
    let e = engine.clone();
    telemetry.add_check("deployments", Arc::new(move || deployments_ready(&e)));
}

/// The value of `switchyard_circuit_state`: 0 closed, 1 half-open, 2 open.
pub fn circuit_value(state: CircuitState) -> f64 {
    match state {
        CircuitState::Closed => 0.0,
        CircuitState::HalfOpen { .. } => 1.0,
        CircuitState::Open => 2.0,
    }
}

fn deployments_ready(engine: &Engine) -> Result<(), String> {
    let names: Vec<&str> = engine.metrics.deployments().collect();
    let open = (0..names.len())
        .filter(|d| engine.health().snapshot(*d).circuit == CircuitState::Open)
        .count();
    if names.is_empty() {
        return Err("no deployments are configured".into());
    }
    if open == names.len() {
        return Err(format!(
            "the circuit of every deployment ({open}) is open; jobs fail until one closes"
        ));
    }
    Ok(())
}

fn render_circuits(engine: &Engine, out: &mut String) {
    let mut f = Family::gauge(
        out,
        "switchyard_circuit_state",
        "Circuit breaker of a deployment: 0 closed, 1 half-open (probing), 2 open (no traffic).",
    );
    for (d, name) in engine.metrics.deployments().enumerate() {
        let state = engine.health().snapshot(d).circuit;
        f.sample(&[("deployment", name)], circuit_value(state));
    }
}

/// A budget family: its name, its help and how it reads a node's budget.
type BudgetFamily = (&'static str, &'static str, fn(&NodeBudget) -> f64);

fn render_budgets(engine: &Engine, out: &mut String) {
    let mut nodes: Vec<&str> = engine.org().budgets().map(|(node, _)| node).collect();
    nodes.sort_unstable();
    let budgets: Vec<(&str, _)> = nodes
        .into_iter()
        .filter_map(|node| Some((node, engine.node_budget(node)?)))
        .collect();
    let families: [BudgetFamily; 4] = [
        (
            "switchyard_budget_limit_usd",
            "Monthly budget of an org node (org.toml budget_usd_per_month), USD.",
            |b| b.budget_usd,
        ),
        (
            "switchyard_budget_spend_usd",
            "Settled spend of an org node this month (its children included, every worker's), USD.",
            |b| b.spent_usd,
        ),
        (
            "switchyard_budget_in_flight_usd",
            "What jobs in flight on every worker have reserved on an org node (their worst case), USD.",
            |b| b.in_flight_usd,
        ),
        (
            "switchyard_budget_headroom_usd",
            "What is left of an org node's budget for new jobs (budget minus spend and in flight), USD.",
            |b| b.headroom_usd,
        ),
    ];
    for (name, help, value) in families {
        let mut f = Family::gauge(out, name, help);
        for (node, budget) in &budgets {
            f.sample(&[("node", *node)], value(budget));
        }
    }
}

/// A quota: its label, how its limit is read from a node's quotas, and how
/// its use is read from the ledger's counts.
type QuotaSeries = (
    &'static str,
    fn(&Quota) -> Option<u64>,
    fn(&QuotaUse) -> u64,
);

/// The quotas, in the order they are written, with how each is read.
const QUOTAS: [QuotaSeries; 4] = [
    ("jobs_per_minute", |q| q.jobs_per_minute, |u| u.jobs_minute),
    ("jobs_per_day", |q| q.jobs_per_day, |u| u.jobs_day),
    (
        "tokens_per_minute",
        |q| q.tokens_per_minute,
        |u| u.tokens_minute,
    ),
    ("tokens_per_day", |q| q.tokens_per_day, |u| u.tokens_day),
];

fn render_quotas(engine: &Engine, out: &mut String) {
    let mut quotas: Vec<_> = engine.org().quotas().collect();
    quotas.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let used: Vec<_> = quotas
        .iter()
        .map(|(node, _)| engine.quota_use(node))
        .collect();
    let mut f = Family::gauge(
        out,
        "switchyard_quota_limit",
        "A quota of an org node (org.toml jobs_per_minute, jobs_per_day, tokens_per_minute, tokens_per_day).",
    );
    for (node, quota) in &quotas {
        for (name, limit, _) in QUOTAS {
            if let Some(limit) = limit(quota) {
                f.sample(&[("node", *node), ("quota", name)], limit as f64);
            }
        }
    }
    let mut f = Family::gauge(
        out,
        "switchyard_quota_used",
        "What every worker admitted on an org node in the quota's current minute or day (its time zone's), jobs or tokens.",
    );
    for ((node, quota), used) in quotas.iter().zip(&used) {
        for (name, limit, value) in QUOTAS {
            if limit(quota).is_some() {
                f.sample(&[("node", *node), ("quota", name)], value(used) as f64);
            }
        }
    }
}
