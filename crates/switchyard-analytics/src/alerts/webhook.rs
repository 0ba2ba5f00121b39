//! POSTing alerts to `[alerts] webhook_url`: one JSON object per alert
//! (`kind`, `state`, `node`, `threshold`, `value`, `at`), a 2xx answer is
//! delivery, anything else (a connection error, a timeout, another status) is
//! logged loudly and retried with exponential backoff
//! (`switchyard_core::backoff::Backoff`) up to `webhook_retries` times, after
//! which the alert is logged in full and given up. Redirects are not followed.
//! A webhook URL often carries a token (Slack's and Teams' do), so logs show
//! only its scheme and host, and errors leave the URL out.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use switchyard_core::alert::{Alert, AlertKind, AlertState};
use switchyard_core::backoff::Backoff;
use switchyard_core::config::AlertsConfig;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::error::{Error, Result};
use crate::metrics::SinkMetrics;

/// What the webhook receives for one alert.
#[derive(Debug, Serialize)]
struct Notice<'a> {
    kind: AlertKind,
    state: AlertState,
    node: &'a str,
    threshold: f64,
    value: f64,
    at: DateTime<Utc>,
}

impl<'a> Notice<'a> {
    fn of(alert: &'a Alert) -> Self {
        Self {
            kind: alert.kind,
            state: alert.state,
            node: &alert.node,
            threshold: alert.threshold,
            value: alert.value,
            at: alert.at,
        }
    }
}

/// How delivering one alert ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The webhook answered 2xx.
    Delivered,
    /// Every retry failed; the alert was logged in full.
    GaveUp,
    /// The sink is stopping: not delivered, and read again at the next start.
    Stopped,
}

/// The webhook and how hard to try it.
#[derive(Debug, Clone)]
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    retries: u32,
    backoff: Backoff,
    metrics: Option<Arc<SinkMetrics>>,
}

impl Webhook {
    /// The webhook `config` names; `None` when it names none.
    pub fn new(config: &AlertsConfig, metrics: Option<Arc<SinkMetrics>>) -> Result<Option<Self>> {
        let Some(url) = config.webhook_url.clone() else {
            return Ok(None);
        };
        let client = reqwest::Client::builder()
            .timeout(config.webhook_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Invalid(format!("building the alert webhook's client: {e}")))?;
        Ok(Some(Self {
            client,
            url,
            retries: config.webhook_retries,
            backoff: Backoff::new(config.webhook_base_backoff, config.webhook_max_backoff),
            metrics,
        }))
    }

    /// The webhook as logs show it: scheme and host, never the path or query
    /// (where tokens live).
    pub fn shown(&self) -> String {
        shown(&self.url)
    }

    /// POSTs `alert` until the webhook takes it, every retry is spent, or
    /// `stop`.
    pub async fn deliver(&self, alert: &Alert, stop: &CancellationToken) -> Delivery {
        let body = match serde_json::to_vec(&Notice::of(alert)) {
            Ok(b) => b,
            Err(e) => {
                error!(alert = ?alert, error = %e, "Alert cannot be written as JSON; given up.");
                self.count(SinkMetrics::alert_given_up);
                return Delivery::GaveUp;
            }
        };
        let mut backoff = self.backoff;
        let attempts = self.retries.saturating_add(1);
        for attempt in 1..=attempts {
            let posted = tokio::select! {
                () = stop.cancelled() => return Delivery::Stopped,
                r = self.post(&body) => r,
            };
            let why = match posted {
                Ok(()) => {
                    self.count(SinkMetrics::alert_delivered);
                    info!(key = %alert.key(), state = %alert.state, webhook = %self.shown(), attempt, "Alert delivered.");
                    return Delivery::Delivered;
                }
                Err(why) => why,
            };
            self.count(SinkMetrics::alert_post_failed);
            if attempt == attempts {
                error!(alert = %String::from_utf8_lossy(&body), key = %alert.key(), webhook = %self.shown(), attempts, error = %why, "Alert NOT delivered: the webhook failed every retry; given up.");
                self.count(SinkMetrics::alert_given_up);
                return Delivery::GaveUp;
            }
            let pause = backoff.next_delay();
            error!(key = %alert.key(), state = %alert.state, webhook = %self.shown(), attempt, retry_in_ms = pause.as_millis() as u64, error = %why, "Alert webhook failed; retrying.");
            tokio::select! {
                () = stop.cancelled() => return Delivery::Stopped,
                () = tokio::time::sleep(pause) => {}
            }
        }
        Delivery::GaveUp
    }

    async fn post(&self, body: &[u8]) -> std::result::Result<(), String> {
        let answer = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered {status}"))
        }
    }

    fn count(&self, event: fn(&SinkMetrics)) {
        if let Some(m) = &self.metrics {
            event(m);
        }
    }
}

/// `scheme://host[:port]` of a URL.
fn shown(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return "(webhook)".to_owned();
    };
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    let host = &url[start..end];
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    format!("{}{host}", &url[..start])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_show_the_host_and_not_the_token() {
        assert_eq!(
            shown("https://hooks.slack.com/services/T000/B000/XXXX"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            shown("http://user:pw@127.0.0.1:9000?token=x"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(shown("not a url"), "(webhook)");
    }

    #[test]
    fn the_webhook_gets_the_six_documented_fields() {
        let a = Alert::firing(
            AlertKind::QuotaExhausted,
            "acme/retail",
            1.0,
            1.0,
            DateTime::parse_from_rfc3339("2026-11-25T10:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            "2026-11-25",
        );
        let v = serde_json::to_value(Notice::of(&a)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "kind": "quota_exhausted",
                "state": "firing",
                "node": "acme/retail",
                "threshold": 1.0,
                "value": 1.0,
                "at": "2026-11-25T10:00:00Z"
            })
        );
    }
}
