//! stdio framing (MCP "Transports: stdio"): messages are separated by `\n` and may not contain
//! one. A line longer than the limit is never buffered whole: its bytes are dropped as they
//! arrive and the line is reported once, with its length and its first [`PREFIX_BYTES`] bytes
//! (where the request's `id` almost always is), when its `\n` comes.

use memchr::memchr;

/// One framed unit of client input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its `\n` (and without a trailing `\r`).
    Line(Vec<u8>),
    /// A line of `len` bytes (without `\n`) that exceeded the limit; only its first
    /// [`PREFIX_BYTES`] bytes are kept, to read the request's id from.
    TooLong { len: usize, prefix: Vec<u8> },
}

/// How much of an over-long line is kept for [`Frame::TooLong`].
pub const PREFIX_BYTES: usize = 4096;

/// Splits a byte stream into lines of at most `max_len` bytes.
#[derive(Debug)]
pub struct LineFramer {
    max_len: usize,
    buf: Vec<u8>,
    /// `Some(n)`: the current line passed the limit after `n` bytes so far; discarding all
    /// but its first [`PREFIX_BYTES`] bytes, which `buf` keeps.
    discarding: Option<usize>,
}

impl LineFramer {
    /// A framer that accepts lines of up to `max_len` bytes.
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            buf: Vec::new(),
            discarding: None,
        }
    }

    /// Feeds bytes and appends every frame they complete to `out`, in order.
    pub fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Frame>) {
        while !bytes.is_empty() {
            let (chunk, rest, complete) = match memchr(b'\n', bytes) {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            if let Some(seen) = &mut self.discarding {
                *seen += chunk.len();
                let room = PREFIX_BYTES.saturating_sub(self.buf.len());
                self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            } else if self.buf.len() + chunk.len() > self.max_len {
                self.discarding = Some(self.buf.len() + chunk.len());
                let room = PREFIX_BYTES.saturating_sub(self.buf.len());
                self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                self.buf.truncate(PREFIX_BYTES);
                self.buf.shrink_to(PREFIX_BYTES);
            } else {
                self.buf.extend_from_slice(chunk);
            }
            if complete {
                out.push(self.finish_line());
            }
        }
    }

    /// End of input: a last line without `\n` still counts as a message.
    pub fn finish(&mut self, out: &mut Vec<Frame>) {
        if self.discarding.is_some() || !self.buf.is_empty() {
            out.push(self.finish_line());
        }
    }

    fn finish_line(&mut self) -> Frame {
        match self.discarding.take() {
            Some(len) => Frame::TooLong {
                len,
                prefix: core::mem::take(&mut self.buf),
            },
            None => {
                let mut line = core::mem::take(&mut self.buf);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Frame::Line(line)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, chunks: &[&[u8]]) -> Vec<Frame> {
        let mut framer = LineFramer::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            framer.push(chunk, &mut out);
        }
        framer.finish(&mut out);
        out
    }

    #[test]
    fn lines_are_reassembled_across_chunks() {
        assert_eq!(
            frames(100, &[b"{\"a\"", b":1}\n{}", b"\r\n"]),
            vec![
                Frame::Line(b"{\"a\":1}".to_vec()),
                Frame::Line(b"{}".to_vec())
            ]
        );
    }

    #[test]
    fn over_long_line_is_reported_with_its_length_and_start() {
        let long = [b'x'; 25];
        let out = frames(10, &[&long[..12], &long[12..], b"\nok\n"]);
        assert_eq!(
            out,
            vec![
                Frame::TooLong {
                    len: 25,
                    prefix: long.to_vec()
                },
                Frame::Line(b"ok".to_vec())
            ]
        );
    }

    #[test]
    fn over_long_line_keeps_only_its_prefix() {
        let mut line = b"{\"id\":3,".to_vec();
        line.resize(3 * PREFIX_BYTES, b'x');
        let out = frames(
            PREFIX_BYTES,
            &[
                &line[..10],
                &line[10..2 * PREFIX_BYTES],
                &line[2 * PREFIX_BYTES..],
                b"\n",
            ],
        );
        assert_eq!(
            out,
            vec![Frame::TooLong {
                len: 3 * PREFIX_BYTES,
                prefix: line[..PREFIX_BYTES].to_vec()
            }]
        );
    }

    #[test]
    fn line_of_exactly_the_limit_is_accepted() {
        assert_eq!(frames(3, &[b"abc\n"]), vec![Frame::Line(b"abc".to_vec())]);
    }

    #[test]
    fn last_line_without_newline_counts_at_eof() {
        assert_eq!(frames(10, &[b"{}"]), vec![Frame::Line(b"{}".to_vec())]);
    }
}
