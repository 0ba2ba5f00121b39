//! The model catalog (`pipelines/models.toml`): public facts about models (price,
//! context, speed, quality per task category), kept apart from deployments (where
//! and with which key a model is called), so one model can have several deployments.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::source::{self, ConfigError, ConfigSource, Invalid, KeyPath};
pub use crate::vocab::ModelId;
use crate::vocab::{RunMode, TaskCategory, TokenUsage};

pub mod price_check;

/// Wire format a model is called with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Api {
    /// OpenAI Chat Completions.
    Openai,
    /// Anthropic Messages.
    Anthropic,
    /// Google Gemini generateContent.
    Gemini,
    /// Any endpoint speaking the OpenAI Chat Completions format (vLLM, Ollama, DeepSeek, Groq, …).
    OpenaiCompatible,
}

impl Api {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Openai => "openai",
            Api::Anthropic => "anthropic",
            Api::Gemini => "gemini",
            Api::OpenaiCompatible => "openai-compatible",
        }
    }
}

/// Providers Switchyard knows, with the wire format each speaks.
pub const PROVIDERS: &[(&str, Api)] = &[
    ("openai", Api::Openai),
    ("anthropic", Api::Anthropic),
    ("gemini", Api::Gemini),
    ("deepseek", Api::OpenaiCompatible),
    ("mistral", Api::OpenaiCompatible),
    ("groq", Api::OpenaiCompatible),
    ("together", Api::OpenaiCompatible),
    ("fireworks", Api::OpenaiCompatible),
    ("xai", Api::OpenaiCompatible),
    ("openrouter", Api::OpenaiCompatible),
    ("vllm", Api::OpenaiCompatible),
    ("ollama", Api::OpenaiCompatible),
];

/// Size class, for people reading reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Cheap, fast.
    Small,
    /// Mid-range.
    Medium,
    /// Strong.
    Large,
    /// The provider's best.
    Flagship,
}

/// Quality per task category, 0..1, from public benchmarks (cited in the catalog file).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualityScores {
    /// Labelling.
    pub classification: f64,
    /// Structured extraction.
    pub extraction: f64,
    /// Summaries.
    pub summarization: f64,
    /// Conversation.
    pub chat: f64,
    /// Programming.
    pub code: f64,
    /// Multi-step reasoning.
    pub reasoning: f64,
    /// Mathematics.
    pub math: f64,
    /// Creative writing.
    pub creative: f64,
}

impl QualityScores {
    /// As an array in [`TaskCategory::ALL`] order.
    pub fn to_array(&self) -> [f64; 8] {
        [
            self.classification,
            self.extraction,
            self.summarization,
            self.chat,
            self.code,
            self.reasoning,
            self.math,
            self.creative,
        ]
    }
}

/// Which tokenizer counts a model's prompt tokens exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tokenizer {
    /// OpenAI's o200k_base (GPT-4o and later).
    O200kBase,
    /// OpenAI's cl100k_base (GPT-4, GPT-3.5).
    Cl100kBase,
    /// No public tokenizer crate: estimate from bytes.
    Estimate,
}

/// A request parameter that some models refuse (OpenAI's reasoning models answer
/// 400 to a non-default `temperature` or `top_p` and to any `stop`). Adapters
/// leave refused parameters out of the request; stop sequences are then applied
/// to the returned text instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestParam {
    /// Sampling temperature (only the default is accepted).
    Temperature,
    /// Nucleus sampling (only the default is accepted).
    TopP,
    /// Stop sequences.
    Stop,
}

impl RequestParam {
    /// The name used in the catalog and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestParam::Temperature => "temperature",
            RequestParam::TopP => "top_p",
            RequestParam::Stop => "stop",
        }
    }
}

/// A long-context tier: a call whose prompt (input, cached and cache-write
/// tokens together) is longer than `above_tokens` pays these rates for all of
/// its tokens, as OpenAI (above 272K), Google (above 200K) and Anthropic (for
/// some models) bill.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContext {
    /// Prompts longer than this many tokens pay the tier's rates.
    pub above_tokens: u32,
    /// USD per million input tokens.
    pub input_usd_per_mtok: f64,
    /// USD per million output tokens.
    pub output_usd_per_mtok: f64,
    /// USD per million cached-input tokens; none: the standard cached rate
    /// scaled like the input rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_usd_per_mtok: Option<f64>,
}

