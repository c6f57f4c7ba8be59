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
//! # Timestamps
//! Every line has a *time*: the wall-clock time (milliseconds since the Unix epoch) given with
//! the [`LogBuffer::push`] that completed it (that delivered its `\n`, or the byte that forced a
//! long line's split), so a line completed by a later push takes that push's time. A pending
//! partial line has the time of the push that delivered its latest bytes, and a line ended by
//! [`LogBuffer::close`] keeps it. So a line's time does not depend on how the output was
//! chunked either, as long as each byte comes with the same time. Times are stored as given:
//! one earlier than the one before (a clock stepped back) is kept, and so reads may show times
//! that decrease. [`LogBuffer::read`] returns them with [`Query::timestamps`].
//!
//! They are stored run-length encoded: one *time entry* of [`TIME_ENTRY_BYTES`] (16) bytes per
//! run of consecutive lines with the same time, holding the run's first line number and its
//! time. So a flood of 64 KiB pushes of many lines each costs an entry per push (a few hundred
//! bytes per MiB of output), pushes within the same millisecond share one, and output that
//! comes a line per push costs an entry per line. A read finds the entry of its first line by
//! binary search and walks forward from there.
//!
//! # Memory
//! The retained complete lines cost the output bytes they took (their text, and the `\n` and
//! `\r` that ended them) plus [`INDEX_ENTRY_BYTES`] each (the line index), plus
//! [`TIME_ENTRY_BYTES`] per time entry that covers one of them (see above); that cost never
//! exceeds [`LogLimits::budget_bytes`]: the oldest lines are evicted to make room and counted
//! in [`LogBuffer::dropped_lines`], and a time entry is freed once every line it covers is
//! evicted. A line whose cost alone (its bytes, its index entry and a time entry) exceeds the
//! budget is dropped as soon as it completes (with every older line, so that retained lines
//! stay contiguous). [`LogBuffer::evict_to`] evicts the same way, on demand, to a lower cost.
//! The pending partial lines (one per stream) are *not* part of the budget; each holds at most
//! `max_line_bytes + 1` bytes between calls (`+ 2` while a push is split), its capacity is at
//! most `max(max_line_bytes, 1) + 2` bytes, and its allocation is freed by
//! [`LogBuffer::close`].
//!
//! Lines are stored as they arrived, endings included, back to back, and each index entry
//! records where its line ends, how (so that a read can drop the ending) and on which stream.
//! So the complete lines of a chunk are stored by copying the chunk, in one pass that also
//! finds the `\n`s 16 bytes at a time and writes an entry for each: a line costs no call, no
//! allocation and no check of its own (see `LogBuffer::store_run`), and a push at most one
//! time entry.
//!
//! The bytes, the index and the time entries are each stored in a ring of fixed-size blocks.
//! The bytes' and the index's blocks are `B` bytes (an index block holds
//! `B / INDEX_ENTRY_BYTES` entries), where `B` is `budget_bytes / 8` rounded down to a power of
//! two, but at least 64 bytes and at most 16 KiB (so 16 KiB for every budget from 128 KiB on,
//! the default's included); the time entries' blocks are `T = max(B / 4, 64)` bytes (4 KiB, or
//! 256 entries, with the default budget), as they are usually few. A block is allocated when
//! the first byte (or entry) is written into it and freed as soon as eviction passes its last
//! one; each ring keeps at most one freed block as a spare for its next allocation. A ring's
//! first block starts at 256 bytes and doubles as it fills, and each later block starts as long
//! as the one before, so a task that prints a few lines holds about a kilobyte while a flood
//! gets whole blocks. Nothing is allocated until output arrives. Hence the heap a buffer holds,
//! [`LogBuffer::allocated_bytes`], is always at most
//!
//! ```text
//! retained_cost() + C_stdout + C_stderr + C_tty
//!     + 2 × (3 × B + P × (⌈budget_bytes / B⌉ + 2)) + 3 × T + P × (⌈budget_bytes / T⌉ + 2)
//! ```
//!
//! where `C_*` are the capacities of the pending partial lines and `P` is the size of a block
//! pointer (`size_of::<Box<[u8]>>()`, 16 bytes on 64-bit targets). Per ring: less than a block
//! unused in its oldest block and less than a block in its newest, one spare block, and a block
//! table that never has more slots than the ring can need at once (eviction is batched, so a
//! call may go one block over the budget before it returns; time entries are at most 16/25 of
//! the cost, as every line costs at least 9 bytes). With the default limits the constant is
//! about 132 KiB (3.2% of the budget). [`LogBuffer::evict_to`] also frees the spare blocks, and
//! shrinks the block tables and the pending partial lines to what is in use.

use core::ops::Range;
use std::borrow::Cow;
use std::collections::VecDeque;

use wide::u8x16;

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

/// Bytes one time entry costs: one per run of consecutive retained lines with the same time
/// (see the [module docs](self#timestamps)).
pub const TIME_ENTRY_BYTES: usize = size_of::<TimeEntry>();

/// The two bounds of one buffer. Both in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// Most bytes the retained complete lines may cost: the output bytes they took (line
    /// endings included) plus [`INDEX_ENTRY_BYTES`] per line, plus [`TIME_ENTRY_BYTES`] per
    /// time entry (one per run of lines with the same time: per push for a flood, per line for
    /// output that comes a line at a time). Older lines are evicted to stay within it. Should
    /// be well above `max_line_bytes`; a line that cannot fit is dropped at once.
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

/// One task's output: a block ring of retained line texts, one of their index entries, and a
/// pending partial line per stream. See the [module docs](self) for the rules.
#[derive(Clone, Debug)]
pub struct LogBuffer {
    limits: LogLimits,
    /// The bytes of the retained complete lines as they arrived (endings included), oldest
    /// first, back to back. Positions are offsets in the stream of all bytes ever stored
    /// (evicted included).
    bytes: Ring<u8>,
    /// One entry per retained complete line, oldest first; the entry at position
    /// `index.start() + i` is line `first_retained() + i`.
    index: Ring<IndexEntry>,
    /// The times of the retained lines, run-length encoded: one entry per run of consecutive
    /// lines with the same time, oldest first. Every retained line is covered by one (the
    /// newest entry whose `first` is at most its number), and every entry by a retained line,
    /// so it is empty exactly when `index` is.
    times: Ring<TimeEntry>,
    /// Number the next complete line gets; also the count of complete lines so far.
    next_cursor: u64,
    /// Raw bytes ever pushed, newlines included.
    total_bytes: u64,
    /// Bytes after the last `\n` of each stream, at its [`slot`].
    pending: [Vec<u8>; 3],
    /// The time of the push that delivered the latest bytes of each pending partial line (of
    /// the last one, when the stream has none now).
    pending_ms: [u64; 3],
}

/// A time entry: the lines numbered from `first` up to the next entry's `first` (or to the
/// newest line) have time `ms` (see the [module docs](self#timestamps)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TimeEntry {
    first: u64,
    ms: u64,
}

/// A line-index entry: the offset one past the line's last stored byte in the stream of all
/// stored bytes (the line starts where the previous one ends) in bits 3 and up, whether the
/// line was *ended* (by a `\n` or by the end of its stream, rather than cut by a split) in bit
/// 2, and the stream's [`slot`] in bits 0 and 1. Packed into 8 bytes because short lines
/// (`seq`) would otherwise cost more in index than in text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct IndexEntry(u64);

impl IndexEntry {
    const SHIFT: u32 = 3;
    const ENDED: u64 = 0b100;
    const SLOT: u64 = 0b11;

    fn new(end: u64, stream: Stream, ended: bool) -> Self {
        let ended = if ended { Self::ENDED } else { 0 };
        // Offsets stay below 2^61: that is 2 exabytes of output.
        Self((end << Self::SHIFT) | ended | slot(stream) as u64)
    }

    /// The entry of a line of the same stream and kind that ends `bytes` further.
    #[inline(always)]
    fn moved_by(self, bytes: usize) -> Self {
        Self(self.0 + ((bytes as u64) << Self::SHIFT))
    }

    fn end(self) -> u64 {
        self.0 >> Self::SHIFT
    }

    fn stream(self) -> Stream {
        STREAMS
            .get((self.0 & Self::SLOT) as usize)
            .copied()
            .unwrap_or(Stream::Stdout)
    }

    /// How many of a line's stored bytes are text: an ended line loses its `\n` and one `\r`
    /// before it (CRLF); a line cut by a split is all text.
    #[inline]
    fn text_len(self, stored: &[u8]) -> usize {
        let mut len = stored.len();
        if self.0 & Self::ENDED != 0 {
            len -= usize::from(stored.last() == Some(&b'\n'));
            len -= usize::from(len > 0 && stored.get(len - 1) == Some(&b'\r'));
        }
        len
    }
}

