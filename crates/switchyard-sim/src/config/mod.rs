//! The simulator's config (`pipelines/sim.toml`): a time scale, a seed, the
//! behaviour every model gets by default and per-model overrides. In a file, every
//! key a `[models."id"]` table leaves out is taken from `[default]`, so error rates
//! are written once and each model only says what makes it different.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_core::catalog::{Catalog, RequestParam};
use switchyard_core::config::ConfigError;
use switchyard_core::config::source::{self, ConfigSource, Invalid, KeyPath};

use crate::SimError;

mod settings;

pub use settings::Setting;
use settings::apply_settings;

/// The window over which `rpm` and `tpm` are counted, before scaling.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);

/// How the simulated providers behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Multiplies every duration the simulator applies: latencies, retry-after
    /// values, outage schedules and the 60 s rate window. 0.05 makes a demo run
    /// twenty times faster while keeping the proportions.
    #[serde(default = "default_time_scale")]
    pub time_scale: f64,
    /// Seed of the per-request rolls that decide injected faults. The same seed,
    /// requests and arrival order give the same faults.
    #[serde(default)]
    pub seed: u64,
    /// Behaviour of any model without its own entry, and the base of every entry.
    #[serde(default)]
    pub default: ModelBehaviour,
    /// Per-model behaviour, keyed by the model id the request carries (for Gemini,
    /// the `{model}` in the URL path).
    #[serde(default)]
    pub models: BTreeMap<String, ModelBehaviour>,
    /// How the OpenAI and Anthropic batch APIs behave.
    #[serde(default)]
    pub batch: BatchBehaviour,
}

/// How the simulated batch APIs (OpenAI Files and Batches, Anthropic Message
/// Batches) behave: how long a batch takes, which lines fail or expire, and
/// how long a create takes to answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchBehaviour {
    /// Time from a batch's creation to its end (scaled by `time_scale`).
    #[serde(with = "humantime_serde")]
    pub processing_time: Duration,
    /// Fraction of lines answered with an error (500 `api_error`) instead of
    /// a reply, decided per line by its custom id and the seed.
    pub line_error_rate: f64,
    /// Fraction of lines that expire (not reached within the window).
    pub line_expired_rate: f64,
    /// Time between recording a new batch and answering its create (scaled):
    /// a client that dies meanwhile leaves a batch it never heard of, which it
    /// must find by listing.
    #[serde(with = "humantime_serde")]
    pub create_reply_delay: Duration,
    /// Whether reading an ended batch's results fails (OpenAI file content,
    /// Anthropic results: 500), as a lasting download error would.
    pub results_unavailable: bool,
}

impl Default for BatchBehaviour {
    fn default() -> Self {
        Self {
            processing_time: Duration::from_secs(30),
            line_error_rate: 0.0,
            line_expired_rate: 0.0,
            create_reply_delay: Duration::ZERO,
            results_unavailable: false,
        }
    }
}

fn default_time_scale() -> f64 {
    1.0
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            time_scale: default_time_scale(),
            seed: 0,
            default: ModelBehaviour::default(),
            models: BTreeMap::new(),
            batch: BatchBehaviour::default(),
        }
    }
}

