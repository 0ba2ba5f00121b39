//! The catalog's prices beside LiteLLM's public price map
//! (`model_prices_and_context_window.json`, MIT, shipped in the `litellm`
//! package): each model is found by its `api_model` (under the provider's
//! LiteLLM prefix first, `gemini/…`, `xai/…`), every price the catalog gives
//! is compared with LiteLLM's per-token figure, and the cache-write rates and
//! long-context tiers LiteLLM lists but the catalog leaves out are compared
//! with what the catalog bills instead. Pure: the caller reads the file.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::{Catalog, ModelSpec};
use crate::vocab::RunMode;

/// LiteLLM gives USD per token; the catalog USD per million tokens.
const PER_MTOK: f64 = 1_000_000.0;

/// The price map, reduced to what a comparison reads.
#[derive(Debug, Clone, Default)]
pub struct PriceMap {
    entries: HashMap<String, PriceEntry>,
}

/// One model key of the map.
#[derive(Debug, Clone, Default)]
struct PriceEntry {
    /// `litellm_provider`: whose price this is (`openai`, `vertex_ai-language-models`).
    provider: Option<String>,
    /// The numeric `*cost*` fields, USD per token.
    costs: HashMap<String, f64>,
}

impl PriceEntry {
    /// A price in USD per million tokens.
    fn per_mtok(&self, field: &str) -> Option<f64> {
        self.costs.get(field).map(|c| c * PER_MTOK)
    }

    /// The thresholds of the long-context tiers listed
    /// (`input_cost_per_token_above_272k_tokens` → 272,000), ascending.
    fn tiers(&self) -> BTreeSet<u32> {
        self.costs
            .keys()
            .filter_map(|k| {
                TIER_FIELDS.iter().find_map(|base| {
                    k.strip_prefix(base)?
                        .strip_prefix("_above_")?
                        .strip_suffix("k_tokens")?
                        .parse::<u32>()
                        .ok()?
                        .checked_mul(1000)
                })
            })
            .collect()
    }
}

/// Why a text is not a price map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceMapError {
    /// Not JSON at all.
    #[error("it is not JSON ({0})")]
    NotJson(String),
    /// JSON, but not an object of model keys.
    #[error("its top level is not an object of model names")]
    NotAnObject,
}

impl PriceMap {
    /// Reads the map's JSON text (keys that are not objects, and the
    /// `sample_spec` documentation entry, are skipped).
    pub fn parse(text: &str) -> Result<Self, PriceMapError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| PriceMapError::NotJson(e.to_string()))?;
        let serde_json::Value::Object(models) = value else {
            return Err(PriceMapError::NotAnObject);
        };
        let entries = models
            .into_iter()
            .filter(|(key, _)| key != "sample_spec")
            .filter_map(|(key, value)| {
                let serde_json::Value::Object(fields) = value else {
                    return None;
                };
                let provider = fields
                    .get("litellm_provider")
                    .and_then(|p| p.as_str())
                    .map(str::to_owned);
                let costs = fields
                    .iter()
                    .filter(|(k, _)| k.contains("cost"))
                    .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                    .collect();
                Some((key, PriceEntry { provider, costs }))
            })
            .collect();
        Ok(Self { entries })
    }

    /// How many model keys the map holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map holds no model.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// A catalog model's entry and its key: the provider-prefixed key first
    /// (`gemini/gemini-3.1-pro-preview` is Google AI Studio's price, the bare
    /// key Vertex AI's), then the bare `api_model` when LiteLLM files it under
    /// the same provider (OpenAI's and Anthropic's models have bare keys
    /// only). Without one, the keys tried.
    fn find(&self, m: &ModelSpec) -> Result<(&str, &PriceEntry), Vec<String>> {
        let provider = litellm_provider(&m.provider);
        let prefixed = format!("{provider}/{}", m.api_model);
        if let Some((k, e)) = self.entries.get_key_value(&prefixed) {
            return Ok((k, e));
        }
        match self.entries.get_key_value(&m.api_model) {
            Some((k, e)) if e.provider.as_deref().is_none_or(|p| p == provider) => Ok((k, e)),
            _ => Err(vec![prefixed, m.api_model.clone()]),
        }
    }
}

/// LiteLLM's name for a catalog provider.
fn litellm_provider(provider: &str) -> &str {
    match provider {
        "together" => "together_ai",
        "fireworks" => "fireworks_ai",
        p => p,
    }
}

/// LiteLLM's fields that have long-context tiers (`…_above_200k_tokens`).
const TIER_FIELDS: [&str; 3] = [
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
];