/// What one call pays per million tokens of each kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// Input tokens.
    pub input: f64,
    /// Output tokens.
    pub output: f64,
    /// Cached input tokens.
    pub cached_input: f64,
    /// Prompt tokens written to the cache.
    pub cache_write: f64,
}

/// One model as written in the catalog file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Unique catalog name.
    pub name: String,
    /// Provider (see [`PROVIDERS`]).
    pub provider: String,
    /// Wire format.
    pub api: Api,
    /// Model id sent to the API.
    pub api_model: String,
    /// Size class.
    pub tier: Tier,
    /// USD per million input tokens.
    pub input_usd_per_mtok: f64,
    /// USD per million output tokens.
    pub output_usd_per_mtok: f64,
    /// USD per million cached-input tokens.
    pub cached_input_usd_per_mtok: f64,
    /// USD per million prompt tokens written to the provider's cache (Anthropic
    /// bills 5-minute cache writes at 1.25 times the input price); none: cache
    /// writes cost the input price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_input_usd_per_mtok: Option<f64>,
    /// USD per million input tokens through the provider's batch API (OpenAI
    /// Batch, Anthropic Message Batches); none when the model has no batch price.
    /// Deferred routing only considers models that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_input_usd_per_mtok: Option<f64>,
    /// USD per million output tokens through the provider's batch API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_output_usd_per_mtok: Option<f64>,
    /// The higher rates some models charge for every token of a call whose
    /// prompt is longer than a threshold (`[models.long_context]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContext>,
    /// Context window, tokens.
    pub context_window: u32,
    /// Longest answer, tokens.
    pub max_output_tokens: u32,
    /// Typical time to first token.
    pub ttft_ms: u32,
    /// Typical generation speed.
    pub tokens_per_second: f64,
    /// Tokenizer for exact prompt counts.
    pub tokenizer: Tokenizer,
    /// Where the prices come from, with date.
    pub price_source: String,
    /// Where the speed figures come from.
    #[serde(default)]
    pub speed_source: String,
    /// Where the quality figures come from.
    pub quality_source: String,
    /// Quality per category.
    pub quality: QualityScores,
    /// Request parameters the model refuses (see [`RequestParam`]); empty for most.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsupported_params: Vec<RequestParam>,
}

impl ModelSpec {
    /// List-price cost of `usage` on this model (live), with the cache-write
    /// surcharge and the long-context tier where the catalog gives them.
    pub fn cost_usd(&self, usage: &TokenUsage) -> f64 {
        self.rates(RunMode::Live, usage.prompt_tokens()).cost(usage)
    }

    /// Cost of `usage` served in `mode`: the batch price when deferred (the
    /// live price for a model without one).
    pub fn cost_in(&self, mode: RunMode, usage: &TokenUsage) -> f64 {
        self.rates(mode, usage.prompt_tokens()).cost(usage)
    }

    /// Whether the catalog gives a batch price for the model.
    pub fn has_batch_price(&self) -> bool {
        self.batch_input_usd_per_mtok.is_some() && self.batch_output_usd_per_mtok.is_some()
    }

    /// Whether deferred routing can send the model's requests through a batch
    /// API Switchyard speaks (OpenAI Batch, Anthropic Message Batches) at a
    /// catalog batch price.
    pub fn deferrable(&self) -> bool {
        self.has_batch_price() && matches!(self.api, Api::Openai | Api::Anthropic)
    }

    /// The largest share of the live price a batch call pays for any token
    /// kind (1 without a batch price): what scales a live worst case to the
    /// batch one.
    pub fn batch_factor(&self) -> f64 {
        match (
            self.batch_input_usd_per_mtok,
            self.batch_output_usd_per_mtok,
        ) {
            (Some(bi), Some(bo)) => ratio(bi, self.input_usd_per_mtok)
                .max(ratio(bo, self.output_usd_per_mtok))
                .min(1.0),
            _ => 1.0,
        }
    }