/// How one model answers: speed, injected faults, limits and outages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelBehaviour {
    /// Time to first byte of a successful answer.
    #[serde(with = "humantime_serde")]
    pub ttft: Duration,
    /// Decode speed: an answer of N output tokens takes `ttft + N / tokens_per_second`.
    pub tokens_per_second: f64,
    /// How long answers are: `"natural"` (a length that depends on the prompt,
    /// cut at `max_tokens`) or `"max"` (always as many tokens as the request
    /// allows, finish reason `length`): the worst case budgets must hold against.
    pub output_tokens: OutputTokens,
    /// Fraction of requests answered 500 with the format's error body.
    pub error_rate: f64,
    /// Fraction answered "overloaded": 529 (Anthropic) or 503 (OpenAI, Gemini `UNAVAILABLE`).
    pub overloaded_rate: f64,
    /// Fraction answered 429 with `retry_after`, as if a provider-side limit tripped.
    pub rate_limit_rate: f64,
    /// The wait announced by injected 429s (Retry-After header, Gemini `RetryInfo.retryDelay`).
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
    /// How 429s (injected or from `rpm`/`tpm`) say when to retry.
    pub rate_limit_hint: RateLimitHint,
    /// Requests per (scaled) minute the simulator admits for this model, over a
    /// sliding window; beyond it, 429 with the exact wait until a slot frees.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    /// Tokens (prompt + output) per (scaled) minute admitted, like `rpm`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u32>,
    /// Fraction of requests never answered, until the client gives up or the server stops.
    pub hang_rate: f64,
    /// Fraction of successful answers delayed by `slow_first_byte` before the headers.
    pub slow_first_byte_rate: f64,
    /// Extra delay of a slow answer (to exercise first-byte timeouts).
    #[serde(with = "humantime_serde")]
    pub slow_first_byte: Duration,
    /// Fraction of successful answers whose headers come on time but whose body
    /// trickles in over `slow_body` (to exercise total timeouts).
    pub slow_body_rate: f64,
    /// How long a slow body takes to arrive, in ten pieces.
    #[serde(with = "humantime_serde")]
    pub slow_body: Duration,
    /// Fraction of requests refused as if their API key were invalid: 401 (Gemini:
    /// 400 `API_KEY_INVALID`). The OpenAI body quotes the key it was sent, in full,
    /// as OpenAI-compatible servers do, so clients must scrub provider messages.
    /// Decided by the request alone (not the arrival order): the same request is
    /// always refused or always accepted.
    pub invalid_key_rate: f64,
    /// Request parameters the model refuses with the format's 400 (as the catalog's
    /// `unsupported_params`): a non-default `temperature` or `top_p`, any `stop`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsupported_params: Vec<RequestParam>,
    /// Fraction of JSON-mode requests answered 200 (and billed) with text that is not JSON.
    pub invalid_json_rate: f64,
    /// Largest answer the model accepts; asking for more gets the format's 400
    /// invalid-request error, as real APIs answer (a final, non-retryable error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    /// Scheduled outages, relative to server start.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outages: Vec<Outage>,
}

impl Default for ModelBehaviour {
    fn default() -> Self {
        Self {
            ttft: Duration::from_millis(500),
            tokens_per_second: 100.0,
            output_tokens: OutputTokens::Natural,
            error_rate: 0.0,
            overloaded_rate: 0.0,
            rate_limit_rate: 0.0,
            retry_after: Duration::from_secs(2),
            rate_limit_hint: RateLimitHint::RetryAfter,
            rpm: None,
            tpm: None,
            hang_rate: 0.0,
            slow_first_byte_rate: 0.0,
            slow_first_byte: Duration::from_secs(10),
            slow_body_rate: 0.0,
            slow_body: Duration::from_secs(30),
            invalid_key_rate: 0.0,
            unsupported_params: Vec::new(),
            invalid_json_rate: 0.0,
            max_output_tokens: None,
            outages: Vec::new(),
        }
    }
}

/// How long a simulated answer is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputTokens {
    /// A length that depends on the prompt, cut at the request's cap.
    #[default]
    Natural,
    /// As many tokens as the request's cap allows (its natural length without one).
    Max,
}

/// How a 429 tells the client when to come back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitHint {
    /// `Retry-After` (OpenAI also `retry-after-ms`; Gemini `RetryInfo.retryDelay`).
    #[default]
    RetryAfter,
    /// No `Retry-After`: only the rate-limit headers, with the limit at zero and its
    /// reset at the wait (OpenAI `x-ratelimit-*-requests`/`-tokens`, Anthropic
    /// `anthropic-ratelimit-*`). Gemini, which has no such headers, keeps `RetryInfo`.
    ResetHeaders,
    /// Nothing: no `Retry-After`, no reset headers, no `RetryInfo`.
    None,
}