/// How one catalog price compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within the tolerance.
    Agrees,
    /// Further apart than the tolerance: the check fails.
    Differs,
    /// The catalog gives the price, LiteLLM does not: nothing to compare.
    Unchecked,
    /// LiteLLM gives a batch price the catalog leaves out: the model is only
    /// served live, so no call is billed at a wrong rate.
    NoBatchPrice,
}

/// One catalog price beside LiteLLM's.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceComparison {
    /// Catalog model name.
    pub model: String,
    /// The key the model has in LiteLLM's map.
    pub litellm_model: String,
    /// The catalog key, as written in models.toml (`long_context.input_usd_per_mtok`).
    pub field: String,
    /// LiteLLM's field (`input_cost_per_token_above_272k_tokens`); none when
    /// LiteLLM has no such price.
    pub litellm_field: Option<String>,
    /// The catalog's figure, USD per million tokens (tokens for `above_tokens`).
    pub catalog: Option<f64>,
    /// The catalog leaves this price out and `catalog` is what it bills
    /// instead: cache writes at the input price, a long prompt at the rates
    /// it has for that length.
    pub implied: bool,
    /// LiteLLM's figure, in the catalog's unit.
    pub litellm: Option<f64>,
    /// (catalog − LiteLLM) / LiteLLM in percent; none when either is missing
    /// or LiteLLM's is zero.
    pub diff_pct: Option<f64>,
    /// The outcome.
    pub verdict: Verdict,
}

/// A catalog model the price map does not list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnlistedModel {
    /// Catalog model name.
    pub model: String,
    /// The keys looked up.
    pub tried: Vec<String>,
}

/// The outcome of a check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceCheck {
    /// Largest difference, percent of LiteLLM's price, that still agrees.
    pub tolerance_pct: f64,
    /// Every price compared, catalog order.
    pub prices: Vec<PriceComparison>,
    /// Catalog models the map does not list.
    pub unlisted: Vec<UnlistedModel>,
}

impl PriceCheck {
    /// The prices further apart than the tolerance.
    pub fn differences(&self) -> impl Iterator<Item = &PriceComparison> {
        self.with(Verdict::Differs)
    }

    /// The prices with a verdict.
    pub fn with(&self, verdict: Verdict) -> impl Iterator<Item = &PriceComparison> {
        self.prices.iter().filter(move |p| p.verdict == verdict)
    }

    /// Whether no price differs beyond the tolerance.
    pub fn passed(&self) -> bool {
        self.differences().next().is_none()
    }
}

/// Compares every model of `catalog` with `map`. `tolerance_pct` is the
/// largest difference, in percent of LiteLLM's price, that still agrees.
///
/// Compared: input, output, cached input, cache write, batch input and
/// output, and each long-context tier's threshold, input, output and cached
/// rates. Prices the catalog derives rather than states (a batch call's
/// cached rate, a long prompt's batch rate) are not compared: LiteLLM rounds
/// some of them (`0.13` for half of `0.25`).
pub fn check(catalog: &Catalog, map: &PriceMap, tolerance_pct: f64) -> PriceCheck {
    let mut prices = Vec::new();
    let mut unlisted = Vec::new();
    for m in catalog.models() {
        match map.find(m) {
            Ok((key, entry)) => prices.extend(compare_model(m, key, entry, tolerance_pct)),
            Err(tried) => unlisted.push(UnlistedModel {
                model: m.name.clone(),
                tried,
            }),
        }
    }
    PriceCheck {
        tolerance_pct,
        prices,
        unlisted,
    }
}

/// The comparisons of one model, built in order.
struct ModelComparison<'a> {
    model: &'a ModelSpec,
    key: &'a str,
    entry: &'a PriceEntry,
    tolerance_pct: f64,
    rows: Vec<PriceComparison>,
}