/// What to read. Line numbers are cursors (see the [module docs](self)); sizes are bytes.
///
/// Selection, in order:
/// 1. Candidates: the retained complete lines numbered `≥ since` (all when `since` is `None`),
///    then the pending partial lines (stdout's, stderr's, then the terminal's) whose number is `≥ since`.
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
    /// Bound on the total length of the returned texts, in bytes (UTF-8), each line counting
    /// [`Query::line_overhead`] more.
    pub max_bytes: usize,
    /// Bytes each returned line counts toward `max_bytes` besides its text: what a reply spends
    /// on a line beyond its text (its number, its stream, punctuation), so that many tiny lines
    /// cannot make a reply much larger than `max_bytes`. 0 counts the text alone.
    pub line_overhead: usize,
    /// Keep ANSI escape sequences and carriage returns (see [`render`]).
    pub raw: bool,
    /// Give every returned line its time ([`Line::time_ms`], see the
    /// [module docs](self#timestamps)).
    pub timestamps: bool,
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
            line_overhead: 0,
            raw: false,
            timestamps: false,
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
    /// With [`Query::timestamps`], the wall-clock time (milliseconds since the Unix epoch)
    /// given with the push that completed the line (a partial line, or one ended by the end of
    /// its stream: that delivered its latest bytes; see the [module docs](self#timestamps));
    /// `None` when not asked for.
    pub time_ms: Option<u64>,
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
        let budget = limits.budget_bytes;
        let block = block_bytes(budget);
        let time_block = time_block_bytes(budget);
        let blocks = max_blocks(budget, block);
        Self {
            limits,
            bytes: Ring::new(block.trailing_zeros(), blocks),
            index: Ring::new((block / INDEX_ENTRY_BYTES).trailing_zeros(), blocks),
            times: Ring::new(
                (time_block / TIME_ENTRY_BYTES).trailing_zeros(),
                max_blocks(budget, time_block),
            ),
            next_cursor: 0,
            total_bytes: 0,
            pending: [Vec::new(), Vec::new(), Vec::new()],
            pending_ms: [0; 3],
        }
    }

    /// The limits this buffer was made with.
    pub fn limits(&self) -> LogLimits {
        self.limits
    }

    /// Appends raw output of `stream`, in any chunking, read at wall-clock time `at_ms`
    /// (milliseconds since the Unix epoch: the time its lines get, see the
    /// [module docs](self#timestamps); stored as given, even when earlier than the last).
    /// Returns the numbers of the lines this call completed (empty when it completed none);
    /// some of them may already be evicted if the chunk was larger than the budget.
    pub fn push(&mut self, stream: Stream, bytes: &[u8], at_ms: u64) -> Range<u64> {
        let first = self.next_cursor;
        self.total_bytes = self.total_bytes.saturating_add(bytes.len() as u64);
        let mut rest = bytes;
        if !self.pending[slot(stream)].is_empty() {
            let Some(i) = memchr::memchr(b'\n', rest) else {
                self.extend_pending(stream, rest, at_ms);
                self.enforce_budget();
                return first..self.next_cursor;
            };
            let (line, after) = rest.split_at(i);
            self.finish_pending(stream, line, at_ms);
            rest = after.get(1..).unwrap_or_default();
        }
        // The other complete lines lie whole in `rest`: store them straight from it.
        if let Some(last) = memchr::memrchr(b'\n', rest) {
            let (lines, after) = rest.split_at(last + 1);
            self.store_lines(stream, lines, at_ms);
            rest = after;
        }
        self.extend_pending(stream, rest, at_ms);
        self.enforce_budget();
        first..self.next_cursor
    }

    /// End of `stream` (EOF on its pipe): its pending partial line, if any, becomes a complete
    /// line. Returns the numbers of the lines completed (at most one). Output pushed to the
    /// stream later (a restarted task) starts a new line. The line keeps the time of the push
    /// that delivered its last bytes.
    pub fn close(&mut self, stream: Stream) -> Range<u64> {
        let first = self.next_cursor;
        let pending = core::mem::take(&mut self.pending[slot(stream)]);
        if !pending.is_empty() {
            self.emit_split(stream, &pending, false, self.pending_ms[slot(stream)]);
        }
        self.enforce_budget();
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

    /// Bytes counted against the budget now: the retained lines' output bytes (line endings
    /// included) plus [`INDEX_ENTRY_BYTES`] per retained line plus [`TIME_ENTRY_BYTES`] per
    /// time entry (one per run of retained lines with the same time, see the
    /// [module docs](self#timestamps)). Never above [`LogLimits::budget_bytes`].
    pub fn retained_cost(&self) -> usize {
        self.bytes.len()
            + INDEX_ENTRY_BYTES * self.index.len()
            + TIME_ENTRY_BYTES * self.times.len()
    }

    /// Heap bytes this buffer holds now: its byte, index and time blocks (spares included),
    /// their block tables, and the capacities of the pending partial lines. Not the `LogBuffer`
    /// value itself. At most `retained_cost()` plus the pending capacities plus a constant set
    /// by the limits (see the [module docs](self#memory)).
    pub fn allocated_bytes(&self) -> usize {
        self.bytes.allocated_bytes()
            + self.index.allocated_bytes()
            + self.times.allocated_bytes()
            + self.pending.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Evicts the oldest complete lines until [`retained_cost`](Self::retained_cost) is at most
    /// `max_cost` bytes (same units as the budget), as the budget does: they count in [`dropped_lines`](Self::dropped_lines), and the retained lines stay
    /// the newest ones. Returns how many lines it evicted (0 when the cost was already within
    /// `max_cost`). Also frees what is kept for reuse: spare blocks, and the capacity of the
    /// pending partial lines beyond their length (their bytes stay). The budget is unchanged:
    /// later output may fill the buffer up to it again.
    pub fn evict_to(&mut self, max_cost: usize) -> u64 {
        let evicted = self.evict(self.retained_cost().saturating_sub(max_cost));
        self.bytes.trim();
        self.index.trim();
        self.times.trim();
        for pending in &mut self.pending {
            pending.shrink_to_fit();
        }
        evicted
    }

    /// Retained complete line `n`, rendered as for a model (`raw: false`), without its time;
    /// `None` when it was evicted or is not complete yet.
    pub fn line(&self, n: u64) -> Option<Line> {
        let (stream, bytes) = self.complete(n)?;
        Some(Line {
            n,
            stream,
            text: render(&bytes, false),
            partial: false,
            time_ms: None,
        })
    }

    /// The time of retained complete line `n` (see the [module docs](self#timestamps)); `None`
    /// when it was evicted or is not complete yet.
    pub fn time_ms(&self, n: u64) -> Option<u64> {
        if !(self.first_retained()..self.next_cursor).contains(&n) {
            return None;
        }
        let pos = self.time_entry(self.times.start(), n)?;
        self.times.get(pos).map(|entry| entry.ms)
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

        let (mut lines, truncated, next_cursor) = match (tail, query.head) {
            (Some(tail), None) => {
                let (lines, truncated) = select_tail(
                    candidates.rev(),
                    tail,
                    query.max_bytes,
                    query.line_overhead,
                    examine,
                );
                (lines, truncated, self.next_cursor)
            }
            (Some(tail), Some(head)) => {
                let (window, _) = select_tail(candidates.rev(), tail, usize::MAX, 0, examine);
                select_forward(
                    window.into_iter(),
                    |line| (!line.partial).then_some(line.n),
                    Some,
                    Some(head),
                    (query.max_bytes, query.line_overhead),
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
                (query.max_bytes, query.line_overhead),
                self.next_cursor,
            ),
        };
        if query.timestamps {
            self.fill_times(&mut lines);
        }
        Page {
            lines,
            next_cursor,
            skipped,
            truncated,
        }
    }

    // ---- ingest ----

    /// Ends the pending partial line of `stream` (not empty) with `tail`, the bytes before a
    /// `\n`, pushed at `at_ms`.
    fn finish_pending(&mut self, stream: Stream, tail: &[u8], at_ms: u64) {
        self.extend_pending(stream, tail, at_ms);
        let pending = core::mem::take(&mut self.pending[slot(stream)]);
        // The `\n` of this push completes it.
        self.emit_split(stream, &pending, true, at_ms);
        // Keep the allocation for the next partial line.
        self.pending[slot(stream)] = reuse(pending);
    }

    /// Appends bytes without `\n`, pushed at `at_ms`, to the pending partial line of `stream`,
    /// completing every forced split as soon as it is decidable (see [`must_split`]): the
    /// pieces split off get time `at_ms`, even those whose bytes all came earlier (the byte that
    /// forced the split is of this push).
    fn extend_pending(&mut self, stream: Stream, mut data: &[u8], at_ms: u64) {
        let max = self.max_line();
        let cap = max.saturating_add(2);
        let mut pending = core::mem::take(&mut self.pending[slot(stream)]);
        if !data.is_empty() {
            self.pending_ms[slot(stream)] = at_ms;
        }
        loop {
            if pending.is_empty() {
                while must_split(data, max) {
                    let (line, rest) = data.split_at(split_point(data, max));
                    self.emit(stream, line, Ending::Split, at_ms);
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
            self.emit(
                stream,
                pending.get(..at).unwrap_or_default(),
                Ending::Split,
                at_ms,
            );
            pending.drain(..at);
        }
        self.pending[slot(stream)] = pending;
    }

    /// Stores one complete line at time `ms`: `line` is its bytes before the `\n` (`newline`)
    /// or before the end of the stream; split into pieces of at most `max_line_bytes` of text
    /// if longer.
    fn emit_split(&mut self, stream: Stream, mut line: &[u8], newline: bool, ms: u64) {
        let max = self.max_line();
        let mut text = strip_cr(line).len();
        while text > max {
            let at = split_point(line.get(..text).unwrap_or_default(), max);
            let (head, rest) = line.split_at(at);
            self.emit(stream, head, Ending::Split, ms);
            (line, text) = (rest, text - at);
        }
        let ending = if newline {
            Ending::Newline
        } else {
            Ending::Eof
        };
        self.emit(stream, line, ending, ms);
    }

    /// Stores `lines` (each ended by a `\n`, the last byte included; `stream` has no pending
    /// partial line), pushed at `ms`, as [`emit_split`](Self::emit_split) would one by one: in
    /// runs of [`store_run`](Self::store_run), and one line through `emit_split` where a run
    /// cannot take it.
    fn store_lines(&mut self, stream: Stream, lines: &[u8], ms: u64) {
        let mut rest = lines;
        while !rest.is_empty() {
            let stored = self.store_run(stream, rest, ms);
            let next = match stored {
                0 => {
                    let newline = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
                    let (line, _) = rest.split_at(newline);
                    self.emit_split(stream, line, true, ms);
                    newline + 1
                }
                stored => stored,
            };
            rest = rest.get(next..).unwrap_or_default();
        }
    }

    /// Stores the longest run of whole lines from the start of `lines` (as in
    /// [`store_lines`](Self::store_lines)) that needs no split, no eviction within it and no
    /// new block: one pass copies the bytes into the room left in the newest byte block while
    /// it finds the `\n`s, and an index entry is written per `\n`, with no per-line call or
    /// check; the run shares one time entry (a new one unless the newest has time `ms`).
    /// Returns the bytes stored; 0 when the first line cannot be stored this way.
    ///
    /// A line of the run is at most `len` bytes long, with `len` within the line limit, the
    /// budget less an index entry and a time entry, and what the budget allows now: so no line
    /// in it needs a split, every line fits the budget, and the first line fits what is
    /// allowed. The run is then cut to the most lines whose cost is allowed (see
    /// [`emit`](Self::emit)).
    fn store_run(&mut self, stream: Stream, lines: &[u8], ms: u64) -> usize {
        let budget = self.limits.budget_bytes;
        let room = self.bytes.writable().len();
        // The run stores at most `room` bytes of `lines`, and those will be stored whatever
        // happens next (with a time entry, if a new one is needed): the lines still over the
        // budget with them (their entries not counted) are evicted by the end of the call in
        // any case, so evict them now, once for the run. That frees at most about the block
        // the run fills, which the next run reuses.
        let incoming = lines.len().min(room);
        let needed = self
            .retained_cost()
            .saturating_add(incoming + self.stamp_cost(ms));
        let excess = needed.saturating_sub(budget);
        if excess > 0 {
            self.evict(excess);
        }
        // Eviction may have freed the newest time entry too.
        let stamp = self.stamp_cost(ms);
        let allowed = budget
            .saturating_add(self.bytes.block_len())
            .saturating_sub(self.retained_cost());
        let len = incoming
            .min(self.max_line())
            .min(budget.saturating_sub(INDEX_ENTRY_BYTES + TIME_ENTRY_BYTES))
            .min(allowed.saturating_sub(INDEX_ENTRY_BYTES + stamp));
        if len == 0 {
            return 0;
        }
        let start = self.bytes.end();
        let text = self.bytes.writable();
        let index = self.index.writable();
        let (src, dst) = (lines.get(..len).unwrap_or_default(), text);
        let found = copy_and_index(src, dst, index, IndexEntry::new(start, stream, true));
        let found = index.get(..found).unwrap_or_default();
        // The cost of the first `j` lines grows with `j`: keep the most that are allowed.
        let cost = |j: usize, entry: &IndexEntry| {
            (entry.end() - start) as usize + INDEX_ENTRY_BYTES * (j + 1) + stamp
        };
        let (mut lo, mut hi) = (0, found.len());
        if found
            .last()
            .is_some_and(|last| cost(found.len() - 1, last) <= allowed)
        {
            lo = found.len();
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match found.get(mid) {
                Some(entry) if cost(mid, entry) <= allowed => lo = mid + 1,
                _ => hi = mid,
            }
        }
        let lines = lo;
        let Some(last) = lines.checked_sub(1).and_then(|j| found.get(j)) else {
            return 0;
        };
        let stored = (last.end() - start) as usize;
        self.bytes.commit(stored);
        self.index.commit(lines);
        self.stamp(self.next_cursor, ms);
        self.next_cursor += lines as u64;
        stored
    }

    /// Numbers and stores one complete line at time `ms`, `bytes` of text (at most
    /// `max_line_bytes`, plus a `\r` before an ending) followed by its ending.
    ///
    /// Evicts in batches: while a call runs, the retained cost may exceed the budget by up to
    /// one block, and [`enforce_budget`](Self::enforce_budget) evicts the excess before the
    /// call returns. Since the retained lines are always the longest run of newest lines that
    /// fits, this retains the same lines as evicting for every line, for less work per line.
    fn emit(&mut self, stream: Stream, bytes: &[u8], ending: Ending, ms: u64) {
        let n = self.next_cursor;
        let budget = self.limits.budget_bytes;
        let newline = matches!(ending, Ending::Newline);
        let stored = bytes.len() + usize::from(newline);
        let cost = stored.saturating_add(INDEX_ENTRY_BYTES);
        if cost.saturating_add(TIME_ENTRY_BYTES) > budget {
            // It can never fit (alone, it needs a time entry of its own): drop it, and
            // everything older so retained lines stay contiguous.
            self.clear();
            self.next_cursor += 1;
            return;
        }
        let after = self
            .retained_cost()
            .saturating_add(cost + self.stamp_cost(ms));
        if after > budget.saturating_add(self.bytes.block_len()) {
            self.evict(after - budget);
        }
        self.stamp(n, ms);
        self.bytes.extend_from_slice(bytes);
        if newline {
            self.bytes.push(b'\n');
        }
        let ended = !matches!(ending, Ending::Split);
        self.index
            .push(IndexEntry::new(self.bytes.end(), stream, ended));
        // Numbered last: `first_retained` (and so `evict`) counts the lines in the index.
        self.next_cursor += 1;
    }

    /// What storing a line at time `ms` now adds in time entries: nothing when the newest entry
    /// has that time (it then covers the line too), else one entry.
    #[inline]
    fn stamp_cost(&self, ms: u64) -> usize {
        match self.times.last() {
            Some(newest) if newest.ms == ms => 0,
            _ => TIME_ENTRY_BYTES,
        }
    }

    /// Records that line `n`, about to be stored, and the lines after it have time `ms`
    /// (unless the newest entry says so already).
    #[inline]
    fn stamp(&mut self, n: u64, ms: u64) {
        if self.stamp_cost(ms) > 0 {
            self.times.push(TimeEntry { first: n, ms });
        }
    }

    /// Evicts the lines over the budget (see [`emit`](Self::emit)).
    fn enforce_budget(&mut self) {
        let excess = self
            .retained_cost()
            .saturating_sub(self.limits.budget_bytes);
        if excess > 0 {
            self.evict(excess);
        }
    }

    /// Evicts the fewest oldest lines whose cost is at least `excess` bytes (all of them when
    /// they cost less), with the time entries that cover only them; returns how many lines.
    fn evict(&mut self, excess: usize) -> u64 {
        let first = self.first_retained();
        let next = self.next_cursor;
        if excess == 0 || first == next {
            return 0;
        }
        if excess >= self.retained_cost() {
            self.clear();
            return next - first;
        }
        // Walk the lines oldest first, in runs that lie in one index block and among the lines
        // of one time entry, to the run whose lines reach what is left of `excess`. Evicting a
        // run's lines up to one of them frees their bytes and index entries (increasing along
        // the run, so the fewest lines are found by bisection), and the time entry too when
        // that line is the last the entry covers. Only the evicted lines' entries are read, as
        // they are stored.
        let mut pos = self.index.start();
        let mut end = self.bytes.start();
        let mut entries = 0;
        // The line after those of the oldest time entry left.
        let mut entry_end = self
            .times
            .get(self.times.start() + 1)
            .map_or(next, |e| e.first);
        let mut excess = excess;
        loop {
            let line = next - (self.index.end() - pos);
            let run = self.index.run_from(pos);
            let in_entry = usize::try_from(entry_end - line).unwrap_or(usize::MAX);
            let (run, ends_entry) = match run.get(..in_entry) {
                Some(run) => (run, true),
                None => (run, false),
            };
            let Some(last) = run.last() else {
                // Not reached: the lines cost more than `excess`.
                self.clear();
                return next - first;
            };
            let through = |j: usize, entry: &IndexEntry| {
                (entry.end() - end) as usize + INDEX_ENTRY_BYTES * (j + 1)
            };
            let freed_entry = if ends_entry { TIME_ENTRY_BYTES } else { 0 };
            let whole = through(run.len() - 1, last) + freed_entry;
            if whole < excess {
                excess -= whole;
                end = last.end();
                pos += run.len() as u64;
                if ends_entry {
                    entries += 1;
                    let entry = self.times.start() + entries;
                    entry_end = self.times.get(entry + 1).map_or(next, |e| e.first);
                }
                continue;
            }
            // All of the run reaches `excess`: `hi` always does, so the last line (the one
            // whose eviction may also free the time entry) is never tested.
            let (mut lo, mut hi) = (0, run.len() - 1);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match run.get(mid) {
                    Some(entry) if through(mid, entry) < excess => lo = mid + 1,
                    _ => hi = mid,
                }
            }
            end = run.get(lo).map_or(end, |entry| entry.end());
            pos += lo as u64 + 1;
            entries += u64::from(ends_entry && lo + 1 == run.len());
            break;
        }
        let lines = pos - self.index.start();
        self.index.advance_to(pos);
        self.bytes.advance_to(end);
        self.times.advance_to(self.times.start() + entries);
        lines
    }

    /// Drops every retained line, with the time entries.
    fn clear(&mut self) {
        self.index.clear();
        self.bytes.clear();
        self.times.clear();
    }

    fn max_line(&self) -> usize {
        self.limits.max_line_bytes.max(1)
    }

    // ---- read ----

    /// Stream and text bytes of retained complete line `n`; borrowed unless it spans blocks.
    fn complete(&self, n: u64) -> Option<(Stream, Cow<'_, [u8]>)> {
        let i = n.checked_sub(self.first_retained())?;
        let pos = self.index.start().checked_add(i)?;
        // The line starts where the previous one ends, usually in the same index block.
        let (start, entry) = match i.checked_sub(1).map(|_| self.index.run_from(pos - 1)) {
            None => (self.bytes.start(), self.index.get(pos)?),
            Some([previous, entry, ..]) => (previous.end(), *entry),
            Some(_) => (self.index.get(pos - 1)?.end(), self.index.get(pos)?),
        };
        let text = match self.bytes.slice(start..entry.end())? {
            Cow::Borrowed(stored) => Cow::Borrowed(stored.get(..entry.text_len(stored))?),
            Cow::Owned(mut stored) => {
                stored.truncate(entry.text_len(&stored));
                Cow::Owned(stored)
            }
        };
        Some((entry.stream(), text))
    }

    /// The pending partial lines as read candidates: stdout's, stderr's, then the terminal's, numbered from
    /// `next_cursor` on.
    fn partials(&self) -> impl DoubleEndedIterator<Item = Candidate<'_>> + '_ {
        let mut n = self.next_cursor;
        let partial = |stream: Stream| {
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
        STREAMS.map(partial).into_iter().flatten()
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
            time_ms: None,
        })
    }

    /// Sets the time of each of `lines` (retained complete lines, then partial ones, in
    /// increasing `n`): one search for the first complete line's time entry, then a walk
    /// forward from it, with the lines the current entry covers at hand (most lines of a
    /// page share its entry).
    fn fill_times(&self, lines: &mut [Line]) {
        // The current entry's position, its lines and its time.
        let mut entry = (self.times.start(), 0..0, 0);
        for line in lines {
            line.time_ms = if line.partial {
                Some(self.pending_ms[slot(line.stream)])
            } else if entry.1.contains(&line.n) {
                Some(entry.2)
            } else {
                self.time_entry(entry.0, line.n).and_then(|pos| {
                    let found = self.times.get(pos)?;
                    let end = self
                        .times
                        .get(pos + 1)
                        .map_or(self.next_cursor, |e| e.first);
                    entry = (pos, found.first..end, found.ms);
                    Some(found.ms)
                })
            };
        }
    }

    /// The position of the time entry of retained line `n`, searched from position `from` on
    /// (an entry of a line at or before `n`): a few steps forward, then a binary search (so a
    /// read of lines close together walks, and one of lines far apart, as `grep` may select,
    /// still takes a logarithmic time per line).
    fn time_entry(&self, from: u64, n: u64) -> Option<u64> {
        let mut pos = from.max(self.times.start());
        if self.times.get(pos)?.first > n {
            return None;
        }
        for _ in 0..8 {
            match self.times.get(pos + 1) {
                Some(next) if next.first <= n => pos += 1,
                _ => return Some(pos),
            }
        }
        // The entry at `lo` starts at most at `n`; those from `hi` on start after it.
        let (mut lo, mut hi) = (pos, self.times.end());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.times.get(mid).is_some_and(|e| e.first <= n) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
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
    overhead: usize,
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
        let cost = line.text.len().saturating_add(overhead);
        if bytes.saturating_add(cost) > max_bytes {
            if lines.is_empty() {
                cut_at_char_boundary(&mut line.text, max_bytes.saturating_sub(overhead));
                lines.push(line);
            }
            lines.reverse();
            return (lines, true);
        }
        bytes += cost;
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
    (max_bytes, overhead): (usize, usize),
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
        let cost = line.text.len().saturating_add(overhead);
        if bytes.saturating_add(cost) > max_bytes {
            if !lines.is_empty() {
                return (lines, true, cursor.unwrap_or(buffer_next));
            }
            cut_at_char_boundary(&mut line.text, max_bytes.saturating_sub(overhead));
            lines.push(line);
            return (lines, true, resume(oldest_first.next()));
        }
        bytes += cost;
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
    // Printable ASCII (the common case) has nothing to decode or strip. The check visits every
    // byte without stopping early, which lets the compiler compare many bytes at once.
    let printable = |ok, &b: &u8| ok & (b == b'\t' || (0x20..0x7f).contains(&b));
    if bytes.iter().fold(true, printable)
        && let Ok(text) = core::str::from_utf8(bytes)
    {
        return Cow::Borrowed(text);
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

/// How a stored line ends, which says what of its stored bytes is text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// A `\n`, stored after the text (with the `\r` of a CRLF before it).
    Newline,
    /// The end of the stream (a `\r` of a CRLF cut short is stored, not text).
    Eof,
    /// A split of a longer line: every stored byte is text.
    Split,
}

/// Copies `src` to the start of `dst` (which must be at least as long) and, for each `\n` in
/// it, writes to the next slot of `ends` the entry `first` moved to just past that `\n`, until
/// `ends` is full. Returns how many entries it wrote. The bytes of `dst` past the last of them
/// may hold copied bytes too; they are free slots, written over later.
///
/// One pass, 64 bytes at a time: a group is copied in registers and its `\n`s found by
/// comparing 16 bytes at once ([`newline_bits`]), so a short line costs an entry and a few
/// instructions, and a long one the copy of its bytes.
///
/// Never inlined (it is called once per run of up to an index block of lines), so that its
/// machine code does not change with the code around its caller: inlined into `push`, its
/// loop once lost a register to it (an instruction a line). See also [`index_newlines`].
#[inline(never)]
fn copy_and_index(src: &[u8], dst: &mut [u8], ends: &mut [IndexEntry], first: IndexEntry) -> usize {
    let Some(dst) = dst.get_mut(..src.len()) else {
        return 0;
    };
    let (groups, src_tail) = src.as_chunks::<64>();
    let (dst_groups, dst_tail) = dst.as_chunks_mut::<64>();
    let mut found = 0;
    let mut at = first.moved_by(1);
    for (to, from) in dst_groups.iter_mut().zip(groups) {
        *to = *from;
        found = index_newlines(newline_bits(from), at, ends, found);
        if found == ends.len() {
            return found;
        }
        at = at.moved_by(64);
    }
    dst_tail.copy_from_slice(src_tail);
    let mut last = [0; 64];
    if let Some(head) = last.get_mut(..src_tail.len()) {
        head.copy_from_slice(src_tail);
    }
    index_newlines(newline_bits(&last), at, ends, found)
}

/// Writes `at` moved by the position of each set bit of `bits`, lowest first, to `ends` from
/// slot `found` on, while there are slots; returns the next free slot.
///
/// The first newline of a group is written on its own (a group of longer lines has one or
/// none), the others four at a time, with a test of `bits` after each: about 6 instructions a
/// newline, in a loop long enough that where it lands in memory hardly matters. A loop of one
/// newline a pass (about 30 bytes) ran 40% slower on 2-byte lines at one of the four places,
/// modulo 64, where a function aligned to 16 bytes may start (straddling a 64-byte line, or a
/// jump across a 32-byte boundary, which the microcode for Intel's JCC erratum makes slow).
#[inline(always)]
fn index_newlines(
    mut bits: u64,
    at: IndexEntry,
    ends: &mut [IndexEntry],
    mut found: usize,
) -> usize {
    if bits == 0 {
        return found;
    }
    let Some(first) = ends.get_mut(found) else {
        return found;
    };
    *first = at.moved_by(bits.trailing_zeros() as usize);
    found += 1;
    bits &= bits - 1;
    if bits == 0 {
        return found;
    }
    let mut fours = ends
        .get_mut(found..)
        .unwrap_or_default()
        .chunks_exact_mut(4);
    for slots in &mut fours {
        for (i, slot) in slots.iter_mut().enumerate() {
            *slot = at.moved_by(bits.trailing_zeros() as usize);
            bits &= bits - 1;
            if bits == 0 {
                return found + i + 1;
            }
        }
        found += 4;
    }
    for slot in fours.into_remainder() {
        *slot = at.moved_by(bits.trailing_zeros() as usize);
        found += 1;
        bits &= bits - 1;
        if bits == 0 {
            break;
        }
    }
    found
}

/// Bit `i` set where `group[i]` is a `\n`, and no other bit. Compares 16 bytes at a time with
/// `wide`'s portable vectors (SSE2 on x86-64, NEON on AArch64, simd128 on WebAssembly when it is
/// enabled, plain code elsewhere).
#[inline(always)]
fn newline_bits(group: &[u8; 64]) -> u64 {
    let newline = u8x16::splat(b'\n');
    let (quarters, _) = group.as_chunks::<16>();
    quarters.iter().enumerate().fold(0, |bits, (i, quarter)| {
        let mask = u8x16::new(*quarter).simd_eq(newline).to_bitmask();
        bits | u64::from(mask) << (16 * i)
    })
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

/// Every stream, in [`slot`] order (the order pending partial lines are read in).
const STREAMS: [Stream; 3] = [Stream::Stdout, Stream::Stderr, Stream::Tty];

/// Where a stream's pending partial line is kept, and its number in an index entry.
fn slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
        Stream::Tty => 2,
    }
}

/// An emptied buffer, keeping its allocation.
fn reuse(mut buf: Vec<u8>) -> Vec<u8> {
    buf.clear();
    buf
}

/// Makes room for `additional` more bytes, growing geometrically from at least 64 bytes, but
/// never past `cap` bytes unless the content itself needs more.
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

/// Smallest block of a [`Ring`], in bytes.
const MIN_BLOCK_BYTES: usize = 64;

/// Length a ring's first block starts at, in bytes (when its block size is larger): a task that
/// prints a few lines holds a few hundred bytes, not whole blocks.
const FIRST_BLOCK_BYTES: usize = 256;

/// Largest block of a [`Ring`], in bytes: large enough that a block's allocation is cheap per
/// line, small enough that a few partly used blocks are little next to a budget of megabytes.
const MAX_BLOCK_BYTES: usize = 16 << 10;

/// The block size `B` of a buffer with this budget, in bytes: `budget_bytes / 8` rounded down
/// to a power of two, within [`MIN_BLOCK_BYTES`]`..=`[`MAX_BLOCK_BYTES`]. A power of two of at
/// least [`INDEX_ENTRY_BYTES`], so that it holds a whole number of index entries.
fn block_bytes(budget_bytes: usize) -> usize {
    let bytes = (budget_bytes / 8).clamp(MIN_BLOCK_BYTES, MAX_BLOCK_BYTES);
    1 << bytes.ilog2()
}

/// The block size `T` of the time entries of a buffer with this budget, in bytes:
/// `max(B / 4, 64)` where `B` is [`block_bytes`]. Smaller than `B` because a flood has few time
/// entries (one per push), whose blocks would otherwise be mostly empty.
fn time_block_bytes(budget_bytes: usize) -> usize {
    (block_bytes(budget_bytes) / 4).max(MIN_BLOCK_BYTES)
}

/// Most blocks of `block` bytes a ring of a buffer with this budget holds at once (spare not
/// included): `n` bytes of text or of entries, starting anywhere in a block, span at most
/// `⌈n / block⌉ + 1` blocks, and `n ≤ budget_bytes + B` (the budget is exceeded by up to a
/// block of text while a call runs, see [`LogBuffer::emit`]). For the time entries `n` is less:
/// at most 16/25 of the cost (an entry covers at least a line, which costs at least 9 bytes),
/// and `B ≤ budget_bytes / 8` whenever `T < B`, so `n < budget_bytes` then.
fn max_blocks(budget_bytes: usize, block: usize) -> usize {
    budget_bytes.div_ceil(block) + 2
}

/// A queue of `T`s stored in blocks of `1 << shift` elements. Each element ever pushed has a
/// *position*: 0, 1, 2, … in push order, never reused. Position `p` lives in block
/// `p >> shift` (its *block number*) at `p & mask`, so the live elements `start..end` occupy
/// the blocks numbered `start >> shift ..= (end - 1) >> shift`, and only those are held: a block
/// is allocated when its first element is written and freed when [`Ring::advance_to`] passes its
/// last one. One freed block is kept as a spare for the next allocation.
#[derive(Clone)]
struct Ring<T> {
    /// The held blocks, oldest first; `blocks[i]` has block number `first_block + i`. Empty when
    /// the ring is.
    blocks: VecDeque<Box<[T]>>,
    /// Block number of `blocks[0]`.
    first_block: u64,
    /// Position of the oldest live element.
    start: u64,
    /// Position the next pushed element gets.
    end: u64,
    /// log2 of the block length, in elements.
    shift: u32,
    /// Bound on the capacity of `blocks`: the most blocks the ring can need at once.
    max_blocks: usize,
    /// A freed block, for the next allocation.
    spare: Option<Box<[T]>>,
}

impl<T: Copy + Default> Ring<T> {
    /// An empty ring of blocks of `1 << shift` elements. Allocates nothing.
    fn new(shift: u32, max_blocks: usize) -> Self {
        Self {
            blocks: VecDeque::new(),
            first_block: 0,
            start: 0,
            end: 0,
            shift,
            max_blocks,
            spare: None,
        }
    }

    /// Position of the oldest live element (`end()` when empty).
    fn start(&self) -> u64 {
        self.start
    }

    /// Position the next pushed element gets.
    fn end(&self) -> u64 {
        self.end
    }

    /// Live elements. They fit a budget given in `usize` bytes, so in a `usize`.
    fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Elements the held blocks can store, spare included.
    fn capacity(&self) -> usize {
        self.blocks
            .iter()
            .chain(&self.spare)
            .map(|block| block.len())
            .sum()
    }

    /// Heap bytes held: the blocks (spare included) and the block table.
    fn allocated_bytes(&self) -> usize {
        self.capacity() * size_of::<T>() + self.blocks.capacity() * size_of::<Box<[T]>>()
    }

    fn mask(&self) -> u64 {
        (1 << self.shift) - 1
    }

    /// The held block numbered `number`.
    fn block(&self, number: u64) -> Option<&[T]> {
        let i = usize::try_from(number.checked_sub(self.first_block)?).ok()?;
        self.blocks.get(i).map(|block| &**block)
    }

    /// Elements per block.
    fn block_len(&self) -> usize {
        1 << self.shift
    }

    /// The live elements from `pos` to the end of its block or of the ring, whichever comes
    /// first; empty when `pos` is not live.
    #[inline]
    fn run_from(&self, pos: u64) -> &[T] {
        if !(self.start..self.end).contains(&pos) {
            return &[];
        }
        let i = ((pos >> self.shift) - self.first_block) as usize;
        let offset = (pos & self.mask()) as usize;
        let Some(block) = self.blocks.get(i) else {
            return &[];
        };
        let run = block.get(offset..).unwrap_or_default();
        let live = usize::try_from(self.end - pos).unwrap_or(usize::MAX);
        run.get(..live).unwrap_or(run)
    }

    /// The newest live element.
    #[inline]
    fn last(&self) -> Option<T> {
        self.get(self.end.checked_sub(1)?)
    }

    /// The live element at `pos`.
    #[inline]
    fn get(&self, pos: u64) -> Option<T> {
        if !(self.start..self.end).contains(&pos) {
            return None;
        }
        // The ring is not empty, so `blocks[0]` holds `start`, and `pos` is in `blocks[i]`.
        let i = ((pos >> self.shift) - self.first_block) as usize;
        let offset = (pos & self.mask()) as usize;
        self.blocks.get(i)?.get(offset).copied()
    }

    /// The live elements at `range`: borrowed when they lie in one block, else copied.
    #[inline]
    fn slice(&self, range: Range<u64>) -> Option<Cow<'_, [T]>> {
        if range.start < self.start || range.end > self.end || range.start > range.end {
            return None;
        }
        let len = (range.end - range.start) as usize;
        match self.run_from(range.start).get(..len) {
            Some(within_a_block) => Some(Cow::Borrowed(within_a_block)),
            None => self.joined(range),
        }
    }

    /// [`Ring::slice`] of a live `range` that spans blocks.
    fn joined(&self, range: Range<u64>) -> Option<Cow<'_, [T]>> {
        let len = (range.end - range.start) as usize;
        let mut joined = Vec::with_capacity(len);
        let mut pos = range.start;
        while pos < range.end {
            let block = self.block(pos >> self.shift)?;
            let offset = (pos & self.mask()) as usize;
            let part = block.get(offset..)?;
            let part = part.get(..part.len().min((range.end - pos) as usize))?;
            joined.extend_from_slice(part);
            pos += part.len() as u64;
        }
        Some(Cow::Owned(joined))
    }

    /// Appends `value`.
    #[inline]
    fn push(&mut self, value: T) {
        let slot = match self.newest_room() {
            Some(room) => room.first_mut(),
            None => self.writable().first_mut(),
        };
        if let Some(slot) = slot {
            *slot = value;
            self.end += 1;
        }
    }

    /// Appends `values`, in order.
    #[inline]
    fn extend_from_slice(&mut self, values: &[T]) {
        let room = self
            .newest_room()
            .and_then(|room| room.get_mut(..values.len()));
        match room {
            Some(room) => {
                room.copy_from_slice(values);
                self.end += values.len() as u64;
            }
            None => self.extend_across_blocks(values),
        }
    }

    /// Marks the first `n` slots of [`Ring::newest_room`] as pushed (written by the caller).
    #[inline]
    fn commit(&mut self, n: usize) {
        self.end += n as u64;
    }

    /// The free slots after `end` in the newest block, when `end` is inside it (not at a block
    /// boundary, where the block holding `end` is not allocated yet) and the block, which may
    /// still be short (see [`Ring::writable`]), has room.
    #[inline]
    fn newest_room(&mut self) -> Option<&mut [T]> {
        let offset = (self.end & self.mask()) as usize;
        if offset == 0 {
            return None;
        }
        // The ring is not empty (or `blocks` would be) and `end - 1` is in the newest block.
        self.blocks
            .back_mut()?
            .get_mut(offset..)
            .filter(|room| !room.is_empty())
    }

    /// [`Ring::extend_from_slice`] when `values` do not fit in the newest block.
    fn extend_across_blocks(&mut self, mut values: &[T]) {
        while !values.is_empty() {
            let room = self.writable();
            let n = room.len().min(values.len());
            if n == 0 {
                debug_assert!(false, "`writable` returned no room");
                return;
            }
            let (head, rest) = values.split_at(n);
            room[..n].copy_from_slice(head);
            self.end += n as u64;
            values = rest;
        }
    }

    /// The free slots from `end` to the end of its block, allocating or growing that block if
    /// needed. Never empty.
    ///
    /// Blocks may be short: a ring's first block starts at [`FIRST_BLOCK_BYTES`] and doubles
    /// as it fills, up to a whole block, so that a task that prints a line or two holds little;
    /// a new block starts as long as the one before it, so a flood gets whole blocks at once.
    /// Only the newest block can be short, and it always covers `start..end` of its range.
    fn writable(&mut self) -> &mut [T] {
        let number = self.end >> self.shift;
        let offset = (self.end & self.mask()) as usize;
        if self.blocks.is_empty() {
            self.first_block = number;
        }
        let i = (number - self.first_block) as usize;
        if i == self.blocks.len() {
            let first = (FIRST_BLOCK_BYTES / size_of::<T>()).max(1);
            let len = self
                .blocks
                .back()
                .map_or(first, |newest| newest.len())
                .max((offset + 1).next_power_of_two())
                .min(self.block_len());
            let block = match self.spare.take() {
                Some(spare) if spare.len() >= len => spare,
                _ => vec![T::default(); len].into_boxed_slice(),
            };
            if self.blocks.len() == self.blocks.capacity() {
                // Grow the table geometrically, but never past what the ring can need.
                let target = (self.blocks.capacity() * 2)
                    .max(4)
                    .min(self.max_blocks)
                    .max(self.blocks.len() + 1);
                self.blocks.reserve_exact(target - self.blocks.len());
            }
            self.blocks.push_back(block);
        }
        let block_len = self.block_len();
        let Some(block) = self.blocks.get_mut(i) else {
            return &mut [];
        };
        if block.len() <= offset {
            let len = (block.len() * 2).max(offset + 1).min(block_len);
            let mut grown = core::mem::take(block).into_vec();
            grown.reserve_exact(len - grown.len());
            grown.resize(len, T::default());
            *block = grown.into_boxed_slice();
        }
        block.get_mut(offset..).unwrap_or_default()
    }

    /// Drops the elements before `pos` (clamped to `start..=end`), freeing the blocks that
    /// held only those. When the ring becomes empty, every block is freed.
    #[inline(always)]
    fn advance_to(&mut self, pos: u64) {
        self.start = pos.clamp(self.start, self.end);
        if self.start < self.end && self.start >> self.shift == self.first_block {
            return;
        }
        self.free_passed_blocks();
    }

    /// Frees the blocks before the one holding `start`, or all of them when the ring is empty.
    #[inline(never)]
    fn free_passed_blocks(&mut self) {
        let keep_from = if self.start == self.end {
            self.first_block + self.blocks.len() as u64
        } else {
            self.start >> self.shift
        };
        while self.first_block < keep_from {
            let Some(block) = self.blocks.pop_front() else {
                break;
            };
            self.first_block += 1;
            if self.spare.is_none() {
                self.spare = Some(block);
            }
        }
    }

    /// Drops every element.
    fn clear(&mut self) {
        self.advance_to(self.end);
    }

    /// Frees the spare block and the block table's unused slots.
    fn trim(&mut self) {
        self.spare = None;
        self.blocks.shrink_to_fit();
    }
}

impl<T> core::fmt::Debug for Ring<T> {
    /// The shape, not the contents (which can be megabytes).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Ring")
            .field("positions", &(self.start..self.end))
            .field("block_len", &(1u64 << self.shift))
            .field("blocks", &self.blocks.len())
            .field("spare", &self.spare.is_some())
            .finish()
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
        log.push(Stdout, bytes, 0);
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
            log.push(Stdout, format!("{i}\n").as_bytes(), 0);
        }
        log
    }

    // ---- ingest: lines and cursors ----

    #[test]
    fn new_buffer_allocates_nothing() {
        let log = LogBuffer::new(LogLimits::default());
        assert_eq!(log.bytes.capacity(), 0);
        assert_eq!(log.index.capacity(), 0);
        assert_eq!(log.times.capacity(), 0);
        assert!(log.pending.iter().all(|p| p.capacity() == 0));
        assert_eq!(log.retained_cost(), 0);
        assert_eq!((log.next_cursor(), log.first_retained()), (0, 0));
    }

    #[test]
    fn lines_are_numbered_from_zero_across_streams_in_arrival_order() {
        let mut log = LogBuffer::new(BIG);
        log.push(Stdout, b"out 0\n", 0);
        log.push(Stderr, b"err 1\n", 0);
        log.push(Stdout, b"out 2\n", 0);
        let page = log.read(&everything());
        assert_eq!(numbers(&page), [0, 1, 2]);
        let streams: Vec<_> = page.lines.iter().map(|l| l.stream).collect();
        assert_eq!(streams, [Stdout, Stderr, Stdout]);
    }

    #[test]
    fn push_returns_the_lines_it_completed() {
        let mut log = LogBuffer::new(BIG);
        assert_eq!(log.push(Stdout, b"a\nb\nc", 0), 0..2);
        assert_eq!(log.push(Stdout, b"c", 0), 2..2);
        assert_eq!(log.push(Stdout, b"\n", 0), 2..3);
    }

    #[test]
    fn line_split_across_chunks_is_one_line() {
        let mut log = LogBuffer::new(BIG);
        for chunk in [&b"hel"[..], b"lo wo", b"rld\nnext"] {
            log.push(Stdout, chunk, 0);
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
        log.push(Stdout, b"abc\r", 0);
        log.push(Stdout, b"\n", 0);
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
            log.push(Stdout, b"abcdefghij", 0),
            0..2,
            "splits as soon as known"
        );
        log.push(Stdout, b"\n", 0);
        assert_eq!(texts(&log.read(&everything())), ["abcd", "efgh", "ij"]);
    }

    #[test]
    fn line_of_exactly_max_line_bytes_is_not_split() {
        let mut log = LogBuffer::new(LogLimits {
            max_line_bytes: 4,
            ..BIG
        });
        log.push(Stdout, b"abcd", 0);
        log.push(Stdout, b"\n", 0);
        assert_eq!(texts(&log.read(&everything())), ["abcd"]);
    }

    #[test]
    fn long_line_is_split_at_char_boundary() {
        let mut log = LogBuffer::new(LogLimits {
            max_line_bytes: 4,
            ..BIG
        });
        // "ab€" is 5 bytes; a cut at 4 would fall inside the 3-byte "€".
        log.push(Stdout, "ab€cd\n".as_bytes(), 0);
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
        log.push(Stdout, b"ab\n", 0);
        assert_eq!(texts(&log.read(&everything())), ["a", "b"]);
    }

    #[test]
    fn partial_line_is_flushed_on_close() {
        let mut log = LogBuffer::new(BIG);
        log.push(Stdout, b"done\nno newline", 0);
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
        log.push(Stdout, b"out", 0);
        log.push(Stderr, b"err", 0);
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
            // Two lines: a line costs the bytes it took, its CRLF included; the lines share a
            // time entry.
            budget_bytes: 2 * (INDEX_ENTRY_BYTES + "line\r\n".len()) + TIME_ENTRY_BYTES,
            max_line_bytes: 5,
        });
        for _ in 0..10 {
            log.push(Stdout, b"line\r\n", 0);
        }
        log.push(Stderr, b"tail", 0);
        assert_eq!(log.total_bytes(), 64);
        assert_eq!(log.total_lines(), 10);
        assert_eq!(log.dropped_lines(), 8);
        assert_eq!(log.first_retained(), 8);
    }

    // ---- budget ----

    #[test]
    fn oldest_lines_are_evicted_to_stay_within_budget() {
        let line_cost = "100\n".len() + INDEX_ENTRY_BYTES;
        let mut log = LogBuffer::new(LogLimits {
            budget_bytes: 3 * line_cost + TIME_ENTRY_BYTES + 1,
            max_line_bytes: 8,
        });
        for i in 100..105 {
            log.push(Stdout, format!("{i}\n").as_bytes(), 0);
        }
        assert_eq!(log.retained_cost(), 3 * line_cost + TIME_ENTRY_BYTES);
        assert_eq!((log.first_retained(), log.dropped_lines()), (2, 2));
        assert_eq!(texts(&log.read(&everything())), ["102", "103", "104"]);
        assert_eq!(log.line(1), None);
    }

    #[test]
    fn line_larger_than_budget_is_dropped_at_once() {
        let mut log = LogBuffer::new(LogLimits {
            budget_bytes: 20 + INDEX_ENTRY_BYTES + TIME_ENTRY_BYTES,
            max_line_bytes: 100,
        });
        log.push(
            Stdout,
            b"a\nthis line is far too long for twenty bytes\n",
            0,
        );
        assert_eq!(log.next_cursor(), 2);
        assert_eq!(
            log.first_retained(),
            2,
            "older lines go too, keeping cursors contiguous"
        );
        assert_eq!(log.retained_cost(), 0);
        log.push(Stdout, b"b\n", 0);
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
            log.push(Stdout, format!("line {i}\n").as_bytes(), 0);
            assert!(log.retained_cost() <= budget);
        }
        assert!(log.bytes.capacity() <= budget, "{}", log.bytes.capacity());
        assert!(log.index.capacity() * INDEX_ENTRY_BYTES <= budget);
        assert!(log.times.capacity() * TIME_ENTRY_BYTES <= budget);
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
        log.push(Stdout, b"new\n", 0);
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
        log.push(Stdout, b"o1\n", 0);
        log.push(Stderr, b"e1\ne-partial", 0);
        log.push(Stdout, b"o2\no-partial", 0);
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
                partial: true,
                time_ms: None,
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
        log.push(Stderr, b"err", 0);
        log.push(Stdout, b"line\nout", 0);
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
            budget_bytes: 3 * ("a\n".len() + INDEX_ENTRY_BYTES) + TIME_ENTRY_BYTES,
            max_line_bytes: 1,
        });
        log.push(Stdout, b"a\nb\nc\nd\ne\n", 0);
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
    fn each_line_counts_its_overhead_toward_max_bytes() {
        let mut log = LogBuffer::new(LogLimits::default());
        let _ = log.push(Stream::Stdout, b"a\nb\nc\n", 0);
        let page = log.read(&Query {
            since: Some(0),
            max_bytes: 10,
            line_overhead: 4,
            ..Query::default()
        });
        let texts: Vec<&str> = page.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a", "b"], "5 bytes a line, 10 allowed");
        assert!(page.truncated);
        assert_eq!(page.next_cursor, 2);
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
            budget_bytes: 2 * ("line 00000\n".len() + INDEX_ENTRY_BYTES) + TIME_ENTRY_BYTES,
            max_line_bytes: 10,
        });
        for i in 0..50 {
            log.push(Stdout, format!("line {i:05}\n").as_bytes(), 0);
        }
        let page = log.read(&everything());
        assert_eq!(texts(&page), ["line 00048", "line 00049"]);
    }

    // ---- timestamps ----

    /// Reads everything retained with times, without a size bound.
    fn timed() -> Query<'static> {
        Query {
            timestamps: true,
            ..everything()
        }
    }

    fn times(page: &Page) -> Vec<Option<u64>> {
        page.lines.iter().map(|l| l.time_ms).collect()
    }

    #[test]
    fn lines_have_the_time_of_their_push() {
        let mut log = LogBuffer::new(BIG);
        log.push(Stdout, b"a\nb\n", 1_000);
        log.push(Stderr, b"c\n", 2_000);
        log.push(Stdout, b"d\n", 2_000);
        log.push(Stdout, b"e\n", 3_500);
        let page = log.read(&timed());
        assert_eq!(texts(&page), ["a", "b", "c", "d", "e"]);
        assert_eq!(
            times(&page),
            [
                Some(1_000),
                Some(1_000),
                Some(2_000),
                Some(2_000),
                Some(3_500)
            ]
        );
        assert_eq!(log.time_ms(2), Some(2_000));
        assert_eq!(log.time_ms(5), None);
        // Three runs of equal times: three entries.
        assert_eq!(log.times.len(), 3);
    }

    #[test]
    fn times_are_left_out_unless_asked_for() {
        let log = buffer_with(b"a\nhalf");
        let page = log.read(&everything());
        assert_eq!(times(&page), [None, None]);
        assert_eq!(log.line(0).and_then(|l| l.time_ms), None);
    }

    #[test]
    fn a_line_completed_by_a_later_push_takes_its_time() {
        let mut log = LogBuffer::new(BIG);
        log.push(Stdout, b"hel", 1);
        log.push(Stdout, b"lo wo", 2);
        log.push(Stdout, b"rld\nnext", 3);
        log.push(Stdout, b"\r", 4);
        log.push(Stdout, b"\n", 5);
        let page = log.read(&timed());
        assert_eq!(texts(&page), ["hello world", "next"]);
        assert_eq!(times(&page), [Some(3), Some(5)]);
    }

    #[test]
    fn a_partial_line_has_the_time_of_its_latest_bytes() {
        let mut log = LogBuffer::new(BIG);
        log.push(Stdout, b"done\nhal", 10);
        log.push(Stderr, b"err", 15);
        log.push(Stdout, b"f", 20);
        log.push(Stdout, b"", 30);
        let page = log.read(&timed());
        let got: Vec<_> = page
            .lines
            .iter()
            .map(|l| (l.text.as_str(), l.partial, l.time_ms))
            .collect();
        assert_eq!(
            got,
            [
                ("done", false, Some(10)),
                ("half", true, Some(20)),
                ("err", true, Some(15))
            ]
        );
        // An empty push delivers nothing; closing keeps the time of the last bytes.
        log.close(Stdout);
        assert_eq!(log.time_ms(1), Some(20));
        log.push(Stderr, b"\n", 40);
        assert_eq!(log.time_ms(2), Some(40));
    }

    #[test]
    fn a_split_piece_has_the_time_of_the_push_that_split_it_off() {
        let mut log = LogBuffer::new(LogLimits {
            max_line_bytes: 4,
            ..BIG
        });
        // "abcd" may still end with a CRLF: it is split off only when "e" comes.
        log.push(Stdout, b"abcd", 1);
        assert_eq!(times(&log.read(&timed())), [Some(1)], "partial");
        log.push(Stdout, b"ef", 2);
        log.push(Stdout, b"ghijk\n", 3);
        let page = log.read(&timed());
        assert_eq!(texts(&page), ["abcd", "efgh", "ijk"]);
        assert_eq!(times(&page), [Some(2), Some(3), Some(3)]);
        let mut fresh = LogBuffer::new(LogLimits {
            max_line_bytes: 4,
            ..BIG
        });
        fresh.push(Stdout, b"abcdefghij", 7);
        assert_eq!(times(&fresh.read(&timed())), [Some(7), Some(7), Some(7)]);
    }

    #[test]
    fn a_time_that_goes_back_is_stored_as_given() {
        let mut log = LogBuffer::new(BIG);
        log.push(Stdout, b"a\n", 500);
        log.push(Stdout, b"b\n", 300);
        log.push(Stdout, b"c\n", 300);
        log.push(Stdout, b"d\n", 500);
        assert_eq!(
            times(&log.read(&timed())),
            [Some(500), Some(300), Some(300), Some(500)]
        );
        assert_eq!(log.times.len(), 3);
    }

    #[test]
    fn time_entries_count_in_the_cost() {
        let mut log = LogBuffer::new(BIG);
        log.push(Stdout, b"a\n", 1);
        assert_eq!(
            log.retained_cost(),
            2 + INDEX_ENTRY_BYTES + TIME_ENTRY_BYTES
        );
        log.push(Stdout, b"b\nc\n", 1);
        assert_eq!(
            log.retained_cost(),
            6 + 3 * INDEX_ENTRY_BYTES + TIME_ENTRY_BYTES,
            "the same time shares the entry"
        );
        log.push(Stdout, b"d\n", 2);
        assert_eq!(
            log.retained_cost(),
            8 + 4 * INDEX_ENTRY_BYTES + 2 * TIME_ENTRY_BYTES
        );
        assert_eq!(TIME_ENTRY_BYTES, 16);
    }

    #[test]
    fn one_line_per_push_costs_an_entry_per_line() {
        let mut log = LogBuffer::new(BIG);
        for i in 0..1_000u64 {
            log.push(Stdout, format!("line {i:04}\n").as_bytes(), 1_000 + i);
        }
        let line = "line 0000\n".len() + INDEX_ENTRY_BYTES + TIME_ENTRY_BYTES;
        assert_eq!(log.retained_cost(), 1_000 * line);
        assert_eq!(log.times.len(), 1_000);
    }

    #[test]
    fn a_flood_of_big_pushes_costs_an_entry_per_push() {
        let limits = LogLimits::default();
        let mut log = LogBuffer::new(limits);
        let chunk = b"0123456789abcdef\n".repeat((64 << 10) / 17);
        for i in 0..200u64 {
            log.push(Stdout, &chunk, 1_000 + i);
        }
        assert!(log.dropped_lines() > 0);
        let lines = log.next_cursor() - log.first_retained();
        let entries = log.times.len();
        assert!(
            entries <= limits.budget_bytes / chunk.len() + 2,
            "{entries} entries"
        );
        let cost = log.bytes.len() + INDEX_ENTRY_BYTES * lines as usize;
        assert_eq!(log.retained_cost(), cost + TIME_ENTRY_BYTES * entries);
        assert!(TIME_ENTRY_BYTES * entries < log.retained_cost() / 1000);
        // The time entries' blocks hold little more than the entries.
        assert!(log.times.allocated_bytes() <= 3 * time_block_bytes(limits.budget_bytes));
        let page = log.read(&Query {
            since: Some(log.first_retained()),
            head: Some(1),
            timestamps: true,
            ..Query::default()
        });
        // The oldest entry is that of the oldest push with a line left.
        let pushes_gone = 200 - entries as u64;
        assert_eq!(times(&page), [Some(1_000 + pushes_gone)]);
        let newest = log.read(&Query {
            tail: Some(1),
            timestamps: true,
            ..Query::default()
        });
        assert_eq!(newest.lines[0].time_ms, Some(1_199));
    }

    #[test]
    fn pushes_in_the_same_millisecond_share_an_entry() {
        let mut log = LogBuffer::new(BIG);
        for _ in 0..100 {
            log.push(Stdout, b"x\n", 42);
        }
        assert_eq!(log.times.len(), 1);
        assert_eq!(
            log.retained_cost(),
            100 * (2 + INDEX_ENTRY_BYTES) + TIME_ENTRY_BYTES
        );
    }

    #[test]
    fn eviction_frees_the_entries_of_evicted_lines_only() {
        let mut log = LogBuffer::new(BIG);
        log.push(Stdout, b"a\nb\nc\n", 1);
        log.push(Stdout, b"d\ne\n", 2);
        log.push(Stdout, b"f\n", 3);
        let line = 2 + INDEX_ENTRY_BYTES;
        assert_eq!(log.retained_cost(), 6 * line + 3 * TIME_ENTRY_BYTES);
        // Lines 0 and 1 go; the first entry still covers line 2.
        assert_eq!(log.evict_to(4 * line + 3 * TIME_ENTRY_BYTES), 2);
        assert_eq!(log.times.len(), 3);
        assert_eq!(log.retained_cost(), 4 * line + 3 * TIME_ENTRY_BYTES);
        assert_eq!(
            times(&log.read(&timed())),
            [Some(1), Some(2), Some(2), Some(3)]
        );
        // Evicting line 2 frees its entry with it: 3 lines and 2 entries are left.
        assert_eq!(log.evict_to(3 * line + 2 * TIME_ENTRY_BYTES), 1);
        assert_eq!(log.times.len(), 2);
        assert_eq!(log.retained_cost(), 3 * line + 2 * TIME_ENTRY_BYTES);
        // One byte over: line 3 goes, and its entry stays for line 4.
        assert_eq!(log.evict_to(3 * line + 2 * TIME_ENTRY_BYTES - 1), 1);
        assert_eq!(times(&log.read(&timed())), [Some(2), Some(3)]);
        assert_eq!(log.evict_to(0), 2);
        assert_eq!((log.times.len(), log.retained_cost()), (0, 0));
        log.push(Stdout, b"g\n", 3);
        assert_eq!(
            log.times.len(),
            1,
            "a new entry, though the time is the same"
        );
        assert_eq!(log.time_ms(6), Some(3));
    }

    #[test]
    fn the_budget_evicts_for_time_entries_too() {
        let line = "ab\n".len() + INDEX_ENTRY_BYTES;
        let mut log = LogBuffer::new(LogLimits {
            budget_bytes: 3 * (line + TIME_ENTRY_BYTES),
            max_line_bytes: 8,
        });
        for ms in 0..3 {
            log.push(Stdout, b"ab\n", ms);
        }
        assert_eq!(
            (log.first_retained(), log.retained_cost()),
            (0, log.limits().budget_bytes)
        );
        // A fourth line at a new time needs a line and an entry: one line and its entry go.
        log.push(Stdout, b"cd\n", 3);
        assert_eq!(log.first_retained(), 1);
        assert_eq!(log.retained_cost(), 3 * (line + TIME_ENTRY_BYTES));
        // At the time of the newest line it needs no entry of its own, but still room for a
        // line: the oldest line goes, with its entry.
        log.push(Stdout, b"ef\n", 3);
        assert_eq!(log.first_retained(), 2);
        assert_eq!(log.retained_cost(), 3 * line + 2 * TIME_ENTRY_BYTES);
        assert_eq!(times(&log.read(&timed())), [Some(2), Some(3), Some(3)]);
    }

    #[test]
    fn a_line_that_fits_only_without_its_time_entry_is_dropped() {
        let mut log = LogBuffer::new(LogLimits {
            budget_bytes: 10 + INDEX_ENTRY_BYTES + TIME_ENTRY_BYTES,
            max_line_bytes: 100,
        });
        log.push(Stdout, b"123456789\n", 1);
        assert_eq!(log.first_retained(), 0);
        log.push(Stdout, b"1234567890\n", 1);
        assert_eq!((log.first_retained(), log.next_cursor()), (2, 2));
        assert_eq!((log.retained_cost(), log.times.len()), (0, 0));
        log.push(Stdout, b"ok\n", 1);
        assert_eq!(times(&log.read(&timed())), [Some(1)]);
    }

    #[test]
    fn reading_many_lines_finds_each_time() {
        let mut log = LogBuffer::new(BIG);
        // Runs of 1 to 7 lines per push, so entries cover various numbers of lines.
        let mut expected = Vec::new();
        for push in 0..1_000u64 {
            let lines = 1 + push % 7;
            let chunk: String = (0..lines).map(|i| format!("{push}.{i}\n")).collect();
            log.push(Stdout, chunk.as_bytes(), 10 * push);
            expected.extend(core::iter::repeat_n(Some(10 * push), lines as usize));
        }
        let page = log.read(&timed());
        assert_eq!(times(&page), expected);
        let tail = log.read(&Query {
            tail: Some(1_000),
            timestamps: true,
            ..everything()
        });
        assert_eq!(times(&tail), expected[expected.len() - 1_000..]);
        // Lines far apart, each in an entry of its own.
        let rare = Regex::new(r"^\d*[05]\.3$").unwrap();
        let page = log.read(&Query {
            grep: Some(&rare),
            timestamps: true,
            ..everything()
        });
        assert!(page.lines.len() > 50);
        for line in &page.lines {
            assert_eq!(line.time_ms, expected[line.n as usize], "line {}", line.n);
        }
        for n in [0, 1, 2, 500, 3_000, log.next_cursor() - 1] {
            assert_eq!(log.time_ms(n), expected[n as usize], "line {n}");
        }
    }

    // ---- memory ----

    /// The constant of the memory bound, computed from the module docs' formula.
    fn documented_overhead(budget: usize) -> usize {
        let mut block = 64;
        while block * 2 <= (budget / 8).min(16 << 10) {
            block *= 2;
        }
        let time_block = (block / 4).max(64);
        let pointer = size_of::<Box<[u8]>>();
        let ring = |block: usize| 3 * block + pointer * (budget.div_ceil(block) + 2);
        2 * ring(block) + ring(time_block)
    }

    fn pending_capacity(log: &LogBuffer) -> usize {
        log.pending.iter().map(Vec::capacity).sum()
    }

    /// Blocks a ring holds beyond those its live elements span (spare included).
    fn idle_blocks<T: Copy + Default>(ring: &Ring<T>) -> usize {
        let spanned = if ring.start == ring.end {
            0
        } else {
            (((ring.end - 1) >> ring.shift) - (ring.start >> ring.shift) + 1) as usize
        };
        (ring.blocks.len() + usize::from(ring.spare.is_some())) - spanned
    }

    #[rstest]
    #[case::no_budget(0, 64)]
    #[case::tiny(511, 64)]
    #[case::rounded_down(10_000, 1024)]
    #[case::largest_from_128_kib(128 << 10, 16 << 10)]
    #[case::default(4 << 20, 16 << 10)]
    fn block_size_follows_the_budget(#[case] budget: usize, #[case] expected: usize) {
        assert_eq!(block_bytes(budget), expected);
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn default_overhead_is_132_kib() {
        assert_eq!(
            documented_overhead(LogLimits::default().budget_bytes),
            135_264
        );
    }

    #[test]
    fn allocated_bytes_counts_blocks_and_partial_lines() {
        let mut log = LogBuffer::new(LogLimits::default());
        assert_eq!(log.allocated_bytes(), 0);
        log.push(Stdout, b"partial", 0);
        assert_eq!(log.allocated_bytes(), pending_capacity(&log));
        log.push(Stdout, b"\n", 0);
        let tables = (log.bytes.blocks.capacity()
            + log.index.blocks.capacity()
            + log.times.blocks.capacity())
            * size_of::<Box<[u8]>>();
        assert_eq!(log.allocated_bytes(), 64 + 3 * FIRST_BLOCK_BYTES + tables);
    }

    #[test]
    fn a_first_block_grows_as_it_fills_and_later_blocks_are_whole() {
        let mut log = LogBuffer::new(LogLimits::default());
        let line = [b"x".repeat(99).as_slice(), b"\n"].concat();
        log.push(Stdout, &line, 0);
        assert_eq!(log.bytes.capacity(), FIRST_BLOCK_BYTES);
        log.push(Stdout, &line.repeat(3), 0);
        assert_eq!(log.bytes.capacity(), 2 * FIRST_BLOCK_BYTES, "doubled");
        log.push(Stdout, &line.repeat(200), 0);
        let lengths: Vec<usize> = log.bytes.blocks.iter().map(|b| b.len()).collect();
        assert_eq!(
            lengths,
            [16 << 10, 16 << 10],
            "the second block starts whole"
        );
        let page = log.read(&everything());
        assert_eq!(page.lines.len(), 204);
        assert!(page.lines.iter().all(|l| l.text.len() == 99));
    }

    #[test]
    fn flooded_buffer_holds_little_more_than_its_budget() {
        let limits = LogLimits::default();
        let mut log = LogBuffer::new(limits);
        let yes = b"y\n".repeat(32 << 10);
        for _ in 0..64 {
            log.push(Stdout, &yes, 0);
        }
        assert!(log.dropped_lines() > 0);
        let allocated = log.allocated_bytes();
        assert!(allocated >= log.retained_cost());
        assert!(
            allocated <= log.retained_cost() + documented_overhead(limits.budget_bytes),
            "{allocated} for a cost of {}",
            log.retained_cost()
        );
        assert!(idle_blocks(&log.bytes) <= 1 && idle_blocks(&log.index) <= 1);
        assert!(idle_blocks(&log.times) <= 1);
    }

    #[test]
    fn eviction_frees_the_blocks_it_passes() {
        let mut log = LogBuffer::new(LogLimits::default());
        for _ in 0..20_000 {
            log.push(Stdout, b"a line of about forty bytes of output\n", 0);
        }
        let full = log.allocated_bytes();
        let evicted = log.evict_to(log.retained_cost() / 4);
        assert!(evicted > 0);
        assert!(log.allocated_bytes() <= log.retained_cost() + 4 * (16 << 10) + 1024);
        assert!(
            log.allocated_bytes() < full / 3,
            "{} of {full}",
            log.allocated_bytes()
        );
    }

    #[test]
    fn evict_to_frees_what_is_kept_for_reuse() {
        let mut log = LogBuffer::new(LogLimits::default());
        log.push(Stdout, &[b'x'; 40_000], 0);
        log.push(Stdout, b"\nshort", 0);
        assert!(
            pending_capacity(&log) >= 40_000,
            "kept for the next partial line"
        );
        log.evict_to(usize::MAX);
        assert_eq!(pending_capacity(&log), "short".len());
        let page = log.read(&everything());
        let lengths: Vec<usize> = page.lines.iter().map(|l| l.text.len()).collect();
        assert_eq!(lengths, [40_000, "short".len()], "the lines stay");
        assert!(log.bytes.spare.is_none() && log.index.spare.is_none());
        assert!(log.times.spare.is_none());
        let tables = (log.bytes.blocks.len() + log.index.blocks.len() + log.times.blocks.len())
            * size_of::<Box<[u8]>>();
        let blocks = log.bytes.capacity()
            + log.index.capacity() * INDEX_ENTRY_BYTES
            + log.times.capacity() * TIME_ENTRY_BYTES;
        assert_eq!(log.allocated_bytes(), blocks + tables + "short".len());
    }

    #[test]
    fn evict_to_counts_evicted_lines_as_dropped() {
        let mut log = numbered(10);
        let line_cost = "0\n".len() + INDEX_ENTRY_BYTES;
        assert_eq!(log.evict_to(3 * line_cost + TIME_ENTRY_BYTES + 1), 7);
        assert_eq!((log.dropped_lines(), log.first_retained()), (7, 7));
        assert_eq!(log.retained_cost(), 3 * line_cost + TIME_ENTRY_BYTES);
        assert_eq!(texts(&log.read(&everything())), ["7", "8", "9"]);
        let page = log.read(&Query {
            since: Some(5),
            ..Query::default()
        });
        assert_eq!(page.skipped, 2);
    }

    #[test]
    fn evict_to_within_cost_evicts_nothing() {
        let mut log = numbered(10);
        assert_eq!(log.evict_to(log.retained_cost()), 0);
        assert_eq!(log.evict_to(usize::MAX), 0);
        assert_eq!(log.first_retained(), 0);
    }

    #[test]
    fn evict_to_zero_keeps_only_partial_lines() {
        let mut log = numbered(1000);
        log.push(Stderr, b"half", 0);
        assert_eq!(log.evict_to(0), 1000);
        assert_eq!(log.retained_cost(), 0);
        assert_eq!(log.allocated_bytes(), pending_capacity(&log));
        assert_eq!(texts(&log.read(&Query::default())), ["half"]);
        log.push(Stdout, b"next\n", 0);
        assert_eq!(log.line(1000).map(|l| l.text).as_deref(), Some("next"));
    }

    #[test]
    fn line_spanning_several_blocks_reads_whole() {
        let mut log = LogBuffer::new(LogLimits::default());
        let long: Vec<u8> = (0..50_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        log.push(Stdout, b"short\n", 0);
        log.push(Stdout, &long, 0);
        log.push(Stdout, b"\n", 0);
        let line = log.line(1).map(|l| l.text.into_bytes());
        assert_eq!(line.as_deref(), Some(&long[..]));
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

    /// One input to a buffer: a push (at a time in milliseconds) or a close.
    #[derive(Clone, Debug)]
    enum Op {
        Push(Stream, Vec<u8>, u64),
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
            // A few times, so that pushes often share one, and times go back now and then.
            Op::Push(stream, chunk, u64::from(u8::arbitrary(g) % 3))
        }

        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            match self {
                Op::Push(stream, chunk, ms) => {
                    let (stream, ms) = (*stream, *ms);
                    Box::new(chunk.shrink().map(move |c| Op::Push(stream, c, ms)))
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
    /// A line is its stream, its text, the output bytes it took (its cost less the entries) and
    /// its time: that of the byte that completed it (its `\n`, the byte that forced its split,
    /// or for a close, its last byte).
    #[derive(Default)]
    struct Model {
        max: usize,
        lines: Vec<(Stream, Vec<u8>, usize, u64)>,
        pending: [Vec<u8>; 3],
        /// The time of the latest pending byte.
        pending_ms: [u64; 3],
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
                Op::Push(stream, bytes, ms) => {
                    self.total_bytes += bytes.len() as u64;
                    let slot = slot(*stream);
                    for &b in bytes {
                        if b == b'\n' {
                            self.finish(*stream, 1, *ms);
                            continue;
                        }
                        self.pending[slot].push(b);
                        self.pending_ms[slot] = *ms;
                        while must_split(&self.pending[slot], self.max) {
                            let at = split_point(&self.pending[slot], self.max);
                            let head: Vec<u8> = self.pending[slot].drain(..at).collect();
                            self.lines.push((*stream, head.clone(), head.len(), *ms));
                        }
                    }
                }
                Op::Close(stream) => {
                    if !self.pending[slot(*stream)].is_empty() {
                        self.finish(*stream, 0, self.pending_ms[slot(*stream)]);
                    }
                }
            }
        }

        /// Ends the pending line of `stream` with `newline` (0 or 1) bytes of line ending, the
        /// last of them at `ms`.
        fn finish(&mut self, stream: Stream, newline: usize, ms: u64) {
            let pending = core::mem::take(&mut self.pending[slot(stream)]);
            let stored = pending.len() + newline;
            self.lines
                .push((stream, strip_cr(&pending).to_vec(), stored, ms));
        }

        /// What lines `from..` cost: their bytes, an index entry each, and a time entry per
        /// run of lines with the same time.
        fn cost(&self, from: u64) -> usize {
            let lines = &self.lines[from as usize..];
            let runs = lines
                .iter()
                .enumerate()
                .filter(|&(i, line)| i == 0 || lines[i - 1].3 != line.3)
                .count();
            lines
                .iter()
                .map(|(_, _, stored, _)| stored + INDEX_ENTRY_BYTES)
                .sum::<usize>()
                + TIME_ENTRY_BYTES * runs
        }

        /// What `read` should see, raw: retained complete lines from `first`, then partials.
        fn visible(&self, first: u64) -> Vec<Line> {
            let complete = self.lines.iter().enumerate().skip(first as usize);
            let mut out: Vec<Line> = complete
                .map(|(n, (stream, bytes, _, ms))| Line {
                    n: n as u64,
                    stream: *stream,
                    text: render(bytes, true),
                    partial: false,
                    time_ms: Some(*ms),
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
                        time_ms: Some(self.pending_ms[slot(stream)]),
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
                Op::Push(stream, bytes, ms) => log.push(*stream, bytes, *ms),
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

            for n in first..next {
                let expected = model.lines[n as usize].3;
                if log.time_ms(n) != Some(expected) {
                    return Err(format!("{at}: line {n} time {:?}", log.time_ms(n)));
                }
            }
            if first > 0 && log.time_ms(first - 1).is_some() || log.time_ms(next).is_some() {
                return Err(format!("{at}: time_ms() outside {first}..{next}"));
            }

            let visible = model.visible(first);
            let page = log.read(&Query {
                tail: Some(tail),
                max_bytes: usize::MAX,
                raw: true,
                timestamps: true,
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
                timestamps: true,
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

    /// Pushes of hundreds of lines of 0 to 100 bytes, some CRLF, at budgets of 4 to 68 KiB
    /// (blocks of 512 bytes to 8 KiB): runs of short lines, longer lines, forced splits, block
    /// boundaries and eviction batches all fall inside one push.
    #[test]
    fn bulk_pushes_agree_with_model() {
        fn prop(budget: u16, max_line: u8, lines: Vec<(u8, u8, bool)>, pushes: u8) -> TestResult {
            let limits = LogLimits {
                budget_bytes: 4096 + usize::from(budget),
                max_line_bytes: usize::from(max_line),
            };
            let mut bytes = Vec::new();
            for _ in 0..8 {
                for &(len, fill, crlf) in &lines {
                    bytes.extend(core::iter::repeat_n(
                        b'a' + fill % 26,
                        usize::from(len % 101),
                    ));
                    bytes.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
                }
            }
            let size = bytes.len() / usize::from(pushes % 4 + 1) + 1;
            // Two pushes in a row share a time: lines of both share a time entry.
            let mut ops: Vec<Op> = bytes
                .chunks(size)
                .enumerate()
                .map(|(i, c)| Op::Push(Stdout, c.to_vec(), 1_000 + i as u64 / 2))
                .collect();
            ops.push(Op::Close(Stdout));
            match check_against_model(limits, &ops, 50) {
                Ok(()) => TestResult::passed(),
                Err(why) => TestResult::error(why),
            }
        }
        QuickCheck::new()
            .tests(200)
            .quickcheck(prop as fn(u16, u8, Vec<(u8, u8, bool)>, u8) -> TestResult);
    }

    #[test]
    fn lines_do_not_depend_on_chunking() {
        fn prop(limits: SmallLimits, bytes: Vec<u8>, cuts: Vec<usize>) -> bool {
            let limits = LogLimits {
                budget_bytes: 1 << 20,
                ..limits.0
            };
            let mut whole = LogBuffer::new(limits);
            whole.push(Stdout, &bytes, 0);
            whole.close(Stdout);
            let mut chunked = LogBuffer::new(limits);
            let mut rest = &bytes[..];
            for cut in cuts {
                let (chunk, after) = rest.split_at(cut.min(rest.len()));
                chunked.push(Stdout, chunk, 0);
                rest = after;
            }
            chunked.push(Stdout, rest, 0);
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

    /// Chunks pushed at times that go up, stay or go back, and the same bytes pushed one at a
    /// time, each at the time of its chunk: the same lines, times, evictions and costs.
    #[test]
    fn times_do_not_depend_on_chunking() {
        fn prop(limits: SmallLimits, bytes: Vec<u8>, cuts: Vec<(usize, u8)>) -> TestResult {
            let mut chunked = LogBuffer::new(limits.0);
            let mut bytewise = LogBuffer::new(limits.0);
            let mut rest = &bytes[..];
            let everything = Query {
                raw: true,
                timestamps: true,
                ..everything()
            };
            for (cut, ms) in cuts.into_iter().chain([(usize::MAX, 9)]) {
                let (chunk, after) = rest.split_at(cut.min(rest.len()));
                let ms = u64::from(ms % 4);
                chunked.push(Stdout, chunk, ms);
                for byte in chunk.chunks(1) {
                    bytewise.push(Stdout, byte, ms);
                }
                rest = after;
                let (a, b) = (chunked.read(&everything), bytewise.read(&everything));
                if a != b || chunked.retained_cost() != bytewise.retained_cost() {
                    return TestResult::error(format!("{a:?} vs {b:?}"));
                }
            }
            chunked.close(Stdout);
            bytewise.close(Stdout);
            TestResult::from_bool(chunked.read(&everything) == bytewise.read(&everything))
        }
        QuickCheck::new()
            .tests(2_000)
            .quickcheck(prop as fn(SmallLimits, Vec<u8>, Vec<(usize, u8)>) -> TestResult);
    }

    #[test]
    fn copy_and_index_finds_what_memchr_finds() {
        fn prop(pieces: Vec<(u8, u8)>, slots: u8, start: u16, stream: bool) -> bool {
            // Arbitrary bytes and many newlines, often several in one group, and long runs.
            let src: Vec<u8> = pieces
                .iter()
                .flat_map(|&(b, run)| {
                    let b = if b % 3 == 0 { b'\n' } else { b ^ b'\n' };
                    core::iter::repeat_n(b, usize::from(run % 40) + 1)
                })
                .collect();
            let stream = if stream { Stderr } else { Stdout };
            let first = IndexEntry::new(u64::from(start), stream, true);
            let mut dst = vec![0; src.len() + usize::from(start % 7)];
            let mut ends = vec![IndexEntry::default(); usize::from(slots)];
            let found = copy_and_index(&src, &mut dst, &mut ends, first);
            let expected: Vec<IndexEntry> = memchr::memchr_iter(b'\n', &src)
                .take(ends.len())
                .map(|i| IndexEntry::new(u64::from(start) + i as u64 + 1, stream, true))
                .collect();
            let copied = expected
                .last()
                .map_or(0, |e| (e.end() - u64::from(start)) as usize);
            ends[..found] == expected[..] && dst[..copied] == src[..copied]
        }
        QuickCheck::new()
            .tests(2_000)
            .quickcheck(prop as fn(Vec<(u8, u8)>, u8, u16, bool) -> bool);
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
                    Op::Push(stream, bytes, ms) => log.push(*stream, bytes, *ms),
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

    // ---- properties: eviction on demand and memory ----

    /// An input to a buffer, or an eviction on demand.
    #[derive(Clone, Debug)]
    enum EvictOp {
        Op(Op),
        EvictTo(usize),
    }

    impl Arbitrary for EvictOp {
        fn arbitrary(g: &mut Gen) -> Self {
            if u8::arbitrary(g) % 6 == 0 {
                EvictOp::EvictTo(usize::arbitrary(g) % 200)
            } else {
                EvictOp::Op(Op::arbitrary(g))
            }
        }

        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            match self {
                EvictOp::Op(op) => Box::new(op.shrink().map(EvictOp::Op)),
                EvictOp::EvictTo(cost) => Box::new(cost.shrink().map(EvictOp::EvictTo)),
            }
        }
    }

    /// The oldest line that may be retained when the lines from `first` on may cost at most
    /// `max_cost`: the retained lines are the longest suffix that fits.
    fn first_fitting(model: &Model, first: u64, max_cost: usize) -> u64 {
        (first..=model.lines.len() as u64)
            .find(|&f| model.cost(f) <= max_cost)
            .unwrap_or(model.lines.len() as u64)
    }

    #[test]
    fn evict_to_evicts_the_fewest_oldest_lines() {
        fn prop(limits: SmallLimits, ops: Vec<EvictOp>) -> TestResult {
            let limits = limits.0;
            let mut log = LogBuffer::new(limits);
            let mut model = Model::new(limits);
            let mut first = 0;
            for (step, op) in ops.iter().enumerate() {
                let at = format!("after op {step} {op:?}");
                match op {
                    EvictOp::Op(op) => {
                        match op {
                            Op::Push(stream, bytes, ms) => log.push(*stream, bytes, *ms),
                            Op::Close(stream) => log.close(*stream),
                        };
                        model.apply(op);
                        first = first_fitting(&model, first, limits.budget_bytes);
                    }
                    EvictOp::EvictTo(max_cost) => {
                        let evicted = log.evict_to(*max_cost);
                        let expected = first_fitting(&model, first, *max_cost);
                        if evicted != expected - first {
                            return TestResult::error(format!("{at}: evicted {evicted}"));
                        }
                        first = expected;
                    }
                }
                if log.first_retained() != first || log.dropped_lines() != first {
                    let got = log.first_retained();
                    return TestResult::error(format!("{at}: first {got}, expected {first}"));
                }
                if log.retained_cost() != model.cost(first) {
                    return TestResult::error(format!("{at}: cost {}", log.retained_cost()));
                }
                for n in first..log.next_cursor() {
                    let expected = render(&model.lines[n as usize].1, true);
                    let got = log.complete(n).map(|(_, bytes)| render(&bytes, true));
                    if got != Some(expected) {
                        return TestResult::error(format!("{at}: line {n} differs"));
                    }
                    if log.time_ms(n) != Some(model.lines[n as usize].3) {
                        return TestResult::error(format!("{at}: line {n} time differs"));
                    }
                }
            }
            TestResult::passed()
        }
        QuickCheck::new()
            .tests(2_000)
            .quickcheck(prop as fn(SmallLimits, Vec<EvictOp>) -> TestResult);
    }

    /// An input for the memory property: a chunk pushed many times over, so that budgets of
    /// hundreds of KiB (and 16 KiB blocks) fill up, each push at a new time (a time entry per
    /// push) or all at the same time, a close, or an eviction to a fraction of the budget (in
    /// thousandths).
    #[derive(Clone, Debug)]
    enum MemOp {
        Push(Stream, Vec<u8>, u16, bool),
        Close(Stream),
        EvictTo(u16),
    }

    impl Arbitrary for MemOp {
        fn arbitrary(g: &mut Gen) -> Self {
            match u8::arbitrary(g) % 10 {
                0 => MemOp::Close(arbitrary_stream(g)),
                1 => MemOp::EvictTo(u16::arbitrary(g) % 1200),
                _ => {
                    let Op::Push(stream, chunk, _) = Op::arbitrary(g) else {
                        return MemOp::Close(arbitrary_stream(g));
                    };
                    MemOp::Push(stream, chunk, u16::arbitrary(g) % 500, bool::arbitrary(g))
                }
            }
        }

        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            match self {
                MemOp::Push(stream, chunk, times, tick) => {
                    let (stream, tick) = (*stream, *tick);
                    Box::new(
                        (chunk.clone(), *times)
                            .shrink()
                            .map(move |(c, t)| MemOp::Push(stream, c, t, tick)),
                    )
                }
                MemOp::Close(_) => Box::new(core::iter::empty()),
                MemOp::EvictTo(permille) => Box::new(permille.shrink().map(MemOp::EvictTo)),
            }
        }
    }

    /// Budgets from 0 to 256 KiB, spread over every block size; lines up to 4 KiB.
    #[derive(Clone, Debug)]
    struct AnyLimits(LogLimits);

    impl Arbitrary for AnyLimits {
        fn arbitrary(g: &mut Gen) -> Self {
            let bits = 6 + u32::arbitrary(g) % 13;
            AnyLimits(LogLimits {
                budget_bytes: usize::arbitrary(g) % (1 << bits),
                max_line_bytes: usize::arbitrary(g) % (1 << (u32::arbitrary(g) % 13)),
            })
        }
    }

    /// The memory rules of the module docs; `Err` says which broke.
    fn check_memory(log: &LogBuffer) -> Result<(), String> {
        let limits = log.limits();
        let cost = log.retained_cost();
        let bound = cost + pending_capacity(log) + documented_overhead(limits.budget_bytes);
        if log.allocated_bytes() > bound {
            return Err(format!(
                "{} bytes held, bound {bound}",
                log.allocated_bytes()
            ));
        }
        if log.allocated_bytes() < cost + pending_capacity(log) {
            return Err(format!("{} bytes held, cost {cost}", log.allocated_bytes()));
        }
        let max_pending = limits.max_line_bytes.max(1) + 2;
        if log.pending.iter().any(|p| p.capacity() > max_pending) {
            return Err(format!("pending capacity over {max_pending}"));
        }
        if idle_blocks(&log.bytes) > 1 || idle_blocks(&log.index) > 1 || idle_blocks(&log.times) > 1
        {
            return Err("a block eviction passed is still held".into());
        }
        Ok(())
    }

    #[test]
    fn memory_stays_within_the_documented_bound() {
        fn prop(limits: AnyLimits, ops: Vec<MemOp>) -> TestResult {
            let mut log = LogBuffer::new(limits.0);
            let mut clock = 0;
            for (step, op) in ops.iter().enumerate() {
                match op {
                    MemOp::Push(stream, chunk, times, tick) => {
                        for _ in 0..*times {
                            clock += u64::from(*tick);
                            log.push(*stream, chunk, clock);
                        }
                    }
                    MemOp::Close(stream) => {
                        log.close(*stream);
                    }
                    MemOp::EvictTo(permille) => {
                        let max_cost = limits.0.budget_bytes / 1000 * usize::from(*permille);
                        log.evict_to(max_cost);
                        let spares = log.bytes.spare.is_some()
                            || log.index.spare.is_some()
                            || log.times.spare.is_some()
                            || log.pending.iter().any(|p| p.capacity() > p.len());
                        if log.retained_cost() > max_cost || spares {
                            return TestResult::error(format!("after op {step}: {log:?}"));
                        }
                    }
                }
                if let Err(why) = check_memory(&log) {
                    return TestResult::error(format!("after op {step} {op:?}: {why}"));
                }
            }
            TestResult::passed()
        }
        QuickCheck::new()
            .tests(300)
            .quickcheck(prop as fn(AnyLimits, Vec<MemOp>) -> TestResult);
    }
}