/// A period during which every request for the model gets `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outage {
    /// When it begins, after server start (scaled).
    #[serde(with = "humantime_serde")]
    pub start: Duration,
    /// How long it lasts (scaled).
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// HTTP status answered, with the format's error body.
    #[serde(default = "default_outage_status")]
    pub status: u16,
}

fn default_outage_status() -> u16 {
    503
}

impl SimConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, SimError> {
        Self::parse_at(path, &read(path)?)
    }

    /// [`SimConfig::load`] with settings (`--set`, `--outage`) applied on top of
    /// the file. A setting on `default` reaches every model that does not set the
    /// key itself, as if it were written in the file's `[default]` table.
    pub fn load_with(path: &Path, settings: &[Setting]) -> Result<Self, SimError> {
        let text = read(path)?;
        let config = Self::parse_at(path, &text)?;
        if settings.is_empty() {
            return Ok(config);
        }
        // The file is valid, so it reads as a table.
        let mut table: toml::Table = toml::from_str(&text).unwrap_or_default();
        apply_settings(&mut table, settings);
        let origin = format!("{} with the command-line settings", path.display());
        Self::from_table(&origin, &table)
    }

    /// [`SimConfig::from_catalog`] with settings applied on top.
    pub fn from_catalog_with(catalog: &Catalog, settings: &[Setting]) -> Result<Self, SimError> {
        if settings.is_empty() {
            return Ok(Self::from_catalog(catalog));
        }
        let mut models = toml::Table::new();
        for m in catalog.models() {
            let mut t = toml::Table::new();
            t.insert("ttft".into(), format!("{}ms", m.ttft_ms).into());
            t.insert("tokens_per_second".into(), m.tokens_per_second.into());
            if !m.unsupported_params.is_empty() {
                let params = m
                    .unsupported_params
                    .iter()
                    .map(|p| toml::Value::from(p.as_str()))
                    .collect::<Vec<_>>();
                t.insert("unsupported_params".into(), params.into());
            }
            models.insert(m.api_model.clone(), t.into());
        }
        let mut table = toml::Table::new();
        table.insert("models".into(), models.into());
        apply_settings(&mut table, settings);
        Self::from_table(
            "the catalog's models with the command-line settings",
            &table,
        )
    }

    fn from_table(origin: &str, table: &toml::Table) -> Result<Self, SimError> {
        let text = toml::to_string(table).map_err(|e| ConfigError {
            origin: origin.to_owned(),
            line: None,
            key: "(settings)".into(),
            problem: e.to_string(),
            fix: "check the --set values".into(),
        })?;
        Self::parse_at(Path::new(origin), &text).map_err(|e| match e {
            // Lines of the generated text mean nothing to the user.
            SimError::Config(mut c) => {
                c.line = None;
                SimError::Config(c)
            }
            other => other,
        })
    }

    /// Parses and validates config text (errors name `(sim config)` as the origin).
    pub fn from_toml_str(text: &str) -> Result<Self, SimError> {
        Self::parse_at(Path::new("(sim config)"), text)
    }

    fn parse_at(path: &Path, text: &str) -> Result<Self, SimError> {
        let (mut config, source): (SimConfig, ConfigSource) = source::parse(path, text, &[])?;
        config.inherit_default(path, text)?;
        config.validate().map_err(|e| source.locate(e))?;
        Ok(config)
    }

    /// Re-reads each `[models."id"]` table on top of the `[default]` table, so keys
    /// a model leaves out come from `[default]` rather than from the built-in defaults.
    fn inherit_default(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let raw: toml::Table = toml::from_str(text).map_err(|e| ConfigError {
            origin: path.display().to_string(),
            line: None,
            key: "(syntax)".into(),
            problem: e.message().to_owned(),
            fix: "correct the TOML syntax".into(),
        })?;
        let base = raw
            .get("default")
            .and_then(toml::Value::as_table)
            .cloned()
            .unwrap_or_default();
        let Some(models) = raw.get("models").and_then(toml::Value::as_table) else {
            return Ok(());
        };
        for (name, table) in models {
            let Some(table) = table.as_table() else {
                continue;
            };
            let mut merged = base.clone();
            merged.extend(table.iter().map(|(k, v)| (k.clone(), v.clone())));
            let behaviour: ModelBehaviour = toml::Value::Table(merged).try_into().map_err(|e: toml::de::Error| ConfigError {
                origin: path.display().to_string(),
                line: None,
                key: format!("models.{name}"),
                problem: format!("the model's keys combined with [default] do not form a valid behaviour: {}", e.message()),
                fix: "check the keys of [default] and of this model".into(),
            })?;
            self.models.insert(name.clone(), behaviour);
        }
        Ok(())
    }

    /// Checks ranges and consistency; no I/O.
    pub fn validate(&self) -> Result<(), Invalid> {
        let root = KeyPath::root();
        if !(self.time_scale.is_finite() && self.time_scale > 0.0 && self.time_scale <= 1000.0) {
            return Err(Invalid::new(
                root.key("time_scale"),
                format!("time_scale {} is not a positive factor", self.time_scale),
                "use a number in (0, 1000]: 1.0 for real time, 0.05 for a fast demo",
            ));
        }
        self.default.validate(&root.key("default"))?;
        for (key, rate) in [
            ("line_error_rate", self.batch.line_error_rate),
            ("line_expired_rate", self.batch.line_expired_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(Invalid::new(
                    root.key("batch").key(key),
                    format!("{rate} is not a fraction"),
                    "give a value between 0 and 1, such as 0.01",
                ));
            }
        }
        for (name, behaviour) in &self.models {
            let at = root.key("models").key(name);
            if name.is_empty() {
                return Err(Invalid::new(
                    at,
                    "empty model id",
                    "key each model by the id requests carry (api_model)",
                ));
            }
            behaviour.validate(&at)?;
        }
        Ok(())
    }

    /// The behaviour of `model`: its own entry, else `default`.
    pub fn behaviour(&self, model: &str) -> &ModelBehaviour {
        self.models.get(model).unwrap_or(&self.default)
    }

    /// `d` multiplied by the time scale.
    pub fn scaled(&self, d: Duration) -> Duration {
        scale(d, self.time_scale)
    }

    /// A config whose models answer at the catalog's typical speed (TTFT and
    /// tokens per second), keyed by `api_model`, with no injected faults.
    pub fn from_catalog(catalog: &Catalog) -> Self {
        let models = catalog
            .models()
            .iter()
            .map(|m| {
                let behaviour = ModelBehaviour {
                    ttft: Duration::from_millis(u64::from(m.ttft_ms)),
                    tokens_per_second: m.tokens_per_second,
                    unsupported_params: m.unsupported_params.clone(),
                    ..ModelBehaviour::default()
                };
                (m.api_model.clone(), behaviour)
            })
            .collect();
        Self {
            models,
            ..Self::default()
        }
    }
}