impl ModelComparison<'_> {
    /// A catalog price against LiteLLM's `field`, or `None` when the catalog
    /// gives none (`implied` when `catalog` is a fallback it bills instead).
    fn row(&mut self, field: &str, litellm_field: &str, catalog: Option<f64>, implied: bool) {
        let litellm = self.entry.per_mtok(litellm_field);
        let (diff_pct, verdict) = match (catalog, litellm) {
            (Some(c), Some(l)) => {
                let pct = (l != 0.0).then(|| (c - l) / l * 100.0);
                let agrees = match pct {
                    Some(p) => p.abs() <= self.tolerance_pct,
                    None => c == 0.0,
                };
                let verdict = if agrees {
                    Verdict::Agrees
                } else {
                    Verdict::Differs
                };
                (pct, verdict)
            }
            (Some(_), None) => (None, Verdict::Unchecked),
            (None, Some(_)) => (None, Verdict::NoBatchPrice),
            (None, None) => return,
        };
        self.rows.push(PriceComparison {
            model: self.model.name.clone(),
            litellm_model: self.key.to_owned(),
            field: field.to_owned(),
            litellm_field: litellm.map(|_| litellm_field.to_owned()),
            catalog,
            implied,
            litellm,
            diff_pct,
            verdict,
        });
    }

    /// Whether LiteLLM gives a non-zero price in `field` (zero is how it
    /// writes "no separate rate", as DeepSeek's cache writes).
    fn lists(&self, field: &str) -> bool {
        self.entry.per_mtok(field).is_some_and(|p| p != 0.0)
    }
}

fn compare_model(
    m: &ModelSpec,
    key: &str,
    entry: &PriceEntry,
    tolerance_pct: f64,
) -> Vec<PriceComparison> {
    let mut c = ModelComparison {
        model: m,
        key,
        entry,
        tolerance_pct,
        rows: Vec::new(),
    };
    c.row(
        "input_usd_per_mtok",
        "input_cost_per_token",
        Some(m.input_usd_per_mtok),
        false,
    );
    c.row(
        "output_usd_per_mtok",
        "output_cost_per_token",
        Some(m.output_usd_per_mtok),
        false,
    );
    c.row(
        "cached_input_usd_per_mtok",
        "cache_read_input_token_cost",
        Some(m.cached_input_usd_per_mtok),
        false,
    );
    let write = "cache_creation_input_token_cost";
    match m.cache_write_input_usd_per_mtok {
        Some(p) => c.row("cache_write_input_usd_per_mtok", write, Some(p), false),
        // Without a cache-write price the catalog bills writes as input.
        None if c.lists(write) => c.row(
            "cache_write_input_usd_per_mtok",
            write,
            Some(m.input_usd_per_mtok),
            true,
        ),
        None => {}
    }
    c.row(
        "batch_input_usd_per_mtok",
        "input_cost_per_token_batches",
        m.batch_input_usd_per_mtok,
        false,
    );
    c.row(
        "batch_output_usd_per_mtok",
        "output_cost_per_token_batches",
        m.batch_output_usd_per_mtok,
        false,
    );
    compare_tiers(&mut c);
    c.rows
}

