//! The first, streaming pass over a batch file: detect its format, turn every
//! line into a job, check it (structure, `custom_id` unique, size on the jobs
//! topic), hash the file, and record which lines are refused. Nothing is sent:
//! `submit` produces the accepted lines in a second pass, and `estimate` prices
//! each one as this pass hands it over, so both refuse exactly the same lines.
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
use crate::formats::{self, LineError, LineSettings, META_LINE, ParsedLine};
use crate::lines::{Line, LineReader};
use crate::progress::{Progress, Unit};
use crate::{Error, Result};

/// Refusals kept in memory to show people; all of them go to the rejects file
/// (and the error says how many more there are).
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
    /// Where every refusal was written, if asked and there was any (an empty
    /// rejects file is never created).
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

/// Runs the first pass over `path`, showing progress as `step`; hands every
/// accepted line to `accept` as it goes. With `rejects`, every refused line is
/// written there (the file is created with the first one).
pub fn validate_file(
    path: &Path,
    settings: &LineSettings,
    jobs_topic: &TopicConfig,
    rejects: Option<&Path>,
    progress: &dyn Progress,
    step: &str,
    accept: &mut dyn FnMut(ParsedLine),
) -> Result<Validation> {
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map(|m| m.len()).ok();
    let mut reader = LineReader::new(file, max_line_bytes(jobs_topic));
    let mut checker = LineChecker::new(settings, jobs_topic);
    let mut rejects = RejectsFile::new(rejects);
    let mut v = Validation {
        format: BatchFormat::Native,
        lines: 0,
        accepted: 0,
        invalid: 0,
        sha256: String::new(),
        bytes: 0,
        examples: Vec::new(),
        refused: BitSet::default(),
        rejects_file: None,
    };
    progress.start(step, Unit::Bytes, size);
    while let Some(line) = reader.next_line().map_err(read_err)? {
        let (number, outcome, text) = match line {
            Line::TooLong { number, len } => (
                number,
                Err(LineError::new(format!(
                    "line is {len} bytes; the jobs topic accepts messages of {} bytes",
                    jobs_topic.max_message_bytes
                ))),
                None,
            ),
            Line::Text { bytes, .. } if bytes.iter().all(u8::is_ascii_whitespace) => continue,
            Line::Text { number, bytes } => (number, checker.check(number, bytes), Some(bytes)),
        };
        v.lines += 1;
        match outcome {
            Ok(parsed) => {
                v.accepted += 1;
                accept(parsed);
            }
            Err(e) => {
                v.refuse(number, &e);
                rejects.write(number, &e, text.unwrap_or_default())?;
            }
        }
        if v.lines.is_multiple_of(1024) {
            progress.advance(reader.bytes_read());
        }
    }
    progress.advance(reader.bytes_read());
    progress.finish();
    v.rejects_file = rejects.close()?;
    v.bytes = reader.bytes_read();
    v.sha256 = reader.finish();
    match checker.format {
        Some((f, _)) => v.format = f,
        None => {
            return Err(Error::UnknownFormat {
                path: path.to_owned(),
            });
        }
    }
    Ok(v)
}

impl Validation {
    /// Counts a refused line and keeps the first reasons to show.
    fn refuse(&mut self, number: u64, e: &LineError) {
        self.invalid += 1;
        self.refused.insert(number);
        if self.examples.len() < EXAMPLES_KEPT {
            self.examples.push((number, e.reason.clone()));
        }
    }
}

/// Judges the lines of one file: learns its format from the first line that
/// has one, then checks each line in it and that its `custom_id` is new.
struct LineChecker<'a> {
    settings: &'a LineSettings,
    jobs_topic: &'a TopicConfig,
    codec: Codec,
    /// The file's format, and the line it was detected on.
    format: Option<(BatchFormat, u64)>,
    /// 128-bit hash of each `custom_id` seen, and its line.
    ids: HashMap<u128, u64>,
    hashers: (RandomState, RandomState),
}

impl<'a> LineChecker<'a> {
    fn new(settings: &'a LineSettings, jobs_topic: &'a TopicConfig) -> Self {
        Self {
            settings,
            jobs_topic,
            codec: Codec::for_topic(jobs_topic),
            format: None,
            ids: HashMap::new(),
            hashers: (RandomState::new(), RandomState::new()),
        }
    }

