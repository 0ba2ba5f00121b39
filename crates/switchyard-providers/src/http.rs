//! The HTTP provider: one wire format, one endpoint, one key, one connection pool,
//! and the three timeouts (connect, first byte, total). Request parameters the
//! model refuses (the catalog's `unsupported_params`) are left out of the body;
//! stop sequences left out are applied to the answer here, as the API would have.

use std::sync::OnceLock;
use std::time::Instant;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use switchyard_core::catalog::RequestParam;
use switchyard_core::config::Timeouts;
use switchyard_core::job::ChatRequest;
use switchyard_core::result::TokenUsage;

use crate::secret::{ApiKey, redact};
use crate::wire::{MESSAGE_MAX, WireFormat, clip_to, cut_at_stop};
use crate::{BoxFuture, CallRequest, Completion, Provider, ProviderError, TimeoutPhase};

/// A provider reached over HTTP.
pub struct HttpProvider {
    format: Box<dyn WireFormat>,
    client: reqwest::Client,
    base_url: String,
    headers: HeaderMap,
    key: Option<ApiKey>,
    timeouts: Timeouts,
    unsupported: Vec<RequestParam>,
    /// The endpoint of the first model called, parsed once: a deployment
    /// calls one model, and parsing the URL per call cost about 1% of the
    /// worker's CPU.
    endpoint: OnceLock<(String, reqwest::Url)>,
}

impl std::fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProvider")
            .field("format", &self.format.name())
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl HttpProvider {
    /// Builds the client. `base_url` defaults to the format's public endpoint.
    pub fn new(
        format: Box<dyn WireFormat>,
        base_url: Option<&str>,
        key: Option<ApiKey>,
        timeouts: Timeouts,
    ) -> Result<Self, String> {
        // No redirects: a key sent to the configured origin must not follow a
        // 3xx to another one (reqwest strips `Authorization` across origins,
        // but not `x-api-key` or `x-goog-api-key`).
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeouts.connect)
            .pool_max_idle_per_host(4096)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for (name, value) in format.headers(key.as_ref().map(ApiKey::expose)) {
            let mut v = HeaderValue::from_str(&value)
                .map_err(|_| format!("header `{name}` has characters HTTP does not allow"))?;
            v.set_sensitive(true);
            headers.insert(HeaderName::from_static(name), v);
        }
        let base_url = base_url
            .unwrap_or(format.default_base_url())
            .trim_end_matches('/')
            .to_owned();
        Ok(Self {
            format,
            client,
            base_url,
            headers,
            key,
            timeouts,
            unsupported: Vec::new(),
            endpoint: OnceLock::new(),
        })
    }

    /// Leaves these parameters out of every request (the model refuses them).
    pub fn with_unsupported_params(mut self, params: &[RequestParam]) -> Self {
        self.unsupported = params.to_vec();
        self
    }

    /// Whether this stop sequence is applied here instead of by the API: all of
    /// them when the model refuses `stop`, else those the wire format refuses
    /// (Anthropic refuses whitespace-only ones).
    fn stops_here(&self, stop: &str) -> bool {
        self.unsupported.contains(&RequestParam::Stop) || self.format.refuses_stop(stop)
    }

    /// The request as this model accepts it, when it differs from the job's.
    fn adapted(&self, req: &ChatRequest) -> Option<ChatRequest> {
        let drop_temperature =
            req.temperature.is_some() && self.unsupported.contains(&RequestParam::Temperature);
        let drop_stop = req.stop.iter().any(|s| self.stops_here(s));
        if !(drop_temperature || drop_stop) {
            return None;
        }
        let mut r = req.clone();
        if drop_temperature {
            r.temperature = None;
        }
        if drop_stop {
            r.stop.retain(|s| !self.stops_here(s));
        }
        Some(r)
    }

    /// The JSON body sent for `call`.
    pub fn request_body(&self, call: CallRequest<'_>) -> serde_json::Value {
        match self.adapted(call.request) {
            Some(request) => self.format.body(CallRequest {
                request: &request,
                api_model: call.api_model,
                default_max_tokens: call.default_max_tokens,
            }),
            None => self.format.body(call),
        }
    }

    async fn call(&self, call: CallRequest<'_>) -> Result<Completion, ProviderError> {
        let started = Instant::now();
        let body = serde_json::to_vec(&self.request_body(call))
            .map_err(|e| ProviderError::Decode(e.to_string()))?;
        let request = self
            .post(call.api_model)
            .headers(self.headers.clone())
            .body(body);
        let response = match tokio::time::timeout(self.timeouts.first_byte, request.send()).await {
            Err(_) => {
                return Err(ProviderError::Timeout {
                    phase: TimeoutPhase::FirstByte,
                    after: self.timeouts.first_byte,
                });
            }
            Ok(Err(e))
                if e.is_timeout()
                    || (e.is_connect() && started.elapsed() >= self.timeouts.connect) =>
            {
                return Err(ProviderError::Timeout {
                    phase: TimeoutPhase::Connect,
                    after: self.timeouts.connect,
                });
            }
            Ok(Err(e)) => return Err(ProviderError::Connection(self.scrub(&describe(&e)))),
            Ok(Ok(r)) => r,
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        if response.status().is_redirection() {
            return Err(redirected(status, &headers));
        }
        let left = self.timeouts.total.saturating_sub(started.elapsed());
        let bytes = match tokio::time::timeout(left, read_capped(response, MAX_BODY_BYTES)).await {
            Err(_) => {
                return Err(ProviderError::Timeout {
                    phase: TimeoutPhase::Total,
                    after: self.timeouts.total,
                });
            }
            Ok(Err(e)) => return Err(self.scrub_error(e)),
            Ok(Ok(b)) => b,
        };
        if (200..300).contains(&status) {
            let mut c = plausible(self.format.parse_ok(&headers, &bytes))
                .map_err(|e| self.scrub_error(e))?;
            c.status = status;
            Ok(self.finish_answer(call.request, c))
        } else {
            Err(self.scrub_error(self.format.parse_error(status, &headers, &bytes)))
        }
    }

    /// A POST to the endpoint of `api_model`.
    fn post(&self, api_model: &str) -> reqwest::RequestBuilder {
        if let Some((model, url)) = self.endpoint.get()
            && model == api_model
        {
            return self.client.post(url.clone());
        }
        let url = self.format.url(&self.base_url, api_model);
        match reqwest::Url::parse(&url) {
            Ok(parsed) => {
                let _ = self.endpoint.set((api_model.to_owned(), parsed.clone()));
                self.client.post(parsed)
            }
            // reqwest reports the bad URL when the request is sent.
            Err(_) => self.client.post(url),
        }
    }

    /// `text` with the key removed, for messages that may quote it.
    pub(crate) fn scrub(&self, text: &str) -> String {
        redact(text, self.key.as_ref())
    }

    /// The configured base URL, without a trailing slash.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The headers every request carries (authentication included).
    pub(crate) fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The timeouts of the deployment.
    pub(crate) fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// A successful answer's body (a chat completion or message, as a batch
    /// result line carries it) as a [`Completion`].
    pub fn parse_answer(&self, status: u16, body: &[u8]) -> Result<Completion, ProviderError> {
        let mut c = plausible(self.format.parse_ok(&HeaderMap::new(), body))
            .map_err(|e| self.scrub_error(e))?;
        c.status = status;
        Ok(c)
    }

    /// An answer to `request` with the stop sequences this model leaves to
    /// Switchyard applied, as a live call applies them.
    pub fn finish_answer(&self, request: &ChatRequest, mut c: Completion) -> Completion {
        let local: Vec<String> = request
            .stop
            .iter()
            .filter(|s| self.stops_here(s))
            .cloned()
            .collect();
        if let Some(at) = cut_at_stop(&c.content, &local) {
            c.content.truncate(at);
            c.finish_reason = "stop".into();
        }
        c
    }

    /// An error answer's body (as a batch result line carries it), classified
    /// as a live call's would be.
    pub fn parse_failure(&self, status: u16, body: &[u8]) -> ProviderError {
        self.scrub_error(self.format.parse_error(status, &HeaderMap::new(), body))
    }

    /// `e` with the key scrubbed out of its text, then cut to
    /// [`MESSAGE_MAX`] bytes (in this order: a cut through an echoed key
    /// would leave its head behind).
    pub(crate) fn scrub_error(&self, e: ProviderError) -> ProviderError {
        e.map_message(|m| clip_to(&self.scrub(m), MESSAGE_MAX))
    }
}