/// The long-context tiers: the catalog's threshold against LiteLLM's, then,
/// for every tier LiteLLM lists, the rates the catalog bills a prompt just
/// over its threshold (the catalog's own tier rates when the thresholds
/// match, else what the catalog has for that length).
fn compare_tiers(c: &mut ModelComparison<'_>) {
    let m = c.model;
    let tiers = c.entry.tiers();
    let own = m.long_context;
    if let Some(l) = own {
        if tiers.is_empty() {
            c.row(
                "long_context.above_tokens",
                "",
                Some(f64::from(l.above_tokens)),
                false,
            );
            for (key, price) in [
                ("input_usd_per_mtok", Some(l.input_usd_per_mtok)),
                ("output_usd_per_mtok", Some(l.output_usd_per_mtok)),
                ("cached_input_usd_per_mtok", l.cached_input_usd_per_mtok),
            ] {
                c.row(&format!("long_context.{key}"), "", price, false);
            }
            return;
        }
        if !tiers.contains(&l.above_tokens) {
            // LiteLLM's tier nearest the catalog's, as a threshold row.
            let nearest = tiers
                .iter()
                .copied()
                .min_by_key(|t| t.abs_diff(l.above_tokens))
                .unwrap_or(l.above_tokens);
            let field = format!("input_cost_per_token_above_{}k_tokens", nearest / 1000);
            let pct = (f64::from(l.above_tokens) - f64::from(nearest)) / f64::from(nearest) * 100.0;
            c.rows.push(PriceComparison {
                model: m.name.clone(),
                litellm_model: c.key.to_owned(),
                field: "long_context.above_tokens".into(),
                litellm_field: Some(field),
                catalog: Some(f64::from(l.above_tokens)),
                implied: false,
                litellm: Some(f64::from(nearest)),
                diff_pct: Some(pct),
                verdict: Verdict::Differs,
            });
        }
    }
    for threshold in tiers {
        let rates = m.rates(RunMode::Live, u64::from(threshold) + 1);
        let same = own.filter(|l| l.above_tokens == threshold);
        for (key, base, billed, stated) in [
            (
                "input_usd_per_mtok",
                TIER_FIELDS[0],
                rates.input,
                same.map(|l| l.input_usd_per_mtok),
            ),
            (
                "output_usd_per_mtok",
                TIER_FIELDS[1],
                rates.output,
                same.map(|l| l.output_usd_per_mtok),
            ),
            (
                "cached_input_usd_per_mtok",
                TIER_FIELDS[2],
                rates.cached_input,
                same.and_then(|l| l.cached_input_usd_per_mtok),
            ),
        ] {
            let field = format!("{base}_above_{}k_tokens", threshold / 1000);
            if c.entry.per_mtok(&field).is_some() {
                let implied = stated.is_none();
                c.row(
                    &format!("long_context.{key}"),
                    &field,
                    Some(stated.unwrap_or(billed)),
                    implied,
                );
            } else if let Some(p) = stated {
                c.row(&format!("long_context.{key}"), &field, Some(p), false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::LongContext;
    use crate::catalog::tests::model;

    /// A map with one entry, prices per million tokens.
    fn map(key: &str, provider: &str, prices: &[(&str, f64)]) -> PriceMap {
        let fields: serde_json::Map<String, serde_json::Value> = prices
            .iter()
            .map(|(k, p)| (k.to_string(), serde_json::json!(p / PER_MTOK)))
            .chain([("litellm_provider".into(), serde_json::json!(provider))])
            .collect();
        let text = serde_json::json!({ key: fields, "sample_spec": {"input_cost_per_token": 0.0} });
        PriceMap::parse(&text.to_string()).unwrap()
    }

    fn row<'a>(check: &'a PriceCheck, field: &str) -> &'a PriceComparison {
        check
            .prices
            .iter()
            .find(|p| p.field == field)
            .unwrap_or_else(|| panic!("no {field} in {:#?}", check.prices))
    }

    #[test]
    fn every_catalog_price_is_compared_with_its_litellm_field() {
        let mut m = model("haiku", "anthropic", (1.0, 5.0), 0.8);
        m.api_model = "claude-haiku-9".into();
        m.cached_input_usd_per_mtok = 0.1;
        m.cache_write_input_usd_per_mtok = Some(1.25);
        m.batch_input_usd_per_mtok = Some(0.5);
        m.batch_output_usd_per_mtok = Some(2.5);
        m.context_window = 1_000_000;
        m.long_context = Some(LongContext {
            above_tokens: 200_000,
            input_usd_per_mtok: 2.0,
            output_usd_per_mtok: 7.5,
            cached_input_usd_per_mtok: None,
        });
        let catalog = Catalog::from_models(vec![m]).unwrap();
        let prices = map(
            "claude-haiku-9",
            "anthropic",
            &[
                ("input_cost_per_token", 1.0),
                ("output_cost_per_token", 5.0),
                ("cache_read_input_token_cost", 0.1),
                ("cache_creation_input_token_cost", 1.25),
                ("input_cost_per_token_batches", 0.5),
                ("output_cost_per_token_batches", 2.5),
                ("input_cost_per_token_above_200k_tokens", 2.0),
                ("output_cost_per_token_above_200k_tokens", 7.5),
                ("cache_read_input_token_cost_above_200k_tokens", 0.2),
                // Derived by the catalog, not compared.
                ("input_cost_per_token_above_200k_tokens_batches", 1.3),
            ],
        );
        let check = check(&catalog, &prices, 1.0);
        assert!(check.passed(), "{:#?}", check.prices);
        assert_eq!(check.prices.len(), 9, "{:#?}", check.prices);
        // The tier's cached rate is not stated: the catalog bills standard
        // cached scaled like input (0.1 x 2), and that is what is compared.
        let cached = row(&check, "long_context.cached_input_usd_per_mtok");
        assert!(cached.implied);
        assert!((cached.catalog.unwrap() - 0.2).abs() < 1e-12);

        // One price 4% off fails at 1% and passes at 5%.
        let mut off = prices.clone();
        off.entries
            .get_mut("claude-haiku-9")
            .unwrap()
            .costs
            .insert("output_cost_per_token".into(), 5.2 / PER_MTOK);
        let failed = super::check(&catalog, &off, 1.0);
        let diffs: Vec<_> = failed.differences().collect();
        assert_eq!(diffs.len(), 1);
        assert_eq!(diffs[0].field, "output_usd_per_mtok");
        assert_eq!(diffs[0].model, "haiku");
        assert!((diffs[0].diff_pct.unwrap() + 100.0 * 0.2 / 5.2).abs() < 1e-9);
        assert!(super::check(&catalog, &off, 5.0).passed());
    }

    #[test]
    fn left_out_rates_are_compared_with_what_the_catalog_bills_instead() {
        let mut m = model("grok", "xai", (2.0, 6.0), 0.8);
        m.cached_input_usd_per_mtok = 0.3;
        m.context_window = 500_000;
        let catalog = Catalog::from_models(vec![m.clone()]).unwrap();
        let prices = map(
            "xai/grok",
            "xai",
            &[
                ("input_cost_per_token", 2.0),
                ("output_cost_per_token", 6.0),
                ("cache_read_input_token_cost", 0.3),
                ("cache_creation_input_token_cost", 2.5),
                ("input_cost_per_token_batches", 1.0),
                ("input_cost_per_token_above_200k_tokens", 4.0),
                ("output_cost_per_token_above_200k_tokens", 12.0),
            ],
        );
        let check = check(&catalog, &prices, 1.0);
        // Cache writes billed as input (2.0) against 2.5; the missing tier
        // billed at standard rates against 4.0 and 12.0.
        let fields: Vec<&str> = check.differences().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "cache_write_input_usd_per_mtok",
                "long_context.input_usd_per_mtok",
                "long_context.output_usd_per_mtok"
            ]
        );
        assert!(check.differences().all(|p| p.implied));
        // A batch price the catalog leaves out is listed, not a failure.
        let batch = row(&check, "batch_input_usd_per_mtok");
        assert_eq!(batch.verdict, Verdict::NoBatchPrice);

        // With the tier at another threshold, the threshold differs.
        m.long_context = Some(LongContext {
            above_tokens: 128_000,
            input_usd_per_mtok: 4.0,
            output_usd_per_mtok: 12.0,
            cached_input_usd_per_mtok: None,
        });
        m.cache_write_input_usd_per_mtok = Some(2.5);
        let catalog = Catalog::from_models(vec![m]).unwrap();
        let check = super::check(&catalog, &prices, 1.0);
        let diffs: Vec<_> = check.differences().collect();
        assert_eq!(diffs.len(), 1, "{diffs:#?}");
        assert_eq!(diffs[0].field, "long_context.above_tokens");
        assert_eq!(diffs[0].litellm, Some(200_000.0));
    }

    #[test]
    fn models_are_found_under_the_providers_prefix_or_their_own_name() {
        let mut gemini = model("gem", "gemini", (2.0, 12.0), 0.8);
        gemini.api_model = "gemini-9-pro".into();
        let mut openai = model("gpt", "openai", (1.0, 4.0), 0.8);
        openai.api_model = "gpt-9".into();
        let mut groq = model("llama", "groq", (0.5, 0.8), 0.8);
        groq.api_model = "llama-9".into();
        let catalog = Catalog::from_models(vec![gemini, openai, groq]).unwrap();
        let text = serde_json::json!({
            // Vertex AI's price under the bare name, AI Studio's under gemini/.
            "gemini-9-pro": {"litellm_provider": "vertex_ai-language-models", "input_cost_per_token": 9e-6},
            "gemini/gemini-9-pro": {"litellm_provider": "gemini", "input_cost_per_token": 2e-6},
            "gpt-9": {"litellm_provider": "openai", "input_cost_per_token": 1e-6},
            // Another provider's model of the same name is not this one.
            "llama-9": {"litellm_provider": "together_ai", "input_cost_per_token": 0.1e-6},
        });
        let prices = PriceMap::parse(&text.to_string()).unwrap();
        let check = check(&catalog, &prices, 1.0);
        assert!(check.passed(), "{:#?}", check.prices);
        let mut keys: Vec<&str> = check
            .prices
            .iter()
            .map(|p| p.litellm_model.as_str())
            .collect();
        keys.dedup();
        assert_eq!(keys, ["gemini/gemini-9-pro", "gpt-9"]);
        assert_eq!(check.unlisted.len(), 1);
        assert_eq!(check.unlisted[0].tried, ["groq/llama-9", "llama-9"]);
        // The catalog's cached price has no LiteLLM counterpart here.
        assert!(check.with(Verdict::Unchecked).count() >= 2);
    }

    #[test]
    fn text_that_is_not_a_price_map_is_refused() {
        assert!(matches!(
            PriceMap::parse("not json"),
            Err(PriceMapError::NotJson(_))
        ));
        assert_eq!(
            PriceMap::parse("[1, 2]").unwrap_err(),
            PriceMapError::NotAnObject
        );
        assert!(PriceMap::parse("{}").unwrap().is_empty());
    }
}