    /// What a call in `mode` whose prompt has `prompt_tokens` tokens pays per
    /// million tokens of each kind. The batch discount applies as a factor to
    /// every kind (input, cached and cache-write tokens by the input's, output
    /// by the output's), long-context tiers included, as the providers bill it.
    pub fn rates(&self, mode: RunMode, prompt_tokens: u64) -> Rates {
        let long = self
            .long_context
            .filter(|l| prompt_tokens > u64::from(l.above_tokens));
        let input_factor = long.map_or(1.0, |l| {
            ratio(l.input_usd_per_mtok, self.input_usd_per_mtok)
        });
        let mut rates = Rates {
            input: long.map_or(self.input_usd_per_mtok, |l| l.input_usd_per_mtok),
            output: long.map_or(self.output_usd_per_mtok, |l| l.output_usd_per_mtok),
            cached_input: long
                .and_then(|l| l.cached_input_usd_per_mtok)
                .unwrap_or(self.cached_input_usd_per_mtok * input_factor),
            cache_write: self
                .cache_write_input_usd_per_mtok
                .unwrap_or(self.input_usd_per_mtok)
                * input_factor,
        };
        if mode == RunMode::Deferred
            && let (Some(bi), Some(bo)) = (
                self.batch_input_usd_per_mtok,
                self.batch_output_usd_per_mtok,
            )
        {
            let (fi, fo) = (
                ratio(bi, self.input_usd_per_mtok),
                ratio(bo, self.output_usd_per_mtok),
            );
            rates.input *= fi;
            rates.cached_input *= fi;
            rates.cache_write *= fi;
            rates.output *= fo;
        }
        rates
    }

    /// Estimated cost of a call reading `input` tokens and writing `output` tokens.
    pub fn estimate_usd(&self, input: u32, output: u32) -> f64 {
        self.estimate_in(RunMode::Live, input, output)
    }

    /// Estimated cost of such a call served in `mode`.
    pub fn estimate_in(&self, mode: RunMode, input: u32, output: u32) -> f64 {
        let r = self.rates(mode, u64::from(input));
        (f64::from(input) * r.input + f64::from(output) * r.output) / 1_000_000.0
    }

    /// Expected wall time of a call writing `output` tokens, from catalog figures.
    pub fn expected_latency_ms(&self, output: u32) -> f64 {
        f64::from(self.ttft_ms) + f64::from(output) * 1000.0 / self.tokens_per_second.max(1.0)
    }

    /// Whether requests to this model may carry `param`.
    pub fn supports(&self, param: RequestParam) -> bool {
        !self.unsupported_params.contains(&param)
    }

    /// Quality for a category.
    pub fn quality_for(&self, category: TaskCategory) -> f64 {
        self.quality.to_array()[category.index()]
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    models: Vec<ModelSpec>,
}

/// The optional prices: cache write, batch (both or neither, at most the live
/// price) and the long-context tier (a threshold inside the context window,
/// rates at least the standard ones).
fn check_extra_prices(m: &ModelSpec, at: &dyn Fn(&str) -> KeyPath) -> Result<(), Invalid> {
    let not_a_price = |key: &str, price: f64| {
        Invalid::new(
            at(key),
            format!("price {price} is negative or not a number"),
            "give the public price in USD per million tokens (0 or more)",
        )
    };
    for (key, price) in [
        (
            "cache_write_input_usd_per_mtok",
            m.cache_write_input_usd_per_mtok,
        ),
        ("batch_input_usd_per_mtok", m.batch_input_usd_per_mtok),
        ("batch_output_usd_per_mtok", m.batch_output_usd_per_mtok),
    ] {
        if let Some(p) = price
            && (!p.is_finite() || p < 0.0)
        {
            return Err(not_a_price(key, p));
        }
    }
    match (m.batch_input_usd_per_mtok, m.batch_output_usd_per_mtok) {
        (Some(_), None) | (None, Some(_)) => {
            let missing = if m.batch_input_usd_per_mtok.is_none() {
                "batch_input_usd_per_mtok"
            } else {
                "batch_output_usd_per_mtok"
            };
            return Err(Invalid::new(
                at(missing),
                "a batch price needs both its input and its output rate",
                format!("add {missing}, or remove the other batch price"),
            ));
        }
        (Some(bi), Some(bo)) if bi > m.input_usd_per_mtok || bo > m.output_usd_per_mtok => {
            return Err(Invalid::new(
                at("batch_input_usd_per_mtok"),
                "the batch price is above the live price",
                "give the provider's batch (discounted) price, at most the live one",
            ));
        }
        _ => {}
    }
    if let Some(l) = &m.long_context {
        let lc = |k: &str| at("long_context").key(k);
        if l.above_tokens == 0 || l.above_tokens >= m.context_window {
            return Err(Invalid::new(
                lc("above_tokens"),
                format!(
                    "threshold {} is not inside the context window of {} tokens",
                    l.above_tokens, m.context_window
                ),
                "give the prompt length above which the long-context rates apply, such as 200000",
            ));
        }
        for (key, price, standard) in [
            (
                "input_usd_per_mtok",
                l.input_usd_per_mtok,
                m.input_usd_per_mtok,
            ),
            (
                "output_usd_per_mtok",
                l.output_usd_per_mtok,
                m.output_usd_per_mtok,
            ),
        ] {
            if !price.is_finite() || price < standard {
                return Err(Invalid::new(
                    lc(key),
                    format!("long-context price {price} is below the standard {standard}"),
                    "give the provider's long-context rate, at least the standard one",
                ));
            }
        }
    }
    Ok(())
}

impl Rates {
    /// What `usage` costs at these rates.
    pub fn cost(&self, usage: &TokenUsage) -> f64 {
        (usage.input_tokens as f64 * self.input
            + usage.output_tokens as f64 * self.output
            + usage.cached_input_tokens as f64 * self.cached_input
            + usage.cache_write_input_tokens as f64 * self.cache_write)
            / 1_000_000.0
    }
}

/// `part / whole`, 1 when the whole is free (a free model has no discount to scale).
fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 { part / whole } else { 1.0 }
}

