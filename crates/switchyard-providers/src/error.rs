//! Provider errors, classified so that the retry loop and failover read
//! [`ProviderError::is_retryable`] and [`ProviderError::retry_after`], never strings.

use std::time::Duration;

use switchyard_core::result::{AttemptOutcome, TokenUsage};

/// Which timeout fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// TCP/TLS connect.
    Connect,
    /// Waiting for response headers.
    FirstByte,
    /// Whole call, body included.
    Total,
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutPhase::Connect => "connect",
            TimeoutPhase::FirstByte => "first byte",
            TimeoutPhase::Total => "total",
        })
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 429: slow down; retry after the given time if any.
    #[error("rate limited (HTTP {status}): {message}")]
    RateLimited {
        /// HTTP status.
        status: u16,
        /// Provider's message.
        message: String,
        /// From Retry-After or the error body.
        retry_after: Option<Duration>,
    },
    /// 429 that only a person can fix (quota or billing exhausted).
    #[error("quota exhausted (HTTP {status}): {message}")]
    QuotaExhausted {
        /// HTTP status.
        status: u16,
        /// Provider's message.
        message: String,
    },
    /// 5xx, 529 overloaded: the provider's trouble, worth retrying.
    #[error("provider error (HTTP {status}): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// Provider's message.
        message: String,
        /// From Retry-After, if given.
        retry_after: Option<Duration>,
    },
    /// A timeout fired.
    #[error("{phase} timeout after {after:?}")]
    Timeout {
        /// Which one.
        phase: TimeoutPhase,
        /// The configured limit.
        after: Duration,
    },
    /// Connection refused or reset, DNS failure.
    #[error("connection failed: {0}")]
    Connection(String),
    /// 404, 413, 422: this deployment cannot serve the request (its model was
    /// renamed or retired, its size limit is lower, it refuses a parameter).
    /// Another deployment may: the job fails over, and the deployment's health
    /// counts it.
    #[error("deployment cannot serve the request (HTTP {status}): {message}")]
    Unservable {
        /// HTTP status.
        status: u16,
        /// Provider's message.
        message: String,
    },
    /// 400 and other 4xx: the request is wrong; retrying it will not help.
    #[error("invalid request (HTTP {status}): {message}")]
    InvalidRequest {
        /// HTTP status.
        status: u16,
        /// Provider's message.
        message: String,
    },
    /// 401/403: the key or its permissions.
    #[error("authentication failed (HTTP {status}): {message}")]
    Auth {
        /// HTTP status.
        status: u16,
        /// Provider's message.
        message: String,
    },
    /// The model refused (content filter, safety block). Tokens may have been billed.
    #[error("refused by the provider's content policy: {message}")]
    Refused {
        /// Provider's message or finish reason.
        message: String,
        /// What the refusal billed.
        usage: TokenUsage,
    },
    /// A 2xx whose body could not be read.
    #[error("unreadable response: {0}")]
    Decode(String),
}

impl ProviderError {
    /// The same error with `f` applied to the provider's text it carries (every
    /// variant but a timeout carries some).
    pub fn map_message(self, f: impl FnOnce(&str) -> String) -> Self {
        use ProviderError as E;
        match self {
            E::RateLimited {
                status,
                message,
                retry_after,
            } => E::RateLimited {
                status,
                message: f(&message),
                retry_after,
            },
            E::QuotaExhausted { status, message } => E::QuotaExhausted {
                status,
                message: f(&message),
            },
            E::Server {
                status,
                message,
                retry_after,
            } => E::Server {
                status,
                message: f(&message),
                retry_after,
            },
            E::InvalidRequest { status, message } => E::InvalidRequest {
                status,
                message: f(&message),
            },
            E::Unservable { status, message } => E::Unservable {
                status,
                message: f(&message),
            },
            E::Auth { status, message } => E::Auth {
                status,
                message: f(&message),
            },
            E::Refused { message, usage } => E::Refused {
                message: f(&message),
                usage,
            },
            E::Decode(m) => E::Decode(f(&m)),
            E::Connection(m) => E::Connection(f(&m)),
            t @ E::Timeout { .. } => t,
        }
    }

