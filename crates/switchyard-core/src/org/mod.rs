//! The four-tier organisation (`pipelines/org.toml`): org → business unit → team →
//! project. Each node may set a monthly budget and routing policy (default
//! strategy, quality floor and target, allowed/denied providers and models, price cap per job),
//! also per workload. Children inherit: scalar settings are overridden by the
//! nearest node that sets them, deny lists accumulate, and allow lists narrow, so a
//! team can never re-allow what its business unit denied.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::config::source::{self, ConfigError, Invalid, KeyPath};
use crate::vocab::{JobMode, Strategy};

mod validate;

/// What a node's budget policy does with a job once the node's spend (settled
/// plus in flight) reaches [`Budget::act_at`] of its budget, or when the job's
/// estimated cost does not fit what is left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetAction {
    /// Refuse the job with a `budget_exhausted` result.
    Reject,
    /// Route to the cheapest model that still meets the quality floor and fits
    /// what is left; refuse the job when none does.
    Downgrade,
    /// Park the job on the held topic until an approver releases it.
    Hold,
}

/// Fraction of a budget from which its policy acts, when the node does not say.
pub const DEFAULT_BUDGET_ACT_AT: f64 = 0.9;

/// The answer cap set on provider requests of jobs that give none, when no node
/// says (`default_max_tokens`); the job's budget reservation counts it too.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// How long a job without a deadline may wait for a provider's batch API, when
/// no node says (`deferred_max_delay`).
pub const DEFAULT_DEFERRED_MAX_DELAY: Duration = Duration::from_secs(24 * 3600);

/// What a node's quota does with a job that would pass it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaAction {
    /// Refuse the job with a `quota_exhausted` result.
    #[default]
    Reject,
    /// Wait for the quota's period to roll over (up to the job's deadline).
    Wait,
}

/// A node's quotas: jobs and tokens per minute and per day, counted over all
/// workers (apart from the deployments' provider `rpm`/`tpm`, which protect the
/// providers, these ration the org's own use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quota {
    /// Jobs admitted per minute.
    pub jobs_per_minute: Option<u64>,
    /// Jobs admitted per day.
    pub jobs_per_day: Option<u64>,
    /// Tokens (prompt and answer cap of admitted jobs) per minute.
    pub tokens_per_minute: Option<u64>,
    /// Tokens per day.
    pub tokens_per_day: Option<u64>,
    /// What a job over a quota does.
    pub action: QuotaAction,
}

/// Routing settings a node or workload may set; unset fields inherit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Default strategy.
    pub strategy: Option<Strategy>,
    /// Minimum quality (0..1) for any model this node's jobs use.
    pub quality_floor: Option<f64>,
    /// Share of the flagship's quality (0..1) that `auto` keeps: picks the
    /// threshold on the learned need above which a job goes to a top-third model.
    pub quality_target: Option<f64>,
    /// Only these providers (narrows what the parent allows).
    pub allowed_providers: Option<Vec<String>>,
    /// Never these providers (adds to what the parent denies).
    #[serde(default)]
    pub denied_providers: Vec<String>,
    /// Only these catalog models (narrows).
    pub allowed_models: Option<Vec<String>>,
    /// Never these models (adds).
    #[serde(default)]
    pub denied_models: Vec<String>,
    /// Largest worst-case cost of one job, USD.
    pub max_usd_per_job: Option<f64>,
    /// Answer cap set on requests of jobs that give none (default 4,096).
    pub default_max_tokens: Option<u32>,
    /// Accept only jobs signed by a principal who may submit for the project
    /// (with `[access]` in the pipeline config). Once set, it holds below.
    pub require_signed: Option<bool>,
    /// Hold a job (or a batch, as a whole) whose worst case is above this, USD,
    /// until an approver releases it.
    pub approval_required_above_usd: Option<f64>,
    /// Hold jobs routed to these catalog models until an approver releases them.
    #[serde(default)]
    pub approval_required_models: Vec<String>,
    /// Keep prompts and outputs in the audit log (redacted by the configured
    /// patterns); by default they stay out.
    pub audit_content: Option<bool>,
    /// Whether jobs that say nothing may wait for a provider's batch API:
    /// `live` (default), `deferred` or `auto`.
    pub default_mode: Option<JobMode>,
    /// How long a job without a deadline may wait when deferred (default 24 h):
    /// in `auto`, the job goes deferred only when this leaves room for the
    /// provider's completion window plus the margin.
    #[serde(default, with = "humantime_serde")]
    pub deferred_max_delay: Option<Duration>,
}

