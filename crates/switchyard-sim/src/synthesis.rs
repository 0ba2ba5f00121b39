//! Deterministic answers: token usage and reply text as pure functions of the
//! prompt, so tests and benchmarks can predict exactly what a call bills. Every
//! path (the three HTTP formats and the in-process provider) goes through here.
//!
//! Rules: each prompt piece (the system prompt, each message) counts
//! `ceil(bytes / 4) + 4` tokens; when the system prompt is at least
//! [`CACHE_MIN_SYSTEM_BYTES`] long, the largest multiple of 128 of its tokens is
//! served from cache; the answer has between 8 and 400 tokens, chosen by a hash of
//! the prompt and capped by `max_tokens` (then the finish reason is "length"); the
//! text is about 4 bytes per output token.

use switchyard_core::job::{ChatRequest, ResponseFormat, Role};
use switchyard_core::result::TokenUsage;

/// Tokens added per prompt piece for role and separators.
pub const PER_MESSAGE_TOKENS: u64 = 4;
/// System prompts at least this long get a cached prefix.
pub const CACHE_MIN_SYSTEM_BYTES: usize = 4096;
/// Cached prefixes are a multiple of this many tokens.
pub const CACHE_BLOCK_TOKENS: u64 = 128;
/// Fewest output tokens of an uncapped answer.
pub const MIN_OUTPUT_TOKENS: u64 = 8;
/// Most output tokens of an uncapped answer.
pub const MAX_OUTPUT_TOKENS: u64 = 400;
/// Bytes of reply text per output token.
pub const BYTES_PER_TOKEN: usize = 4;

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The answer is complete.
    Stop,
    /// `max_tokens` cut it.
    Length,
}

impl FinishReason {
    /// The normalised name used in [`switchyard_providers::Completion`].
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// What kind of text to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStyle {
    /// Plain sentences.
    Text,
    /// One valid JSON object.
    Json,
    /// Prose around an unterminated JSON object: what a model that ignored JSON mode returns.
    BrokenJson,
}

/// A simulated answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Generated text.
    pub content: String,
    /// Why it stopped.
    pub finish: FinishReason,
    /// What it bills.
    pub usage: TokenUsage,
}

/// Tokens a prompt bills: see the module doc for the rules.
pub fn usage_for(
    system: Option<&str>,
    messages: &[(Role, &str)],
    max_tokens: Option<u32>,
) -> TokenUsage {
    let (usage, _) = usage_and_finish(system, messages, max_tokens);
    usage
}

/// [`usage_for`] over a provider-neutral request, seen as the HTTP adapters send it
/// (the system field and system messages joined into one system prompt).
pub fn usage_for_request(request: &ChatRequest) -> TokenUsage {
    let (system, messages) = split_request(request);
    usage_for(system.as_deref(), &messages, request.max_tokens)
}

/// The answer to a prompt: text of the given style, usage and finish reason.
pub fn reply_for(
    system: Option<&str>,
    messages: &[(Role, &str)],
    max_tokens: Option<u32>,
    style: ReplyStyle,
) -> Reply {
    reply_of_length(system, messages, max_tokens, style, false)
}

/// [`reply_for`], or, with `fill`, an answer that uses the whole `max_tokens`
/// (finish reason `length`) when there is one.
pub fn reply_of_length(
    system: Option<&str>,
    messages: &[(Role, &str)],
    max_tokens: Option<u32>,
    style: ReplyStyle,
    fill: bool,
) -> Reply {
    let (mut usage, mut finish) = usage_and_finish(system, messages, max_tokens);
    if let (true, Some(cap)) = (fill, max_tokens) {
        usage.output_tokens = u64::from(cap);
        finish = FinishReason::Length;
    }
    let target = usize::try_from(usage.output_tokens)
        .unwrap_or(usize::MAX)
        .saturating_mul(BYTES_PER_TOKEN);
    let mut words = WordStream::new(prompt_hash(system, messages) ^ 0x005e_ed0f_7e47);
    let content = match style {
        ReplyStyle::Text => words.sentences(target, finish == FinishReason::Stop),
        ReplyStyle::Json => {
            let text = words.sentences(target.saturating_sub(JSON_OVERHEAD).max(1), true);
            serde_json::json!({ "answer": text }).to_string()
        }
        ReplyStyle::BrokenJson => {
            let text = words.sentences(target.saturating_sub(BROKEN_PREFIX.len()).max(1), false);
            format!("{BROKEN_PREFIX}{text}")
        }
    };
    Reply {
        content,
        finish,
        usage,
    }
}

