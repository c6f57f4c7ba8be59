//! A task's output buffer: what it printed, as numbered lines, within a byte budget.
//!
//! [`LogBuffer`] owns the raw bytes a task wrote to stdout and stderr, cut into lines, and
//! answers the `logs`, `status` and `wait` tools from them. It never does I/O, never reads a
//! clock and never decodes text at write time: bytes are stored as they arrived, and decoded
//! (lossy UTF-8), stripped of ANSI escape sequences and collapsed at carriage returns only when
//! they are read, by [`render`].
//!
//! # Lines and cursors
//! - A line is the bytes up to a `\n`, without the `\n` and without one `\r` just before it
//!   (CRLF). The end of a stream ([`LogBuffer::close`]) also ends a line.
//! - A line longer than [`LogLimits::max_line_bytes`] is split into several lines of at most
//!   that many bytes. A cut never falls inside a UTF-8 character that starts at most 3 bytes
//!   before it: the cut backs off to that character's first byte instead. The cut looks at no
//!   byte past it and happens as soon as those bytes are known, so lines do not depend on how
//!   the output was chunked. A split may cut an ANSI escape sequence in two; its halves then
//!   render as text.
//! - Every complete line gets an absolute number, its *cursor*: 0, 1, 2, … in order of
//!   completion, shared by stdout and stderr, never reused (not even after eviction or a
//!   restart of the task).
//! - The bytes after a stream's last `\n` are its *pending partial line*. It has no number yet;
//!   [`LogBuffer::read`] shows it flagged `partial`, numbered as if it completed next.
//!
//! # Memory
//! The retained complete lines cost their text bytes plus [`INDEX_ENTRY_BYTES`] each (the line
//! index); that cost never exceeds [`LogLimits::budget_bytes`]: the oldest lines are evicted to
//! make room and counted in [`LogBuffer::dropped_lines`]. A line whose cost alone exceeds the
//! budget is dropped as soon as it completes (with every older line, so that retained lines stay
//! contiguous). The two pending partial lines are *not* part of the budget; each holds at most
//! `max_line_bytes + 1` bytes between calls (`+ 2` while a push is split), and its allocation
//! is freed by [`LogBuffer::close`].
//!
//! Nothing is allocated until output arrives. Allocated capacity grows geometrically but is
//! capped at `budget_bytes` for the text ring and at `budget_bytes` for the index, so a
//! buffer's memory stays near its budget (at worst about twice it, after a run of long lines
//! followed by a run of empty ones).

use core::ops::Range;
use std::borrow::Cow;
use std::collections::VecDeque;

use crate::process::Stream;

/// The regular expressions [`Query::grep`] takes (the `regex` crate's), re-exported so that
/// callers need not depend on the same `regex` version themselves.
pub use regex::Regex;

/// How many lines [`LogBuffer::read`] returns when the query has neither `since`, `head` nor
/// `tail` (the `logs` tool's default).
pub const DEFAULT_TAIL_LINES: usize = 100;

/// The default bound on the text returned by one read, in bytes (the `logs` tool's default).
pub const DEFAULT_MAX_BYTES: usize = 32 << 10;

/// Bytes one retained line costs on top of its text: the size of its line-index entry.
pub const INDEX_ENTRY_BYTES: usize = size_of::<IndexEntry>();

/// The two bounds of one buffer. Both in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// Most bytes the retained complete lines may cost: their text plus
    /// [`INDEX_ENTRY_BYTES`] per line. Older lines are evicted to stay within it.
    /// Should be well above `max_line_bytes`; a line that cannot fit is dropped at once.
    pub budget_bytes: usize,
    /// Longest line stored as one line (not counting the `\n` and a CRLF's `\r`); longer
    /// output is split into several lines. 0 is treated as 1.
    pub max_line_bytes: usize,
}

impl Default for LogLimits {
    /// 4 MiB budget, 64 KiB lines (the server's defaults).
    fn default() -> Self {
        Self {
            budget_bytes: 4 << 20,
            max_line_bytes: 64 << 10,
        }
    }
}

/// One task's output: a byte ring of retained lines, their index, and a pending partial line
/// per stream. See the [module docs](self) for the rules.
#[derive(Clone, Debug)]
pub struct LogBuffer {
    limits: LogLimits,
    /// The texts of the retained complete lines, oldest first, back to back (no separators).
    text: VecDeque<u8>,
    /// One entry per retained complete line, oldest first; `index[i]` is line
    /// `first_retained() + i`.
    index: VecDeque<IndexEntry>,
    /// Offset of `text[0]` in the stream of all bytes ever stored in `text` (evicted included).
    text_start: u64,
    /// Number the next complete line gets; also the count of complete lines so far.
    next_cursor: u64,
    /// Raw bytes ever pushed, newlines included.
    total_bytes: u64,
    /// Bytes after the last `\n` of stdout (`[0]`) and stderr (`[1]`).
    pending: [Vec<u8>; 2],
}

/// A line-index entry: the offset one past the line's last byte in the stream of all stored
/// text (the line starts where the previous one ends), with the stream in the low bit.
/// Packed into 8 bytes because short lines (`seq`) would otherwise cost more in index than text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IndexEntry(u64);

impl IndexEntry {
    fn new(end: u64, stream: Stream) -> Self {
        let bit = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        // Offsets stay below 2^63: that is 8 exabytes of output.
        Self((end << 1) | bit)
    }

    fn end(self) -> u64 {
        self.0 >> 1
    }

    fn stream(self) -> Stream {
        if self.0 & 1 == 0 {
            Stream::Stdout
        } else {
            Stream::Stderr
        }
    }
}

/// What to read. Line numbers are cursors (see the [module docs](self)); sizes are bytes.
///
/// Selection, in order:
/// 1. Candidates: the retained complete lines numbered `≥ since` (all when `since` is `None`),
///    then the pending partial lines (stdout's, then stderr's) whose number is `≥ since`.
/// 2. Filters: `stream`, then `grep`, matched against the line's text as returned (so after
///    ANSI stripping unless `raw`).
/// 3. Count: `tail` keeps the last N matching lines, `head` the first N. With both, `tail`
///    applies first and `head` then takes the first lines of that window ("from 100 lines before
///    the end, show 10"). With none of `since`, `head`, `tail`: the last
///    [`DEFAULT_TAIL_LINES`].
/// 4. Size: at most `max_bytes` of text in total, cut at line boundaries. Reading backward
///    (`tail` without `head`, or the default) drops the oldest lines; reading forward (`since`
///    or `head`) drops the newest, and [`Page::next_cursor`] resumes at the first line left
///    out. If the first line kept is longer than `max_bytes` on its own, it is returned cut
///    at a character boundary (its rest is not shown again).
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// Only lines numbered `≥ since` (pass the previous [`Page::next_cursor`]).
    pub since: Option<u64>,
    /// Only the last N matching lines.
    pub tail: Option<usize>,
    /// Only the first N matching lines.
    pub head: Option<usize>,
    /// Only lines whose returned text matches.
    pub grep: Option<&'a Regex>,
    /// Only lines of this stream; `None` means both.
    pub stream: Option<Stream>,
    /// Bound on the total length of the returned texts, in bytes (UTF-8).
    pub max_bytes: usize,
    /// Keep ANSI escape sequences and carriage returns (see [`render`]).
    pub raw: bool,
}

impl Default for Query<'_> {
    /// The `logs` tool's defaults: last 100 lines of both streams, 32 KiB, rendered.
    fn default() -> Self {
        Self {
            since: None,
            tail: None,
            head: None,
            grep: None,
            stream: None,
            max_bytes: DEFAULT_MAX_BYTES,
            raw: false,
        }
    }
}

