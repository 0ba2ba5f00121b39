//! The HTTP calls both batch APIs make: GET and POST of JSON, a multipart
//! upload, with the deployment's headers (its key included), no redirects, the
//! deployment's timeouts for small calls, and every provider message scrubbed
//! of the key. Bodies are capped: a batch's results may be large, but never
//! unbounded.

use std::sync::Arc;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use serde::de::DeserializeOwned;

use super::BatchError;
use crate::HttpProvider;
use crate::http::{describe, read_capped};

/// Largest answer of a small call (a batch object, a page of them).
const MAX_SMALL_BODY: usize = 16 << 20;

/// Largest results file read into memory.
pub(super) const MAX_RESULTS_BODY: usize = 1 << 30;

/// One deployment's batch endpoint.
pub(super) struct BatchHttp {
    pub api: &'static str,
    pub provider: Arc<HttpProvider>,
    client: reqwest::Client,
}

/// How long a call may take.
#[derive(Debug, Clone, Copy)]
pub(super) enum Patience {
    /// The deployment's total timeout (state, lists, cancels).
    Small,
    /// As long as it takes (uploads and results; the caller bounds them).
    Large,
}

impl BatchHttp {
    pub fn new(api: &'static str, provider: Arc<HttpProvider>) -> Self {
        let connect = provider.timeouts().connect;
        // Building a client fails only without a TLS backend; the default
        // client then stands in, with reqwest's defaults.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect)
            .build()
            .unwrap_or_default();
        Self {
            api,
            provider,
            client,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.provider.base_url())
    }

    /// GET `path`, the answer as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, BatchError> {
        let bytes = self
            .send(self.client.get(self.url(path)), Patience::Small)
            .await?;
        self.decode(&bytes)
    }

    /// GET `path`, the raw answer (a results file).
    pub async fn get_raw(&self, path: &str) -> Result<Vec<u8>, BatchError> {
        self.send(self.client.get(self.url(path)), Patience::Large)
            .await
    }

    /// POST `body` as JSON to `path`, the answer as `T`.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        patience: Patience,
    ) -> Result<T, BatchError> {
        let bytes = serde_json::to_vec(body).map_err(|e| BatchError::Decode {
            api: self.api,
            message: e.to_string(),
        })?;
        let request = self.client.post(self.url(path)).body(bytes);
        let answer = self.send(request, patience).await?;
        self.decode(&answer)
    }

    /// POST a multipart form to `path`: text `fields`, then one file.
    pub async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        file: (&str, &str, Vec<u8>),
    ) -> Result<T, BatchError> {
        let boundary = format!("switchyard-{:016x}", rand::random::<u64>());
        let mut body = Vec::with_capacity(file.2.len() + 512);
        for (name, value) in fields {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
                )
                .as_bytes(),
            );
        }
        let (name, file_name, content) = file;
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file_name}\"\r\nContent-Type: application/jsonl\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&content);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let content_type = HeaderValue::from_str(&format!(
            "multipart/form-data; boundary={boundary}"
        ))
        .map_err(|e| BatchError::Decode {
            api: self.api,
            message: e.to_string(),
        })?;
        let mut headers = self.provider.headers().clone();
        headers.insert(CONTENT_TYPE, content_type);
        let request = self.client.post(self.url(path)).headers(headers).body(body);
        let answer = self.send_with(request, Patience::Large, false).await?;
        self.decode(&answer)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        patience: Patience,
    ) -> Result<Vec<u8>, BatchError> {
        self.send_with(request, patience, true).await
    }

    async fn send_with(
        &self,
        request: reqwest::RequestBuilder,
        patience: Patience,
        with_headers: bool,
    ) -> Result<Vec<u8>, BatchError> {
        let request = if with_headers {
            request.headers(self.provider.headers().clone())
        } else {
            request
        };
        let (limit, max) = match patience {
            Patience::Small => (Some(self.provider.timeouts().total), MAX_SMALL_BODY),
            Patience::Large => (None, MAX_RESULTS_BODY),
        };
        let call = async {
            let response = request
                .send()
                .await
                .map_err(|e| self.unreachable(&describe(&e)))?;
            let status = response.status().as_u16();
            if response.status().is_redirection() {
                return Err(BatchError::Status {
                    api: self.api,
                    status,
                    message: "the provider redirected the call; redirects are not followed, so keys stay with the configured origin: set the deployment's base_url to the final address".into(),
                });
            }
            let bytes = read_capped(response, max)
                .await
                .map_err(|e| self.unreachable(&e.to_string()))?;
            if (200..300).contains(&status) {
                Ok(bytes)
            } else {
                Err(BatchError::Status {
                    api: self.api,
                    status,
                    message: self.provider.parse_failure(status, &bytes).to_string(),
                })
            }
        };
        match limit {
            Some(limit) => match tokio::time::timeout(limit, call).await {
                Ok(r) => r,
                Err(_) => Err(self.unreachable(&format!("no answer within {limit:?}"))),
            },
            None => call.await,
        }
    }

    fn unreachable(&self, message: &str) -> BatchError {
        BatchError::Unreachable {
            api: self.api,
            message: self.provider.scrub(message),
        }
    }

    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, BatchError> {
        serde_json::from_slice(bytes).map_err(|e| BatchError::Decode {
            api: self.api,
            message: e.to_string(),
        })
    }

    /// The request body of `call`, as a live call would send it.
    pub fn body(&self, call: crate::CallRequest<'_>) -> serde_json::Value {
        self.provider.request_body(call)
    }
}
