use super::*;
use crate::catalog::tests::model;

/// gpt-small, gpt-large (openai), claude-mid (anthropic), grok-big (xai).
pub(crate) fn catalog() -> Catalog {
    Catalog::from_models(vec![
        model("gpt-small", "openai", (0.1, 0.4), 0.6),
        model("gpt-large", "openai", (2.0, 8.0), 0.9),
        model("claude-mid", "anthropic", (1.0, 5.0), 0.8),
        model("grok-big", "xai", (3.0, 15.0), 0.9),
    ])
    .unwrap()
}

fn parse(text: &str) -> Result<OrgTree, ConfigError> {
    OrgTree::parse(Path::new("org.toml"), text, &catalog(), Strategy::Auto, 0.5)
}

/// The line of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

const ORG: &str = r#"
[org]
name = "acme"
budget_usd_per_month = 1000
strategy = "auto"
denied_providers = ["xai"]
[org.workloads.ticket-triage]
strategy = "cost-first"

[[node]]
path = "acme/retail"
allowed_providers = ["openai", "anthropic", "gemini"]
quality_floor = 0.6

[[node]]
path = "acme/retail/search"
allowed_providers = ["openai", "gemini", "xai"]
on_budget_exhausted = "downgrade"
budget_usd_per_month = 100

[[node]]
path = "acme/retail/search/catalog"
strategy = "balanced"
denied_models = ["gpt-large"]
[node.workloads.ticket-triage]
quality_floor = 0.8
allowed_models = ["gpt-small", "gpt-large", "claude-mid"]

[[node]]
path = "acme/retail/search/premium"
allowed_models = ["gpt-large", "grok-big"]
"#;

fn tree() -> OrgTree {
    parse(ORG).unwrap()
}

#[test]
fn children_override_scalars_and_narrow_lists() {
    let t = tree();
    let p = t.policy("acme/retail/search/catalog", None).unwrap();
    assert_eq!(p.strategy, Strategy::Balanced);
    assert_eq!(p.quality_floor, 0.6);
    assert_eq!(
        p.allowed_providers.as_deref(),
        Some(&["openai".to_owned(), "gemini".to_owned()][..])
    );
    assert!(
        !p.provider_allowed("xai"),
        "a child cannot re-allow what the org denies"
    );
    assert!(!p.provider_allowed("anthropic"));
    assert_eq!(
        p.budget_nodes,
        vec!["acme".to_owned(), "acme/retail/search".to_owned()]
    );
}

#[test]
fn workload_settings_apply_at_every_level() {
    let t = tree();
    let p = t
        .policy("acme/retail/search/catalog", Some("ticket-triage"))
        .unwrap();
    // The project's own strategy comes after the org's workload setting…
    assert_eq!(p.strategy, Strategy::Balanced);
    // …and the project's workload floor wins over the business unit's floor.
    assert_eq!(p.quality_floor, 0.8);
    let unknown = t
        .policy("acme/retail/search/catalog", Some("other"))
        .unwrap();
    assert_eq!(unknown.quality_floor, 0.6);
}

#[test]
fn unknown_projects_list_their_siblings() {
    let e = tree()
        .policy("acme/retail/search/catalgo", None)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "project `acme/retail/search/catalgo` is not in the org file (known projects under `acme/retail/search`: acme/retail/search/catalog, acme/retail/search/premium)"
    );
}

#[test]
fn undeclared_parents_are_reported_with_a_line() {
    let text = "[org]\nname = \"acme\"\n\n[[node]]\npath = \"acme/retail/search\"\n";
    let e = parse(text).unwrap_err();
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.fix.contains("acme/retail"), "{e}");
}

#[test]
fn model_lists_deny_cumulatively_and_allow_narrowly() {
    let t = tree();
    let p = t.policy("acme/retail/search/catalog", None).unwrap();
    assert!(!p.model_allowed("gpt-large"), "denied by the project");
    assert!(p.model_allowed("gpt-small"));
    assert_eq!(
        p.allowed_models, None,
        "no allow-list: every model not denied"
    );
    // The workload's allow-list narrows, but cannot re-allow the project's denial.
    let w = t
        .policy("acme/retail/search/catalog", Some("ticket-triage"))
        .unwrap();
    assert!(w.model_allowed("gpt-small") && w.model_allowed("claude-mid"));
    assert!(!w.model_allowed("gpt-large"));
    assert!(!w.model_allowed("grok-big"), "not on the allow-list");
    // A sibling project allows two models; the org's provider denial still removes
    // grok-big's provider, though the model list names it.
    let premium = t.policy("acme/retail/search/premium", None).unwrap();
    assert!(premium.model_allowed("gpt-large"));
    assert!(!premium.model_allowed("claude-mid"));
    assert!(premium.model_allowed("grok-big") && !premium.provider_allowed("xai"));
}