/// The validated catalog.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<ModelSpec>,
    by_name: HashMap<String, ModelId>,
}

impl Catalog {
    /// Parses and validates catalog text; `path` is used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let (file, source): (CatalogFile, ConfigSource) = source::parse(path, text, &[])?;
        Self::from_models(file.models).map_err(|e| source.locate(e))
    }

    /// Builds a catalog from models, checking every field.
    pub fn from_models(models: Vec<ModelSpec>) -> Result<Self, Invalid> {
        let mut by_name = HashMap::with_capacity(models.len());
        if models.is_empty() {
            return Err(Invalid::new(
                KeyPath::root().key("models"),
                "the catalog has no models",
                "add at least one [[models]] entry",
            ));
        }
        for (i, m) in models.iter().enumerate() {
            let at = |k: &str| KeyPath::root().key("models").index(i).key(k);
            if m.name.is_empty()
                || !m
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b))
            {
                return Err(Invalid::new(
                    at("name"),
                    format!("model name `{}` is not a lowercase identifier", m.name),
                    "use lowercase letters, digits, `.`, `-` and `_`",
                ));
            }
            if by_name.insert(m.name.clone(), i).is_some() {
                return Err(Invalid::new(
                    at("name"),
                    format!("model `{}` is listed twice", m.name),
                    "give each model a unique name, or remove the duplicate",
                ));
            }
            let Some((_, api)) = PROVIDERS.iter().find(|(p, _)| *p == m.provider) else {
                let known: Vec<&str> = PROVIDERS.iter().map(|(p, _)| *p).collect();
                return Err(Invalid::new(
                    at("provider"),
                    format!("unknown provider `{}`", m.provider),
                    format!("use one of: {}", known.join(", ")),
                ));
            };
            if *api != m.api {
                return Err(Invalid::new(
                    at("api"),
                    format!(
                        "provider `{}` speaks `{}`, not `{}`",
                        m.provider,
                        api.as_str(),
                        m.api.as_str()
                    ),
                    format!("set api = \"{}\"", api.as_str()),
                ));
            }
            for (key, price) in [
                ("input_usd_per_mtok", m.input_usd_per_mtok),
                ("output_usd_per_mtok", m.output_usd_per_mtok),
                ("cached_input_usd_per_mtok", m.cached_input_usd_per_mtok),
            ] {
                if !price.is_finite() || price < 0.0 {
                    return Err(Invalid::new(
                        at(key),
                        format!("price {price} is negative or not a number"),
                        "give the public list price in USD per million tokens (0 or more)",
                    ));
                }
            }
            if m.cached_input_usd_per_mtok > m.input_usd_per_mtok {
                return Err(Invalid::new(
                    at("cached_input_usd_per_mtok"),
                    "cached input costs more than input",
                    "use the cache-read price, at most the input price",
                ));
            }
            check_extra_prices(m, &at)?;
            if m.context_window == 0
                || m.max_output_tokens == 0
                || m.max_output_tokens > m.context_window
            {
                return Err(Invalid::new(
                    at("max_output_tokens"),
                    format!(
                        "context_window {} / max_output_tokens {} are inconsistent",
                        m.context_window, m.max_output_tokens
                    ),
                    "both must be positive and max_output_tokens at most context_window",
                ));
            }
            if !(m.tokens_per_second.is_finite() && m.tokens_per_second > 0.0) {
                return Err(Invalid::new(
                    at("tokens_per_second"),
                    "speed must be positive",
                    "give the typical output tokens per second",
                ));
            }
            for (cat, q) in TaskCategory::ALL.iter().zip(m.quality.to_array()) {
                if !(0.0..=1.0).contains(&q) {
                    return Err(Invalid::new(
                        at("quality").key(cat.as_str()),
                        format!("quality {q} is outside 0..1"),
                        "map the benchmark score to 0..1 as described in the catalog header",
                    ));
                }
            }
            if m.price_source.trim().is_empty() || m.quality_source.trim().is_empty() {
                return Err(Invalid::new(
                    at("price_source"),
                    "prices and quality must cite their source",
                    "add price_source and quality_source (URL and date)",
                ));
            }
        }
        Ok(Self { models, by_name })
    }

    /// All models.
    pub fn models(&self) -> &[ModelSpec] {
        &self.models
    }

    /// A model by id.
    pub fn model(&self, id: ModelId) -> &ModelSpec {
        &self.models[id]
    }

    /// A model's id by name.
    pub fn id(&self, name: &str) -> Option<ModelId> {
        self.by_name.get(name).copied()
    }

    /// A model by name.
    pub fn get(&self, name: &str) -> Option<&ModelSpec> {
        self.id(name).map(|i| &self.models[i])
    }

    /// Names of all models, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.models.iter().map(|m| m.name.as_str()).collect()
    }

    /// Each model's third of the catalog sorted by output price (then input
    /// price, then name), in catalog order: the tiers in which routing
    /// quality is measured (a "premium" job needs the top third).
    pub fn price_bands(&self) -> Vec<PriceBand> {
        let mut order: Vec<ModelId> = (0..self.models.len()).collect();
        order.sort_by(|&a, &b| {
            let (ma, mb) = (&self.models[a], &self.models[b]);
            ma.output_usd_per_mtok
                .total_cmp(&mb.output_usd_per_mtok)
                .then(ma.input_usd_per_mtok.total_cmp(&mb.input_usd_per_mtok))
                .then(ma.name.cmp(&mb.name))
        });
        let n = order.len();
        let mut bands = vec![PriceBand::Bottom; n];
        for (rank, id) in order.into_iter().enumerate() {
            bands[id] = match 3 * rank / n {
                0 => PriceBand::Bottom,
                1 => PriceBand::Middle,
                _ => PriceBand::Top,
            };
        }
        bands
    }
}

