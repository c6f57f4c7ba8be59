//! Throughput of a task's output buffer (`proc_state::log::LogBuffer`).
//!
//! - `ingest/*`: raw output pushed in 64 KiB chunks (a pipe read's size) into a buffer that is
//!   already full, so every push also evicts (the steady state of a chatty task). Throughput is
//!   in bytes of output. `yes_2B_lines` is `yes`: one-byte lines, the most index per byte. Each
//!   push comes at a new millisecond, so each stores a time entry (and evicts one).
//! - `ingest_baseline/*`: `memchr`'s newline count over the same chunks, the least any
//!   line-splitting ingest must do: compare each `ingest/*` case to its baseline.
//! - `ingest_copy/*`: the same chunks copied (`copy_from_slice`, the C library's `memcpy`) into
//!   a ring as large as the buffer's budget, the least any ingest that keeps the bytes must do.
//!   With a budget larger than the CPU's L2 cache, the ring's lines are cold when written again,
//!   and this bounds every `ingest/*` case from above.
//! - `read/*`: the `logs` tool's typical reads of a full 4 MiB buffer of ~80-byte lines;
//!   `tail_100_timestamps` is `tail_100` with the lines' times.
//!
//! Run with `cargo bench --bench log_buffer` (about 40 s).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use proc_state::Stream;
use proc_state::log::{LogBuffer, LogLimits, Query, Regex};

const BUDGET: usize = 4 << 20;
const CHUNK: usize = 64 << 10;

fn limits() -> LogLimits {
    LogLimits {
        budget_bytes: BUDGET,
        max_line_bytes: 64 << 10,
    }
}

/// About `len` bytes of log lines of 60 to 100 bytes (~80 on average), like a server's log.
/// One line in 1000 is an error, for the grep bench.
fn typical_output(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 128);
    let mut i = 0u64;
    while out.len() < len {
        let level = if i % 1000 == 999 { "ERROR" } else { "INFO" };
        let pad = "x".repeat((i * 7 % 41) as usize);
        let line = format!(
            "2025-01-01T12:00:{:02}.{:03}Z {level} http: GET /api/items/{i} 200 {pad}\n",
            i % 60,
            i % 1000
        );
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out
}

/// About `len` bytes of `seq` output: short lines of 2 to 8 bytes.
fn short_output(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    let mut i = 0u64;
    while out.len() < len {
        out.extend_from_slice(format!("{}\n", i % 10_000_000).as_bytes());
        i += 1;
    }
    out
}

/// About `len` bytes of `yes` output: `y\n` over and over.
fn yes_output(len: usize) -> Vec<u8> {
    b"y\n".repeat(len / 2)
}

/// 64 KiB chunks of `output`; lines straddle chunk boundaries as they do in pipe reads.
fn chunks(output: &[u8]) -> Vec<&[u8]> {
    output.chunks(CHUNK).filter(|c| c.len() == CHUNK).collect()
}

/// A buffer that has evicted at least once, filled with `output`.
fn full_buffer(output: &[u8]) -> LogBuffer {
    let mut log = LogBuffer::new(limits());
    for (ms, chunk) in (0..).zip(output.chunks(CHUNK)) {
        log.push(Stream::Stdout, chunk, ms);
    }
    assert!(log.dropped_lines() > 0, "fill more than the budget");
    log
}

fn ingest(c: &mut Criterion) {
    let cases = [
        ("typical_80B_lines", typical_output(2 * BUDGET)),
        ("short_8B_lines", short_output(2 * BUDGET)),
        ("yes_2B_lines", yes_output(2 * BUDGET)),
    ];
    let mut ring = vec![0; BUDGET];
    for (group, task) in [
        ("ingest", Task::Push),
        ("ingest_baseline", Task::CountNewlines),
        ("ingest_copy", Task::Copy),
    ] {
        let mut group = c.benchmark_group(group);
        group.throughput(Throughput::Bytes(CHUNK as u64));
        for (name, output) in &cases {
            let chunks = chunks(output);
            let mut log = full_buffer(output);
            let mut next = 0;
            group.bench_function(*name, |b| {
                b.iter(|| {
                    let chunk = black_box(chunks[next % chunks.len()]);
                    let at = next * CHUNK % BUDGET;
                    let ms = (1 << 20) + next as u64;
                    next += 1;
                    match task {
                        Task::Push => black_box(log.push(Stream::Stdout, chunk, ms).end as usize),
                        Task::CountNewlines => memchr::memchr_iter(b'\n', chunk).count(),
                        Task::Copy => {
                            ring[at..at + CHUNK].copy_from_slice(chunk);
                            black_box(&ring).len()
                        }
                    }
                })
            });
        }
        group.finish();
    }
}

/// What one `ingest*` iteration does with a chunk.
#[derive(Clone, Copy)]
enum Task {
    /// `LogBuffer::push` into a full buffer.
    Push,
    /// Count its newlines with `memchr`.
    CountNewlines,
    /// Copy it into the next `CHUNK` bytes of a ring of `BUDGET` bytes.
    Copy,
}

fn read(c: &mut Criterion) {
    let log = full_buffer(&typical_output(2 * BUDGET));
    let retained = (log.next_cursor() - log.first_retained()) as usize;
    let error = Regex::new(r"\bERROR\b").expect("valid regex");
    let mut group = c.benchmark_group("read");

    group.bench_function("tail_100", |b| {
        b.iter(|| black_box(log.read(black_box(&Query::default()))))
    });

    let timestamps = Query {
        timestamps: true,
        ..Query::default()
    };
    group.bench_function("tail_100_timestamps", |b| {
        b.iter(|| black_box(log.read(black_box(&timestamps))))
    });

    let forward = Query {
        since: Some(0),
        max_bytes: 32 << 10,
        ..Query::default()
    };
    group.bench_function("since_start_32KiB", |b| {
        b.iter(|| black_box(log.read(black_box(&forward))))
    });

    // The rare-match grep scans every retained line: report it per line scanned.
    group.throughput(Throughput::Elements(retained as u64));
    let grep = Query {
        grep: Some(&error),
        ..Query::default()
    };
    group.bench_function("grep_whole_buffer", |b| {
        b.iter(|| black_box(log.read(black_box(&grep))))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = ingest, read
}
criterion_main!(benches);