/// [`reply_for`] over a provider-neutral request; JSON mode follows `response_format`.
pub fn reply_for_request(request: &ChatRequest) -> Reply {
    let (system, messages) = split_request(request);
    let style = if request.response_format == ResponseFormat::JsonObject {
        ReplyStyle::Json
    } else {
        ReplyStyle::Text
    };
    reply_for(system.as_deref(), &messages, request.max_tokens, style)
}

/// Bytes `{"answer":""}` adds around the text.
const JSON_OVERHEAD: usize = 13;
const BROKEN_PREFIX: &str = "Sure, here is the JSON object you asked for: {\"answer\": \"";

fn split_request(request: &ChatRequest) -> (Option<String>, Vec<(Role, &str)>) {
    let mut parts: Vec<&str> = request.system.iter().map(String::as_str).collect();
    parts.extend(
        request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str()),
    );
    let system = (!parts.is_empty()).then(|| parts.join("\n\n"));
    let messages = request
        .messages
        .iter()
        .filter(|m| m.role != Role::System)
        .map(|m| (m.role, m.content.as_str()))
        .collect();
    (system, messages)
}

fn usage_and_finish(
    system: Option<&str>,
    messages: &[(Role, &str)],
    max_tokens: Option<u32>,
) -> (TokenUsage, FinishReason) {
    let piece =
        |text: &str| (text.len() as u64).div_ceil(BYTES_PER_TOKEN as u64) + PER_MESSAGE_TOKENS;
    let prompt: u64 =
        system.map_or(0, piece) + messages.iter().map(|(_, text)| piece(text)).sum::<u64>();
    let cached = match system {
        Some(s) if s.len() >= CACHE_MIN_SYSTEM_BYTES => {
            let system_tokens = (s.len() as u64).div_ceil(BYTES_PER_TOKEN as u64);
            system_tokens / CACHE_BLOCK_TOKENS * CACHE_BLOCK_TOKENS
        }
        _ => 0,
    };
    let natural = MIN_OUTPUT_TOKENS
        + prompt_hash(system, messages) % (MAX_OUTPUT_TOKENS - MIN_OUTPUT_TOKENS + 1);
    let (output, finish) = match max_tokens.map(u64::from) {
        Some(cap) if cap < natural => (cap, FinishReason::Length),
        _ => (natural, FinishReason::Stop),
    };
    (
        TokenUsage {
            input_tokens: prompt - cached,
            output_tokens: output,
            cached_input_tokens: cached,
            cache_write_input_tokens: 0,
        },
        finish,
    )
}

fn prompt_hash(system: Option<&str>, messages: &[(Role, &str)]) -> u64 {
    let mut h = Fnv::new();
    if let Some(s) = system {
        h.write(b"system\0");
        h.write(s.as_bytes());
        h.write(b"\0");
    }
    for (role, text) in messages {
        h.write(role.as_str().as_bytes());
        h.write(b"\0");
        h.write(text.as_bytes());
        h.write(b"\0");
    }
    splitmix64(h.finish())
}

/// FNV-1a, 64 bits: stable across Rust versions and platforms, unlike `DefaultHasher`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(crate) fn finish(self) -> u64 {
        self.0
    }
}

/// SplitMix64's output function: spreads the bits of a weak hash or a counter.
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from 64 random bits.
pub(crate) fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

const WORDS: &[&str] = &[
    "the", "model", "routes", "each", "request", "to", "a", "cheaper", "option", "when", "quality",
    "allows", "it", "and", "keeps", "latency", "low", "while", "costs", "stay", "within", "budget",
    "for", "every", "team", "results", "are", "clear", "simple", "answer", "summary", "shows",
    "three", "main", "points", "data", "record", "field", "value", "order", "customer", "product",
    "review", "positive", "negative", "neutral", "category", "label", "text", "short", "long",
    "first", "second", "final", "step", "check", "list", "table", "report", "useful", "precise",
    "overall", "likely", "good",
];

/// Deterministic English-looking words.
struct WordStream {
    state: u64,
}