/// A third of the catalog by output price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PriceBand {
    /// The cheapest third.
    Bottom,
    /// The middle third.
    Middle,
    /// The dearest third.
    Top,
}

impl PriceBand {
    /// `bottom`, `middle` or `top`.
    pub fn as_str(self) -> &'static str {
        match self {
            PriceBand::Bottom => "bottom",
            PriceBand::Middle => "middle",
            PriceBand::Top => "top",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn model(name: &str, provider: &str, price: (f64, f64), q: f64) -> ModelSpec {
        let api = PROVIDERS
            .iter()
            .find(|(p, _)| *p == provider)
            .map(|(_, a)| *a)
            .unwrap();
        ModelSpec {
            name: name.into(),
            provider: provider.into(),
            api,
            api_model: name.into(),
            tier: Tier::Medium,
            input_usd_per_mtok: price.0,
            output_usd_per_mtok: price.1,
            cached_input_usd_per_mtok: price.0 / 2.0,
            cache_write_input_usd_per_mtok: None,
            batch_input_usd_per_mtok: None,
            batch_output_usd_per_mtok: None,
            long_context: None,
            context_window: 128_000,
            max_output_tokens: 16_384,
            ttft_ms: 400,
            tokens_per_second: 80.0,
            tokenizer: Tokenizer::Estimate,
            price_source: "test".into(),
            speed_source: String::new(),
            quality_source: "test".into(),
            quality: QualityScores {
                classification: q,
                extraction: q,
                summarization: q,
                chat: q,
                code: q,
                reasoning: q,
                math: q,
                creative: q,
            },
            unsupported_params: Vec::new(),
        }
    }

    #[test]
    fn costs_follow_list_prices() {
        let m = model("m", "openai", (2.5, 10.0), 0.9);
        let usage = TokenUsage {
            input_tokens: 1_000_000,
            output_tokens: 500_000,
            cached_input_tokens: 200_000,
            cache_write_input_tokens: 0,
        };
        assert!((m.cost_usd(&usage) - (2.5 + 5.0 + 0.25)).abs() < 1e-9);
    }

    #[test]
    fn batch_cache_write_and_long_context_rates_apply() {
        let mut m = model("m", "anthropic", (2.0, 10.0), 0.9);
        m.cached_input_usd_per_mtok = 0.2;
        m.cache_write_input_usd_per_mtok = Some(2.5);
        m.batch_input_usd_per_mtok = Some(1.0);
        m.batch_output_usd_per_mtok = Some(5.0);
        let usage = TokenUsage {
            input_tokens: 1_000,
            output_tokens: 1_000,
            cached_input_tokens: 1_000,
            cache_write_input_tokens: 1_000,
        };
        let live = (2.0 + 10.0 + 0.2 + 2.5) / 1000.0;
        assert!((m.cost_usd(&usage) - live).abs() < 1e-12);
        // Batch: half of every kind.
        assert!((m.cost_in(RunMode::Deferred, &usage) - live / 2.0).abs() < 1e-12);
        assert!(m.has_batch_price());
        // Without a batch price, deferred costs the live price.
        m.batch_input_usd_per_mtok = None;
        m.batch_output_usd_per_mtok = None;
        assert!((m.cost_in(RunMode::Deferred, &usage) - live).abs() < 1e-12);

        let mut m = model("m", "openai", (2.5, 15.0), 0.9);
        m.cached_input_usd_per_mtok = 0.25;
        m.batch_input_usd_per_mtok = Some(1.25);
        m.batch_output_usd_per_mtok = Some(7.5);
        m.long_context = Some(LongContext {
            above_tokens: 272_000,
            input_usd_per_mtok: 5.0,
            output_usd_per_mtok: 22.5,
            cached_input_usd_per_mtok: Some(0.5),
        });
        let short = TokenUsage {
            input_tokens: 272_000,
            output_tokens: 1_000_000,
            ..TokenUsage::default()
        };
        assert!((m.cost_usd(&short) - (0.272 * 2.5 + 15.0)).abs() < 1e-9);
        let long = TokenUsage {
            input_tokens: 200_000,
            cached_input_tokens: 100_000,
            output_tokens: 1_000_000,
            ..TokenUsage::default()
        };
        assert!((m.cost_usd(&long) - (0.2 * 5.0 + 0.1 * 0.5 + 22.5)).abs() < 1e-9);
        assert!(
            (m.cost_in(RunMode::Deferred, &long) - (0.2 * 2.5 + 0.1 * 0.25 + 11.25)).abs() < 1e-9
        );
        assert!((m.estimate_in(RunMode::Deferred, 1000, 1000) - 0.00875).abs() < 1e-12);
    }

    #[test]
    fn extra_prices_are_checked() {
        let mut bad = model("m", "openai", (1.0, 2.0), 0.5);
        bad.batch_input_usd_per_mtok = Some(0.5);
        let e = Catalog::from_models(vec![bad]).unwrap_err();
        assert_eq!(e.path.to_string(), "models[0].batch_output_usd_per_mtok");
        let mut bad = model("m", "openai", (1.0, 2.0), 0.5);
        bad.batch_input_usd_per_mtok = Some(1.5);
        bad.batch_output_usd_per_mtok = Some(1.0);
        assert!(Catalog::from_models(vec![bad]).is_err());
        let mut bad = model("m", "openai", (1.0, 2.0), 0.5);
        bad.long_context = Some(LongContext {
            above_tokens: 500_000,
            input_usd_per_mtok: 2.0,
            output_usd_per_mtok: 4.0,
            cached_input_usd_per_mtok: None,
        });
        let e = Catalog::from_models(vec![bad]).unwrap_err();
        assert_eq!(e.path.to_string(), "models[0].long_context.above_tokens");
    }

    #[test]
    fn validation_names_the_faulty_field() {
        let mut bad = model("m", "openai", (1.0, 2.0), 0.5);
        bad.input_usd_per_mtok = -1.0;
        let e = Catalog::from_models(vec![bad]).unwrap_err();
        assert_eq!(e.path.to_string(), "models[0].input_usd_per_mtok");

        let mut bad = model("m", "openai", (1.0, 2.0), 0.5);
        bad.provider = "acme-ai".into();
        let e = Catalog::from_models(vec![bad]).unwrap_err();
        assert!(e.fix.contains("anthropic"), "{}", e.fix);

        let e = Catalog::from_models(vec![
            model("m", "openai", (1.0, 2.0), 0.5),
            model("m", "openai", (1.0, 2.0), 0.5),
        ])
        .unwrap_err();
        assert!(e.problem.contains("twice"));

        let mut bad = model("m", "openai", (1.0, 2.0), 0.5);
        bad.quality.code = 1.5;
        let e = Catalog::from_models(vec![bad]).unwrap_err();
        assert_eq!(e.path.to_string(), "models[0].quality.code");
    }

    /// One model `x` of `provider` as catalog TOML, with `extra` lines after its
    /// sources (line 4 is the provider, line 18 the first extra line).
    fn model_toml(provider: &str, extra: &str) -> String {
        format!(
            r#"
[[models]]
name = "x"
provider = "{provider}"
api = "openai"
api_model = "x"
tier = "small"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0
cached_input_usd_per_mtok = 0.5
context_window = 1000
max_output_tokens = 100
ttft_ms = 100
tokens_per_second = 50
tokenizer = "estimate"
price_source = "p"
quality_source = "q"
{extra}[models.quality]
classification = 0.5
extraction = 0.5
summarization = 0.5
chat = 0.5
code = 0.5
reasoning = 0.5
math = 0.5
creative = 0.5
"#
        )
    }

    #[test]
    fn unknown_providers_are_reported_with_the_line() {
        let text = model_toml("acme-ai", "");
        let e = Catalog::parse(Path::new("models.toml"), &text).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.to_string().contains("unknown provider `acme-ai`"), "{e}");
    }