/// `d × factor`, saturating instead of panicking on overflow.
pub(crate) fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(if factor > 0.0 {
        Duration::MAX
    } else {
        Duration::ZERO
    })
}

impl ModelBehaviour {
    /// Checks one behaviour table found at `at`.
    pub fn validate(&self, at: &KeyPath) -> Result<(), Invalid> {
        let rates = [
            ("error_rate", self.error_rate),
            ("overloaded_rate", self.overloaded_rate),
            ("rate_limit_rate", self.rate_limit_rate),
            ("hang_rate", self.hang_rate),
            ("slow_first_byte_rate", self.slow_first_byte_rate),
            ("slow_body_rate", self.slow_body_rate),
            ("invalid_key_rate", self.invalid_key_rate),
            ("invalid_json_rate", self.invalid_json_rate),
        ];
        for (key, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(Invalid::new(
                    at.key(key),
                    format!("{rate} is not a fraction"),
                    "give a value between 0 and 1, such as 0.01",
                ));
            }
        }
        let exclusive =
            self.error_rate + self.overloaded_rate + self.rate_limit_rate + self.hang_rate;
        if exclusive > 1.0 + 1e-9 {
            return Err(Invalid::new(
                at.key("error_rate"),
                format!(
                    "error_rate + overloaded_rate + rate_limit_rate + hang_rate is {exclusive}, more than every request"
                ),
                "lower the rates so that their sum is at most 1",
            ));
        }
        if !(self.tokens_per_second.is_finite() && self.tokens_per_second > 0.0) {
            return Err(Invalid::new(
                at.key("tokens_per_second"),
                format!(
                    "{} tokens per second would never finish an answer",
                    self.tokens_per_second
                ),
                "give a positive speed, such as 100",
            ));
        }
        if self.rpm == Some(0) {
            return Err(Invalid::new(
                at.key("rpm"),
                "an rpm of 0 refuses every request",
                "leave rpm out for no limit, or give a positive number",
            ));
        }
        if self.tpm == Some(0) {
            return Err(Invalid::new(
                at.key("tpm"),
                "a tpm of 0 refuses every request",
                "leave tpm out for no limit, or give a positive number",
            ));
        }
        for (i, outage) in self.outages.iter().enumerate() {
            let here = at.key("outages").index(i);
            if !(400..=599).contains(&outage.status) {
                return Err(Invalid::new(
                    here.key("status"),
                    format!("{} is not an error status", outage.status),
                    "use a 4xx or 5xx status, such as 503 or 529",
                ));
            }
            if outage.duration.is_zero() {
                return Err(Invalid::new(
                    here.key("duration"),
                    "the outage lasts no time",
                    "give a duration such as \"30s\"",
                ));
            }
        }
        Ok(())
    }

    /// The scheduled outage status in force `elapsed` (scaled time) after server start.
    pub fn scheduled_outage(&self, elapsed: Duration, time_scale: f64) -> Option<u16> {
        self.outages.iter().find_map(|o| {
            let start = scale(o.start, time_scale);
            let end = start.saturating_add(scale(o.duration, time_scale));
            (start <= elapsed && elapsed < end).then_some(o.status)
        })
    }
}

