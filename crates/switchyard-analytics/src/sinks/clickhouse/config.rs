//! Settings of the ClickHouse store, validated before connecting, and the HTTP
//! client they describe. ClickHouse 18.16 answers only the plain `RowBinary`
//! format, so row validation (which needs `RowBinaryWithNamesAndTypes`) is off;
//! the schema tests cover what it would have checked.

use std::fmt;
use std::time::Duration;

use clickhouse::Client;
use switchyard_core::config::AnalyticsConfig;

use crate::error::{Error, Result};

/// Where and how to reach ClickHouse.
#[derive(Clone, PartialEq)]
pub struct ClickHouseConfig {
    /// HTTP URL, such as `http://127.0.0.1:8123`.
    pub url: String,
    /// Database (created if missing).
    pub database: String,
    /// User, when not the server's default.
    pub user: Option<String>,
    /// Password (never logged).
    pub password: Option<String>,
    /// Longest wait for one request.
    pub timeout: Duration,
    /// Longest pause between retries.
    pub max_backoff: Duration,
    /// Events held for ClickHouse before the sink stops consuming.
    pub max_pending_events: usize,
}

impl fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClickHouseConfig {
    /// A config for `url` and `database` with the default limits.
    pub fn new(url: &str, database: &str) -> Self {
        let d = AnalyticsConfig::default();
        Self {
            url: url.trim_end_matches('/').to_owned(),
            database: database.to_owned(),
            user: None,
            password: None,
            timeout: d.clickhouse_timeout,
            max_backoff: d.clickhouse_max_backoff,
            max_pending_events: d.clickhouse_max_pending_events,
        }
    }

    /// From the pipeline's analytics section; `None` when no URL is set.
    pub fn from_analytics(analytics: &AnalyticsConfig) -> Result<Option<Self>> {
        let Some(url) = analytics
            .clickhouse_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Ok(None);
        };
        let password = match &analytics.clickhouse_password_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                Error::Invalid(format!(
                    "analytics.clickhouse_password_env names `{var}`, which is not set; export it or remove the setting"
                ))
            })?),
            None => None,
        };
        let config = Self {
            user: analytics.clickhouse_user.clone(),
            password,
            timeout: analytics.clickhouse_timeout,
            max_backoff: analytics.clickhouse_max_backoff,
            max_pending_events: analytics.clickhouse_max_pending_events,
            ..Self::new(url, &analytics.clickhouse_database)
        };
        config.validate()?;
        Ok(Some(config))
    }

    /// Checks the settings; no I/O.
    pub fn validate(&self) -> Result<()> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(Error::Invalid(format!(
                "ClickHouse URL `{}` is not an HTTP URL; write it as http://host:8123",
                self.url
            )));
        }
        if self.database.is_empty()
            || !self
                .database
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(Error::Invalid(format!(
                "ClickHouse database `{}` must be letters, digits and underscores",
                self.database
            )));
        }
        if self.timeout.is_zero() || self.max_pending_events == 0 {
            return Err(Error::Invalid(
                "analytics.clickhouse_timeout and clickhouse_max_pending_events must be positive"
                    .into(),
            ));
        }
        Ok(())
    }

    /// A client for the server, without a database (to create it).
    pub fn server_client(&self) -> Client {
        let mut c = Client::default()
            .with_url(&self.url)
            .with_validation(false)
            .with_compression(clickhouse::Compression::None);
        if let Some(u) = &self.user {
            c = c.with_user(u);
        }
        if let Some(p) = &self.password {
            c = c.with_password(p);
        }
        c
    }

    /// A client for the database.
    pub fn client(&self) -> Client {
        self.server_client().with_database(&self.database)
    }
}
