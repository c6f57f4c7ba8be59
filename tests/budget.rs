//! One output budget for all tasks: 200 tasks flooding at once keep the server's memory within
//! the total budget plus a fixed allowance, and a quiet task keeps its output meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::{LATEST, RawServer, id_of, vm_kib};
use serde_json::json;

const FLOODERS: usize = 200;
const TOTAL_MIB: u64 = 64;
/// What the server may use beyond the total budget: its own code and tables, 200 tasks'
/// bookkeeping, the read buffers in flight, allocator slack.
const ALLOWANCE_MB: u64 = 32;

#[test]
fn two_hundred_floods_stay_within_the_total_budget() {
    let total = format!("{TOTAL_MIB}MiB");
    let mut server = RawServer::initialized_with(LATEST, &["--output-budget-total", &total], &[]);
    let quiet = id_of(&server.call(
        "start",
        json!({"command": "echo 'the one line that matters'; exec sleep 1000"}),
    ));
    server.call(
        "wait",
        json!({"id": quiet, "pattern": "matters", "timeout_ms": 20000}),
    );
    let ids: Vec<String> = (0..FLOODERS)
        .map(|_| id_of(&server.call("start", json!({"command": "yes"}))))
        .collect();
    // Until the floods have printed well past the total (each is cut to its share).
    let started = Instant::now();
    let printed = loop {
        let listed = server.call("list", json!({}));
        let bytes: u64 = ids
            .iter()
            .map(|id| {
                server.call("status", json!({"id": id, "tail": 0}))["output"]["bytes"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum();
        assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(FLOODERS + 1));
        if bytes > 3 * (TOTAL_MIB << 20) {
            break bytes;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the floods printed only {bytes} bytes"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let peak_kib = vm_kib(server.pid, "VmHWM");
    let peak_mb = peak_kib * 1024 / 1_000_000;
    eprintln!(
        "{FLOODERS} floods printed {} MB in {:.1?}; server VmHWM {peak_mb} MB (total budget {TOTAL_MIB} MiB)",
        printed / 1_000_000,
        started.elapsed()
    );
    let bound_mb = (TOTAL_MIB << 20) / 1_000_000 + ALLOWANCE_MB;
    assert!(
        peak_mb <= bound_mb,
        "VmHWM {peak_mb} MB over the total budget + {ALLOWANCE_MB} MB ({bound_mb} MB)"
    );
    let logs = server.call("logs", json!({"id": quiet}));
    assert_eq!(
        logs["lines"][0]["text"], "the one line that matters",
        "the quiet task lost its output: {logs}"
    );
    server.finish();
}
