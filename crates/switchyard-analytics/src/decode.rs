//! Usage events from the topic's bytes into rows, a chunk of messages at a time
//! (the sink runs this on its decoder threads), written into a [`RowSink`]:
//! decode knows no store, the caller picks which shapes the rows take.
//!
//! JSON events take a fast path: the text is checked as UTF-8 once and parsed
//! into borrowed fields (no string is copied unless it holds escapes), the
//! canonical RFC 3339 timestamps that Switchyard writes are read without chrono,
//! and the borrowed row goes straight to the sink (the stores' column builders). Anything the fast path
//! does not accept (an unknown field under the `ignore` policy, an unusual
//! timestamp, a syntax error) goes through the topic's full [`Codec`], so the
//! outcome, and the reason when a message is not a usage event, is exactly the
//! codec's.

use std::borrow::Cow;
use std::fmt;

use chrono::Datelike;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use switchyard_codec::Codec;
use switchyard_core::analysis::TaskCategory;
use switchyard_core::config::Encoding;
use switchyard_core::result::{AttemptOutcome, RunMode};
use switchyard_core::routing::Strategy;
use switchyard_core::usage::UsageEvent;

use crate::dedupe::key;
use crate::row::{RowRef, RowSink, UNIX_EPOCH_DAYS_FROM_CE};

/// Messages as read from Kafka, their payloads end to end in one buffer (and
/// their keys in another: a message that is not a usage event is
/// dead-lettered under its own key).
#[derive(Debug, Default)]
pub struct RawChunk {
    payloads: Vec<u8>,
    keys: Vec<u8>,
    messages: Vec<RawMessage>,
}

/// One message of a [`RawChunk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawMessage {
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// The partition's assignment epoch when the message was read.
    pub epoch: u64,
    end: usize,
    /// End of its key in `keys`; `None` when the message had no key.
    key_end: Option<usize>,
}

impl RawChunk {
    /// An empty chunk with room for `messages` messages.
    pub fn with_capacity(messages: usize) -> Self {
        Self {
            payloads: Vec::with_capacity(messages * 1024),
            keys: Vec::with_capacity(messages * 48),
            messages: Vec::with_capacity(messages),
        }
    }

    /// Copies a message without a key in.
    pub fn push(&mut self, partition: i32, offset: i64, epoch: u64, payload: &[u8]) {
        self.push_keyed(partition, offset, epoch, None, payload);
    }

    /// Copies a message and its key in.
    pub fn push_keyed(
        &mut self,
        partition: i32,
        offset: i64,
        epoch: u64,
        key: Option<&[u8]>,
        payload: &[u8],
    ) {
        self.payloads.extend_from_slice(payload);
        let key_end = key.map(|k| {
            self.keys.extend_from_slice(k);
            self.keys.len()
        });
        self.messages.push(RawMessage {
            partition,
            offset,
            epoch,
            end: self.payloads.len(),
            key_end,
        });
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether no message is held.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Each message with its key and payload.
    fn iter(&self) -> impl Iterator<Item = (&RawMessage, Option<&[u8]>, &[u8])> {
        let (mut start, mut key_start) = (0, 0);
        self.messages.iter().map(move |m| {
            let p = &self.payloads[start..m.end];
            start = m.end;
            let key = m.key_end.map(|end| {
                let k = &self.keys[key_start..end];
                key_start = end;
                k
            });
            (m, key, p)
        })
    }
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A usage event, whose row went to the [`RowSink`] (the n-th `Row` of a
    /// chunk is the n-th row appended).
    Row {
        /// The event id as a 128-bit key.
        id: u128,
    },
    /// Not a usage event: why, and the message as read (for its dead letter).
    Invalid(Box<Undecodable>),
}

/// A message that is not a usage event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecodable {
    /// Why, as the codec says it.
    pub reason: String,
    /// The codec's kind of fault (`invalid_json`, `too_large`, …).
    pub kind: &'static str,
    /// The message's key, `None` when it had none.
    pub key: Option<Vec<u8>>,
    /// The message's value.
    pub payload: Vec<u8>,
}

/// A decoded message with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedMessage {
    /// Kafka partition.
    pub partition: i32,
    /// Kafka offset.
    pub offset: i64,
    /// The partition's assignment epoch when the message was read.
    pub epoch: u64,
    /// The outcome.
    pub decoded: Decoded,
}