impl WordStream {
    fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_word(&mut self) -> &'static str {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let i = usize::try_from(splitmix64(self.state) % WORDS.len() as u64).unwrap_or(0);
        WORDS.get(i).copied().unwrap_or("text")
    }

    /// Sentences of exactly `bytes` ASCII bytes (at least 1); when `complete`, ending in a period.
    fn sentences(&mut self, bytes: usize, complete: bool) -> String {
        let bytes = bytes.max(1);
        let mut out = String::with_capacity(bytes + 16);
        let mut in_sentence = 0;
        while out.len() < bytes {
            let word = self.next_word();
            if in_sentence == 0 {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    out.push(first.to_ascii_uppercase());
                    out.push_str(chars.as_str());
                }
            } else {
                out.push(' ');
                out.push_str(word);
            }
            in_sentence += 1;
            if in_sentence == 9 {
                out.push_str(". ");
                in_sentence = 0;
            }
        }
        out.truncate(bytes);
        if complete {
            out.pop();
            out.push('.');
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use switchyard_core::job::ChatMessage;

    const SYSTEM: &str = "You are a concise assistant.";
    const USER: &str = "Name three primary colors.";

    #[test]
    fn prompt_tokens_are_bytes_over_four_plus_four_per_piece() {
        let u = usage_for(Some(SYSTEM), &[(Role::User, USER)], None);
        assert_eq!(u.input_tokens, (7 + 4) + (7 + 4));
        assert_eq!(u.cached_input_tokens, 0);
        assert!((MIN_OUTPUT_TOKENS..=MAX_OUTPUT_TOKENS).contains(&u.output_tokens));
        assert_eq!(
            u,
            usage_for(Some(SYSTEM), &[(Role::User, USER)], None),
            "deterministic"
        );
    }

    #[test]
    fn long_system_prompts_get_a_cached_prefix_of_whole_blocks() {
        let system = "x".repeat(5000); // 1250 tokens -> 1152 cached
        let u = usage_for(Some(&system), &[(Role::User, USER)], None);
        assert_eq!(u.cached_input_tokens, 1152);
        assert_eq!(u.input_tokens + u.cached_input_tokens, 1250 + 4 + 7 + 4);
        let short = "x".repeat(4095);
        assert_eq!(
            usage_for(Some(&short), &[(Role::User, USER)], None).cached_input_tokens,
            0
        );
    }

    #[test]
    fn max_tokens_caps_the_answer_and_says_length() {
        let free = reply_for(Some(SYSTEM), &[(Role::User, USER)], None, ReplyStyle::Text);
        assert_eq!(free.finish, FinishReason::Stop);
        let capped = reply_for(
            Some(SYSTEM),
            &[(Role::User, USER)],
            Some(3),
            ReplyStyle::Text,
        );
        assert_eq!(capped.usage.output_tokens, 3);
        assert_eq!(capped.finish, FinishReason::Length);
        assert_eq!(capped.content.len(), 12);
        assert_eq!(free.content.len() as u64, free.usage.output_tokens * 4);
        assert!(free.content.ends_with('.'));
        assert!(
            !free.content.contains("\n\n"),
            "stop sequences in fixtures must not cut the reply"
        );
    }

    #[test]
    fn output_lengths_spread_over_the_whole_range() {
        let counts: Vec<u64> = (0..200)
            .map(|i| usage_for(None, &[(Role::User, &format!("q{i}"))], None).output_tokens)
            .collect();
        assert!(
            counts
                .iter()
                .all(|c| (MIN_OUTPUT_TOKENS..=MAX_OUTPUT_TOKENS).contains(c))
        );
        assert!(counts.iter().any(|c| *c < 100) && counts.iter().any(|c| *c > 300));
    }

    #[test]
    fn json_style_parses_and_broken_style_does_not() {
        for max in [None, Some(1), Some(20)] {
            let ok = reply_for(None, &[(Role::User, USER)], max, ReplyStyle::Json);
            let v: serde_json::Value = serde_json::from_str(&ok.content).unwrap();
            assert!(v.is_object());
            let bad = reply_for(None, &[(Role::User, USER)], max, ReplyStyle::BrokenJson);
            assert!(serde_json::from_str::<serde_json::Value>(&bad.content).is_err());
            assert_eq!(ok.usage, bad.usage);
        }
    }

    #[test]
    fn requests_are_read_as_the_adapters_send_them() {
        let request = ChatRequest {
            messages: vec![
                ChatMessage {
                    role: Role::System,
                    content: SYSTEM.into(),
                },
                ChatMessage {
                    role: Role::User,
                    content: USER.into(),
                },
            ],
            system: None,
            max_tokens: Some(64),
            temperature: None,
            stop: vec![],
            response_format: ResponseFormat::JsonObject,
        };
        assert_eq!(
            usage_for_request(&request),
            usage_for(Some(SYSTEM), &[(Role::User, USER)], Some(64))
        );
        assert!(
            serde_json::from_str::<serde_json::Value>(&reply_for_request(&request).content).is_ok()
        );
    }
}
