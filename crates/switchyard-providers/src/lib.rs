//! Calling LLM providers: one [`Provider`] trait (and, for deferred routing,
//! one [`batch::BatchApi`] trait for the providers' batch APIs), HTTP adapters for the OpenAI
//! Chat Completions, Anthropic Messages and Google Gemini generateContent wire
//! formats (and any OpenAI-compatible endpoint), error classification that drives
//! retries, per-deployment rate limits (RPM with governor, TPM with a sliding-window
//! ledger) that learn from the provider's headers, and the retry loop with
//! exponential backoff and full jitter.
//!
//! Each wire format's JSON types stay in its own module under [`wire`], apart from
//! the domain types; the adapters' request and response mappings are pure
//! functions, tested against the providers' documented examples.

pub mod batch;
mod deployment;
mod error;
mod http;
mod limits;
mod retry;
mod secret;
pub mod wire;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use switchyard_core::job::ChatRequest;
use switchyard_core::result::TokenUsage;

pub use deployment::{
    BuildError, BuildOptions, Deployment, build_deployments, build_deployments_with,
    default_base_url,
};
pub use error::{ProviderError, TimeoutPhase};
pub use http::HttpProvider;
pub use limits::{DeploymentLimiter, LimitWait, Reservation};
pub use retry::RetryPolicy;
pub use secret::{ApiKey, redact};

/// One call to make: the request and the provider's model id.
#[derive(Debug, Clone, Copy)]
pub struct CallRequest<'a> {
    /// The provider-neutral request.
    pub request: &'a ChatRequest,
    /// Model id as the API knows it.
    pub api_model: &'a str,
    /// The answer cap for this call when the request has none: the node's
    /// `default_max_tokens`, capped by the model's output limit.
    pub default_max_tokens: Option<u32>,
}

impl CallRequest<'_> {
    /// The answer cap sent: the request's own, else this call's default.
    pub fn max_tokens(&self) -> Option<u32> {
        self.request.max_tokens.or(self.default_max_tokens)
    }
}

/// What the provider said about its remaining capacity.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimitInfo {
    /// Requests left in the current window.
    pub remaining_requests: Option<u64>,
    /// Tokens left in the current window.
    pub remaining_tokens: Option<u64>,
    /// When the request window resets.
    pub reset_requests: Option<Duration>,
    /// When the token window resets.
    pub reset_tokens: Option<Duration>,
}

impl RateLimitInfo {
    /// How long until capacity returns, when a limit is at zero: the reset of the
    /// exhausted limit (the later one when both are).
    pub fn exhausted_for(&self) -> Option<Duration> {
        let requests = self
            .reset_requests
            .filter(|_| self.remaining_requests == Some(0));
        let tokens = self
            .reset_tokens
            .filter(|_| self.remaining_tokens == Some(0));
        requests.max(tokens)
    }

    /// The wait a 429 without Retry-After implies: the reset of the exhausted
    /// limit, or, when the headers do not say which limit tripped, the sooner reset.
    pub fn retry_hint(&self) -> Option<Duration> {
        self.exhausted_for()
            .or_else(|| match (self.reset_requests, self.reset_tokens) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            })
    }
}

/// A successful call.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Generated text.
    pub content: String,
    /// Normalised finish reason (`stop`, `length`, `content_filter`, …).
    pub finish_reason: String,
    /// Tokens billed.
    pub usage: TokenUsage,
    /// HTTP status (200 for in-process providers).
    pub status: u16,
    /// Capacity hints from the response headers.
    pub rate_limit: RateLimitInfo,
}

/// A boxed future, so providers can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that completes chat requests: an HTTP adapter or an in-process simulator.
pub trait Provider: Send + Sync {
    /// Wire-format name, for logs.
    fn kind(&self) -> &'static str;

    /// Makes one call (no retries: those are the caller's).
    fn complete<'a>(
        &'a self,
        call: CallRequest<'a>,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>>;
}
