//! One conformance suite for every store's in-memory shape ([`RowSink`]),
//! written once and run per store: each store's tests read their shape back as
//! flat rows ([`ReadBack`]) and call [`row_sink_conformance!`], so the Parquet
//! blocks and the ClickHouse `RowBinary` are held to the same scenarios: rows
//! come back as they were written, in order, whatever their text or numbers;
//! and decoded events come back as the codec reads them.

use chrono::{TimeZone, Utc};
use switchyard_codec::Codec;
use switchyard_core::usage::UsageEvent;

use crate::decode::{Decoded, RawChunk, decode_chunk};
use crate::row::tests::event;
use crate::row::{RowRef, RowSink, UsageRow};
use crate::sample;

/// The topic every scenario reads from (a Parquet tree holds one topic, named
/// in its manifest, not in its rows).
pub(crate) const TOPIC: &str = "switchyard.usage";

/// A store's shape read back, for the suite.
pub(crate) trait ReadBack: RowSink + Sized {
    /// An empty shape with room for about `rows` rows.
    fn empty(rows: usize) -> Self;
    /// The rows held, as flat rows, in the order they were appended; `topic`
    /// is where they were read (for shapes that keep it elsewhere).
    fn read_back(self, topic: &str) -> Vec<UsageRow>;
}

/// Runs every scenario of the suite as a test of `$store`.
macro_rules! row_sink_conformance {
    ($store:ty) => {
        #[test]
        fn conformance_rows_come_back_as_written_in_order() {
            $crate::sinks::conformance::rows_come_back_as_written::<$store>();
        }

        #[test]
        fn conformance_decoded_events_come_back_as_the_codec_reads_them() {
            $crate::sinks::conformance::decoded_events_come_back_as_the_codec_reads_them::<$store>(
            );
        }

        #[test]
        fn conformance_a_store_given_nothing_holds_nothing() {
            $crate::sinks::conformance::a_store_given_nothing_holds_nothing::<$store>();
        }
    };
}
pub(crate) use row_sink_conformance;

/// Rows that probe the shapes: text with escapes, non-ASCII and lengths past
/// one LEB128 byte, empty optional fields, extreme numbers, and days and orgs
/// interleaved (the Parquet shape groups them).
fn probing_rows() -> Vec<UsageRow> {
    let day = 86_400_000;
    let mut rows = Vec::new();
    for (i, (org, ms)) in [
        ("acme", 5 * day + 1),
        ("globex", 5 * day + 2),
        ("acme", 6 * day),
        ("acme", 5 * day + 3),
        ("\"ü\\é\u{1F600}", 0),
        ("acme", 1_795_651_199_999),
    ]
    .into_iter()
    .enumerate()
    {
        let mut e = event(&format!("e{i}"), org, "t\\n\"x\"", ms, 0.125 * i as f64);
        if i % 2 == 0 {
            e.batch_id = Some(format!("batch-{i}"));
        }
        if i == 4 {
            e.routing_reason = "r".repeat(300);
            e.workload = String::new();
            e.chosen_model = String::new();
            e.usage.input_tokens = u64::MAX;
            e.latency_ms = u64::MAX;
            e.complexity = 1.0 / 3.0;
        }
        rows.push(UsageRow::from_event(
            e,
            TOPIC,
            i as i32 % 3,
            i64::MAX - 10 + i as i64,
        ));
    }
    rows
}

/// Rows appended one by one come back equal, in the order appended.
pub(crate) fn rows_come_back_as_written<S: ReadBack>() {
    let rows = probing_rows();
    let mut store = S::empty(rows.len());
    for (i, r) in rows.iter().enumerate() {
        store.append(&RowRef::of_row(r), i as u64);
    }
    assert_eq!(store.read_back(TOPIC), rows);
}

/// Decoding into the store, on the fast path or through the full codec, gives
/// the rows the codec's events make; messages that are not usage events add none.
pub(crate) fn decoded_events_come_back_as_the_codec_reads_them<S: ReadBack>() {
    let codec = Codec::json();
    let mut payloads: Vec<Vec<u8>> = (0..50)
        .map(|i| codec.encode(&sample::event(i)).unwrap())
        .collect();
    let mut odd = event("ü\"é", "acme", "t\\n", 1_795_651_199_999, 0.5);
    odd.batch_id = Some("b\u{1F600}".into());
    odd.ts = Utc
        .timestamp_millis_opt(1_700_000_000_250)
        .single()
        .unwrap();
    let mut offset_time = serde_json::to_value(&odd).unwrap();
    offset_time["ts"] = "2026-11-25T10:00:00.25+01:30".into();
    payloads.insert(7, codec.encode(&odd).unwrap());
    payloads.insert(20, offset_time.to_string().into_bytes());
    payloads.insert(30, b"not a usage event".to_vec());
    let mut chunk = RawChunk::with_capacity(payloads.len());
    for (i, p) in payloads.iter().enumerate() {
        chunk.push(i as i32 % 2, 100 + i as i64, 3, p);
    }

    let mut store = S::empty(chunk.len());
    let messages = decode_chunk(&codec, TOPIC, &chunk, &mut store);

    let expected: Vec<UsageRow> = payloads
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            let e = codec.decode::<UsageEvent>(p).ok()?;
            Some(UsageRow::from_event(e, TOPIC, i as i32 % 2, 100 + i as i64))
        })
        .collect();
    assert_eq!(expected.len(), payloads.len() - 1);
    let rows_decoded = messages
        .iter()
        .filter(|m| matches!(m.decoded, Decoded::Row { .. }))
        .count();
    assert_eq!(rows_decoded, expected.len());
    assert_eq!(store.read_back(TOPIC), expected);
}

/// An empty store reads back no rows.
pub(crate) fn a_store_given_nothing_holds_nothing<S: ReadBack>() {
    assert_eq!(S::empty(0).read_back(TOPIC), Vec::<UsageRow>::new());
    assert_eq!(S::empty(100).read_back(TOPIC), Vec::<UsageRow>::new());
}