    /// Whether the same request may succeed if tried again on the same deployment.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Server { .. }
                | ProviderError::Timeout { .. }
                | ProviderError::Connection(_)
                | ProviderError::Decode(_)
        )
    }

    /// Whether another deployment (another key or provider) may succeed where this failed.
    /// An invalid request or a refusal is about the job itself, so the job fails fast.
    pub fn allows_failover(&self) -> bool {
        !matches!(
            self,
            ProviderError::InvalidRequest { .. } | ProviderError::Refused { .. }
        )
    }

    /// The wait the provider asked for.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. }
            | ProviderError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// HTTP status, when a response arrived.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProviderError::RateLimited { status, .. }
            | ProviderError::QuotaExhausted { status, .. }
            | ProviderError::Server { status, .. }
            | ProviderError::InvalidRequest { status, .. }
            | ProviderError::Unservable { status, .. }
            | ProviderError::Auth { status, .. } => Some(*status),
            ProviderError::Decode(_) | ProviderError::Refused { .. } => Some(200),
            ProviderError::Timeout { .. } | ProviderError::Connection(_) => None,
        }
    }

    /// Whether the provider gave a readable answer, and with it what it counted:
    /// after a timeout, a lost connection or an unreadable answer it may have
    /// counted the call.
    pub fn billing_known(&self) -> bool {
        !matches!(
            self,
            ProviderError::Timeout { .. } | ProviderError::Connection(_) | ProviderError::Decode(_)
        )
    }

    /// Tokens billed despite the failure.
    pub fn billed(&self) -> TokenUsage {
        match self {
            ProviderError::Refused { usage, .. } => *usage,
            _ => TokenUsage::default(),
        }
    }

    /// The outcome recorded in results.
    pub fn outcome(&self) -> AttemptOutcome {
        match self {
            ProviderError::RateLimited { .. } | ProviderError::QuotaExhausted { .. } => {
                AttemptOutcome::RateLimited
            }
            ProviderError::Server { .. }
            | ProviderError::Connection(_)
            | ProviderError::Decode(_) => AttemptOutcome::ProviderError,
            ProviderError::Timeout { .. } => AttemptOutcome::Timeout,
            ProviderError::InvalidRequest { .. }
            | ProviderError::Unservable { .. }
            | ProviderError::Auth { .. }
            | ProviderError::Refused { .. } => AttemptOutcome::Rejected,
        }
    }

    /// The stable code a failed job's result carries when this was its last error.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::QuotaExhausted { .. } => "quota_exhausted",
            ProviderError::Server { .. } => "provider_error",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Connection(_) => "connection_failed",
            ProviderError::InvalidRequest { .. } => "invalid_request",
            ProviderError::Unservable { .. } => "deployment_cannot_serve",
            ProviderError::Auth { .. } => "authentication_failed",
            ProviderError::Refused { .. } => "refused",
            ProviderError::Decode(_) => "unreadable_response",
        }
    }

    /// Whether the failure says the deployment is unhealthy (feeds the circuit breaker).
    pub fn counts_against_health(&self) -> bool {
        matches!(
            self,
            ProviderError::Server { .. }
                | ProviderError::Unservable { .. }
                | ProviderError::Timeout { .. }
                | ProviderError::Connection(_)
                | ProviderError::Decode(_)
        )
    }

    /// Classifies an HTTP error status with the provider's message.
    pub fn from_status(status: u16, message: String, retry_after: Option<Duration>) -> Self {
        match status {
            429 => ProviderError::RateLimited {
                status,
                message,
                retry_after,
            },
            401 | 403 => ProviderError::Auth { status, message },
            404 | 413 | 422 => ProviderError::Unservable { status, message },
            408 => ProviderError::Server {
                status,
                message,
                retry_after,
            },
            400..=499 => ProviderError::InvalidRequest { status, message },
            _ => ProviderError::Server {
                status,
                message,
                retry_after,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_documented_classes() {
        let c = |s| ProviderError::from_status(s, "m".into(), None);
        assert!(c(429).is_retryable());
        assert!(c(500).is_retryable());
        assert!(c(503).is_retryable());
        assert!(c(529).is_retryable(), "Anthropic's overloaded");
        assert!(c(408).is_retryable());
        assert!(!c(400).is_retryable());
        assert!(!c(400).allows_failover());
        assert!(!c(401).is_retryable());
        assert!(c(401).allows_failover(), "another key may work");
        assert!(!c(403).is_retryable());
        assert!(!c(429).counts_against_health());
        assert!(c(503).counts_against_health());
        for s in [404, 413, 422] {
            assert!(
                c(s).allows_failover(),
                "{s}: another deployment may serve it"
            );
            assert!(c(s).counts_against_health(), "{s}");
            assert!(!c(s).is_retryable(), "{s}");
        }
    }
}