/// One node as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeSpec {
    /// Full path (`acme/retail/search`); for `[org]`, just the org name in `name`.
    #[serde(default)]
    path: String,
    #[serde(default)]
    name: String,
    budget_usd_per_month: Option<f64>,
    /// Fraction of the budget from which the node's policy acts (default 0.9).
    budget_soft_limit: Option<f64>,
    on_budget_exhausted: Option<BudgetAction>,
    strategy: Option<Strategy>,
    quality_floor: Option<f64>,
    quality_target: Option<f64>,
    allowed_providers: Option<Vec<String>>,
    #[serde(default)]
    denied_providers: Vec<String>,
    allowed_models: Option<Vec<String>>,
    #[serde(default)]
    denied_models: Vec<String>,
    max_usd_per_job: Option<f64>,
    default_max_tokens: Option<u32>,
    require_signed: Option<bool>,
    approval_required_above_usd: Option<f64>,
    #[serde(default)]
    approval_required_models: Vec<String>,
    audit_content: Option<bool>,
    default_mode: Option<JobMode>,
    #[serde(default, with = "humantime_serde")]
    deferred_max_delay: Option<Duration>,
    jobs_per_minute: Option<u64>,
    jobs_per_day: Option<u64>,
    tokens_per_minute: Option<u64>,
    tokens_per_day: Option<u64>,
    on_quota_exhausted: Option<QuotaAction>,
    /// `[org]` only: the time zone in which days and months roll over for
    /// budgets and quotas (an IANA name such as `Europe/Berlin`; default UTC).
    time_zone: Option<String>,
    #[serde(default)]
    workloads: BTreeMap<String, PolicySpec>,
}

impl NodeSpec {
    fn policy(&self) -> PolicySpec {
        PolicySpec {
            strategy: self.strategy,
            quality_floor: self.quality_floor,
            quality_target: self.quality_target,
            allowed_providers: self.allowed_providers.clone(),
            denied_providers: self.denied_providers.clone(),
            allowed_models: self.allowed_models.clone(),
            denied_models: self.denied_models.clone(),
            max_usd_per_job: self.max_usd_per_job,
            default_max_tokens: self.default_max_tokens,
            require_signed: self.require_signed,
            approval_required_above_usd: self.approval_required_above_usd,
            approval_required_models: self.approval_required_models.clone(),
            audit_content: self.audit_content,
            default_mode: self.default_mode,
            deferred_max_delay: self.deferred_max_delay,
        }
    }

    fn quota(&self) -> Option<Quota> {
        let q = Quota {
            jobs_per_minute: self.jobs_per_minute,
            jobs_per_day: self.jobs_per_day,
            tokens_per_minute: self.tokens_per_minute,
            tokens_per_day: self.tokens_per_day,
            action: self.on_quota_exhausted.unwrap_or_default(),
        };
        let any = q.jobs_per_minute.is_some()
            || q.jobs_per_day.is_some()
            || q.tokens_per_minute.is_some()
            || q.tokens_per_day.is_some();
        any.then_some(q)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgFile {
    org: NodeSpec,
    #[serde(default)]
    node: Vec<NodeSpec>,
}

/// A node's budget.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Budget {
    /// Limit per calendar month, USD.
    pub usd_per_month: f64,
    /// Fraction of the budget (0..=1) from which `action` applies to every job:
    /// near the limit, not only past it, so the last jobs of the month are
    /// treated by policy instead of overshooting.
    pub act_at: f64,
    /// What happens to a job from `act_at` on, or whose estimate does not fit.
    pub action: BudgetAction,
}

/// One node of the tree.
#[derive(Debug, Clone)]
pub struct OrgNode {
    /// Full path.
    pub path: String,
    /// 1 = org, 2 = business unit, 3 = team, 4 = project.
    pub depth: usize,
    /// Its own budget, if it sets one.
    pub budget: Option<Budget>,
    /// Its own quotas, if it sets any.
    pub quota: Option<Quota>,
    policy: PolicySpec,
    workloads: BTreeMap<String, PolicySpec>,
}

/// The policy in force for one project and workload, after inheritance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EffectivePolicy {
    /// Strategy when the job names none.
    pub strategy: Strategy,
    /// Minimum quality of any model used.
    pub quality_floor: f64,
    /// Share of the flagship's quality `auto` keeps; `None`: the pipeline's
    /// `routing.default_quality_target`.
    pub quality_target: Option<f64>,
    /// Allowed providers; `None` means all.
    pub allowed_providers: Option<Vec<String>>,
    /// Denied providers.
    pub denied_providers: Vec<String>,
    /// Allowed models; `None` means all.
    pub allowed_models: Option<Vec<String>>,
    /// Denied models.
    pub denied_models: Vec<String>,
    /// Price cap per job (on its worst case).
    pub max_usd_per_job: Option<f64>,
    /// Answer cap set on requests of jobs that give none.
    pub default_max_tokens: u32,
    /// Only signed jobs are accepted.
    pub require_signed: bool,
    /// Jobs whose worst case is above this are held for approval.
    pub approval_required_above_usd: Option<f64>,
    /// Jobs routed to these models are held for approval.
    pub approval_required_models: Vec<String>,
    /// Prompts and outputs go into the audit log (redacted).
    pub audit_content: bool,
    /// Mode of jobs that name none (and whose batch names none).
    pub default_mode: JobMode,
    /// How long a job without a deadline may wait when deferred.
    #[serde(with = "humantime_serde")]
    pub deferred_max_delay: Duration,
    /// Nodes with a budget on the path, top first.
    pub budget_nodes: Vec<String>,
    /// Nodes with quotas on the path, top first.
    pub quota_nodes: Vec<String>,
}

