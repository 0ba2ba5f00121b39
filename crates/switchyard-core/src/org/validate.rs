//! Checks on one node of the org file before it joins the tree: budget settings
//! that make sense together, quality floors and price caps in range, and provider
//! and model names that exist. A name that does not exist is never harmless: in a
//! deny list it denies nothing, in an allow list it allows nothing, so each one is
//! reported with its line and the closest known name.

use super::{NodeSpec, PolicySpec};
use crate::catalog::{Catalog, PROVIDERS};
use crate::config::source::{Invalid, KeyPath, closest};

/// Checks a node's own settings and those of each of its workloads.
pub(super) fn node(spec: &NodeSpec, at: &KeyPath, catalog: &Catalog) -> Result<(), Invalid> {
    if let Some(b) = spec.budget_usd_per_month
        && !(b.is_finite() && b >= 0.0)
    {
        return Err(Invalid::new(
            at.key("budget_usd_per_month"),
            format!("budget {b} is not an amount of USD"),
            "give USD per month, 0 or more",
        ));
    }
    if let Some(s) = spec.budget_soft_limit
        && !(0.0..=1.0).contains(&s)
    {
        return Err(Invalid::new(
            at.key("budget_soft_limit"),
            format!("{s} is not a fraction of the budget"),
            "give a fraction between 0 and 1, such as 0.9 (the policy acts from 90% of the budget)",
        ));
    }
    if spec.budget_usd_per_month.is_none() {
        for (key, set) in [
            ("budget_soft_limit", spec.budget_soft_limit.is_some()),
            ("on_budget_exhausted", spec.on_budget_exhausted.is_some()),
        ] {
            if set {
                return Err(Invalid::new(
                    at.key(key),
                    format!("`{key}` has no effect on a node without a budget"),
                    "add budget_usd_per_month to this node, or remove the setting",
                ));
            }
        }
    }
    for (key, value) in [
        ("jobs_per_minute", spec.jobs_per_minute),
        ("jobs_per_day", spec.jobs_per_day),
        ("tokens_per_minute", spec.tokens_per_minute),
        ("tokens_per_day", spec.tokens_per_day),
    ] {
        if value == Some(0) {
            return Err(Invalid::new(
                at.key(key),
                "a quota of 0 refuses every job",
                "give a positive number, or remove the quota",
            ));
        }
    }
    if spec.on_quota_exhausted.is_some() && spec.quota().is_none() {
        return Err(Invalid::new(
            at.key("on_quota_exhausted"),
            "`on_quota_exhausted` has no effect on a node without a quota",
            "add jobs_per_minute, jobs_per_day, tokens_per_minute or tokens_per_day, or remove the setting",
        ));
    }
    if spec.time_zone.is_some() && !spec.path.is_empty() {
        return Err(Invalid::new(
            at.key("time_zone"),
            "a time zone belongs to the whole org",
            "set time_zone under [org]",
        ));
    }
    policy(&spec.policy(), at, catalog)?;
    for (workload, p) in &spec.workloads {
        policy(p, &at.key("workloads").key(workload), catalog)?;
    }
    Ok(())
}

fn policy(p: &PolicySpec, at: &KeyPath, catalog: &Catalog) -> Result<(), Invalid> {
    if p.default_max_tokens == Some(0) {
        return Err(Invalid::new(
            at.key("default_max_tokens"),
            "an answer cap of 0 tokens would refuse every answer",
            "give a positive number of tokens, such as 4096",
        ));
    }
    if p.deferred_max_delay.is_some_and(|d| d.is_zero()) {
        return Err(Invalid::new(
            at.key("deferred_max_delay"),
            "a job that may not wait at all cannot be deferred",
            "give how long jobs without a deadline may wait, such as \"36h\", or set default_mode = \"live\"",
        ));
    }
    if let Some(q) = p.quality_floor
        && !(0.0..=1.0).contains(&q)
    {
        return Err(Invalid::new(
            at.key("quality_floor"),
            format!("quality floor {q} is outside 0..1"),
            "give a value between 0 and 1",
        ));
    }
    if let Some(t) = p.quality_target
        && !(0.0..=1.0).contains(&t)
    {
        return Err(Invalid::new(
            at.key("quality_target"),
            format!("quality target {t} is outside 0..1"),
            "give the share of the flagship's quality to keep, such as 0.95",
        ));
    }
    if let Some(cap) = p.max_usd_per_job
        && !(cap.is_finite() && cap >= 0.0)
    {
        return Err(Invalid::new(
            at.key("max_usd_per_job"),
            format!("price cap {cap} is not an amount of USD"),
            "give the largest estimated cost of one job in USD, 0 or more, such as 2.50",
        ));
    }
    if let Some(a) = p.approval_required_above_usd
        && !(a.is_finite() && a >= 0.0)
    {
        return Err(Invalid::new(
            at.key("approval_required_above_usd"),
            format!("{a} is not an amount of USD"),
            "give the worst case in USD above which a job waits for an approver, such as 5.00",
        ));
    }
    let providers: Vec<&str> = PROVIDERS.iter().map(|(name, _)| *name).collect();
    let models = catalog.names();
    let lists = [
        (
            "allowed_providers",
            p.allowed_providers.as_deref(),
            &providers,
            "a known provider",
        ),
        (
            "denied_providers",
            Some(p.denied_providers.as_slice()),
            &providers,
            "a known provider",
        ),
        (
            "allowed_models",
            p.allowed_models.as_deref(),
            &models,
            "in the catalog",
        ),
        (
            "approval_required_models",
            Some(p.approval_required_models.as_slice()),
            &models,
            "in the catalog",
        ),
        (
            "denied_models",
            Some(p.denied_models.as_slice()),
            &models,
            "in the catalog",
        ),
    ];
    for (key, list, known, where_known) in lists {
        for (i, name) in list.unwrap_or_default().iter().enumerate() {
            if known.contains(&name.as_str()) {
                continue;
            }
            let fix = match closest(name, known.iter().copied()) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("use one of: {}", known.join(", ")),
            };
            return Err(Invalid::new(
                at.key(key).index(i),
                format!("`{name}` is not {where_known}"),
                fix,
            ));
        }
    }
    Ok(())
}
