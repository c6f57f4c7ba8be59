//! Drives one `LogBuffer` with small limits through an arbitrary list of pushes, closes,
//! evictions on demand and reads, and checks its invariants after every step: the budget holds,
//! the heap stays within the bound of the module docs, cursors only move forward and stay
//! consistent, `evict_to` evicts down to its cost and counts what it evicted, and reads never
//! panic and return strictly increasing lines within `max_bytes`, with times exactly when asked.
//! A twin buffer is fed the same output one byte at a time, each byte at the time of the push it
//! came with, which takes the per-line path where the first takes the bulk one: the two must
//! agree on every line, time, cursor and cost (lines and their times do not depend on
//! chunking).

#![no_main]

use std::sync::LazyLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use proc_state::Stream;
use proc_state::log::{LogBuffer, LogLimits, Query, Regex};

#[derive(Arbitrary, Debug)]
enum Which {
    Stdout,
    Stderr,
}

impl Which {
    fn stream(&self) -> Stream {
        match self {
            Which::Stdout => Stream::Stdout,
            Which::Stderr => Stream::Stderr,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Read {
    since: Option<u8>,
    tail: Option<u8>,
    head: Option<u8>,
    grep: Option<u8>,
    stream: Option<Which>,
    max_bytes: u8,
    line_overhead: u8,
    raw: bool,
    timestamps: bool,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Output, and its time: milliseconds after [`EPOCH_MS`], so that pushes often share a
    /// time (and share its time entry), and times go back now and then.
    Push(Which, Vec<u8>, u8),
    Close(Which),
    EvictTo(u16),
    Read(Read),
}

#[derive(Arbitrary, Debug)]
struct Input {
    budget_bytes: u8,
    /// The budget is `budget_bytes << (budget_scale % 8)`: up to 32 KiB, blocks up to 2 KiB.
    budget_scale: u8,
    max_line_bytes: u8,
    ops: Vec<Op>,
}

/// The wall-clock time of the first pushes (2025-01-01T00:00:00Z).
const EPOCH_MS: u64 = 1_735_689_600_000;

/// The most heap a buffer with these limits holds beyond its retained cost, per the module
/// docs: two pending partial lines of capacity at most `max(max_line_bytes, 1) + 2`, and per
/// ring (text, index, times) less than 3 blocks plus a block table of at most
/// `⌈budget / block⌉ + 2` pointers, where the text and index blocks are `B` bytes and the time
/// blocks `max(B / 4, 64)`.
fn documented_overhead(limits: LogLimits) -> usize {
    let budget = limits.budget_bytes;
    let block = 1 << (budget / 8).clamp(64, 16 << 10).ilog2();
    let time_block = (block / 4).max(64);
    let pointer = size_of::<Box<[u8]>>();
    let pending = 2 * (limits.max_line_bytes.max(1) + 2);
    let ring = |block: usize| 3 * block + pointer * (budget.div_ceil(block) + 2);
    pending + 2 * ring(block) + ring(time_block)
}

/// A few patterns, so that the fuzzer can find matches without writing regexes (compiled once:
/// compiling per input would dominate the run time).
static PATTERNS: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    ["a", "^$", r"\d", "é", r"\x1b", "(?i)err", "."]
        .iter()
        .map(|p| Regex::new(p).expect("valid pattern"))
        .collect()
});

fuzz_target!(|input: Input| {
    let limits = LogLimits {
        budget_bytes: usize::from(input.budget_bytes) << (input.budget_scale % 8),
        max_line_bytes: usize::from(input.max_line_bytes % 32),
    };
    let patterns = &*PATTERNS;
    let mut log = LogBuffer::new(limits);
    let mut twin = LogBuffer::new(limits);
    let mut pushed = 0u64;
    for op in &input.ops {
        let before = (log.next_cursor(), log.first_retained());
        match op {
            Op::Push(which, bytes, ms) => {
                pushed += bytes.len() as u64;
                let ms = EPOCH_MS + u64::from(*ms);
                let done = log.push(which.stream(), bytes, ms);
                assert_eq!(done, before.0..log.next_cursor());
                // The lines this push completed have its time.
                for n in done.start.max(log.first_retained())..done.end {
                    assert_eq!(log.time_ms(n), Some(ms), "time of line {n}");
                }
                for byte in bytes.chunks(1) {
                    twin.push(which.stream(), byte, ms);
                }
            }
            Op::Close(which) => {
                twin.close(which.stream());
                let done = log.close(which.stream());
                assert_eq!(done, before.0..log.next_cursor());
                assert!(done.end - done.start <= 1);
            }
            Op::EvictTo(max_cost) => {
                let max_cost = usize::from(*max_cost);
                twin.evict_to(max_cost);
                let evicted = log.evict_to(max_cost);
                assert!(log.retained_cost() <= max_cost, "evict_to left too much");
                assert_eq!(log.first_retained(), before.1 + evicted, "evicted count");
                assert_eq!(log.next_cursor(), before.0);
            }
            Op::Read(read) => {
                let grep = read
                    .grep
                    .map(|i| &patterns[usize::from(i) % patterns.len()]);
                let query = Query {
                    since: read.since.map(u64::from),
                    tail: read.tail.map(usize::from),
                    head: read.head.map(usize::from),
                    grep,
                    stream: read.stream.as_ref().map(Which::stream),
                    max_bytes: usize::from(read.max_bytes),
                    line_overhead: usize::from(read.line_overhead % 64),
                    raw: read.raw,
                    timestamps: read.timestamps,
                };
                let page = log.read(&query);
                let n: Vec<u64> = page.lines.iter().map(|l| l.n).collect();
                assert!(n.windows(2).all(|w| w[0] < w[1]), "not increasing: {n:?}");
                // Every line costs its text plus the overhead; a first line that alone is too
                // long is cut to what is left after the overhead.
                let cost: usize = page
                    .lines
                    .iter()
                    .map(|l| l.text.len() + query.line_overhead)
                    .sum();
                let bound = query.max_bytes.max(query.line_overhead);
                assert!(cost <= bound, "{cost} > {bound}");
                assert!(page.next_cursor <= log.next_cursor());
                assert!(
                    page.lines
                        .iter()
                        .all(|l| l.partial == (l.n >= log.next_cursor())),
                    "partial flags"
                );
                if let Some(since) = query.since {
                    assert!(page.lines.iter().all(|l| l.n >= since));
                    assert!(page.next_cursor >= since.min(log.next_cursor()));
                }
                if let Some(stream) = query.stream {
                    assert!(page.lines.iter().all(|l| l.stream == stream));
                }
                assert!(
                    page.lines
                        .iter()
                        .all(|l| l.time_ms.is_some() == query.timestamps),
                    "times exactly when asked"
                );
                if query.timestamps {
                    for line in page.lines.iter().filter(|l| !l.partial) {
                        assert_eq!(line.time_ms, log.time_ms(line.n), "time of line {}", line.n);
                    }
                }
                if let Some(re) = grep {
                    // A cut line may have lost its match; every other line matches.
                    let cut = page.truncated as usize;
                    let misses = page.lines.iter().filter(|l| !re.is_match(&l.text)).count();
                    assert!(misses <= cut, "grep");
                }
            }
        }
        let (next, first) = (log.next_cursor(), log.first_retained());
        assert!(
            next >= before.0 && first >= before.1 && first <= next,
            "cursors"
        );
        assert!(log.retained_cost() <= limits.budget_bytes, "over budget");
        let allocated = log.allocated_bytes();
        assert!(allocated >= log.retained_cost(), "cost not all in memory");
        assert!(
            allocated <= log.retained_cost() + documented_overhead(limits),
            "{allocated} bytes held for a cost of {}",
            log.retained_cost()
        );
        assert_eq!(
            (
                twin.next_cursor(),
                twin.first_retained(),
                twin.retained_cost()
            ),
            (next, first, log.retained_cost()),
            "chunking changed the lines"
        );
        let everything = Query {
            since: Some(0),
            max_bytes: usize::MAX,
            raw: true,
            timestamps: true,
            ..Query::default()
        };
        assert_eq!(
            twin.read(&everything),
            log.read(&everything),
            "chunking changed a line or its time"
        );
        assert_eq!(log.dropped_lines(), first);
        assert_eq!(log.total_lines(), next);
        assert_eq!(log.total_bytes(), pushed);
        assert!(log.line(next).is_none());
        if next > first {
            assert!(log.line(first).is_some() && log.line(next - 1).is_some());
        }
    }
});
