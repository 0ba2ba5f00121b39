//! The `[alerts]` section: the thresholds workers watch (each crossing is
//! published to `kafka.topics.alerts`), and how the usage sink delivers those
//! alerts to a webhook.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::source::{Invalid, KeyPath};

/// Delivery of alerts (`kafka.topics.alerts`) by the usage sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Where the sink POSTs each alert transition, one JSON object (`kind`,
    /// `state`, `node`, `threshold`, `value`, `at`) per crossing and state;
    /// unset, the sink does not read the alerts topic.
    pub webhook_url: Option<String>,
    /// Longest wait for the webhook to answer one POST.
    #[serde(with = "humantime_serde")]
    pub webhook_timeout: Duration,
    /// Retries of one alert after a failed POST (a connection error, a
    /// timeout or a status other than 2xx) before it is given up, logged with
    /// the whole alert and counted.
    pub webhook_retries: u32,
    /// Pause after the first failed POST; doubles with each retry.
    #[serde(with = "humantime_serde")]
    pub webhook_base_backoff: Duration,
    /// Longest pause between two POSTs of one alert.
    #[serde(with = "humantime_serde")]
    pub webhook_max_backoff: Duration,
    /// Fractions of a node's monthly budget whose crossing by its settled
    /// spend raises `budget_threshold`.
    pub budget_thresholds: Vec<f64>,
    /// The share of jobs (0..1) that ended failed over five minutes that
    /// raises `error_rate`; it resolves below 80% of it.
    pub error_rate: f64,
    /// Jobs that must have ended within the five minutes before the error
    /// rate is watched.
    pub error_rate_min_jobs: u64,
    /// A deployment's smoothed latency that raises `latency`; it resolves
    /// below 80% of it.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Dead letters within a minute (per worker) that raise `dead_letters`;
    /// it resolves after a minute with fewer.
    pub dead_letters_per_minute: u64,
    /// Messages of the jobs topic the workers' group has not committed that
    /// raise `consumer_lag`; it resolves below 80% of it.
    pub consumer_lag: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_timeout: Duration::from_secs(10),
            webhook_retries: 8,
            webhook_base_backoff: Duration::from_secs(1),
            webhook_max_backoff: Duration::from_secs(60),
            budget_thresholds: vec![0.5, 0.8, 1.0],
            error_rate: 0.05,
            error_rate_min_jobs: 20,
            latency: Duration::from_secs(30),
            dead_letters_per_minute: 1,
            consumer_lag: 10_000,
        }
    }
}

impl AlertsConfig {
    /// The webhook's URL and limits, `at` the section's place in the file.
    pub(super) fn validate(&self, at: &KeyPath) -> Result<(), Invalid> {
        if let Some(url) = &self.webhook_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Invalid::new(
                at.key("webhook_url"),
                "the webhook is not an http(s) URL",
                "write it as https://host/path",
            ));
        }
        if self.webhook_timeout.is_zero() || self.webhook_base_backoff.is_zero() {
            return Err(Invalid::new(
                at.key(if self.webhook_timeout.is_zero() {
                    "webhook_timeout"
                } else {
                    "webhook_base_backoff"
                }),
                "a zero duration",
                "use a positive duration, such as \"10s\"",
            ));
        }
        if let Some(bad) = self
            .budget_thresholds
            .iter()
            .find(|t| !(t.is_finite() && **t > 0.0 && **t <= 10.0))
        {
            return Err(Invalid::new(
                at.key("budget_thresholds"),
                format!("{bad} is not a fraction of the budget"),
                "write fractions such as [0.5, 0.8, 1.0]",
            ));
        }
        if !(self.error_rate > 0.0 && self.error_rate <= 1.0) {
            return Err(Invalid::new(
                at.key("error_rate"),
                format!("{} is not a rate between 0 and 1", self.error_rate),
                "write a fraction such as 0.5",
            ));
        }
        let zero = [
            ("latency", self.latency.is_zero()),
            ("dead_letters_per_minute", self.dead_letters_per_minute == 0),
            ("consumer_lag", self.consumer_lag == 0),
        ]
        .into_iter()
        .find_map(|(key, zero)| zero.then_some(key));
        if let Some(key) = zero {
            return Err(Invalid::new(
                at.key(key),
                "a zero threshold would fire at once",
                "use a positive value",
            ));
        }
        if self.webhook_max_backoff < self.webhook_base_backoff {
            return Err(Invalid::new(
                at.key("webhook_max_backoff"),
                "the longest pause is shorter than the first",
                "make webhook_max_backoff at least webhook_base_backoff",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_must_be_http_with_positive_limits() {
        let at = KeyPath::root().key("alerts");
        assert!(AlertsConfig::default().validate(&at).is_ok());
        let with = |c: AlertsConfig| c.validate(&at).map_err(|e| format!("{e:?}"));
        let ok = AlertsConfig {
            webhook_url: Some("https://hooks.example/switchyard".into()),
            ..AlertsConfig::default()
        };
        assert!(with(ok.clone()).is_ok());
        assert!(
            with(AlertsConfig {
                webhook_url: Some("hooks.example".into()),
                ..ok.clone()
            })
            .unwrap_err()
            .contains("webhook_url")
        );
        assert!(
            with(AlertsConfig {
                webhook_timeout: Duration::ZERO,
                ..ok.clone()
            })
            .unwrap_err()
            .contains("webhook_timeout")
        );
        assert!(
            with(AlertsConfig {
                webhook_max_backoff: Duration::from_millis(10),
                ..ok
            })
            .unwrap_err()
            .contains("webhook_max_backoff")
        );
    }
}