impl EffectivePolicy {
    /// A permissive policy with the given strategy and floor (for tests and tools).
    pub fn open(strategy: Strategy, quality_floor: f64) -> Self {
        Self {
            strategy,
            quality_floor,
            quality_target: None,
            allowed_providers: None,
            denied_providers: Vec::new(),
            allowed_models: None,
            denied_models: Vec::new(),
            max_usd_per_job: None,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            require_signed: false,
            approval_required_above_usd: None,
            approval_required_models: Vec::new(),
            audit_content: false,
            default_mode: JobMode::Live,
            deferred_max_delay: DEFAULT_DEFERRED_MAX_DELAY,
            budget_nodes: Vec::new(),
            quota_nodes: Vec::new(),
        }
    }

    fn apply(&mut self, spec: &PolicySpec) {
        if let Some(s) = spec.strategy {
            self.strategy = s;
        }
        if let Some(q) = spec.quality_floor {
            self.quality_floor = q;
        }
        if let Some(t) = spec.quality_target {
            self.quality_target = Some(t);
        }
        if let Some(c) = spec.max_usd_per_job {
            self.max_usd_per_job = Some(c);
        }
        if let Some(m) = spec.default_max_tokens {
            self.default_max_tokens = m;
        }
        // Once a node requires signed jobs, nothing below can turn it off.
        self.require_signed |= spec.require_signed.unwrap_or(false);
        if let Some(a) = spec.approval_required_above_usd {
            self.approval_required_above_usd =
                Some(self.approval_required_above_usd.map_or(a, |cur| cur.min(a)));
        }
        extend_unique(
            &mut self.approval_required_models,
            &spec.approval_required_models,
        );
        if let Some(c) = spec.audit_content {
            self.audit_content = c;
        }
        if let Some(m) = spec.default_mode {
            self.default_mode = m;
        }
        if let Some(d) = spec.deferred_max_delay {
            self.deferred_max_delay = d;
        }
        narrow(&mut self.allowed_providers, &spec.allowed_providers);
        narrow(&mut self.allowed_models, &spec.allowed_models);
        extend_unique(&mut self.denied_providers, &spec.denied_providers);
        extend_unique(&mut self.denied_models, &spec.denied_models);
    }

    /// Whether a provider may be used.
    pub fn provider_allowed(&self, provider: &str) -> bool {
        !self.denied_providers.iter().any(|p| p == provider)
            && self
                .allowed_providers
                .as_ref()
                .is_none_or(|a| a.iter().any(|p| p == provider))
    }

    /// Whether a model may be used.
    pub fn model_allowed(&self, model: &str) -> bool {
        !self.denied_models.iter().any(|m| m == model)
            && self
                .allowed_models
                .as_ref()
                .is_none_or(|a| a.iter().any(|m| m == model))
    }
}

