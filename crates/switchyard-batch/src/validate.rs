//! The first, streaming pass over a batch file: detect its format, turn every
//! line into a job, check it (structure, `custom_id` unique, size on the jobs
//! topic), hash the file, and record which lines are refused. Nothing is sent.
//! Memory: one bit per line for refusals plus about 40 bytes per line for the
//! `custom_id` uniqueness check (a 128-bit hash and its line number).

use std::collections::HashMap;
use std::collections::hash_map::{Entry, RandomState};
use std::fs::File;
use std::hash::BuildHasher;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use switchyard_codec::Codec;
use switchyard_core::batch::BatchFormat;
use switchyard_core::config::TopicConfig;

use crate::bits::BitSet;
use crate::formats::{self, LineError, LineSettings, META_LINE};
use crate::lines::{Line, LineReader};
use crate::progress::{Progress, Unit};
use crate::{Error, Result};

/// Refusals kept in memory to show people; all of them go to the rejects file.
pub const EXAMPLES_KEPT: usize = 20;

/// What the first pass found.
#[derive(Debug, Clone)]
pub struct Validation {
    /// The file's format.
    pub format: BatchFormat,
    /// Non-blank lines read.
    pub lines: u64,
    /// Lines that became jobs.
    pub accepted: u64,
    /// Lines refused.
    pub invalid: u64,
    /// Hex SHA-256 of the whole file.
    pub sha256: String,
    /// File size.
    pub bytes: u64,
    /// The first refusals: line number and reason.
    pub examples: Vec<(u64, String)>,
    /// Line numbers refused.
    pub refused: BitSet,
    /// Where every refusal was written, if asked.
    pub rejects_file: Option<PathBuf>,
}

/// One line of the rejects file.
#[derive(Serialize)]
struct Reject<'a> {
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    custom_id: Option<&'a str>,
    reason: &'a str,
    input: std::borrow::Cow<'a, str>,
}

/// Longest line read, for a topic whose messages may be `max_message_bytes`.
pub fn max_line_bytes(jobs_topic: &TopicConfig) -> usize {
    jobs_topic.max_message_bytes.saturating_mul(4).max(1 << 20)
}

