//! A provider with no network: the same deterministic usage and replies as the
//! HTTP simulator, after an optional fixed latency. The throughput benchmark uses
//! it to measure the worker's own overhead, and the demo can run without ports.

use std::time::Duration;

use switchyard_providers::{
    BoxFuture, CallRequest, Completion, Provider, ProviderError, RateLimitInfo,
};

use crate::synthesis::reply_for_request;

/// Answers every call at once (or after `latency`) with [`crate::reply_for_request`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InProcessProvider {
    latency: Duration,
}

impl InProcessProvider {
    /// A provider that answers immediately.
    pub fn new() -> Self {
        Self::default()
    }

    /// A provider that waits `latency` (on the tokio clock) before each answer.
    pub fn with_latency(latency: Duration) -> Self {
        Self { latency }
    }

    /// The fixed latency.
    pub fn latency(&self) -> Duration {
        self.latency
    }
}

impl Provider for InProcessProvider {
    fn kind(&self) -> &'static str {
        "in-process"
    }

    fn complete<'a>(
        &'a self,
        call: CallRequest<'a>,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(async move {
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            let reply = reply_for_request(call.request);
            Ok(Completion {
                content: reply.content,
                finish_reason: reply.finish.as_str().to_owned(),
                usage: reply.usage,
                status: 200,
                rate_limit: RateLimitInfo::default(),
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use switchyard_core::job::{ChatMessage, ChatRequest, ResponseFormat, Role};

    fn request() -> ChatRequest {
        ChatRequest {
            messages: vec![ChatMessage {
                role: Role::User,
                content: "Name three primary colors.".into(),
            }],
            system: Some("You are a concise assistant.".into()),
            max_tokens: Some(64),
            temperature: None,
            stop: vec![],
            response_format: ResponseFormat::Text,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_after_the_fixed_latency_with_deterministic_usage() {
        let provider = InProcessProvider::with_latency(Duration::from_secs(5));
        let request = request();
        let started = tokio::time::Instant::now();
        let done = provider
            .complete(CallRequest {
                request: &request,
                api_model: "any",
                default_max_tokens: None,
            })
            .await
            .unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(provider.kind(), "in-process");
        assert_eq!(done.usage, crate::usage_for_request(&request));
        assert_eq!(done.status, 200);
        let again = InProcessProvider::new()
            .complete(CallRequest {
                request: &request,
                api_model: "other",
                default_max_tokens: None,
            })
            .await
            .unwrap();
        assert_eq!(again, done, "model and latency do not change the answer");
    }
}
