//! A 1,000-task soak: in waves, 1,000 tasks are started (each prints, and one in ten leaves a
//! process that escapes its process group), all are stopped and all are removed. After each
//! wave the server's open descriptors, RSS, threads and live descendants are reported; none may
//! grow from wave to wave.
//!
//! `cargo bench --bench soak` (the release binary; `PROC_MCP_BIN` to use another). Waves:
//! `PROC_MCP_SOAK_WAVES` (default 60: about three minutes on a 2-core machine).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{LATEST, RawServer, server_bin, vm_kib};
use serde_json::{Value, json};

const TASKS: usize = 1000;

/// Descriptors the server holds open.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// The server's threads.
fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Live processes that carry this server's tag (its tasks and everything they started).
fn tagged(pid: u32) -> usize {
    let prefix = format!("PROC_MCP_TAG={pid}.");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let alive = state
                .rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
            alive
                && std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                    env.split(|b| *b == 0)
                        .any(|var| var.starts_with(prefix.as_bytes()))
                })
        })
        .count()
}

/// Sends `calls` as requests without waiting, then reads every response; the results.
fn pipelined(server: &mut RawServer, calls: Vec<(&str, Value)>) -> Vec<Value> {
    let mut ids = Vec::with_capacity(calls.len());
    for (tool, arguments) in calls {
        let id = server.next_id();
        server.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}}));
        ids.push(id);
    }
    // Answered as each completes (a `stop` once its task has ended), so in any order.
    let mut results = std::collections::BTreeMap::new();
    while results.len() < ids.len() {
        let response = server.next_response(Duration::from_secs(120));
        let result = &response["result"];
        assert_ne!(result["isError"], true, "{response}");
        let id = response["id"].as_i64().expect("a response to a request");
        results.insert(id, result["structuredContent"].clone());
    }
    ids.iter()
        .map(|id| results.remove(id).expect("every id answered"))
        .collect()
}

fn main() {
    let waves: usize = std::env::var("PROC_MCP_SOAK_WAVES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(60);
    println!(
        "proc-mcp soak: {waves} waves of {TASKS} tasks ({})",
        server_bin().display()
    );
    let mut server = RawServer::initialized(LATEST);
    let pid = server.pid;
    println!(
        "{:>4} {:>8} {:>8} {:>8} {:>6} {:>8} {:>9} {:>9}",
        "wave", "secs", "fds", "RSS MB", "thr", "tagged", "escaped", "max MB"
    );
    println!(
        "{:>4} {:>8} {:>8} {:>8.1} {:>6} {:>8} {:>9} {:>9.1}",
        "0",
        "-",
        fds(pid),
        vm_kib(pid, "VmRSS") as f64 / 1024.0,
        threads(pid),
        tagged(pid),
        "-",
        vm_kib(pid, "VmHWM") as f64 / 1024.0
    );
    let mut baseline = None;
    for wave in 1..=waves {
        let started = Instant::now();
        let starts = (0..TASKS)
            .map(|n| {
                let command = if n % 10 == 0 {
                    // Leaves a daemon behind in a session of its own.
                    "echo hello; setsid sh -c 'sleep 1000' & while :; do echo tick; sleep 1; done"
                } else {
                    "echo hello; while :; do echo tick; sleep 1; done"
                };
                ("start", json!({"command": command}))
            })
            .collect();
        let tasks = pipelined(&mut server, starts);
        let ids: Vec<String> = tasks
            .iter()
            .map(|t| t["id"].as_str().expect("id").to_owned())
            .collect();
        let stops = ids
            .iter()
            .map(|id| ("stop", json!({"id": id, "grace_ms": 2000})))
            .collect();
        let stopped = pipelined(&mut server, stops);
        let escaped: usize = stopped
            .iter()
            .map(|s| s["escaped"].as_array().map_or(0, Vec::len))
            .sum();
        for s in &stopped {
            assert_eq!(s["state"], "exited", "{s}");
        }
        let removes = ids.iter().map(|id| ("remove", json!({"id": id}))).collect();
        pipelined(&mut server, removes);
        let figures = (fds(pid), vm_kib(pid, "VmRSS"), threads(pid), tagged(pid));
        println!(
            "{:>4} {:>8.1} {:>8} {:>8.1} {:>6} {:>8} {:>9} {:>9.1}",
            wave,
            started.elapsed().as_secs_f64(),
            figures.0,
            figures.1 as f64 / 1024.0,
            figures.2,
            figures.3,
            escaped,
            vm_kib(pid, "VmHWM") as f64 / 1024.0
        );
        assert_eq!(figures.3, 0, "wave {wave}: tagged processes left alive");
        match baseline {
            None => baseline = Some(figures),
            Some(first) => {
                assert!(
                    figures.0 <= first.0,
                    "wave {wave}: descriptors grew {first:?} → {figures:?}"
                );
                assert!(
                    figures.2 <= first.2 + 2,
                    "wave {wave}: threads grew {first:?} → {figures:?}"
                );
                // Allocator slack, not growth: within 4 MB of the first wave.
                assert!(
                    figures.1 <= first.1 + 4096,
                    "wave {wave}: RSS grew {first:?} → {figures:?}"
                );
            }
        }
    }
    server.finish();
}