/// The text of the simulator config at `path`.
fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        origin: path.display().to_string(),
        line: None,
        key: "(file)".into(),
        problem: format!("cannot read the simulator config: {e}"),
        fix: "pass an existing file, for example pipelines/sim.toml".into(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn models_inherit_the_default_table() {
        let text = r#"
            time_scale = 0.5
            seed = 7
            [default]
            error_rate = 0.02
            ttft = "300ms"
            [models."gpt-4o-mini"]
            ttft = "450ms"
            rpm = 500
            [[models."gpt-4o-mini".outages]]
            start = "90s"
            duration = "1m"
        "#;
        let c = SimConfig::from_toml_str(text).unwrap();
        assert_eq!(c.seed, 7);
        let m = c.behaviour("gpt-4o-mini");
        assert_eq!(m.ttft, Duration::from_millis(450));
        assert_eq!(m.error_rate, 0.02, "inherited from [default]");
        assert_eq!(m.rpm, Some(500));
        assert_eq!(m.outages[0].status, 503);
        assert_eq!(c.behaviour("unknown").ttft, Duration::from_millis(300));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_located() {
        let err = SimConfig::from_toml_str("[default]\nerror_rat = 0.1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("error_rat") && err.contains(":2"), "{err}");
        let err = SimConfig::from_toml_str("[models.m]\nerror_rate = 0.7\nhang_rate = 0.5\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("models.m.error_rate") && err.contains("at most 1"),
            "{err}"
        );
        let err = SimConfig::from_toml_str("time_scale = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("time_scale"), "{err}");
        let err = SimConfig::from_toml_str("[default]\nttft = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ttft"), "{err}");
    }

    #[test]
    fn outages_follow_the_scaled_schedule() {
        let b = ModelBehaviour {
            outages: vec![Outage {
                start: Duration::from_secs(10),
                duration: Duration::from_secs(10),
                status: 529,
            }],
            ..ModelBehaviour::default()
        };
        assert_eq!(b.scheduled_outage(Duration::from_millis(400), 0.05), None);
        assert_eq!(
            b.scheduled_outage(Duration::from_millis(500), 0.05),
            Some(529)
        );
        assert_eq!(
            b.scheduled_outage(Duration::from_millis(999), 0.05),
            Some(529)
        );
        assert_eq!(b.scheduled_outage(Duration::from_millis(1000), 0.05), None);
    }

    #[test]
    fn settings_apply_over_the_file_as_if_written_there() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/sim.toml");
        let file = SimConfig::load(&path).unwrap();
        let settings = [
            Setting::parse_set("default.hang_rate=0.05").unwrap(),
            Setting::parse_set("gpt-5-nano.error_rate=0.3").unwrap(),
            Setting::parse_set("gpt-5-nano.ttft=2s").unwrap(),
            Setting::parse_set("brand-new.rpm=7").unwrap(),
            Setting::parse_outage("gpt-4.1=10s..20s").unwrap(),
            Setting::parse_outage("gpt-4.1=1m..2m:529").unwrap(),
        ];
        let c = SimConfig::load_with(&path, &settings).unwrap();
        let nano = c.behaviour("gpt-5-nano");
        assert_eq!((nano.error_rate, nano.ttft), (0.3, Duration::from_secs(2)));
        assert_eq!(
            nano.hang_rate, 0.05,
            "[default] reaches models without the key"
        );
        assert_eq!(
            nano.tokens_per_second,
            file.behaviour("gpt-5-nano").tokens_per_second,
            "the rest is the file's"
        );
        assert_eq!(c.behaviour("brand-new").rpm, Some(7));
        assert_eq!(
            c.behaviour("brand-new").error_rate,
            file.default.error_rate,
            "a new model inherits [default]"
        );
        let outages = &c.behaviour("gpt-4.1").outages;
        assert_eq!(outages.len(), 2);
        assert_eq!(
            (outages[1].start, outages[1].duration, outages[1].status),
            (Duration::from_secs(60), Duration::from_secs(60), 529)
        );
        // Combined with the file, rates may add up to too much: named, without a line.
        let err = SimConfig::load_with(
            &path,
            &[Setting::parse_set("default.error_rate=0.995").unwrap()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("at most 1") && err.contains("command-line settings"),
            "{err}"
        );
    }

    #[test]
    fn settings_apply_over_the_catalog_too() {
        let catalog = switchyard_loader::load_catalog(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/models.toml"),
        )
        .unwrap();
        let plain = SimConfig::from_catalog(&catalog);
        assert_eq!(
            plain.behaviour("gpt-5-nano").unsupported_params,
            vec![
                RequestParam::Temperature,
                RequestParam::TopP,
                RequestParam::Stop
            ],
            "the catalog's refused parameters are refused here too"
        );
        let c = SimConfig::from_catalog_with(
            &catalog,
            &[
                Setting::parse_set("default.error_rate=0.1").unwrap(),
                Setting::parse_set("claude-haiku-5-5.ttft=5s").unwrap(),
            ],
        )
        .unwrap();
        assert_eq!(c.behaviour("gpt-5-nano").error_rate, 0.1);
        assert_eq!(
            c.behaviour("gpt-5-nano").unsupported_params,
            plain.behaviour("gpt-5-nano").unsupported_params
        );
        assert_eq!(c.behaviour("gpt-4.1").ttft, plain.behaviour("gpt-4.1").ttft);
        assert_eq!(c.behaviour("claude-haiku-5-5").ttft, Duration::from_secs(5));
    }

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/sim.toml");
        let c = SimConfig::load(&path).unwrap();
        assert!(c.models.len() >= 20, "{} models", c.models.len());
        assert!(c.models.values().any(|m| !m.outages.is_empty()));
        // Models the catalog says refuse parameters refuse them here too.
        let catalog = switchyard_loader::load_catalog(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pipelines/models.toml"),
        )
        .unwrap();
        for m in catalog.models() {
            assert_eq!(
                c.behaviour(&m.api_model).unsupported_params,
                m.unsupported_params,
                "{}: unsupported_params differ between models.toml and sim.toml",
                m.api_model
            );
        }
    }
}