fn narrow(current: &mut Option<Vec<String>>, child: &Option<Vec<String>>) {
    if let Some(child) = child {
        *current = Some(match current.take() {
            None => child.clone(),
            Some(parent) => parent.into_iter().filter(|p| child.contains(p)).collect(),
        });
    }
}

fn extend_unique(list: &mut Vec<String>, more: &[String]) {
    for m in more {
        if !list.contains(m) {
            list.push(m.clone());
        }
    }
}

/// Why a job's project cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("project `{project}` is not in the org file{hint}")]
pub struct UnknownProject {
    /// The path asked for.
    pub project: String,
    /// ` (known projects under `x`: …)` or empty.
    pub hint: String,
}

/// The validated tree with every project's policies precomputed.
#[derive(Debug, Clone)]
pub struct OrgTree {
    name: String,
    time_zone: chrono_tz::Tz,
    nodes: HashMap<String, OrgNode>,
    /// (project path) → (default policy, per-workload policies)
    resolved: HashMap<String, (EffectivePolicy, HashMap<String, EffectivePolicy>)>,
}

impl OrgTree {
    /// Parses and validates org text. Provider and model names in allow and deny
    /// lists are checked against the known providers and `catalog`: a misspelt deny
    /// entry would otherwise silently permit the model it meant to deny.
    pub fn parse(
        path: &Path,
        text: &str,
        catalog: &Catalog,
        default_strategy: Strategy,
        default_floor: f64,
    ) -> Result<Self, ConfigError> {
        let (file, source): (OrgFile, _) = source::parse(path, text, &[])?;
        Self::build(file, catalog, default_strategy, default_floor).map_err(|e| source.locate(e))
    }

