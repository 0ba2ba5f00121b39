//! The sink's decoder threads: each takes a chunk of messages off a shared
//! queue, decodes it ([`decode_chunk`]) into the shape of every store the sink
//! writes, Parquet's Arrow blocks and, when ClickHouse is configured, its
//! `RowBinary`, and hands the result back to the writer through the chunk's own
//! reply slot, so results reach the writer in offset order.

use std::sync::{Mutex, mpsc};

use switchyard_codec::Codec;

use crate::decode::{DecodedMessage, RawChunk, decode_chunk};
use crate::row::{RowRef, RowSink};
use crate::sinks::clickhouse::ClickHouseRows;
use crate::sinks::parquet::block::{Blocks, BlocksBuilder};

/// A chunk for a decoder, and where its result goes.
pub(super) struct DecodeJob {
    pub(super) chunk: RawChunk,
    pub(super) reply: mpsc::SyncSender<DecodedChunk>,
}

/// A chunk turned into rows: per message what it was, and the rows of the
/// usage events in each store's shape (the n-th `Decoded::Row` is the n-th row
/// of each).
#[derive(Debug)]
pub struct DecodedChunk {
    /// Every message, in order.
    pub messages: Vec<DecodedMessage>,
    /// The rows as Parquet blocks, one per day and org.
    pub parquet: Blocks,
    /// The rows for ClickHouse, when it is written.
    pub clickhouse: Option<ClickHouseRows>,
    /// Failure to build a block (a bug, not bad input).
    pub error: Option<String>,
}

/// Each row of a chunk to every store the sink writes.
struct StoreRows {
    parquet: BlocksBuilder,
    clickhouse: Option<ClickHouseRows>,
}

impl RowSink for StoreRows {
    fn append(&mut self, row: &RowRef<'_>, epoch: u64) {
        if let Some(clickhouse) = self.clickhouse.as_mut() {
            clickhouse.append(row, epoch);
        }
        self.parquet.append(row, epoch);
    }
}

/// Decodes a chunk read from `topic` into Parquet blocks and, with
/// `clickhouse`, ClickHouse rows: what a decoder thread does with each chunk.
pub fn decode_for_stores(
    codec: &Codec,
    topic: &str,
    chunk: &RawChunk,
    clickhouse: bool,
) -> DecodedChunk {
    let mut rows = StoreRows {
        parquet: BlocksBuilder::with_capacity(chunk.len()),
        clickhouse: clickhouse.then(|| ClickHouseRows::with_capacity(chunk.len())),
    };
    let messages = decode_chunk(codec, topic, chunk, &mut rows);
    let (parquet, error) = match rows.parquet.finish() {
        Ok(blocks) => (blocks, None),
        Err(e) => (
            Blocks::default(),
            Some(format!("building a Parquet record batch: {e}")),
        ),
    };
    DecodedChunk {
        messages,
        parquet,
        clickhouse: rows.clickhouse,
        error,
    }
}

/// A decoder thread's loop: decodes chunks from the shared queue until it is
/// closed.
pub(super) fn run(
    work: &Mutex<mpsc::Receiver<DecodeJob>>,
    codec: &Codec,
    topic: &str,
    clickhouse: bool,
) {
    loop {
        let job = match work.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let decoded = decode_for_stores(codec, topic, &job.chunk, clickhouse);
        let _ = job.reply.send(decoded);
    }
}