    /// Line `number` as a job, or why it is refused.
    fn check(&mut self, number: u64, bytes: &[u8]) -> Result<ParsedLine, LineError> {
        if self.format.is_none() {
            self.format = formats::detect(bytes).map(|f| (f, number));
        }
        let Some((format, detected_at)) = self.format else {
            // Before the format is known: say why JSON is broken, if it is.
            return Err(formats::syntax_error(bytes).unwrap_or_else(|| LineError::new(
                "not a batch request: expected a JSON object with custom_id and body (OpenAI), custom_id and params (Anthropic), or job_id and request (native)",
            )));
        };
        let parsed = check_line(
            format,
            detected_at,
            bytes,
            self.settings,
            &self.codec,
            self.jobs_topic,
        )?;
        self.claim_id(number, parsed)
    }

    /// Accepts the line if no earlier line used its `custom_id`.
    fn claim_id(&mut self, number: u64, parsed: ParsedLine) -> Result<ParsedLine, LineError> {
        let custom_id = &parsed.custom_id;
        let key = (
            self.hashers.0.hash_one(custom_id),
            self.hashers.1.hash_one(custom_id),
        );
        let key = (u128::from(key.0) << 64) | u128::from(key.1);
        match self.ids.entry(key) {
            Entry::Vacant(e) => {
                e.insert(number);
                Ok(parsed)
            }
            Entry::Occupied(e) => Err(LineError::new(format!(
                "custom_id `{custom_id}` is already used on line {}; custom_id must be unique within a batch",
                e.get()
            ))
            .with_id(custom_id)),
        }
    }
}

/// Where refused lines go, when asked: created with the first refusal, so an
/// empty rejects file never appears.
struct RejectsFile<'a> {
    path: Option<&'a Path>,
    out: Option<BufWriter<File>>,
}

impl<'a> RejectsFile<'a> {
    fn new(path: Option<&'a Path>) -> Self {
        Self { path, out: None }
    }

