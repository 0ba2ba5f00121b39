//! Streaming a batch file line by line, with line numbers, a cap on line length
//! (a file without newlines must not be read into memory whole) and the SHA-256
//! of every byte read, which names the batch.

use std::io::{BufRead, BufReader, Read};

use sha2::{Digest, Sha256};

/// One physical line.
pub enum Line<'a> {
    /// A line within the cap, without its line ending.
    Text {
        /// 1-based line number.
        number: u64,
        /// The line's bytes.
        bytes: &'a [u8],
    },
    /// A line longer than the cap; its bytes were hashed and skipped.
    TooLong {
        /// 1-based line number.
        number: u64,
        /// Its length in bytes.
        len: u64,
    },
}

/// Reads lines of at most `max_len` bytes, hashing everything.
pub struct LineReader<R> {
    inner: BufReader<R>,
    hasher: Sha256,
    number: u64,
    max_len: usize,
    buf: Vec<u8>,
    bytes_read: u64,
}

impl<R: Read> LineReader<R> {
    /// Wraps a reader.
    pub fn new(inner: R, max_len: usize) -> Self {
        Self {
            inner: BufReader::with_capacity(256 << 10, inner),
            hasher: Sha256::new(),
            number: 0,
            max_len,
            buf: Vec::with_capacity(4096),
            bytes_read: 0,
        }
    }

    /// Bytes consumed so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next line, or `None` at the end of the input.
    pub fn next_line(&mut self) -> std::io::Result<Option<Line<'_>>> {
        self.buf.clear();
        let mut len: u64 = 0;
        let mut any = false;
        loop {
            let available = self.inner.fill_buf()?;
            if available.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (chunk, used, done) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            len += chunk.len() as u64;
            if len <= self.max_len as u64 {
                self.buf.extend_from_slice(chunk);
            }
            self.hasher.update(&available[..used]);
            self.inner.consume(used);
            self.bytes_read += used as u64;
            if done {
                break;
            }
        }
        self.number += 1;
        if len > self.max_len as u64 {
            return Ok(Some(Line::TooLong {
                number: self.number,
                len,
            }));
        }
        let mut bytes = self.buf.as_slice();
        if let Some(stripped) = bytes.strip_suffix(b"\r") {
            bytes = stripped;
        }
        if self.number == 1
            && let Some(stripped) = bytes.strip_prefix(b"\xEF\xBB\xBF")
        {
            bytes = stripped;
        }
        Ok(Some(Line::Text {
            number: self.number,
            bytes,
        }))
    }

    /// The hex SHA-256 of everything read.
    pub fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &[u8], max: usize) -> (Vec<String>, String) {
        let mut r = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            out.push(match l {
                Line::Text { number, bytes } => {
                    format!("{number}:{}", String::from_utf8_lossy(bytes))
                }
                Line::TooLong { number, len } => format!("{number}:too long {len}"),
            });
        }
        (out, r.finish())
    }

    #[test]
    fn numbers_lines_strips_endings_and_caps_length() {
        let (lines, sha) = collect(b"\xEF\xBB\xBFa\r\n\nbbbbbbbb\nc", 5);
        assert_eq!(lines, ["1:a", "2:", "3:too long 8", "4:c"]);
        assert_eq!(
            sha,
            hex::encode(Sha256::digest(b"\xEF\xBB\xBFa\r\n\nbbbbbbbb\nc"))
        );
        let (lines, _) = collect(b"", 4);
        assert!(lines.is_empty());
        let (lines, _) = collect(b"x\n", 4);
        assert_eq!(lines, ["1:x"]);
    }
}