/// Runs the first pass over `path`. With `rejects`, every refused line is written there.
pub fn validate_file(
    path: &Path,
    settings: &LineSettings,
    jobs_topic: &TopicConfig,
    rejects: Option<&Path>,
    progress: &dyn Progress,
) -> Result<Validation> {
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map(|m| m.len()).ok();
    let mut reader = LineReader::new(file, max_line_bytes(jobs_topic));
    let mut rejects_out = match rejects {
        Some(p) => Some((
            BufWriter::new(File::create(p).map_err(|source| Error::Write {
                path: p.to_owned(),
                source,
            })?),
            p.to_owned(),
        )),
        None => None,
    };
    let codec = Codec::for_topic(jobs_topic);
    let hashers = (RandomState::new(), RandomState::new());
    let mut ids: HashMap<u128, u64> = HashMap::new();
    let mut format: Option<(BatchFormat, u64)> = None;
    let mut v = Validation {
        format: BatchFormat::Native,
        lines: 0,
        accepted: 0,
        invalid: 0,
        sha256: String::new(),
        bytes: 0,
        examples: Vec::new(),
        refused: BitSet::default(),
        rejects_file: rejects.map(Path::to_owned),
    };
    progress.start("validating", Unit::Bytes, size);
    loop {
        let (number, outcome, text) = match reader.next_line().map_err(read_err)? {
            None => break,
            Some(Line::TooLong { number, len }) => (
                number,
                Err(LineError::new(format!(
                    "line is {len} bytes; the jobs topic accepts messages of {} bytes",
                    jobs_topic.max_message_bytes
                ))),
                None,
            ),
            Some(Line::Text { number, bytes }) => {
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                if format.is_none() {
                    format = formats::detect(bytes).map(|f| (f, number));
                }
                let outcome = match format {
                    None => Err(LineError::new(
                        "not a batch request: expected a JSON object with custom_id and body (OpenAI), custom_id and params (Anthropic), or job_id and request (native)",
                    )),
                    Some((f, detected_at)) => check_line(
                        f,
                        detected_at,
                        bytes,
                        settings,
                        &codec,
                        jobs_topic,
                    )
                    .and_then(|custom_id| {
                        let key = (
                            hashers.0.hash_one(&custom_id),
                            hashers.1.hash_one(&custom_id),
                        );
                        let key = (u128::from(key.0) << 64) | u128::from(key.1);
                        match ids.entry(key) {
                            Entry::Vacant(e) => {
                                e.insert(number);
                                Ok(())
                            }
                            Entry::Occupied(e) => Err(LineError::new(format!(
                                "custom_id `{custom_id}` is already used on line {}; custom_id must be unique within a batch",
                                e.get()
                            ))
                            .with_id(&custom_id)),
                        }
                    }),
                };
                (number, outcome, Some(bytes))
            }
        };
        v.lines += 1;
        match outcome {
            Ok(()) => v.accepted += 1,
            Err(e) => {
                v.invalid += 1;
                v.refused.insert(number);
                if v.examples.len() < EXAMPLES_KEPT {
                    v.examples.push((number, e.reason.clone()));
                }
                if let Some((out, p)) = rejects_out.as_mut() {
                    let reject = Reject {
                        line: number,
                        custom_id: e.custom_id.as_deref(),
                        reason: &e.reason,
                        input: String::from_utf8_lossy(text.unwrap_or_default()),
                    };
                    serde_json::to_writer(&mut *out, &reject)
                        .map_err(std::io::Error::from)
                        .and_then(|()| out.write_all(b"\n"))
                        .map_err(|source| Error::Write {
                            path: p.clone(),
                            source,
                        })?;
                }
            }
        }
        if v.lines.is_multiple_of(1024) {
            progress.advance(reader.bytes_read());
        }
    }
    progress.advance(reader.bytes_read());
    progress.finish();
    if let Some((mut out, p)) = rejects_out {
        out.flush()
            .map_err(|source| Error::Write { path: p, source })?;
    }
    v.bytes = reader.bytes_read();
    v.sha256 = reader.finish();
    match format {
        Some((f, _)) => v.format = f,
        None => {
            return Err(Error::UnknownFormat {
                path: path.to_owned(),
            });
        }
    }
    Ok(v)
}

/// Checks one line of a file in `format`; returns its `custom_id`.
fn check_line(
    format: BatchFormat,
    detected_at: u64,
    bytes: &[u8],
    settings: &LineSettings,
    codec: &Codec,
    jobs_topic: &TopicConfig,
) -> Result<String, LineError> {
    let parsed = formats::parse_line(format, bytes, settings).map_err(|e| {
        match formats::detect(bytes) {
            Some(other) if other != format => LineError {
                reason: format!(
                    "this line is in the {} format but the file is {} (detected on line {detected_at})",
                    other.as_str(),
                    format.as_str()
                ),
                ..e
            },
            _ => e,
        }
    })?;
    // The real job id and line number add under 100 bytes to what is checked here.
    const ID_AND_LINE_SLACK: usize = 128;
    if bytes.len() + 4096 > jobs_topic.max_message_bytes {
        let mut job = parsed.job;
        job.metadata
            .insert(META_LINE.to_owned(), u64::MAX.to_string());
        let encoded = codec
            .encode(&job)
            .map_err(|e| LineError::new(e.to_string()).with_id(&parsed.custom_id))?;
        if encoded.len() + ID_AND_LINE_SLACK > jobs_topic.max_message_bytes {
            return Err(LineError::new(format!(
                "the job encodes to {} bytes; the jobs topic accepts {}",
                encoded.len() + ID_AND_LINE_SLACK,
                jobs_topic.max_message_bytes
            ))
            .with_id(&parsed.custom_id));
        }
    }
    Ok(parsed.custom_id)
}