/// Decodes a chunk read from `topic`, appending the row of every usage event
/// to `rows` in message order; says what became of each message.
pub fn decode_chunk(
    codec: &Codec,
    topic: &str,
    chunk: &RawChunk,
    rows: &mut impl RowSink,
) -> Vec<DecodedMessage> {
    let mut messages = Vec::with_capacity(chunk.len());
    for (m, message_key, payload) in chunk.iter() {
        let decoded = match fast_json(codec, payload) {
            Some(fast) => {
                rows.append(&fast.row(topic, m.partition, m.offset), m.epoch);
                Decoded::Row { id: fast.id }
            }
            None => match codec.decode::<UsageEvent>(payload) {
                Ok(e) => {
                    rows.append(&RowRef::of_event(&e, topic, m.partition, m.offset), m.epoch);
                    Decoded::Row {
                        id: key(&e.event_id),
                    }
                }
                Err(e) => Decoded::Invalid(Box::new(Undecodable {
                    reason: e.to_string(),
                    kind: e.kind(),
                    key: message_key.map(<[u8]>::to_vec),
                    payload: payload.to_vec(),
                })),
            },
        };
        messages.push(DecodedMessage {
            partition: m.partition,
            offset: m.offset,
            epoch: m.epoch,
            decoded,
        });
    }
    messages
}

/// Text borrowed from the payload, or owned when it held escapes.
#[derive(Debug, Default)]
struct Text<'a>(Cow<'a, str>);

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The usage event's JSON shape with borrowed text; fields, defaults and the
/// refusal of unknown fields as in [`UsageEvent`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FastEvent<'a> {
    #[serde(borrow)]
    event_id: Text<'a>,
    #[serde(borrow)]
    job_id: Text<'a>,
    #[serde(borrow, default)]
    batch_id: Option<Text<'a>>,
    attempt: u32,
    #[serde(borrow)]
    ts: Text<'a>,
    #[serde(borrow)]
    org: Text<'a>,
    #[serde(borrow)]
    business_unit: Text<'a>,
    #[serde(borrow)]
    team: Text<'a>,
    #[serde(borrow)]
    project: Text<'a>,
    #[serde(borrow, default)]
    workload: Text<'a>,
    #[serde(borrow)]
    strategy: Text<'a>,
    #[serde(borrow)]
    category: Text<'a>,
    #[serde(default)]
    complexity: f64,
    #[serde(borrow, default)]
    chosen_model: Text<'a>,
    #[serde(borrow, default)]
    routing_reason: Text<'a>,
    #[serde(borrow)]
    provider: Text<'a>,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    deployment: Text<'a>,
    #[serde(borrow)]
    outcome: Text<'a>,
    usage: FastUsage,
    cost_usd: f64,
    baseline_cost_usd: f64,
    latency_ms: u64,
    #[serde(borrow, default)]
    mode: Option<Text<'a>>,
    #[serde(default)]
    live_cost_usd: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FastUsage {
    input_tokens: u64,
    output_tokens: u64,
    cached_input_tokens: u64,
    #[serde(default)]
    cache_write_input_tokens: u64,
}

/// A fast-path event whose enums and time are already checked.
struct Fast<'a> {
    e: FastEvent<'a>,
    id: u128,
    ts_ms: u64,
    strategy: &'static str,
    category: &'static str,
    outcome: &'static str,
    mode: &'static str,
}

impl Fast<'_> {
    fn row<'r>(&'r self, topic: &'r str, partition: i32, offset: i64) -> RowRef<'r> {
        let e = &self.e;
        RowRef {
            event_id: e.event_id.as_ref(),
            job_id: e.job_id.as_ref(),
            batch_id: e.batch_id.as_ref().map_or("", |b| b.as_ref()),
            attempt: e.attempt,
            ts_ms: self.ts_ms,
            org: e.org.as_ref(),
            business_unit: e.business_unit.as_ref(),
            team: e.team.as_ref(),
            project: e.project.as_ref(),
            workload: e.workload.as_ref(),
            strategy: self.strategy,
            category: self.category,
            complexity: e.complexity,
            chosen_model: e.chosen_model.as_ref(),
            routing_reason: e.routing_reason.as_ref(),
            provider: e.provider.as_ref(),
            model: e.model.as_ref(),
            deployment: e.deployment.as_ref(),
            outcome: self.outcome,
            input_tokens: e.usage.input_tokens,
            output_tokens: e.usage.output_tokens,
            cached_input_tokens: e.usage.cached_input_tokens,
            cost_usd: e.cost_usd,
            baseline_cost_usd: e.baseline_cost_usd,
            latency_ms: e.latency_ms,
            kafka_topic: topic,
            kafka_partition: partition,
            kafka_offset: offset,
            cache_write_input_tokens: e.usage.cache_write_input_tokens,
            mode: self.mode,
            live_cost_usd: e.live_cost_usd.unwrap_or(e.cost_usd),
        }
    }
}