/// One line as shown to a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The line's cursor. For a partial line, the number it would get if it completed next.
    pub n: u64,
    /// The stream it was written to.
    pub stream: Stream,
    /// The rendered text (see [`render`]), without the line ending.
    pub text: String,
    /// The stream's pending partial line: no `\n` yet, may still grow.
    pub partial: bool,
}

/// The answer to one [`LogBuffer::read`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The selected lines, in increasing `n`.
    pub lines: Vec<Line>,
    /// The `since` for the next read so that no line is missed or repeated: the buffer's
    /// [`LogBuffer::next_cursor`], or, when a forward read (`since` or `head`) stopped early
    /// because of `head` or `max_bytes`, the number of the first complete line it did not
    /// return. Partial lines never advance it.
    pub next_cursor: u64,
    /// Lines in `[since, first_retained)`: asked for, but already evicted. Evicted lines are
    /// counted whether or not they would have matched `stream` or `grep` (their text is gone).
    /// 0 without `since`.
    pub skipped: u64,
    /// Some selected line was left out, or cut, to respect `max_bytes`.
    pub truncated: bool,
}

impl LogBuffer {
    /// An empty buffer. Allocates nothing until output arrives.
    pub fn new(limits: LogLimits) -> Self {
        Self {
            limits,
            text: VecDeque::new(),
            index: VecDeque::new(),
            text_start: 0,
            next_cursor: 0,
            total_bytes: 0,
            pending: [Vec::new(), Vec::new()],
        }
    }

    /// The limits this buffer was made with.
    pub fn limits(&self) -> LogLimits {
        self.limits
    }

    /// Appends raw output of `stream`, in any chunking. Returns the numbers of the lines this
    /// call completed (empty when it completed none); some of them may already be evicted if
    /// the chunk was larger than the budget.
    pub fn push(&mut self, stream: Stream, bytes: &[u8]) -> Range<u64> {
        let first = self.next_cursor;
        self.total_bytes = self.total_bytes.saturating_add(bytes.len() as u64);
        let mut rest = bytes;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            let (line, after) = rest.split_at(i);
            self.finish_line(stream, line);
            rest = after.get(1..).unwrap_or_default();
        }
        self.extend_pending(stream, rest);
        first..self.next_cursor
    }

    /// End of `stream` (EOF on its pipe): its pending partial line, if any, becomes a complete
    /// line. Returns the numbers of the lines completed (at most one). Output pushed to the
    /// stream later (a restarted task) starts a new line.
    pub fn close(&mut self, stream: Stream) -> Range<u64> {
        let first = self.next_cursor;
        let pending = core::mem::take(&mut self.pending[slot(stream)]);
        if !pending.is_empty() {
            self.emit_split(stream, strip_cr(&pending));
        }
        first..self.next_cursor
    }

    /// The number the next complete line will get; equal to the count of complete lines so far.
    pub fn next_cursor(&self) -> u64 {
        self.next_cursor
    }

    /// The number of the oldest retained line; [`next_cursor`](Self::next_cursor) when none is.
    pub fn first_retained(&self) -> u64 {
        self.next_cursor - self.index.len() as u64
    }

    /// Complete lines ever written (equal to [`next_cursor`](Self::next_cursor); a pending
    /// partial line counts once it completes).
    pub fn total_lines(&self) -> u64 {
        self.next_cursor
    }

    /// Raw bytes ever pushed, newlines and pending partial lines included.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Complete lines evicted (or dropped at once for not fitting the budget). Since lines are
    /// evicted oldest first, this is also [`first_retained`](Self::first_retained).
    pub fn dropped_lines(&self) -> u64 {
        self.first_retained()
    }

    /// Bytes counted against the budget now: retained text plus [`INDEX_ENTRY_BYTES`] per
    /// retained line. Never above [`LogLimits::budget_bytes`].
    pub fn retained_cost(&self) -> usize {
        self.text.len() + INDEX_ENTRY_BYTES * self.index.len()
    }

    /// Retained complete line `n`, rendered as for a model (`raw: false`); `None` when it was
    /// evicted or is not complete yet.
    pub fn line(&self, n: u64) -> Option<Line> {
        let (stream, bytes) = self.complete(n)?;
        Some(Line {
            n,
            stream,
            text: render(&bytes, false),
            partial: false,
        })
    }

    /// Selects lines as described on [`Query`]. Never fails: out-of-range cursors select
    /// nothing (or count as `skipped`).
    pub fn read(&self, query: &Query<'_>) -> Page {
        let first = self.first_retained();
        let lo = query.since.map_or(first, |since| since.max(first));
        let skipped = query.since.map_or(0, |since| first.saturating_sub(since));
        let tail = match (query.since, query.head, query.tail) {
            (None, None, None) => Some(DEFAULT_TAIL_LINES),
            (_, _, tail) => tail,
        };
        let candidates = (lo..self.next_cursor.max(lo))
            .map(Candidate::Complete)
            .chain(self.partials().filter(move |c| c.n() >= lo));
        let examine = |c: Candidate<'_>| self.examine(c, query);

        let (lines, truncated, next_cursor) = match (tail, query.head) {
            (Some(tail), None) => {
                let (lines, truncated) =
                    select_tail(candidates.rev(), tail, query.max_bytes, examine);
                (lines, truncated, self.next_cursor)
            }
            (Some(tail), Some(head)) => {
                let (window, _) = select_tail(candidates.rev(), tail, usize::MAX, examine);
                select_forward(
                    window.into_iter(),
                    |line| (!line.partial).then_some(line.n),
                    Some,
                    Some(head),
                    query.max_bytes,
                    self.next_cursor,
                )
            }
            (None, head) => select_forward(
                candidates,
                |c| match c {
                    Candidate::Complete(n) => Some(*n),
                    Candidate::Partial { .. } => None,
                },
                examine,
                head,
                query.max_bytes,
                self.next_cursor,
            ),
        };
        Page {
            lines,
            next_cursor,
            skipped,
            truncated,
        }
    }

    // ---- ingest ----

    /// Ends the current line of `stream` with `tail` (the bytes before a `\n`).
    fn finish_line(&mut self, stream: Stream, tail: &[u8]) {
        if self.pending[slot(stream)].is_empty() {
            // Fast path: the whole line is in this chunk; store it straight from there.
            self.emit_split(stream, strip_cr(tail));
        } else {
            self.extend_pending(stream, tail);
            let pending = core::mem::take(&mut self.pending[slot(stream)]);
            self.emit_split(stream, strip_cr(&pending));
            // Keep the allocation for the next partial line.
            self.pending[slot(stream)] = reuse(pending);
        }
    }

    /// Appends bytes without `\n` to the pending partial line of `stream`, completing every
    /// forced split as soon as it is decidable (see [`must_split`]).
    fn extend_pending(&mut self, stream: Stream, mut data: &[u8]) {
        let max = self.max_line();
        let cap = max.saturating_add(2);
        let mut pending = core::mem::take(&mut self.pending[slot(stream)]);
        loop {
            if pending.is_empty() {
                while must_split(data, max) {
                    let (line, rest) = data.split_at(split_point(data, max));
                    self.emit(stream, line);
                    data = rest;
                }
                reserve_vec_capped(&mut pending, data.len(), cap);
                pending.extend_from_slice(data);
                break;
            }
            // Top up to at most `max + 2` bytes: enough to decide whether to split.
            let take = cap.saturating_sub(pending.len()).min(data.len());
            let (head, rest) = data.split_at(take);
            reserve_vec_capped(&mut pending, head.len(), cap);
            pending.extend_from_slice(head);
            data = rest;
            if !must_split(&pending, max) {
                // Then `pending` is at most `max + 1` bytes, so all of `data` fit in it.
                break;
            }
            let at = split_point(&pending, max);
            self.emit(stream, pending.get(..at).unwrap_or_default());
            pending.drain(..at);
        }
        self.pending[slot(stream)] = pending;
    }

    /// Stores one complete line, split if it is longer than `max_line_bytes`.
    fn emit_split(&mut self, stream: Stream, mut line: &[u8]) {
        let max = self.max_line();
        while line.len() > max {
            let (head, rest) = line.split_at(split_point(line, max));
            self.emit(stream, head);
            line = rest;
        }
        self.emit(stream, line);
    }

    /// Numbers and stores one complete line of at most `max_line_bytes`, evicting as needed.
    fn emit(&mut self, stream: Stream, line: &[u8]) {
        self.next_cursor += 1;
        let budget = self.limits.budget_bytes;
        let cost = line.len().saturating_add(INDEX_ENTRY_BYTES);
        if cost > budget {
            // It can never fit: drop it, and everything older so retained lines stay contiguous.
            self.text_start += self.text.len() as u64;
            self.text.clear();
            self.index.clear();
            return;
        }
        self.evict(
            self.retained_cost()
                .saturating_add(cost)
                .saturating_sub(budget),
        );
        reserve_deque_capped(&mut self.text, line.len(), budget, 1024);
        reserve_deque_capped(&mut self.index, 1, budget / INDEX_ENTRY_BYTES, 64);
        self.text.extend(line);
        let end = self.text_start + self.text.len() as u64;
        self.index.push_back(IndexEntry::new(end, stream));
    }

    /// Evicts the fewest oldest lines whose cost is at least `excess` bytes.
    fn evict(&mut self, mut excess: usize) {
        let mut lines = 0;
        let mut end = self.text_start;
        for entry in &self.index {
            if excess == 0 {
                break;
            }
            let len = (entry.end() - end) as usize;
            excess = excess.saturating_sub(len + INDEX_ENTRY_BYTES);
            end = entry.end();
            lines += 1;
        }
        let bytes = (end - self.text_start) as usize;
        self.index.drain(..lines);
        self.text.drain(..bytes);
        self.text_start = end;
    }

    fn max_line(&self) -> usize {
        self.limits.max_line_bytes.max(1)
    }

    // ---- read ----

    /// Stream and raw bytes of retained complete line `n`; borrowed unless it wraps the ring.
    fn complete(&self, n: u64) -> Option<(Stream, Cow<'_, [u8]>)> {
        let i = usize::try_from(n.checked_sub(self.first_retained())?).ok()?;
        let entry = *self.index.get(i)?;
        let start = match i.checked_sub(1) {
            Some(prev) => self.index.get(prev)?.end(),
            None => self.text_start,
        };
        let start = usize::try_from(start - self.text_start).ok()?;
        let end = usize::try_from(entry.end() - self.text_start).ok()?;
        let (front, back) = self.text.as_slices();
        let bytes = if end <= front.len() {
            Cow::Borrowed(front.get(start..end)?)
        } else if start >= front.len() {
            Cow::Borrowed(back.get(start - front.len()..end - front.len())?)
        } else {
            let mut joined = Vec::with_capacity(end - start);
            joined.extend_from_slice(front.get(start..)?);
            joined.extend_from_slice(back.get(..end - front.len())?);
            Cow::Owned(joined)
        };
        Some((entry.stream(), bytes))
    }

    /// The pending partial lines as read candidates: stdout's first, numbered from
    /// `next_cursor` on.
    fn partials(&self) -> impl DoubleEndedIterator<Item = Candidate<'_>> + '_ {
        let mut n = self.next_cursor;
        let mut partial = |stream: Stream| {
            let pending = &self.pending[slot(stream)];
            (!pending.is_empty()).then(|| {
                n += 1;
                Candidate::Partial {
                    n: n - 1,
                    stream,
                    bytes: strip_cr(pending),
                }
            })
        };
        [partial(Stream::Stdout), partial(Stream::Stderr)]
            .into_iter()
            .flatten()
    }

    /// The rendered line if it passes the query's filters.
    fn examine(&self, candidate: Candidate<'_>, query: &Query<'_>) -> Option<Line> {
        let (n, stream, bytes, partial) = match candidate {
            Candidate::Complete(n) => {
                let (stream, bytes) = self.complete(n)?;
                (n, stream, bytes, false)
            }
            Candidate::Partial { n, stream, bytes } => (n, stream, Cow::Borrowed(bytes), true),
        };
        if query.stream.is_some_and(|s| s != stream) {
            return None;
        }
        let text = render_cow(&bytes, query.raw);
        if query.grep.is_some_and(|re| !re.is_match(&text)) {
            return None;
        }
        Some(Line {
            n,
            stream,
            text: text.into_owned(),
            partial,
        })
    }
}

