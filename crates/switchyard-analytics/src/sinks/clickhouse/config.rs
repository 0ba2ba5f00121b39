//! Settings of the ClickHouse store, validated before connecting, and the HTTP
//! client they describe. ClickHouse 18.16 answers only the plain `RowBinary`
//! format, so row validation (which needs `RowBinaryWithNamesAndTypes`) is off;
//! the schema tests cover what it would have checked.
//!
//! Credentials never leave through the URL: a user and password written in it
//! (`http://user:pass@host:8123`) are taken out into the user and password
//! the client sends as headers, and whatever shows the URL (logs, errors,
//! reports) shows [`ClickHouseConfig::display_url`], with any `password=`
//! query parameter masked too.

use std::fmt;
use std::time::Duration;

use clickhouse::Client;
use switchyard_core::config::AnalyticsConfig;

use crate::error::{Error, Result};

/// Where and how to reach ClickHouse.
#[derive(Clone, PartialEq)]
pub struct ClickHouseConfig {
    /// HTTP URL, such as `http://127.0.0.1:8123` (without user info: see
    /// [`ClickHouseConfig::new`]).
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
            .field("url", &self.display_url())
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClickHouseConfig {
    /// A config for `url` and `database` with the default limits. A user and
    /// password written in the URL become the config's user and password (the
    /// client sends them as headers) and leave the URL.
    pub fn new(url: &str, database: &str) -> Self {
        let d = AnalyticsConfig::default();
        let (url, user, password) = split_user_info(url.trim());
        Self {
            url: url.trim_end_matches('/').to_owned(),
            database: database.to_owned(),
            user,
            password,
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
        let from_url = Self::new(url, &analytics.clickhouse_database);
        let config = Self {
            user: analytics.clickhouse_user.clone().or(from_url.user.clone()),
            password: password.or(from_url.password.clone()),
            timeout: analytics.clickhouse_timeout,
            max_backoff: analytics.clickhouse_max_backoff,
            max_pending_events: analytics.clickhouse_max_pending_events,
            ..from_url
        };
        config.validate()?;
        Ok(Some(config))
    }

    /// Checks the settings; no I/O.
    pub fn validate(&self) -> Result<()> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(Error::Invalid(format!(
                "ClickHouse URL `{}` is not an HTTP URL; write it as http://host:8123",
                self.display_url()
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

    /// The URL as logs, errors and reports show it: user info and any
    /// `password=` query parameter masked.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
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

/// What was masked in place of a secret.
const MASK: &str = "***";

/// `url` with its user info (`user:pass@`) and the value of any `password`
/// query parameter replaced by `***`: what may be logged, printed or put in a
/// report.
pub fn redact_url(url: &str) -> String {
    let (rest, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let (base, query) = match rest.find('?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut out = match authority(base) {
        Some((start, end)) => match base[start..end].rfind('@') {
            Some(at) => format!("{}{MASK}{}", &base[..start], &base[start + at..]),
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => {
                    format!("{name}={MASK}")
                }
                _ => param.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out.push_str(fragment);
    out
}

/// Where the authority (`user:pass@host:port`) of a URL without query lies.
fn authority(base: &str) -> Option<(usize, usize)> {
    let start = base.find("://")? + 3;
    let end = base[start..].find('/').map_or(base.len(), |i| start + i);
    Some((start, end))
}

/// Takes the user info out of `url`: the URL without it, and the user and
/// password it named (percent-decoded).
fn split_user_info(url: &str) -> (String, Option<String>, Option<String>) {
    let base_end = url.find(['?', '#']).unwrap_or(url.len());
    let Some((start, end)) = authority(&url[..base_end]) else {
        return (url.to_owned(), None, None);
    };
    let Some(at) = url[start..end].rfind('@') else {
        return (url.to_owned(), None, None);
    };
    let info = &url[start..start + at];
    let (user, password) = match info.split_once(':') {
        Some((u, p)) => (percent_decode(u), Some(percent_decode(p))),
        None => (percent_decode(info), None),
    };
    let stripped = format!("{}{}", &url[..start], &url[start + at + 1..]);
    (stripped, Some(user).filter(|u| !u.is_empty()), password)
}

/// `%XX` escapes decoded (anything malformed is kept as written).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_a_url_are_masked() {
        for (url, shown) in [
            ("http://127.0.0.1:8123", "http://127.0.0.1:8123"),
            ("http://user:s3cret@ch:8123", "http://***@ch:8123"),
            ("https://user@ch:8443/", "https://***@ch:8443/"),
            (
                "http://u:p%40ss@ch:8123/?database=x",
                "http://***@ch:8123/?database=x",
            ),
            (
                "http://ch:8123/?user=u&password=s3cret&x=1",
                "http://ch:8123/?user=u&password=***&x=1",
            ),
            (
                "http://ch:8123?PASSWORD=s3cret#frag",
                "http://ch:8123?PASSWORD=***#frag",
            ),
            (
                "http://ch:8123/path@not-user-info",
                "http://ch:8123/path@not-user-info",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("s3cret"));
        }
    }

    #[test]
    fn credentials_in_the_url_become_the_clients_and_leave_the_url() {
        let c = ClickHouseConfig::new("http://analyst:p%40ss%3Aword@ch:8123/", "db");
        assert_eq!(c.url, "http://ch:8123");
        assert_eq!(c.user.as_deref(), Some("analyst"));
        assert_eq!(c.password.as_deref(), Some("p@ss:word"));
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("p@ss") && !debug.contains("p%40ss"),
            "{debug}"
        );
        let plain = ClickHouseConfig::new("http://ch:8123/?password=s3cret", "db");
        assert_eq!((&plain.user, &plain.password), (&None, &None));
        assert_eq!(plain.display_url(), "http://ch:8123/?password=***");
        assert!(!format!("{plain:?}").contains("s3cret"));
        let bad = ClickHouseConfig::new("ftp://u:s3cret@ch", "db");
        let err = bad.validate().unwrap_err().to_string();
        assert!(!err.contains("s3cret"), "{err}");
        // The pipeline's own user and password win over the URL's.
        let analytics = AnalyticsConfig {
            clickhouse_url: Some("http://analyst:s3cret@ch:8123".into()),
            clickhouse_user: Some("sink".into()),
            ..AnalyticsConfig::default()
        };
        let c = ClickHouseConfig::from_analytics(&analytics)
            .unwrap()
            .unwrap();
        assert_eq!(
            (c.url.as_str(), c.user.as_deref(), c.password.as_deref()),
            ("http://ch:8123", Some("sink"), Some("s3cret"))
        );
    }
}
