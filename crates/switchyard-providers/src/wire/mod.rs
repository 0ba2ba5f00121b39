//! Wire formats: how a [`CallRequest`] becomes an HTTP request for each API, and
//! how the API's answer (or error) becomes a [`Completion`] (or a classified
//! [`ProviderError`]). Pure functions over bytes and headers.

pub mod anthropic;
pub mod gemini;
pub mod openai;

use std::time::Duration;

use reqwest::header::HeaderMap;
use switchyard_core::catalog::Api;
use switchyard_core::job::{ChatRequest, Role};

use crate::{CallRequest, Completion, ProviderError};

/// One API's request and response mapping.
pub trait WireFormat: Send + Sync {
    /// Name for logs.
    fn name(&self) -> &'static str;
    /// The provider's public endpoint, used when a deployment gives no `base_url`.
    fn default_base_url(&self) -> &'static str;
    /// Full URL of the completion endpoint.
    fn url(&self, base_url: &str, api_model: &str) -> String;
    /// Headers, authentication included. The only place a key is read.
    fn headers(&self, api_key: Option<&str>) -> Vec<(&'static str, String)>;
    /// The JSON body.
    fn body(&self, call: CallRequest<'_>) -> serde_json::Value;
    /// Parses a 2xx response.
    fn parse_ok(&self, headers: &HeaderMap, body: &[u8]) -> Result<Completion, ProviderError>;
    /// Classifies a non-2xx response.
    fn parse_error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError;
    /// Whether the API refuses this stop sequence (it is then applied to the
    /// answer by Switchyard instead).
    fn refuses_stop(&self, _stop: &str) -> bool {
        false
    }
}

/// The wire format for a catalog API.
pub fn for_api(api: Api) -> Box<dyn WireFormat> {
    match api {
        Api::Openai => Box::new(openai::OpenAi { compatible: false }),
        Api::OpenaiCompatible => Box::new(openai::OpenAi { compatible: true }),
        Api::Anthropic => Box::new(anthropic::Anthropic),
        Api::Gemini => Box::new(gemini::Gemini),
    }
}

/// Instruction added when JSON output is required and the API has no strict flag
/// (or, for OpenAI, requires the word "json" in the messages).
pub const JSON_INSTRUCTION: &str = "Respond with a single JSON object and nothing else.";

/// The system prompt: the request's `system` field joined with any system messages.
pub(crate) fn system_text(req: &ChatRequest) -> Option<String> {
    let mut parts: Vec<&str> = req.system.iter().map(String::as_str).collect();
    parts.extend(
        req.messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str()),
    );
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

/// System text with the JSON instruction appended when needed.
pub(crate) fn system_with_json(req: &ChatRequest, needs_instruction: bool) -> Option<String> {
    let base = system_text(req);
    if !needs_instruction {
        return base;
    }
    Some(match base {
        Some(s) => format!("{s}\n\n{JSON_INSTRUCTION}"),
        None => JSON_INSTRUCTION.to_owned(),
    })
}

/// Where the text must end for the first stop sequence it contains (the API
/// stops before the sequence and leaves it out), if it contains one.
pub fn cut_at_stop(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// Parses Go-style durations used by OpenAI's reset headers: `1s`, `6m0s`, `120ms`, `1h2m3.5s`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut number = String::new();
    let mut chars = s.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let value: f64 = number.parse().ok()?;
        number.clear();
        let unit = match c {
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            'u' | 'µ' if chars.peek() == Some(&'s') => {
                chars.next();
                0.000_001
            }
            'n' if chars.peek() == Some(&'s') => {
                chars.next();
                0.000_000_001
            }
            _ => return None,
        };
        total += value * unit;
        any = true;
    }
    if !number.is_empty() {
        // A bare number is seconds.
        total += number.parse::<f64>().ok()?;
        any = true;
    }
    if !any {
        return None;
    }
    hint_secs(total)
}

/// Longest wait a provider's header can ask for: anything longer (a day-long
/// Retry-After, a reset in the year 9999, `inf`) is read as this. What a job
/// actually waits is decided later, against `routing.retry.max_retry_after`.
pub const MAX_HINT: Duration = Duration::from_secs(24 * 3600);

/// A wait given in seconds by a header, checked: `None` unless finite and not
/// negative, at most [`MAX_HINT`]. Headers are input from the network: no value
/// may panic a conversion.
pub fn hint_secs(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs.min(MAX_HINT.as_secs_f64())).ok()
}

/// An `f32` from the job as the shortest decimal that reads back the same
/// (0.2f32 is sent as 0.2, not 0.20000000298023224).
pub(crate) fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// `retry-after-ms` or `retry-after` (seconds) from response headers.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(ms) =
        header_str(headers, "retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok())
    {
        return hint_secs(ms / 1000.0);
    }
    header_str(headers, "retry-after")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .and_then(hint_secs)
}

pub(crate) fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    header_str(headers, name).and_then(|v| v.trim().parse().ok())
}

/// Longest provider text an error keeps, in bytes (results and logs carry it).
pub(crate) const MESSAGE_MAX: usize = 500;

/// Longest provider text a wire format keeps before the key is scrubbed out:
/// longer than `MESSAGE_MAX` by more than any key, so a key the provider
/// echoes across the final cut is still whole when it is removed (cutting
/// first would leave its head behind).
const RAW_MAX: usize = 8 * 1024;

/// Shortens a provider message as a wire format reads it (bodies can be
/// large); the provider scrubs the key, then cuts to [`MESSAGE_MAX`] with
/// [`clip_to`].
pub(crate) fn clip(message: &str) -> String {
    clip_to(message, RAW_MAX)
}

/// `message` cut to at most `max` bytes (on a character boundary), marked `…` when cut.
pub(crate) fn clip_to(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_owned();
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

/// Best-effort text of an unparseable error body.
pub(crate) fn body_text(body: &[u8]) -> String {
    clip(String::from_utf8_lossy(body).trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_parse() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("120ms"), Some(Duration::from_millis(120)));
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(parse_go_duration("47s"), Some(Duration::from_secs(47)));
        assert_eq!(parse_go_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_go_duration("soon"), None);
    }

    #[test]
    fn stop_sequences_cut_at_the_first_match() {
        let stop = vec!["\n\n".to_owned(), "END".to_owned(), String::new()];
        assert_eq!(cut_at_stop("a b\n\nc END", &stop), Some(3));
        assert_eq!(cut_at_stop("a END b\n\n", &stop), Some(2));
        assert_eq!(cut_at_stop("no match", &stop), None);
        assert_eq!(
            cut_at_stop("é END", &["END".to_owned()]),
            Some(3),
            "byte offset"
        );
    }

    #[test]
    fn hostile_durations_never_panic_and_are_capped() {
        let mut h = HeaderMap::new();
        for v in ["inf", "1e20", "-5", "NaN", "1e400", "99999999999999999999"] {
            h.insert("retry-after", v.parse().unwrap());
            let d = retry_after(&h);
            assert!(d.is_none_or(|d| d <= MAX_HINT), "{v}: {d:?}");
        }
        h.insert("retry-after", "86400000".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_HINT));
        assert_eq!(parse_go_duration("99999999999999999999h"), Some(MAX_HINT));
        assert_eq!(parse_go_duration("infh"), None);
        assert_eq!(parse_go_duration("1e400s"), None);
    }

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
    }
}