/// A line `read` may return, before filtering.
#[derive(Clone, Copy, Debug)]
enum Candidate<'a> {
    Complete(u64),
    Partial {
        n: u64,
        stream: Stream,
        bytes: &'a [u8],
    },
}

impl Candidate<'_> {
    fn n(&self) -> u64 {
        match self {
            Candidate::Complete(n) | Candidate::Partial { n, .. } => *n,
        }
    }
}

/// Takes up to `count` matching lines from `newest_first`, stopping before `max_bytes` of text
/// would be exceeded (a first line longer than that is cut). Returns them oldest first, and
/// whether a line was left out or cut for size.
fn select_tail<C>(
    newest_first: impl Iterator<Item = C>,
    count: usize,
    max_bytes: usize,
    mut examine: impl FnMut(C) -> Option<Line>,
) -> (Vec<Line>, bool) {
    let mut lines = Vec::new();
    let mut bytes = 0usize;
    for candidate in newest_first {
        if lines.len() >= count {
            break;
        }
        let Some(mut line) = examine(candidate) else {
            continue;
        };
        if bytes.saturating_add(line.text.len()) > max_bytes {
            if lines.is_empty() {
                cut_at_char_boundary(&mut line.text, max_bytes);
                lines.push(line);
            }
            lines.reverse();
            return (lines, true);
        }
        bytes += line.text.len();
        lines.push(line);
    }
    lines.reverse();
    (lines, false)
}

/// Takes up to `head` (all when `None`) matching lines from `oldest_first`, stopping before
/// `max_bytes` of text would be exceeded (a first line longer than that is cut). Returns them,
/// whether a line was left out or cut for size, and the next cursor: the number (`cursor_of`)
/// of the first complete candidate not returned when it stopped early, else `buffer_next`.
fn select_forward<C>(
    mut oldest_first: impl Iterator<Item = C>,
    cursor_of: impl Fn(&C) -> Option<u64>,
    mut examine: impl FnMut(C) -> Option<Line>,
    head: Option<usize>,
    max_bytes: usize,
    buffer_next: u64,
) -> (Vec<Line>, bool, u64) {
    let mut lines = Vec::new();
    let mut bytes = 0usize;
    let resume = |c: Option<C>| c.as_ref().and_then(&cursor_of).unwrap_or(buffer_next);
    while let Some(candidate) = oldest_first.next() {
        if head.is_some_and(|head| lines.len() >= head) {
            return (lines, false, resume(Some(candidate)));
        }
        let cursor = cursor_of(&candidate);
        let Some(mut line) = examine(candidate) else {
            continue;
        };
        if bytes.saturating_add(line.text.len()) > max_bytes {
            if !lines.is_empty() {
                return (lines, true, cursor.unwrap_or(buffer_next));
            }
            cut_at_char_boundary(&mut line.text, max_bytes);
            lines.push(line);
            return (lines, true, resume(oldest_first.next()));
        }
        bytes += line.text.len();
        lines.push(line);
    }
    (lines, false, buffer_next)
}