    #[test]
    fn the_shipped_catalog_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/models.toml");
        let catalog = Catalog::parse(&path, &std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(catalog.models().len() >= 20);
        let providers: std::collections::HashSet<&str> = catalog
            .models()
            .iter()
            .map(|m| m.provider.as_str())
            .collect();
        assert!(providers.len() >= 5, "{providers:?}");
        // OpenAI's reasoning models (GPT-5 family and later) refuse sampling
        // parameters and stop sequences; the adapters must know.
        for name in ["gpt-5-nano", "gpt-5-mini", "gpt-5.4", "gpt-6.1-sol"] {
            let m = catalog.get(name).unwrap();
            assert!(
                !m.supports(RequestParam::Temperature) && !m.supports(RequestParam::Stop),
                "{name}"
            );
        }
        assert!(catalog.get("gpt-4.1").unwrap().supports(RequestParam::Stop));
        // Every OpenAI and Anthropic model can be deferred, at half price.
        for m in catalog.models() {
            if matches!(m.api, Api::Openai | Api::Anthropic) {
                assert!(m.deferrable(), "{}", m.name);
                let half = m.input_usd_per_mtok / 2.0;
                assert!(
                    (m.batch_input_usd_per_mtok.unwrap() - half).abs() < 1e-9,
                    "{}",
                    m.name
                );
            }
        }
        assert!(!catalog.get("deepseek-flash").unwrap().deferrable());
        let haiku = catalog.get("claude-haiku-5-5").unwrap();
        assert_eq!(haiku.long_context.map(|l| l.above_tokens), Some(100_000));
    }

    #[test]
    fn unknown_request_params_are_refused_with_the_line() {
        let text = model_toml(
            "openai",
            "unsupported_params = [\"temperature\", \"seed\"]\n",
        );
        let e = Catalog::parse(Path::new("models.toml"), &text).unwrap_err();
        assert_eq!(e.line, Some(18), "{e}");
        assert!(e.to_string().contains("seed"), "{e}");
        let ok = text.replace(", \"seed\"", "");
        let c = Catalog::parse(Path::new("models.toml"), &ok).unwrap();
        assert!(!c.get("x").unwrap().supports(RequestParam::Temperature));
        assert!(c.get("x").unwrap().supports(RequestParam::Stop));
    }
}
