//! Deployments at run time: a catalog model reachable through one provider client,
//! with its rate limiter. Built from the pipeline config; keys are read here.

use std::sync::Arc;

use switchyard_core::catalog::Catalog;
use switchyard_core::config::PipelineConfig;

use crate::batch::BatchApi;
use crate::http::HttpProvider;
use crate::limits::DeploymentLimiter;
use crate::secret::ApiKey;
use crate::{Provider, wire};

/// Why a deployment could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("deployment `{deployment}`: {problem}; fix: {fix}")]
pub struct BuildError {
    /// Deployment name.
    pub deployment: String,
    /// What is wrong.
    pub problem: String,
    /// What to do.
    pub fix: String,
}

/// A callable deployment.
pub struct Deployment {
    /// Name from the config.
    pub name: String,
    /// Catalog model name.
    pub model: String,
    /// Provider name.
    pub provider: String,
    /// Model id sent to the API.
    pub api_model: String,
    /// The client.
    pub client: Arc<dyn Provider>,
    /// Its provider's batch API, where Switchyard speaks it (OpenAI,
    /// Anthropic): what deferred jobs go through.
    pub batch: Option<Arc<dyn BatchApi>>,
    /// Its limits.
    pub limiter: DeploymentLimiter,
}

impl std::fmt::Debug for Deployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("name", &self.name)
            .field("model", &self.model)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

/// The public endpoint of a provider, used when a deployment gives no `base_url`.
/// Self-hosted servers (vLLM, Ollama) have none: their deployments must give one.
pub fn default_base_url(provider: &str) -> Option<&'static str> {
    Some(match provider {
        "openai" => "https://api.openai.com/v1",
        "anthropic" => "https://api.anthropic.com/v1",
        "gemini" => "https://generativelanguage.googleapis.com/v1beta",
        "deepseek" => "https://api.deepseek.com/v1",
        "mistral" => "https://api.mistral.ai/v1",
        "groq" => "https://api.groq.com/openai/v1",
        "together" => "https://api.together.xyz/v1",
        "fireworks" => "https://api.fireworks.ai/inference/v1",
        "xai" => "https://api.x.ai/v1",
        "openrouter" => "https://openrouter.ai/api/v1",
        _ => return None,
    })
}

/// Whether a key may be sent to `url`: https, or plain http to this machine.
fn secure_or_local(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    match u.scheme() {
        "https" => true,
        "http" => u.host_str().is_some_and(|h| {
            h.eq_ignore_ascii_case("localhost")
                || h.trim_matches(['[', ']'])
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }),
        _ => false,
    }
}

/// Adjustments for embedded runs (`demo`, `dev`, tests): point the config's
/// simulator URLs at the port actually bound, and use one key for all.
#[derive(Debug, Default, Clone)]
pub struct BuildOptions {
    /// Replace this base-URL prefix…
    pub rewrite_from: Option<String>,
    /// …by this one.
    pub rewrite_to: Option<String>,
    /// Use this key instead of reading each deployment's variable or file.
    pub key_override: Option<ApiKey>,
}

/// Builds every deployment of a validated config.
pub fn build_deployments(
    config: &PipelineConfig,
    catalog: &Catalog,
) -> Result<Vec<Deployment>, BuildError> {
    build_deployments_with(config, catalog, &BuildOptions::default())
}

/// As [`build_deployments`], with adjustments.
pub fn build_deployments_with(
    config: &PipelineConfig,
    catalog: &Catalog,
    options: &BuildOptions,
) -> Result<Vec<Deployment>, BuildError> {
    config
        .deployments
        .iter()
        .map(|d| {
            let err = |problem: String, fix: &str| BuildError {
                deployment: d.name.clone(),
                problem,
                fix: fix.to_owned(),
            };
            let spec = catalog.get(&d.model).ok_or_else(|| {
                err(
                    format!("model `{}` is not in the catalog", d.model),
                    "name a catalog model",
                )
            })?;
            let key = match (&d.api_key_env, &d.api_key_file) {
                _ if options.key_override.is_some() => options.key_override.clone(),
                (Some(var), _) => Some(ApiKey::from_env(var).map_err(|p| {
                    err(
                        p,
                        "export the variable, or point api_key_file at a file holding the key",
                    )
                })?),
                (None, Some(path)) => Some(
                    ApiKey::from_file(path)
                        .map_err(|p| err(p, "mount the key file, or use api_key_env"))?,
                ),
                (None, None) => None,
            };
            let base_url = match d
                .base_url
                .as_deref()
                .or_else(|| default_base_url(&spec.provider))
            {
                Some(u) => u,
                None => {
                    return Err(err(
                        format!("provider `{}` has no public endpoint", spec.provider),
                        "set base_url to your server, e.g. http://localhost:8000/v1",
                    ));
                }
            };
            let base_url = match (&options.rewrite_from, &options.rewrite_to) {
                (Some(from), Some(to)) if base_url.starts_with(from.as_str()) => {
                    format!("{to}{}", &base_url[from.len()..])
                }
                _ => base_url.to_owned(),
            };
            if key.is_some() && !d.allow_insecure && !secure_or_local(&base_url) {
                return Err(err(
                    format!(
                        "base_url `{base_url}` is plain http to another machine, which would send the API key in clear"
                    ),
                    "use https://, or set allow_insecure = true on the deployment if the network path is trusted",
                ));
            }
            let client = Arc::new(
                HttpProvider::new(wire::for_api(spec.api), Some(&base_url), key, d.timeouts)
                    .map_err(|p| err(p, "check base_url and the key's characters"))?
                    .with_unsupported_params(&spec.unsupported_params),
            );
            let batch = crate::batch::for_api(spec.api, client.clone());
            Ok(Deployment {
                name: d.name.clone(),
                model: spec.name.clone(),
                provider: spec.provider.clone(),
                api_model: d
                    .api_model
                    .clone()
                    .unwrap_or_else(|| spec.api_model.clone()),
                client,
                batch,
                limiter: DeploymentLimiter::with_window(d.rpm, d.tpm, d.share, d.limit_window)
                    .with_max_pause(config.routing.retry.max_retry_after),
            })
        })
        .collect()
}