/// The text shown to a model for one line's bytes.
///
/// Always: invalid UTF-8 becomes U+FFFD (lossy decoding, done first, so the stripper below never
/// sees a broken character). Unless `raw`:
/// - Carriage returns (progress bars): only the text after the last `\r` that is followed by
///   something is kept, as a terminal would end up showing it (`"10%\r20%\r"` → `"20%"`).
/// - ANSI escape sequences (CSI, OSC, …) and other control characters are removed, by
///   `strip-ansi-escapes` (a VT500 parser); tabs are kept (that parser drops them, so the text
///   is stripped tab-separated piece by piece).
///
/// `raw` keeps everything as decoded, `\r` and escape sequences included.
pub fn render(bytes: &[u8], raw: bool) -> String {
    render_cow(bytes, raw).into_owned()
}

/// [`render`], borrowing when there is nothing to change (so `grep` can reject a line without
/// copying it).
fn render_cow(bytes: &[u8], raw: bool) -> Cow<'_, str> {
    if raw {
        return String::from_utf8_lossy(bytes);
    }
    let bytes = after_last_cr(bytes);
    if bytes
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        // Printable ASCII: nothing to decode or strip.
        return String::from_utf8_lossy(bytes);
    }
    let decoded = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(decoded.len());
    for (i, piece) in decoded.split('\t').enumerate() {
        if i > 0 {
            out.push('\t');
        }
        let stripped = strip_ansi_escapes::strip(piece);
        out.push_str(&String::from_utf8_lossy(&stripped));
    }
    Cow::Owned(out)
}

/// Where to cut `line` (longer than `max` ≥ 1 bytes) so that the head is at most `max` bytes:
/// `max`, unless the byte there continues a UTF-8 character whose first byte is 1 to 3 bytes
/// before it, in which case the cut moves to that first byte (if that leaves a non-empty head).
/// Looks at no byte past `line[max]`, so the cut does not depend on bytes not yet received.
fn split_point(line: &[u8], max: usize) -> usize {
    if !line.get(max).is_some_and(|&b| is_continuation(b)) {
        return max;
    }
    for back in 1..=3.min(max) {
        let start = max - back;
        let Some(&b) = line.get(start) else {
            return max;
        };
        if is_continuation(b) {
            continue;
        }
        return if utf8_width(b) > back && start > 0 {
            start
        } else {
            max
        };
    }
    max
}

/// Whether the pending bytes `buf` (no `\n` among them) must be split now: they are more than
/// `max` bytes, except exactly `max` bytes plus a `\r` (a CRLF line of `max` bytes, if a `\n`
/// comes next).
fn must_split(buf: &[u8], max: usize) -> bool {
    buf.len() > max && !(buf.len() == max + 1 && buf.last() == Some(&b'\r'))
}

fn is_continuation(b: u8) -> bool {
    b & 0b1100_0000 == 0b1000_0000
}