/// The fast path: `None` whenever the full codec must decide.
fn fast_json<'a>(codec: &Codec, payload: &'a [u8]) -> Option<Fast<'a>> {
    if codec.encoding() != Encoding::Json || payload.is_empty() || payload.len() > codec.max_bytes()
    {
        return None;
    }
    let text = std::str::from_utf8(payload).ok()?;
    let e: FastEvent<'a> = serde_json::from_str(text).ok()?;
    let ts_ms = canonical_millis(e.ts.as_ref())?;
    let strategy = Strategy::parse(e.strategy.as_ref())?.as_str();
    let category = TaskCategory::parse(e.category.as_ref())?.as_str();
    let outcome = AttemptOutcome::parse(e.outcome.as_ref())?.as_str();
    let mode = match &e.mode {
        Some(m) => RunMode::parse(m.as_ref())?.as_str(),
        None => RunMode::Live.as_str(),
    };
    Some(Fast {
        mode,
        id: key(e.event_id.as_ref()),
        e,
        ts_ms,
        strategy,
        category,
        outcome,
    })
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.f…]Z` (or `+00:00`),
/// the form Switchyard writes; `None` for anything else (chrono then decides).
/// Times before 1970 are `None` too.
pub(crate) fn canonical_millis(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut n = 0u32;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + u32::from(c - b'0');
        }
        Some(n)
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // Checks the month and the day in it.
    let date = chrono::NaiveDate::from_ymd_opt(year as i32, month, day)?;
    if !(1970..=9999).contains(&year) || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0u32;
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        for (i, &c) in rest[1..=digits].iter().take(3).enumerate() {
            millis += u32::from(c - b'0') * [100, 10, 1][i];
        }
        rest = &rest[1 + digits..];
    }
    if rest != b"Z" && rest != b"+00:00" {
        return None;
    }
    let days = u64::try_from(date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE).ok()?;
    let secs = days * 86_400 + u64::from(hour * 3600 + minute * 60 + second);
    Some(secs * 1000 + u64::from(millis))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, SecondsFormat, Utc};
    use proptest::prelude::*;
    use switchyard_core::config::{TopicConfig, UnknownFields};

    use super::*;
    use crate::row::UsageRow;
    use crate::row::tests::event;
    use crate::runner::{DecodedChunk, decode_for_stores};
    use crate::sample;
    use crate::sinks::clickhouse::ClickHouseRows;

    /// Decodes into both stores' shapes, as the sink's decoder threads do.
    fn decode_one(codec: &Codec, payload: &[u8]) -> DecodedChunk {
        let mut chunk = RawChunk::with_capacity(1);
        chunk.push(2, 40, 0, payload);
        decode_for_stores(codec, "switchyard.usage", &chunk, true)
    }

    /// What the codec and the flat row make of the payload: the reference.
    fn reference(codec: &Codec, payload: &[u8]) -> Result<UsageRow, String> {
        codec
            .decode::<UsageEvent>(payload)
            .map(|e| UsageRow::from_event(e, "switchyard.usage", 2, 40))
            .map_err(|e| e.to_string())
    }

    fn check_same(codec: &Codec, payload: &[u8]) {
        let got = decode_one(codec, payload);
        assert!(got.error.is_none());
        match (reference(codec, payload), &got.messages[0].decoded) {
            (Ok(row), Decoded::Row { id }) => {
                assert_eq!(*id, key(&row.event_id));
                let expected =
                    crate::sinks::parquet::block::record_batch(std::slice::from_ref(&row)).unwrap();
                let block = &got.parquet.blocks()[got.parquet.block_of(0).unwrap()];
                assert_eq!(block.batch, expected);
                assert_eq!((block.day, block.org.as_str()), (row.day, row.org.as_str()));
                assert_eq!(
                    got.clickhouse.as_ref().unwrap(),
                    &ClickHouseRows::from_rows(&[row])
                );
            }
            (Err(reason), Decoded::Invalid(got)) => {
                assert_eq!(reason, got.reason);
                assert_eq!(got.payload, payload);
            }
            (r, g) => panic!("reference {r:?}, decoded {g:?}"),
        }
    }

    #[test]
    fn canonical_times_match_chrono() {
        for s in [
            "1970-01-01T00:00:00Z",
            "2026-11-25T23:59:59.999Z",
            "2024-02-29T12:00:00.5Z",
            "2026-11-25T09:12:07.123456789+00:00",
            "2000-03-01T00:00:00Z",
            "2100-12-31T23:59:59Z",
        ] {
            let chrono: DateTime<Utc> = s.parse().unwrap();
            assert_eq!(
                canonical_millis(s),
                Some(chrono.timestamp_millis() as u64),
                "{s}"
            );
        }
        for s in [
            "2026-02-29T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T10:00:00+01:00",
            "2026-11-25 10:00:00Z",
            "2026-11-25T10:00:60Z",
            "1969-12-31T23:59:59Z",
            "2026-11-25T10:00:00.Z",
            "2026-11-25T10:00:00",
        ] {
            assert_eq!(canonical_millis(s), None, "{s}");
        }
    }

    #[test]
    fn the_fast_path_gives_what_the_codec_gives() {
        let codec = Codec::json();
        for i in 0..200 {
            check_same(&codec, &codec.encode(&sample::event(i)).unwrap());
        }
        let mut e = event("ü\"é", "acme", "t\\n", 1_795_651_199_999, 0.5);
        e.batch_id = Some("b\u{1F600}".into());
        check_same(&codec, &codec.encode(&e).unwrap());
        // Unusual but valid: an offset time, and fields in another order.
        let mut v: serde_json::Value = serde_json::to_value(&e).unwrap();
        v["ts"] = "2026-11-25T10:00:00.25+01:30".into();
        check_same(&codec, v.to_string().as_bytes());
        let reordered = r#"{"usage":{"cached_input_tokens":0,"output_tokens":2,"input_tokens":1},"latency_ms":3,"baseline_cost_usd":1.0,"cost_usd":0.1,"outcome":"timeout","deployment":"d","model":"m","provider":"p","category":"code","strategy":"latency-first","project":"pr","team":"te","business_unit":"bu","org":"o","ts":"2026-01-02T03:04:05Z","attempt":1,"job_id":"j","event_id":"x"}"#;
        check_same(&codec, reordered.as_bytes());
    }

    #[test]
    fn what_is_not_a_usage_event_is_refused_with_the_codecs_reason() {
        let codec = Codec::json();
        let good = codec.encode(&sample::event(1)).unwrap();
        let text = String::from_utf8(good.clone()).unwrap();
        for bad in [
            b"".to_vec(),
            b"{".to_vec(),
            vec![0xff, 0xfe],
            text.replace("\"auto\"", "\"smartest\"").into_bytes(),
            text.replace("\"extraction\"", "\"poetry\"").into_bytes(),
            text.replace("\"succeeded\"", "\"won\"").into_bytes(),
            text.replacen('{', "{\"extra\":1,", 1).into_bytes(),
            text.replace("\"attempt\":1", "\"attempt\":-1").into_bytes(),
        ] {
            check_same(&codec, &bad);
        }
        // Under the lenient policy, an unknown field is dropped, as by the codec.
        let lenient = Codec::for_topic(&TopicConfig {
            unknown_fields: UnknownFields::Ignore,
            ..TopicConfig::json("switchyard.usage")
        });
        check_same(&lenient, text.replacen('{', "{\"extra\":1,", 1).as_bytes());
        // Over the size limit.
        let small = Codec::for_topic(&TopicConfig {
            max_message_bytes: 64,
            ..TopicConfig::json("switchyard.usage")
        });
        check_same(&small, &good);
    }

    #[test]
    fn what_is_not_a_usage_event_keeps_its_key_bytes_and_kind() {
        let codec = Codec::json();
        let good = codec.encode(&sample::event(1)).unwrap();
        let mut chunk = RawChunk::with_capacity(4);
        chunk.push_keyed(0, 1, 1, Some(b"job-1"), &good);
        chunk.push_keyed(0, 2, 1, None, b"{");
        chunk.push_keyed(0, 3, 1, Some(b""), b"");
        chunk.push_keyed(0, 4, 1, Some(b"job-4"), &[0xff]);
        let got = decode_for_stores(&codec, "u", &chunk, false);
        assert!(matches!(got.messages[0].decoded, Decoded::Row { .. }));
        let invalid: Vec<(i64, &Undecodable)> = got
            .messages
            .iter()
            .filter_map(|m| match &m.decoded {
                Decoded::Invalid(u) => Some((m.offset, u.as_ref())),
                Decoded::Row { .. } => None,
            })
            .collect();
        let expected = [
            (2, "invalid_json", None, b"{".to_vec()),
            (3, "empty", Some(Vec::new()), Vec::new()),
            (4, "invalid_utf8", Some(b"job-4".to_vec()), vec![0xff]),
        ];
        assert_eq!(invalid.len(), expected.len());
        for ((offset, u), (want_offset, kind, key, payload)) in invalid.iter().zip(expected) {
            assert_eq!(*offset, want_offset);
            assert_eq!((u.kind, &u.key, &u.payload), (kind, &key, &payload));
        }
    }

    #[test]
    fn a_newer_writers_usage_event_is_a_row_when_unknown_fields_are_ignored() {
        let codec = Codec::json().ignoring_unknown_fields();
        let e = sample::event(3);
        let mut v = serde_json::to_value(&e).unwrap();
        v["region"] = "eu-west-1".into();
        v["usage"]["reasoning_tokens"] = 5.into();
        let payload = v.to_string();
        let got = decode_one(&codec, payload.as_bytes());
        assert_eq!(
            got.messages[0].decoded,
            Decoded::Row {
                id: key(&e.event_id)
            }
        );
        check_same(&codec, payload.as_bytes());
        check_same(&codec, &codec.encode(&e).unwrap());
    }

    #[test]
    fn a_chunk_splits_its_rows_by_day_and_org_in_message_order() {
        let codec = Codec::json();
        let day = 86_400_000;
        let events = [
            event("a", "acme", "t", 5 * day + 1, 0.1),
            event("b", "globex", "t", 5 * day + 2, 0.2),
            event("c", "acme", "t", 6 * day, 0.3),
            event("d", "acme", "t", 5 * day + 3, 0.4),
        ];
        let mut chunk = RawChunk::with_capacity(5);
        for (i, e) in events.iter().enumerate() {
            chunk.push(0, i as i64, 7, &codec.encode(e).unwrap());
        }
        chunk.push(1, 0, 7, b"not json");
        let got = decode_for_stores(&codec, "u", &chunk, false);
        assert!(got.clickhouse.is_none());
        let keys: Vec<(u16, &str, usize)> = got
            .parquet
            .blocks()
            .iter()
            .map(|b| (b.day, b.org.as_str(), b.batch.num_rows()))
            .collect();
        assert_eq!(keys, [(5, "acme", 2), (5, "globex", 1), (6, "acme", 1)]);
        // The n-th usage event is the n-th row.
        let mut row = 0;
        let blocks: Vec<Option<usize>> = got
            .messages
            .iter()
            .map(|m| match m.decoded {
                Decoded::Row { .. } => {
                    row += 1;
                    got.parquet.block_of(row - 1)
                }
                Decoded::Invalid(_) => None,
            })
            .collect();
        assert_eq!(blocks, [Some(0), Some(1), Some(2), Some(0), None]);
        assert!(got.messages.iter().all(|m| m.epoch == 7));
    }

    proptest! {
        /// Any event Switchyard writes decodes on the fast path to the codec's row.
        #[test]
        fn any_event_decodes_as_the_codec_does(
            id in "\\PC{1,40}",
            org in "[a-z\"\\\\é]{1,12}",
            reason in "\\PC{0,80}",
            ms in 0i64..4_102_444_800_000,
            tokens in (0u64..u64::MAX / 4, 0u64..1_000_000, 0u64..1_000_000),
            cost in 0.0f64..1000.0,
            batch in proptest::option::of("[a-z0-9_]{1,20}"),
        ) {
            let codec = Codec::json();
            let mut e = event(&id, &org, "team", ms, cost);
            e.routing_reason = reason;
            e.batch_id = batch;
            e.usage.input_tokens = tokens.0;
            e.usage.output_tokens = tokens.1;
            e.usage.cached_input_tokens = tokens.2;
            let payload = codec.encode(&e).unwrap();
            check_same(&codec, &payload);
            // Switchyard's own writer produces the canonical form.
            let ts = e.ts.to_rfc3339_opts(SecondsFormat::AutoSi, true);
            prop_assert_eq!(canonical_millis(&ts), Some(ms as u64));
        }
    }
}