#[test]
fn misspelt_models_and_providers_are_refused_with_the_line_and_the_closest_name() {
    let text = ORG.replace(
        "denied_models = [\"gpt-large\"]",
        "denied_models = [\"gpt-large\", \"gpt-smal\"]",
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.line, Some(line_of(&text, "gpt-smal\"")), "{e}");
    assert_eq!(e.key, "node[2].denied_models[1]");
    assert!(
        e.problem.contains("`gpt-smal` is not in the catalog"),
        "{e}"
    );
    assert_eq!(e.fix, "did you mean `gpt-small`?");

    let text = ORG.replace(
        "allowed_models = [\"gpt-small\", \"gpt-large\", \"claude-mid\"]",
        "allowed_models = [\"gpt-small\", \"llama-405b\"]",
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.key, "node[2].workloads.ticket-triage.allowed_models[1]");
    assert_eq!(e.line, Some(line_of(&text, "llama-405b")), "{e}");
    assert!(e.fix.contains("gpt-small, gpt-large"), "{e}");

    let text = ORG.replace(
        "denied_providers = [\"xai\"]",
        "denied_providers = [\"x-ai\"]",
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.key, "org.denied_providers[0]");
    assert_eq!(e.line, Some(line_of(&text, "x-ai")), "{e}");
    assert_eq!(e.fix, "did you mean `xai`?");
}

#[test]
fn price_caps_and_budget_settings_are_checked() {
    let text = ORG.replace(
        "quality_floor = 0.6",
        "quality_floor = 0.6\nmax_usd_per_job = -1",
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.key, "node[0].max_usd_per_job");
    assert_eq!(e.line, Some(line_of(&text, "max_usd_per_job")), "{e}");

    let text = ORG.replace("quality_floor = 0.8", "max_usd_per_job = nan");
    let e = parse(&text).unwrap_err();
    assert_eq!(
        e.key, "node[2].workloads.ticket-triage.max_usd_per_job",
        "{e}"
    );

    let text = ORG.replace("quality_floor = 0.6", "budget_soft_limit = 0.8");
    let e = parse(&text).unwrap_err();
    assert!(
        e.problem.contains("no effect on a node without a budget"),
        "{e}"
    );
    assert_eq!(e.line, Some(line_of(&text, "budget_soft_limit")), "{e}");

    let text = ORG.replace(
        "on_budget_exhausted = \"downgrade\"",
        "on_budget_exhausted = \"downgrade\"\nbudget_soft_limit = 1.5",
    );
    let e = parse(&text).unwrap_err();
    assert_eq!(e.key, "node[1].budget_soft_limit", "{e}");
    assert!(e.fix.contains("between 0 and 1"), "{e}");

    let t = tree();
    let b = t.node("acme/retail/search").unwrap().budget.unwrap();
    assert_eq!(b.act_at, DEFAULT_BUDGET_ACT_AT);
    assert_eq!(b.action, BudgetAction::Downgrade);
    assert_eq!(
        t.node("acme").unwrap().budget.unwrap().action,
        BudgetAction::Reject
    );
}

#[test]
fn quality_targets_are_inherited_like_floors_and_checked() {
    let text = ORG
        .replace(
            "quality_floor = 0.6",
            "quality_floor = 0.6\nquality_target = 0.97",
        )
        .replace(
            "quality_floor = 0.8",
            "quality_floor = 0.8\nquality_target = 0.9",
        );
    let t = parse(&text).unwrap();
    let p = t.policy("acme/retail/search/catalog", None).unwrap();
    assert_eq!(p.quality_target, Some(0.97));
    let w = t
        .policy("acme/retail/search/catalog", Some("ticket-triage"))
        .unwrap();
    assert_eq!(w.quality_target, Some(0.9));
    // Where no node sets one, the pipeline's default applies.
    assert_eq!(
        tree()
            .policy("acme/retail/search/catalog", None)
            .unwrap()
            .quality_target,
        None
    );

    let text = ORG.replace("quality_floor = 0.8", "quality_target = 95");
    let e = parse(&text).unwrap_err();
    assert_eq!(
        e.key, "node[2].workloads.ticket-triage.quality_target",
        "{e}"
    );
    assert!(e.fix.contains("such as 0.95"), "{e}");
}