/// Length of the UTF-8 character a lead byte starts; 0 for a byte that cannot start one.
fn utf8_width(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

/// The line without one trailing `\r` (CRLF).
fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// What a terminal shows of a line with carriage returns: the bytes after the last `\r` that is
/// followed by something.
fn after_last_cr(line: &[u8]) -> &[u8] {
    let mut line = line;
    while let Some(rest) = line.strip_suffix(b"\r") {
        line = rest;
    }
    match memchr::memrchr(b'\r', line) {
        Some(i) => line.get(i + 1..).unwrap_or_default(),
        None => line,
    }
}

/// Shortens `text` to at most `max` bytes, at a character boundary.
fn cut_at_char_boundary(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

fn slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

/// An emptied buffer, keeping its allocation.
fn reuse(mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    buf
}

/// Makes room for `additional` more elements, growing geometrically (from at least `min`) but
/// never past `cap` elements unless the content itself needs more.
fn reserve_deque_capped<T>(deque: &mut VecDeque<T>, additional: usize, cap: usize, min: usize) {
    let needed = deque.len().saturating_add(additional);
    if needed > deque.capacity() {
        let target = deque
            .capacity()
            .saturating_mul(2)
            .max(min)
            .min(cap)
            .max(needed);
        deque.reserve_exact(target - deque.len());
    }
}

/// [`reserve_deque_capped`] for a `Vec<u8>`, from at least 64 bytes.
fn reserve_vec_capped(vec: &mut Vec<u8>, additional: usize, cap: usize) {
    let needed = vec.len().saturating_add(additional);
    if needed > vec.capacity() {
        let target = vec
            .capacity()
            .saturating_mul(2)
            .max(64)
            .min(cap)
            .max(needed);
        vec.reserve_exact(target - vec.len());
    }
}

#[cfg(test)]
mod tests {
    use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
    use rstest::rstest;

    use super::*;

    use Stream::{Stderr, Stdout};

    const BIG: LogLimits = LogLimits {
        budget_bytes: 1 << 20,
        max_line_bytes: 1 << 10,
    };

    fn buffer_with(bytes: &[u8]) -> LogBuffer {
        let mut log = LogBuffer::new(BIG);
        log.push(Stdout, bytes);
        log
    }

    /// Reads everything retained, without a size bound.
    fn everything() -> Query<'static> {
        Query {
            since: Some(0),
            max_bytes: usize::MAX,
            ..Query::default()
        }
    }

    fn texts(page: &Page) -> Vec<&str> {
        page.lines.iter().map(|l| l.text.as_str()).collect()
    }

    fn numbers(page: &Page) -> Vec<u64> {
        page.lines.iter().map(|l| l.n).collect()
    }

    /// `count` lines "0", "1", … on stdout.
    fn numbered(count: usize) -> LogBuffer {
        let mut log = LogBuffer::new(BIG);
        for i in 0..count {
            log.push(Stdout, format!("{i}\n").as_bytes());
        }
        log
    }

    // ---- ingest: lines and cursors ----

    #[test]
    fn new_buffer_allocates_nothing() {
        let log = LogBuffer::new(LogLimits::default());
        assert_eq!(log.text.capacity(), 0);
        assert_eq!(log.index.capacity(), 0);
        assert!(log.pending.iter().all(|p| p.capacity() == 0));
        assert_eq!(log.retained_cost(), 0);
        assert_eq!((log.next_cursor(), log.first_retained()), (0, 0));
    }

    #[test]
    fn lines_are_numbered_from_zero_across_streams_in_arrival_order() {
        let mut log = LogBuffer::new(BIG);
        log.push(Stdout, b"out 0\n");
        log.push(Stderr, b"err 1\n");
        log.push(Stdout, b"out 2\n");
        let page = log.read(&everything());
        assert_eq!(numbers(&page), [0, 1, 2]);
        let streams: Vec<_> = page.lines.iter().map(|l| l.stream).collect();
        assert_eq!(streams, [Stdout, Stderr, Stdout]);
    }

    #[test]
    fn push_returns_the_lines_it_completed() {
        let mut log = LogBuffer::new(BIG);
        assert_eq!(log.push(Stdout, b"a\nb\nc"), 0..2);
        assert_eq!(log.push(Stdout, b"c"), 2..2);
        assert_eq!(log.push(Stdout, b"\n"), 2..3);
    }

    #[test]
    fn line_split_across_chunks_is_one_line() {
        let mut log = LogBuffer::new(BIG);
        for chunk in [&b"hel"[..], b"lo wo", b"rld\nnext"] {
            log.push(Stdout, chunk);
        }
        assert_eq!(log.line(0).map(|l| l.text).as_deref(), Some("hello world"));
        assert_eq!(log.next_cursor(), 1);
    }

    #[test]
    fn crlf_is_stripped() {
        let log = buffer_with(b"dos\r\nunix\n");
        assert_eq!(texts(&log.read(&everything())), ["dos", "unix"]);
        let raw = log.read(&Query {
            raw: true,
            ..everything()
        });
        assert_eq!(texts(&raw), ["dos", "unix"]);
    }

    #[test]
    fn crlf_split_between_chunks_is_stripped() {
        let mut log = LogBuffer::new(LogLimits {
            max_line_bytes: 3,
            ..BIG
        });
        log.push(Stdout, b"abc\r");
        log.push(Stdout, b"\n");
        assert_eq!(texts(&log.read(&everything())), ["abc"]);
    }

    #[test]
    fn empty_lines_are_lines() {
        let log = buffer_with(b"\n\nx\n");
        assert_eq!(texts(&log.read(&everything())), ["", "", "x"]);
    }

    #[test]
    fn long_line_is_split_at_max_line_bytes() {
        let mut log = LogBuffer::new(LogLimits {
            max_line_bytes: 4,
            ..BIG
        });
        assert_eq!(
            log.push(Stdout, b"abcdefghij"),
            0..2,
            "splits as soon as known"
        );
        log.push(Stdout, b"\n");
        assert_eq!(texts(&log.read(&everything())), ["abcd", "efgh", "ij"]);
    }

    #[test]
    fn line_of_exactly_max_line_bytes_is_not_split() {
        let mut log = LogBuffer::new(LogLimits {
            max_line_bytes: 4,
            ..BIG
        });
        log.push(Stdout, b"abcd");
        log.push(Stdout, b"\n");
        assert_eq!(texts(&log.read(&everything())), ["abcd"]);
    }

    #[test]
    fn long_line_is_split_at_char_boundary() {
        let mut log = LogBuffer::new(LogLimits {
            max_line_bytes: 4,
            ..BIG
        });
        // "ab€" is 5 bytes; a cut at 4 would fall inside the 3-byte "€".
        log.push(Stdout, "ab€cd\n".as_bytes());
        assert_eq!(texts(&log.read(&everything())), ["ab", "€c", "d"]);
    }

    #[rstest]
    #[case::ascii(b"abcdef", 4, 4)]
    #[case::cut_before_two_byte_char(b"abc\xc3\xa9", 4, 3)]
    #[case::cut_before_three_byte_char(b"ab\xe2\x82\xac", 4, 2)]
    #[case::cut_before_four_byte_char(b"a\xf0\x9f\x98\x80", 4, 1)]
    #[case::cut_after_char(b"ab\xc3\xa9x", 4, 4)]
    #[case::char_longer_than_max_is_cut(b"\xe2\x82\xac", 2, 2)]
    #[case::stray_continuation_bytes(b"a\x80\x80\x80\x80", 4, 4)]
    #[case::invalid_lead_byte(b"ab\xff\x80", 3, 3)]
    fn split_point_backs_off_to_a_char_boundary(
        #[case] line: &[u8],
        #[case] max: usize,
        #[case] expected: usize,
    ) {
        assert_eq!(split_point(line, max), expected);
    }

    #[test]
    fn zero_max_line_bytes_is_treated_as_one() {
        let mut log = LogBuffer::new(LogLimits {
            max_line_bytes: 0,
            ..BIG
        });
        log.push(Stdout, b"ab\n");
        assert_eq!(texts(&log.read(&everything())), ["a", "b"]);
    }

    #[test]
    fn partial_line_is_flushed_on_close() {
        let mut log = LogBuffer::new(BIG);
        log.push(Stdout, b"done\nno newline");
        assert_eq!(log.close(Stdout), 1..2);
        assert_eq!(log.line(1).map(|l| l.text).as_deref(), Some("no newline"));
    }

    #[test]
    fn close_without_partial_line_adds_nothing() {
        let mut log = buffer_with(b"x\n");
        assert_eq!(log.close(Stdout), 1..1);
        assert_eq!(log.close(Stderr), 1..1);
        assert_eq!(log.next_cursor(), 1);
    }

    #[test]
    fn close_frees_the_partial_line() {
        let mut log = buffer_with(b"partial");
        log.close(Stdout);
        assert_eq!(log.pending[0].capacity(), 0);
    }

    #[test]
    fn close_flushes_only_its_stream() {
        let mut log = LogBuffer::new(BIG);
        log.push(Stdout, b"out");
        log.push(Stderr, b"err");
        log.close(Stderr);
        assert_eq!(
            log.line(0).map(|l| (l.stream, l.text)),
            Some((Stderr, "err".into()))
        );
        assert_eq!(log.next_cursor(), 1);
    }

    #[test]
    fn counters_count_everything_pushed() {
        let mut log = LogBuffer::new(LogLimits {
            budget_bytes: 2 * (INDEX_ENTRY_BYTES + 5),
            max_line_bytes: 5,
        });
        for _ in 0..10 {
            log.push(Stdout, b"line\r\n");
        }
        log.push(Stderr, b"tail");
        assert_eq!(log.total_bytes(), 64);
        assert_eq!(log.total_lines(), 10);
        assert_eq!(log.dropped_lines(), 8);
        assert_eq!(log.first_retained(), 8);
    }

    // ---- budget ----

    #[test]
    fn oldest_lines_are_evicted_to_stay_within_budget() {
        let line_cost = 3 + INDEX_ENTRY_BYTES;
        let mut log = LogBuffer::new(LogLimits {
            budget_bytes: 3 * line_cost + 1,
            max_line_bytes: 8,
        });
        for i in 100..105 {
            log.push(Stdout, format!("{i}\n").as_bytes());
        }
        assert_eq!(log.retained_cost(), 3 * line_cost);
        assert_eq!((log.first_retained(), log.dropped_lines()), (2, 2));
        assert_eq!(texts(&log.read(&everything())), ["102", "103", "104"]);
        assert_eq!(log.line(1), None);
    }

    #[test]
    fn line_larger_than_budget_is_dropped_at_once() {
        let mut log = LogBuffer::new(LogLimits {
            budget_bytes: 20,
            max_line_bytes: 100,
        });
        log.push(Stdout, b"a\nthis line is far too long for twenty bytes\n");
        assert_eq!(log.next_cursor(), 2);
        assert_eq!(
            log.first_retained(),
            2,
            "older lines go too, keeping cursors contiguous"
        );
        assert_eq!(log.retained_cost(), 0);
        log.push(Stdout, b"b\n");
        assert_eq!(texts(&log.read(&everything())), ["b"]);
    }

    #[test]
    fn capacity_never_grows_past_the_budget() {
        let budget = 10_000;
        let mut log = LogBuffer::new(LogLimits {
            budget_bytes: budget,
            max_line_bytes: 100,
        });
        for i in 0..5_000 {
            log.push(Stdout, format!("line {i}\n").as_bytes());
            assert!(log.retained_cost() <= budget);
        }
        assert!(log.text.capacity() <= budget, "{}", log.text.capacity());
        assert!(log.index.capacity() * INDEX_ENTRY_BYTES <= budget);
    }

    // ---- read ----

    #[test]
    fn default_read_is_the_last_100_lines() {
        let log = numbered(150);
        let page = log.read(&Query::default());
        assert_eq!(numbers(&page), (50..150).collect::<Vec<_>>());
        assert_eq!(page.next_cursor, 150);
        assert!(!page.truncated);
    }

    #[test]
    fn since_returns_only_new_lines() {
        let mut log = numbered(3);
        let first = log.read(&Query::default());
        log.push(Stdout, b"new\n");
        let page = log.read(&Query {
            since: Some(first.next_cursor),
            ..Query::default()
        });
        assert_eq!(texts(&page), ["new"]);
        assert_eq!(page.next_cursor, 4);
    }

    #[test]
    fn since_in_the_future_returns_nothing() {
        let log = numbered(3);
        let page = log.read(&Query {
            since: Some(10),
            ..Query::default()
        });
        assert!(page.lines.is_empty());
        assert_eq!((page.next_cursor, page.skipped), (3, 0));
    }

    #[test]
    fn tail_returns_the_last_matching_lines() {
        let log = numbered(20);
        let even = Regex::new("^[0-9]*[02468]$").unwrap();
        let page = log.read(&Query {
            tail: Some(3),
            grep: Some(&even),
            ..Query::default()
        });
        assert_eq!(texts(&page), ["14", "16", "18"]);
        assert_eq!(page.next_cursor, 20);
    }

    #[test]
    fn head_returns_the_first_matching_lines_and_resumes_after_them() {
        let log = numbered(20);
        let page = log.read(&Query {
            head: Some(3),
            ..Query::default()
        });
        assert_eq!(texts(&page), ["0", "1", "2"]);
        assert_eq!(page.next_cursor, 3);
        let next = log.read(&Query {
            since: Some(page.next_cursor),
            head: Some(2),
            ..Query::default()
        });
        assert_eq!(texts(&next), ["3", "4"]);
    }

    #[test]
    fn head_with_tail_reads_forward_from_the_tail_window() {
        let log = numbered(20);
        let page = log.read(&Query {
            tail: Some(5),
            head: Some(2),
            ..Query::default()
        });
        assert_eq!(texts(&page), ["15", "16"]);
        assert_eq!(page.next_cursor, 17);
    }

    #[test]
    fn grep_keeps_matching_lines() {
        let log = buffer_with(b"ok\nerror: boom\nok\nerror: bang\n");
        let re = Regex::new("^error").unwrap();
        let page = log.read(&Query {
            grep: Some(&re),
            ..everything()
        });
        assert_eq!(numbers(&page), [1, 3]);
    }

    #[test]
    fn grep_matches_the_rendered_text() {
        let log = buffer_with(b"\x1b[31merror\x1b[0m: boom\n");
        let re = Regex::new("^error: boom$").unwrap();
        let query = Query {
            grep: Some(&re),
            ..everything()
        };
        assert_eq!(log.read(&query).lines.len(), 1);
        let raw = Query { raw: true, ..query };
        assert_eq!(log.read(&raw).lines.len(), 0);
    }

    #[rstest]
    #[case::stdout(Some(Stdout), &["o1", "o2", "o-partial"])]
    #[case::stderr(Some(Stderr), &["e1", "e-partial"])]
    #[case::both(None, &["o1", "e1", "o2", "o-partial", "e-partial"])]
    fn stream_filter_keeps_one_stream(#[case] stream: Option<Stream>, #[case] expected: &[&str]) {
        let mut log = LogBuffer::new(BIG);
        log.push(Stdout, b"o1\n");
        log.push(Stderr, b"e1\ne-partial");
        log.push(Stdout, b"o2\no-partial");
        let page = log.read(&Query {
            stream,
            ..everything()
        });
        assert_eq!(texts(&page), expected);
    }

    #[test]
    fn partial_line_is_read_with_partial_flag() {
        let log = buffer_with(b"done\nhalf");
        let page = log.read(&Query::default());
        let last = page.lines.last().cloned();
        assert_eq!(
            last,
            Some(Line {
                n: 1,
                stream: Stdout,
                text: "half".into(),
                partial: true
            })
        );
        assert_eq!(
            page.next_cursor, 1,
            "partial lines do not advance the cursor"
        );
        assert_eq!(log.line(1), None);
    }

    #[test]
    fn partial_lines_are_numbered_after_complete_ones_stdout_first() {
        let mut log = LogBuffer::new(BIG);
        log.push(Stderr, b"err");
        log.push(Stdout, b"line\nout");
        let page = log.read(&Query::default());
        let got: Vec<_> = page
            .lines
            .iter()
            .map(|l| (l.n, l.stream, l.partial))
            .collect();
        assert_eq!(
            got,
            [(0, Stdout, false), (1, Stdout, true), (2, Stderr, true)]
        );
    }

    #[test]
    fn forward_read_stopped_by_head_on_a_partial_line_does_not_advance_past_it() {
        let log = buffer_with(b"a\nhalf");
        let page = log.read(&Query {
            since: Some(0),
            head: Some(2),
            ..Query::default()
        });
        assert_eq!(texts(&page), ["a", "half"]);
        assert_eq!(page.next_cursor, 1);
    }

    #[test]
    fn skipped_counts_evicted_lines() {
        let mut log = LogBuffer::new(LogLimits {
            budget_bytes: 3 * (1 + INDEX_ENTRY_BYTES),
            max_line_bytes: 1,
        });
        log.push(Stdout, b"a\nb\nc\nd\ne\n");
        let page = log.read(&Query {
            since: Some(1),
            ..Query::default()
        });
        assert_eq!(page.skipped, 1, "line 1 was evicted; 2, 3, 4 remain");
        assert_eq!(texts(&page), ["c", "d", "e"]);
        let without_since = log.read(&Query::default());
        assert_eq!(without_since.skipped, 0);
    }

    #[test]
    fn max_bytes_cuts_at_line_boundary_dropping_the_oldest_for_tail() {
        let log = buffer_with(b"aaaa\nbbbb\ncccc\n");
        let page = log.read(&Query {
            max_bytes: 9,
            ..Query::default()
        });
        assert_eq!(texts(&page), ["bbbb", "cccc"]);
        assert!(page.truncated);
        assert_eq!(page.next_cursor, 3);
    }

    #[test]
    fn max_bytes_cuts_at_line_boundary_dropping_the_newest_when_reading_forward() {
        let log = buffer_with(b"aaaa\nbbbb\ncccc\n");
        let page = log.read(&Query {
            since: Some(0),
            max_bytes: 9,
            ..Query::default()
        });
        assert_eq!(texts(&page), ["aaaa", "bbbb"]);
        assert!(page.truncated);
        assert_eq!(page.next_cursor, 2, "resumes at the line left out");
    }

    #[test]
    fn line_longer_than_max_bytes_is_cut_at_char_boundary() {
        let log = buffer_with("ééé\nnext\n".as_bytes());
        let page = log.read(&Query {
            since: Some(0),
            max_bytes: 3,
            ..Query::default()
        });
        assert_eq!(texts(&page), ["é"]);
        assert!(page.truncated);
        assert_eq!(
            page.next_cursor, 1,
            "the rest of a cut line is not shown again"
        );
    }

    #[test]
    fn exact_fit_is_not_truncated() {
        let log = buffer_with(b"aaaa\nbbbb\n");
        let page = log.read(&Query {
            since: Some(0),
            max_bytes: 8,
            ..Query::default()
        });
        assert_eq!(texts(&page), ["aaaa", "bbbb"]);
        assert!(!page.truncated);
        assert_eq!(page.next_cursor, 2);
    }

    #[test]
    fn line_that_wraps_the_ring_reads_whole() {
        let mut log = LogBuffer::new(LogLimits {
            budget_bytes: 2 * (10 + INDEX_ENTRY_BYTES),
            max_line_bytes: 10,
        });
        for i in 0..50 {
            log.push(Stdout, format!("line {i:05}\n").as_bytes());
        }
        let page = log.read(&everything());
        assert_eq!(texts(&page), ["line 00048", "line 00049"]);
    }

    // ---- render ----

    #[rstest]
    #[case::plain(b"hello", false, "hello")]
    #[case::ansi_stripped(b"\x1b[1;31merror\x1b[0m: x", false, "error: x")]
    #[case::ansi_kept_when_raw(b"\x1b[31mred\x1b[0m", true, "\x1b[31mred\x1b[0m")]
    #[case::osc_title_stripped(b"\x1b]0;title\x07text", false, "text")]
    #[case::progress_bar_keeps_last_frame(b"10%\r20%\r30%", false, "30%")]
    #[case::trailing_cr_ignored(b"10%\r20%\r", false, "20%")]
    #[case::progress_bar_with_erase(b"\r\x1b[K1/3\r\x1b[K3/3", false, "3/3")]
    #[case::cr_kept_when_raw(b"a\rb", true, "a\rb")]
    #[case::tabs_kept(b"a\tb\t\x1b[1mc\x1b[0m", false, "a\tb\tc")]
    #[case::other_controls_removed(b"bell\x07", false, "bell")]
    #[case::utf8_kept("café ✓".as_bytes(), false, "café ✓")]
    fn render_shows_what_a_terminal_would(
        #[case] bytes: &[u8],
        #[case] raw: bool,
        #[case] expected: &str,
    ) {
        assert_eq!(render(bytes, raw), expected);
    }

    #[rstest]
    #[case::invalid_byte(b"a\xffb", "a\u{fffd}b")]
    #[case::truncated_char_at_end(b"caf\xc3", "caf\u{fffd}")]
    #[case::with_ansi(b"\x1b[1m\xfe\x1b[0m!", "\u{fffd}!")]
    fn invalid_utf8_is_replaced(#[case] bytes: &[u8], #[case] expected: &str) {
        assert_eq!(render(bytes, false), expected);
        assert!(render(bytes, true).contains('\u{fffd}'));
    }

    #[test]
    fn ansi_is_stripped_unless_raw() {
        let log = buffer_with(b"\x1b[32mok\x1b[0m\n");
        assert_eq!(texts(&log.read(&Query::default())), ["ok"]);
        let raw = log.read(&Query {
            raw: true,
            ..Query::default()
        });
        assert_eq!(texts(&raw), ["\x1b[32mok\x1b[0m"]);
    }

    // ---- properties against a model ----

    /// One input to a buffer.
    #[derive(Clone, Debug)]
    enum Op {
        Push(Stream, Vec<u8>),
        Close(Stream),
    }

    /// Pieces that exercise every rule: newlines, CRs, multi-byte and invalid UTF-8, escapes.
    const PIECES: &[&[u8]] = &[
        b"a",
        b"b",
        b"c",
        b"\n",
        b"\n",
        b"\r",
        b"\r\n",
        b"\t",
        b"\x1b[1m",
        b"\xff",
        b"\xe2",
        "é".as_bytes(),
        "€".as_bytes(),
        "😀".as_bytes(),
    ];

    fn arbitrary_stream(g: &mut Gen) -> Stream {
        if bool::arbitrary(g) { Stdout } else { Stderr }
    }

    impl Arbitrary for Op {
        fn arbitrary(g: &mut Gen) -> Self {
            let stream = arbitrary_stream(g);
            if u8::arbitrary(g) % 8 == 0 {
                return Op::Close(stream);
            }
            let pieces = usize::arbitrary(g) % 16;
            let mut chunk = Vec::new();
            for _ in 0..pieces {
                chunk.extend_from_slice(g.choose(PIECES).copied().unwrap_or_default());
            }
            Op::Push(stream, chunk)
        }

        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            match self {
                Op::Push(stream, chunk) => {
                    let stream = *stream;
                    Box::new(chunk.shrink().map(move |c| Op::Push(stream, c)))
                }
                Op::Close(_) => Box::new(core::iter::empty()),
            }
        }
    }

    /// Small limits, so that splitting and eviction happen all the time.
    #[derive(Clone, Debug)]
    struct SmallLimits(LogLimits);

    impl Arbitrary for SmallLimits {
        fn arbitrary(g: &mut Gen) -> Self {
            SmallLimits(LogLimits {
                budget_bytes: usize::arbitrary(g) % 160,
                max_line_bytes: usize::arbitrary(g) % 12,
            })
        }

        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            let limits = self.0;
            Box::new((limits.budget_bytes, limits.max_line_bytes).shrink().map(
                |(budget_bytes, max_line_bytes)| {
                    SmallLimits(LogLimits {
                        budget_bytes,
                        max_line_bytes,
                    })
                },
            ))
        }
    }

    /// The obvious implementation: every line ever completed, kept forever, built byte by byte.
    #[derive(Default)]
    struct Model {
        max: usize,
        lines: Vec<(Stream, Vec<u8>)>,
        pending: [Vec<u8>; 2],
        total_bytes: u64,
    }

    impl Model {
        fn new(limits: LogLimits) -> Self {
            Model {
                max: limits.max_line_bytes.max(1),
                ..Model::default()
            }
        }

        fn apply(&mut self, op: &Op) {
            match op {
                Op::Push(stream, bytes) => {
                    self.total_bytes += bytes.len() as u64;
                    for &b in bytes {
                        if b == b'\n' {
                            self.finish(*stream);
                            continue;
                        }
                        let pending = &mut self.pending[slot(*stream)];
                        pending.push(b);
                        while must_split(pending, self.max) {
                            let at = split_point(pending, self.max);
                            let head = pending.drain(..at).collect();
                            self.lines.push((*stream, head));
                        }
                    }
                }
                Op::Close(stream) => {
                    if !self.pending[slot(*stream)].is_empty() {
                        self.finish(*stream);
                    }
                }
            }
        }

        fn finish(&mut self, stream: Stream) {
            let pending = core::mem::take(&mut self.pending[slot(stream)]);
            self.lines.push((stream, strip_cr(&pending).to_vec()));
        }

        fn cost(&self, from: u64) -> usize {
            self.lines[from as usize..]
                .iter()
                .map(|(_, l)| l.len() + INDEX_ENTRY_BYTES)
                .sum()
        }

        /// What `read` should see, raw: retained complete lines from `first`, then partials.
        fn visible(&self, first: u64) -> Vec<Line> {
            let complete = self.lines.iter().enumerate().skip(first as usize);
            let mut out: Vec<Line> = complete
                .map(|(n, (stream, bytes))| Line {
                    n: n as u64,
                    stream: *stream,
                    text: render(bytes, true),
                    partial: false,
                })
                .collect();
            let mut n = self.lines.len() as u64;
            for stream in [Stdout, Stderr] {
                let pending = &self.pending[slot(stream)];
                if !pending.is_empty() {
                    out.push(Line {
                        n,
                        stream,
                        text: render(strip_cr(pending), true),
                        partial: true,
                    });
                    n += 1;
                }
            }
            out
        }
    }

    /// Checks every invariant after every operation; `Err` says which broke.
    fn check_against_model(limits: LogLimits, ops: &[Op], tail: usize) -> Result<(), String> {
        let mut log = LogBuffer::new(limits);
        let mut model = Model::new(limits);
        for (step, op) in ops.iter().enumerate() {
            let before = log.next_cursor();
            let completed = match op {
                Op::Push(stream, bytes) => log.push(*stream, bytes),
                Op::Close(stream) => log.close(*stream),
            };
            model.apply(op);
            let at = format!("after op {step} {op:?}");
            let next = log.next_cursor();
            let first = log.first_retained();
            if completed != (before..next) {
                return Err(format!(
                    "{at}: push returned {completed:?}, cursor {before}..{next}"
                ));
            }
            if next != model.lines.len() as u64 || log.total_lines() != next {
                return Err(format!(
                    "{at}: next_cursor {next}, model {}",
                    model.lines.len()
                ));
            }
            if log.total_bytes() != model.total_bytes {
                return Err(format!("{at}: total_bytes {}", log.total_bytes()));
            }
            if log.retained_cost() > limits.budget_bytes {
                return Err(format!("{at}: cost {} over budget", log.retained_cost()));
            }
            if log.retained_cost() != model.cost(first) {
                return Err(format!("{at}: cost {} vs model", log.retained_cost()));
            }
            if log.dropped_lines() != first || first > next {
                return Err(format!(
                    "{at}: dropped {} first {first}",
                    log.dropped_lines()
                ));
            }
            if first > 0 && model.cost(first - 1) <= limits.budget_bytes {
                return Err(format!("{at}: line {} evicted though it fit", first - 1));
            }
            for n in first..next {
                let expected = render(&model.lines[n as usize].1, false);
                if log.line(n).map(|l| l.text) != Some(expected) {
                    return Err(format!("{at}: line {n} differs"));
                }
            }
            if first > 0 && log.line(first - 1).is_some() || log.line(next).is_some() {
                return Err(format!("{at}: line() outside {first}..{next}"));
            }

            let visible = model.visible(first);
            let page = log.read(&Query {
                tail: Some(tail),
                max_bytes: usize::MAX,
                raw: true,
                ..Query::default()
            });
            let expected = &visible[visible.len().saturating_sub(tail)..];
            if page.lines != expected || page.next_cursor != next || page.truncated {
                return Err(format!(
                    "{at}: tail {tail}: {page:?}, expected {expected:?}"
                ));
            }
            let since = (tail as u64).min(next + 1);
            let page = log.read(&Query {
                since: Some(since),
                max_bytes: usize::MAX,
                raw: true,
                ..Query::default()
            });
            let expected: Vec<_> = visible.iter().filter(|l| l.n >= since).cloned().collect();
            if page.lines != expected
                || page.next_cursor != next
                || page.skipped != first.saturating_sub(since)
            {
                return Err(format!(
                    "{at}: since {since}: {page:?}, expected {expected:?}"
                ));
            }
        }
        Ok(())
    }

    #[test]
    fn buffer_agrees_with_model() {
        fn prop(limits: SmallLimits, ops: Vec<Op>, tail: u8) -> TestResult {
            match check_against_model(limits.0, &ops, usize::from(tail % 8)) {
                Ok(()) => TestResult::passed(),
                Err(why) => TestResult::error(why),
            }
        }
        QuickCheck::new()
            .tests(2_000)
            .quickcheck(prop as fn(SmallLimits, Vec<Op>, u8) -> TestResult);
    }

    #[test]
    fn lines_do_not_depend_on_chunking() {
        fn prop(limits: SmallLimits, bytes: Vec<u8>, cuts: Vec<usize>) -> bool {
            let limits = LogLimits {
                budget_bytes: 1 << 20,
                ..limits.0
            };
            let mut whole = LogBuffer::new(limits);
            whole.push(Stdout, &bytes);
            whole.close(Stdout);
            let mut chunked = LogBuffer::new(limits);
            let mut rest = &bytes[..];
            for cut in cuts {
                let (chunk, after) = rest.split_at(cut.min(rest.len()));
                chunked.push(Stdout, chunk);
                rest = after;
            }
            chunked.push(Stdout, rest);
            chunked.close(Stdout);
            let raw = Query {
                raw: true,
                ..everything()
            };
            whole.read(&raw) == chunked.read(&raw)
        }
        QuickCheck::new()
            .tests(2_000)
            .quickcheck(prop as fn(SmallLimits, Vec<u8>, Vec<usize>) -> bool);
    }

    #[test]
    fn split_point_is_the_last_char_boundary_within_max() {
        fn prop(text: String, max: u8) -> TestResult {
            let max = usize::from(max % 16).max(1);
            let bytes = text.as_bytes();
            if bytes.len() <= max {
                return TestResult::discard();
            }
            let at = split_point(bytes, max);
            let boundary = (1..=max).rev().find(|&i| text.is_char_boundary(i));
            let expected = boundary.filter(|&b| max - b <= 3).unwrap_or(max);
            TestResult::from_bool(at == expected)
        }
        QuickCheck::new()
            .tests(2_000)
            .quickcheck(prop as fn(String, u8) -> TestResult);
    }

    #[test]
    fn paging_with_next_cursor_reads_every_line_once() {
        fn prop(ops: Vec<Op>, max_bytes: u8, head: Option<u8>, grep_b: bool) -> TestResult {
            let limits = LogLimits {
                budget_bytes: 1 << 20,
                max_line_bytes: 8,
            };
            let mut log = LogBuffer::new(limits);
            for op in &ops {
                match op {
                    Op::Push(stream, bytes) => log.push(*stream, bytes),
                    Op::Close(stream) => log.close(*stream),
                };
            }
            let re = Regex::new("b").unwrap();
            let query = Query {
                head: head.map(|h| usize::from(h % 4)).filter(|&h| h > 0),
                grep: grep_b.then_some(&re),
                max_bytes: usize::from(max_bytes % 24),
                raw: true,
                ..Query::default()
            };
            let all = log.read(&Query {
                since: Some(0),
                max_bytes: usize::MAX,
                head: None,
                ..query
            });
            let expected: Vec<u64> = all
                .lines
                .iter()
                .filter(|l| !l.partial)
                .map(|l| l.n)
                .collect();
            let mut seen = Vec::new();
            let mut cursor = 0;
            for _ in 0..=log.next_cursor() + 1 {
                let page = log.read(&Query {
                    since: Some(cursor),
                    ..query
                });
                if page.lines.windows(2).any(|w| w[0].n >= w[1].n) {
                    return TestResult::error(format!("not increasing: {page:?}"));
                }
                let total: usize = page.lines.iter().map(|l| l.text.len()).sum();
                if total > query.max_bytes {
                    return TestResult::error(format!("over max_bytes: {page:?}"));
                }
                seen.extend(page.lines.iter().filter(|l| !l.partial).map(|l| l.n));
                if page.next_cursor < cursor {
                    return TestResult::error(format!("cursor went back: {page:?}"));
                }
                if page.next_cursor == log.next_cursor() {
                    break;
                }
                cursor = page.next_cursor;
            }
            if seen == expected {
                TestResult::passed()
            } else {
                TestResult::error(format!("paged {seen:?}, expected {expected:?}"))
            }
        }
        QuickCheck::new()
            .tests(1_000)
            .quickcheck(prop as fn(Vec<Op>, u8, Option<u8>, bool) -> TestResult);
    }
}