    /// Writes one refusal (nothing when no rejects file was asked for).
    fn write(&mut self, number: u64, e: &LineError, text: &[u8]) -> Result<()> {
        let Some(p) = self.path else {
            return Ok(());
        };
        let write_err = |source| Error::Write {
            path: p.to_owned(),
            source,
        };
        let out = match self.out.as_mut() {
            Some(out) => out,
            None => self
                .out
                .insert(BufWriter::new(File::create(p).map_err(write_err)?)),
        };
        let reject = Reject {
            line: number,
            custom_id: e.custom_id.as_deref(),
            reason: &e.reason,
            input: String::from_utf8_lossy(text),
        };
        serde_json::to_writer(&mut *out, &reject)
            .map_err(std::io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(write_err)
    }

    /// Flushes the file; gives its path if anything was refused. When nothing
    /// was, a rejects file an earlier run left at the path is removed.
    fn close(self) -> Result<Option<PathBuf>> {
        match (self.out, self.path) {
            (Some(mut out), Some(p)) => {
                out.flush().map_err(|source| Error::Write {
                    path: p.to_owned(),
                    source,
                })?;
                Ok(Some(p.to_owned()))
            }
            (None, Some(p)) => {
                crate::error::remove_stale(p)?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

/// Checks one line of a file in `format`; returns it as a job.
fn check_line(
    format: BatchFormat,
    detected_at: u64,
    bytes: &[u8],
    settings: &LineSettings,
    codec: &Codec,
    jobs_topic: &TopicConfig,
) -> Result<ParsedLine, LineError> {
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
    // The real job id and line number add under 100 bytes to what is checked
    // here, and the batch's worst case, when it is priced, under 50 more.
    const ID_AND_LINE_SLACK: usize = 192;
    if bytes.len() + 4096 > jobs_topic.max_message_bytes {
        let mut job = parsed.job.clone();
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
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SkipInvalid;
    use crate::formats::ModelPins;
    use crate::progress::NoProgress;
    use switchyard_core::config::Topics;

    fn settings() -> LineSettings {
        LineSettings {
            project: "acme/retail/support/ticket-triage".into(),
            strategy: None,
            workload: None,
            mode: None,
            pins: ModelPins::default(),
        }
    }

    fn line(id: &str) -> String {
        format!(
            r#"{{"custom_id":"{id}","method":"POST","url":"/v1/chat/completions","body":{{"messages":[{{"role":"user","content":"Classify: I was charged twice."}}],"max_tokens":5}}}}"#
        )
    }

    fn run(text: &str, rejects: Option<&Path>) -> (Validation, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batch.jsonl");
        std::fs::write(&path, text).unwrap();
        let mut accepted = Vec::new();
        let v = validate_file(
            &path,
            &settings(),
            &Topics::default().jobs,
            rejects,
            &NoProgress,
            "validating",
            &mut |p| accepted.push(p.custom_id),
        )
        .unwrap();
        (v, accepted)
    }

    #[test]
    fn no_rejects_file_when_every_line_is_valid() {
        let dir = tempfile::tempdir().unwrap();
        let rejects = dir.path().join("batch.rejects.jsonl");
        std::fs::write(&rejects, "left by an earlier run\n").unwrap();
        let (v, accepted) = run(&format!("{}\n\n{}\n", line("a"), line("b")), Some(&rejects));
        assert_eq!((v.lines, v.accepted, v.invalid), (2, 2, 0));
        assert_eq!(accepted, ["a", "b"]);
        assert_eq!(v.rejects_file, None);
        assert!(
            !rejects.exists(),
            "a rejects file is left though nothing was refused"
        );
        // With a refusal the file appears, holding it.
        let (v, accepted) = run(&format!("{}\n{}\n", line("a"), line("a")), Some(&rejects));
        assert_eq!(accepted, ["a"]);
        assert_eq!(v.rejects_file.as_deref(), Some(rejects.as_path()));
        let text = std::fs::read_to_string(&rejects).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains(r#""line":2"#), "{text}");
    }

    #[test]
    fn a_broken_first_line_is_reported_as_broken_json() {
        let (v, accepted) = run(
            &format!("{{\"custom_id\": \"a\", \"method\": \n{}\n", line("b")),
            None,
        );
        assert_eq!(accepted, ["b"]);
        assert_eq!(v.examples.len(), 1);
        let (number, reason) = &v.examples[0];
        assert_eq!(*number, 1);
        assert!(reason.starts_with("invalid JSON at column"), "{reason}");
        // Valid JSON that is no known request still says what a line must be.
        let (v, _) = run(&format!("{{\"hello\": 1}}\n{}\n", line("b")), None);
        assert!(
            v.examples[0].1.starts_with("not a batch request"),
            "{:?}",
            v.examples
        );
    }

    #[test]
    fn the_error_counts_every_invalid_line_and_says_where_they_all_go() {
        let mut text = String::new();
        for i in 0..30 {
            text.push_str(&line("same"));
            text.push('\n');
            if i == 0 {
                text.push_str(&line("other"));
                text.push('\n');
            }
        }
        let (v, _) = run(&text, None);
        assert_eq!((v.lines, v.invalid), (31, 29));
        assert_eq!(v.examples.len(), EXAMPLES_KEPT);
        let err = Error::InvalidLines {
            path: "batch.jsonl".into(),
            lines: v.lines,
            invalid: v.invalid,
            examples: v.examples.clone(),
            skip: SkipInvalid::Submit {
                rejects: "batch.jsonl.rejects.jsonl".into(),
            },
        }
        .to_string();
        assert!(
            err.starts_with("29 of 31 lines of batch.jsonl are invalid; nothing was submitted:\n  line 3: custom_id `same` is already used on line 1"),
            "{err}"
        );
        assert!(err.contains("\n  … and 9 more\n"), "{err}");
        assert!(
            err.ends_with("pass --skip-invalid to submit the 2 valid lines and write every invalid one, with its line number and reason, to batch.jsonl.rejects.jsonl"),
            "{err}"
        );
        let err = Error::InvalidLines {
            path: "batch.jsonl".into(),
            lines: v.lines,
            invalid: v.invalid,
            examples: v.examples,
            skip: SkipInvalid::Estimate,
        }
        .to_string();
        assert!(err.contains("nothing was priced"), "{err}");
        assert!(
            err.ends_with("pass --skip-invalid to price the 2 valid lines"),
            "{err}"
        );
    }
}