    fn build(
        file: OrgFile,
        catalog: &Catalog,
        default_strategy: Strategy,
        default_floor: f64,
    ) -> Result<Self, Invalid> {
        let org_name = file.org.name.clone();
        let at_org = |k: &str| KeyPath::root().key("org").key(k);
        if org_name.is_empty() || org_name.contains('/') {
            return Err(Invalid::new(
                at_org("name"),
                "the org needs a name without `/`",
                "set [org] name = \"acme\"",
            ));
        }
        let time_zone = match &file.org.time_zone {
            None => chrono_tz::UTC,
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                Invalid::new(
                    at_org("time_zone"),
                    format!("`{name}` is not a time zone name"),
                    "use an IANA name such as \"UTC\", \"Europe/Berlin\" or \"America/New_York\"",
                )
            })?,
        };
        let mut specs: Vec<(String, NodeSpec, KeyPath)> =
            vec![(org_name.clone(), file.org, KeyPath::root().key("org"))];
        for (i, n) in file.node.into_iter().enumerate() {
            specs.push((n.path.clone(), n, KeyPath::root().key("node").index(i)));
        }
        let mut nodes: HashMap<String, OrgNode> = HashMap::new();
        for (path, spec, at) in &specs {
            let parts: Vec<&str> = path.split('/').collect();
            if parts.iter().any(|p| p.is_empty()) || parts.len() > 4 {
                return Err(Invalid::new(
                    at.key("path"),
                    format!("`{path}` is not a path of one to four parts"),
                    "write it as org/business-unit/team/project",
                ));
            }
            if parts[0] != org_name {
                return Err(Invalid::new(
                    at.key("path"),
                    format!("`{path}` is not under the org `{org_name}`"),
                    format!("start the path with `{org_name}/`"),
                ));
            }
            if parts.len() > 1 {
                let parent = parts[..parts.len() - 1].join("/");
                if !nodes.contains_key(&parent) {
                    return Err(Invalid::new(
                        at.key("path"),
                        format!("the parent `{parent}` of `{path}` is not declared above it"),
                        format!("add a [[node]] with path = \"{parent}\" before this one"),
                    ));
                }
            }
            validate::node(spec, at, catalog)?;
            if nodes.contains_key(path) {
                return Err(Invalid::new(
                    at.key("path"),
                    format!("`{path}` is declared twice"),
                    "merge the two entries",
                ));
            }
            let budget = spec.budget_usd_per_month.map(|usd| Budget {
                usd_per_month: usd,
                act_at: spec.budget_soft_limit.unwrap_or(DEFAULT_BUDGET_ACT_AT),
                action: spec.on_budget_exhausted.unwrap_or(BudgetAction::Reject),
            });
            nodes.insert(
                path.clone(),
                OrgNode {
                    path: path.clone(),
                    depth: parts.len(),
                    budget,
                    quota: spec.quota(),
                    policy: spec.policy(),
                    workloads: spec.workloads.clone(),
                },
            );
        }
        let mut tree = Self {
            name: org_name,
            time_zone,
            nodes,
            resolved: HashMap::new(),
        };
        let projects: Vec<String> = tree
            .nodes
            .values()
            .filter(|n| n.depth == 4)
            .map(|n| n.path.clone())
            .collect();
        for p in projects {
            let resolved = tree.resolve_uncached(&p, default_strategy, default_floor);
            tree.resolved.insert(p, resolved);
        }
        Ok(tree)
    }

    fn ancestry(&self, project: &str) -> Vec<&OrgNode> {
        let parts: Vec<&str> = project.split('/').collect();
        (1..=parts.len())
            .filter_map(|n| self.nodes.get(&parts[..n].join("/")))
            .collect()
    }

    fn resolve_uncached(
        &self,
        project: &str,
        strategy: Strategy,
        floor: f64,
    ) -> (EffectivePolicy, HashMap<String, EffectivePolicy>) {
        let chain = self.ancestry(project);
        let mut base = EffectivePolicy::open(strategy, floor);
        base.budget_nodes = chain
            .iter()
            .filter(|n| n.budget.is_some())
            .map(|n| n.path.clone())
            .collect();
        base.quota_nodes = chain
            .iter()
            .filter(|n| n.quota.is_some())
            .map(|n| n.path.clone())
            .collect();
        let mut workload_names: Vec<&String> =
            chain.iter().flat_map(|n| n.workloads.keys()).collect();
        workload_names.sort();
        workload_names.dedup();
        let mut per_workload = HashMap::new();
        for w in workload_names {
            let mut p = base.clone();
            for n in &chain {
                p.apply(&n.policy);
                if let Some(spec) = n.workloads.get(w) {
                    p.apply(spec);
                }
            }
            per_workload.insert(w.clone(), p);
        }
        for n in &chain {
            base.apply(&n.policy);
        }
        (base, per_workload)
    }

    /// The org's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The time zone in which budget months and quota days roll over.
    pub fn time_zone(&self) -> chrono_tz::Tz {
        self.time_zone
    }

    /// Every node, parents before children.
    pub fn nodes(&self) -> Vec<&OrgNode> {
        let mut v: Vec<&OrgNode> = self.nodes.values().collect();
        v.sort_by(|a, b| a.path.cmp(&b.path));
        v
    }

    /// All nodes with quotas.
    pub fn quotas(&self) -> impl Iterator<Item = (&str, Quota)> {
        self.nodes
            .values()
            .filter_map(|n| n.quota.map(|q| (n.path.as_str(), q)))
    }

    /// The policy for a project and workload.
    pub fn policy(
        &self,
        project: &str,
        workload: Option<&str>,
    ) -> Result<&EffectivePolicy, UnknownProject> {
        let Some((base, per_workload)) = self.resolved.get(project) else {
            return Err(self.unknown(project));
        };
        Ok(workload.and_then(|w| per_workload.get(w)).unwrap_or(base))
    }

    fn unknown(&self, project: &str) -> UnknownProject {
        let parent = project.rsplit_once('/').map(|(p, _)| p).unwrap_or(project);
        let mut siblings: Vec<&str> = self
            .resolved
            .keys()
            .filter(|k| k.rsplit_once('/').is_some_and(|(p, _)| p == parent))
            .map(String::as_str)
            .collect();
        siblings.sort();
        let hint = if siblings.is_empty() {
            String::new()
        } else {
            format!(
                " (known projects under `{parent}`: {})",
                siblings.join(", ")
            )
        };
        UnknownProject {
            project: project.to_owned(),
            hint,
        }
    }

    /// A node by path.
    pub fn node(&self, path: &str) -> Option<&OrgNode> {
        self.nodes.get(path)
    }

    /// All project paths, sorted.
    pub fn projects(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.resolved.keys().map(String::as_str).collect();
        v.sort();
        v
    }

    /// All nodes with a budget.
    pub fn budgets(&self) -> impl Iterator<Item = (&str, Budget)> {
        self.nodes
            .values()
            .filter_map(|n| n.budget.map(|b| (n.path.as_str(), b)))
    }
}

#[cfg(test)]
pub(crate) mod tests;