/// `answer`, unless the usage it reports (answer or refusal) is more than any
/// call can bill: then an unreadable response, retried and failed over like
/// one, so a broken or hostile count never reaches budgets and analytics.
fn plausible(answer: Result<Completion, ProviderError>) -> Result<Completion, ProviderError> {
    let usage = match &answer {
        Ok(c) => c.usage,
        Err(ProviderError::Refused { usage, .. }) => *usage,
        Err(_) => return answer,
    };
    if usage.is_plausible() {
        return answer;
    }
    Err(ProviderError::Decode(format!(
        "implausible usage ({} input, {} output, {} cached, {} cache-write tokens; at most {} each)",
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_input_tokens,
        TokenUsage::MAX_PLAUSIBLE
    )))
}

/// Largest response body read from a provider. A chat completion is at most a
/// few hundred kilobytes; a larger body is refused, not held in memory.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Reads the body up to `max` bytes (refusing more, by `Content-Length` before
/// reading when the server says it).
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, ProviderError> {
    let too_large = |n: String| {
        ProviderError::Decode(format!(
            "the response body is {n} bytes, more than the {max} bytes a completion may take"
        ))
    };
    if let Some(n) = response.content_length()
        && n > max as u64
    {
        return Err(too_large(n.to_string()));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max {
                    return Err(too_large(format!("over {max}")));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(ProviderError::Connection(describe(&e))),
        }
    }
}

/// A 3xx: the base URL points at a redirect. Not followed, so that the key
/// never leaves the configured origin.
fn redirected(status: u16, headers: &HeaderMap) -> ProviderError {
    let to = headers
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| reqwest::Url::parse(l).ok())
        .and_then(|u| u.host_str().map(str::to_owned))
        .map_or_else(String::new, |h| format!(" to host `{h}`"));
    ProviderError::Unservable {
        status,
        message: format!(
            "the provider redirected the call{to}; redirects are not followed, so keys stay with the configured origin: set the deployment's base_url to the final address"
        ),
    }
}

/// The error chain as one line, without the URL (Gemini keys can sit in its query).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), url.host_str().unwrap_or("the provider"));
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Provider for HttpProvider {
    fn kind(&self) -> &'static str {
        self.format.name()
    }

    fn complete<'a>(
        &'a self,
        call: CallRequest<'a>,
    ) -> BoxFuture<'a, Result<Completion, ProviderError>> {
        Box::pin(self.call(call))
    }
}
